"""A causal-LM policy: batched sampling with token ids and behaviour log-probs, and differentiable
log-probs of given responses (what the trainer's loss needs).

:class:`CausalLMPolicy` wraps any Hugging Face causal LM and its tokenizer:

- :meth:`CausalLMPolicy.generate` samples responses for a batch of prompts (left padding, micro-batches of
  similar length, optional stop strings) and returns :class:`~hiergym.agents.base.Completion` objects with
  the prompt and response token ids and the behaviour log-probs ``log softmax(logits / T)`` of the sampled
  tokens at the temperature ``T`` used (``T = 1`` when greedy), before top-p truncation.
- :meth:`CausalLMPolicy.sequence_logprobs` recomputes those log-probs for given (prompt, response) token ids,
  *with* gradients, under the current weights (and optionally the per-token entropy).
- Prompts are wrapped in the tokenizer's chat template when it has one (instruct models); otherwise (the
  built-in ``tiny`` model) the prompt text is used as is.

Loading: :meth:`from_pretrained` takes a local directory or a model id already in the local Hugging Face cache
(``local_files_only=True``: nothing is ever downloaded); :meth:`tiny` builds the built-in tiny model. On CUDA the
weights are bf16 (when supported), on CPU float32.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from hiergym.agents.base import Completion
from hiergym.agents.constraint import TrieLogitsProcessor, build_trie, masked_log_softmax
from hiergym.agents.generation import (
    DEFAULT_DECODE_BATCH_BYTES,
    DEFAULT_PREFIX_CACHE_TOKENS,
    GENERATION_MODES,
    PrefixCache,
    RowKeys,
    Sampler,
    SamplingProcessor,
    _Stops,
    cached_generate,
    loop_supported,
    prefix_cache_supported,
)
from hiergym.agents.prompts import split_system_prompt
from hiergym.envs.core import stable_seed

#: File that marks a directory saved by :meth:`CausalLMPolicy.save` (model + tokenizer + this note).
POLICY_NOTE = "hiergym_policy.json"


class ModelNotAvailableError(FileNotFoundError):
    """A model path or id that is not on disk / not in the local cache (hiergym never downloads)."""


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-shard progress bars (the harness and trainer draw their own)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class _StopOnStrings:
    """Stopping criterion: marks a row finished once its *generated* text contains a stop string.

    Records, per row, the sequence length at which it matched, so the response can be cut exactly there
    (rows that finished are padded by ``generate`` afterwards). A row that ended at an EOS id (``eos``) is
    finished without a match: the padding after it (``<pad>`` contains ``p``) must not count as a stop.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_length: int, batch_size: int,
                 eos: Sequence[int] = ()):
        self.tokenizer = tokenizer
        self.eos = set(eos)
        self.ended = [False] * batch_size
        self.stops = [s for s in stops if s]
        self.prompt_length = prompt_length
        # A stop string of n bytes spans at most n + 1 tokens of any tokenizer (tokens are >= 1 byte, and the
        # match may start inside a token).
        self.window = max((len(s.encode()) for s in self.stops), default=0) + 2
        self.stopped_at: list[int | None] = [None] * batch_size

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        length = input_ids.shape[1]
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        start = max(self.prompt_length, length - self.window)
        tails = self.tokenizer.batch_decode(input_ids[:, start:].tolist(), skip_special_tokens=False)
        last = input_ids[:, -1].tolist() if length > self.prompt_length else [None] * len(tails)
        for row, tail in enumerate(tails):
            if self.stopped_at[row] is not None or self.ended[row]:
                done[row] = True
            elif last[row] in self.eos:
                self.ended[row] = True
                done[row] = True
            elif any(stop in tail for stop in self.stops):
                self.stopped_at[row] = length
                done[row] = True
        return done


def pad_token_rows(rows: Sequence[Sequence[int]], pad_id: int, *, left: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of token rows padded to the longest: on the left for generation (every
    row ends at the last position), on the right for scoring (positions need no adjustment)."""
    width = max((len(r) for r in rows), default=0)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        input_ids[i, span] = torch.tensor(list(row), dtype=torch.long)
        attention[i, span] = 1
    return input_ids, attention


class CausalLMPolicy:
    """A Hugging Face causal LM + tokenizer as a batched text policy (see the module docstring).

    Args:
        model: a ``transformers`` causal LM (``AutoModelForCausalLM``-like).
        tokenizer: its tokenizer; a pad token is set to EOS when missing, padding goes on the left.
        use_chat_template: wrap prompts in the tokenizer's chat template; default: when it has one.
        system_prompt: system message for chat templates (ignored without one).
        max_prompt_tokens: prompts longer than this are cut from the left (the start of a long history goes
            first); default: the model's context size minus room for the response.
        batch_size: prompts per forward pass in :meth:`generate`.
        name: a label for reports (``tiny``, the model path, ...).
        generation: how :meth:`generate` samples (:mod:`hiergym.agents.generation`): ``"cached"`` (default: a
            loop over the model's forward with a prefix-shared KV cache kept between calls until the weights
            change) or ``"plain"`` (``model.generate``, a fresh cache per call). Both draw the same samples for a
            seed (up to ties within float rounding). ``"cached"`` falls back to ``"plain"`` for models whose cache
            is not a plain key/value cache or whose generation config sets logits processors beyond
            temperature / top-k / top-p.
        prefix_cache_tokens: ``"cached"``: tokens of KV states kept between calls (0: none).
        decode_batch_bytes: ``"cached"``: bytes of KV cache a decode batch may hold; consecutive micro-batches of
            ``batch_size`` decode together while they fit (at most 8 of them; 0: each on its own). A prompt
            samples the same either way.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        use_chat_template: bool | None = None,
        system_prompt: str | None = None,
        max_prompt_tokens: int | None = None,
        batch_size: int = 32,
        name: str = "",
        generation: str = "cached",
        prefix_cache_tokens: int = DEFAULT_PREFIX_CACHE_TOKENS,
        decode_batch_bytes: int = DEFAULT_DECODE_BATCH_BYTES,
    ):
        if generation not in GENERATION_MODES:
            raise ValueError(f"generation must be one of {', '.join(GENERATION_MODES)}, got {generation!r}")
        self.model = model
        self.generation = generation
        self.prefix_cache = PrefixCache(prefix_cache_tokens)
        self.decode_batch_bytes = decode_batch_bytes
        #: Counters of :meth:`generate` (``prompt_tokens_seen``, ``prompt_tokens_computed``, ``generated_tokens``,
        #: ``calls``); reset them freely.
        self.generation_stats: dict[str, int] = {}
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self.use_chat_template = (
            bool(getattr(tokenizer, "chat_template", None)) if use_chat_template is None else use_chat_template
        )
        self.system_prompt = system_prompt
        self.batch_size = batch_size
        context = int(getattr(model.config, "max_position_embeddings", 0) or 4096)
        self.max_prompt_tokens = max_prompt_tokens or max(64, context - 512)
        self.name = name or str(getattr(model.config, "_name_or_path", "")) or type(model).__name__
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos_ids = {tokenizer.eos_token_id} | set(eos if isinstance(eos, list) else [eos])
        self.eos_token_ids = sorted(i for i in eos_ids if i is not None)

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike[str],
        *,
        device: str | torch.device | None = "auto",
        dtype: torch.dtype | str | None = None,
        gguf_file: str | None = None,
        **kwargs: Any,
    ) -> CausalLMPolicy:
        """Load a local directory or a model id from the local Hugging Face cache; never downloads.

        Raises :class:`ModelNotAvailableError` with the fix when the model is not on disk.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        target = str(path_or_id)
        device = resolve_device(device)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        dtype = dtype or default_dtype(device)
        load = {"local_files_only": True}
        if gguf_file:
            load["gguf_file"] = gguf_file
        try:
            with _quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(target, **load)
                model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype, **load)
        except OSError as exc:
            where = "directory" if Path(target).exists() else "model id"
            raise ModelNotAvailableError(
                f"cannot load the Hugging Face model {target!r} ({where}) without downloading: {exc}. "
                "hiergym loads models offline only: pass a local directory with config.json, the weights and "
                "the tokenizer, or an id already in the local cache (download it beforehand with "
                "`huggingface-cli download ID`)"
            ) from None
        model.to(device)
        model.eval()
        return cls(model, tokenizer, name=target, **kwargs)

    @classmethod
    def tiny(
        cls,
        checkpoint: str | os.PathLike[str] | None = None,
        *,
        seed: int = 0,
        device: str | torch.device | None = "cpu",
        dtype: torch.dtype | None = None,
        architecture: dict[str, Any] | None = None,
        tokenizer: Any = None,
        **kwargs: Any,
    ) -> CausalLMPolicy:
        """The built-in tiny model: fresh (seeded) without ``checkpoint``, else loaded from that directory.

        ``tokenizer``: a fresh model's tokenizer (default: the byte tokenizer; e.g.
        :func:`~hiergym.agents.tiny.build_text_tokenizer`'s, whose vocabulary sizes the embeddings).

        ``architecture`` overrides :class:`~hiergym.agents.tiny.TinyModelConfig` fields of a fresh model, e.g.
        Qwen2.5-0.5B's sizes (``hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2``) for a real-size model with the byte tokenizer.
        ``dtype`` defaults to float32 (tiny models train best in full precision).
        """
        if checkpoint:
            if not (Path(checkpoint) / "config.json").exists():
                raise ModelNotAvailableError(
                    f"no tiny checkpoint at {str(checkpoint)!r} (expected a directory with config.json, saved by "
                    "CausalLMPolicy.save or `hiergym train`)"
                )
            return cls.from_pretrained(checkpoint, device=device, dtype=dtype or torch.float32, **kwargs)
        from hiergym.agents.tiny import build_byte_tokenizer, build_tiny_model

        tokenizer = tokenizer if tokenizer is not None else build_byte_tokenizer()
        model = build_tiny_model(seed=seed, vocab_size=len(tokenizer), **(architecture or {})).to(
            resolve_device(device), dtype=dtype or torch.float32)
        model.eval()
        return cls(model, tokenizer, name="tiny", **kwargs)

    def save(self, directory: str | os.PathLike[str], agent_config: dict[str, Any] | None = None) -> None:
        """Save model and tokenizer so that :meth:`from_pretrained` (or ``tiny:DIR``) loads them back.

        ``agent_config`` (e.g. ``{"mode": "hierarchical", "style": "compact", "replan_every": 4}``) is stored
        beside them; ``hiergym eval --agent tiny:DIR`` uses it as the agent's defaults.
        """
        import json

        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        with _quiet_transformers():
            self.model.save_pretrained(path)
            self.tokenizer.save_pretrained(path)
        note = {"name": self.name, "agent": dict(agent_config or {})}
        (path / POLICY_NOTE).write_text(json.dumps(note, indent=1) + "\n")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------------------------------ prompts
    def format_prompt(self, prompt: str | list[dict[str, str]]) -> str:
        """The text the model sees: the chat template applied (if used), else the prompt itself."""
        if not self.use_chat_template:
            if isinstance(prompt, list):
                return "\n\n".join(m["content"] for m in prompt)
            return prompt
        if isinstance(prompt, list):
            messages = prompt
            if self.system_prompt and messages[0].get("role") != "system":
                messages = [{"role": "system", "content": self.system_prompt}, *messages]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # The agent's role and rules are its instructions: they go in the system message, so the template does
        # not add its own ("You are a helpful AI named ..."); a template without a system role gets one message.
        instructions, content = split_system_prompt(prompt)
        system = "\n\n".join(part for part in (self.system_prompt, instructions) if part)
        if system:
            try:
                return self.tokenizer.apply_chat_template(
                    [{"role": "system", "content": system}, {"role": "user", "content": content}],
                    tokenize=False, add_generation_prompt=True)
            except Exception:  # noqa: BLE001 - e.g. a template that raises on a system message
                content = f"{system}\n\n{content}"
        return self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                  add_generation_prompt=True)

    def encode_prompt(self, prompt: str | list[dict[str, str]]) -> list[int]:
        """Token ids of a prompt as :meth:`generate` feeds them (template applied, cut from the left)."""
        return self._encode_texts([self.format_prompt(prompt)])[0]

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        # A chat template writes its own BOS; a plain prompt gets the tokenizer's special tokens. One batched
        # tokenizer call (the same ids as one call per text).
        if not texts:
            return []
        encoded = self.tokenizer(texts, add_special_tokens=not self.use_chat_template)["input_ids"]
        return [list(ids[-self.max_prompt_tokens:]) if len(ids) > self.max_prompt_tokens else list(ids)
                for ids in encoded]

    # --------------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str | list[dict[str, str]]],
        *,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        choices: Sequence[Sequence[str] | None] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[Completion]:
        """Sample one response per prompt; ``temperature=0`` is greedy.

        ``stop``: strings that end a response (kept in the text and tokens, e.g. ``"</action>"``); a response
        also ends at EOS (its id is kept in ``response_token_ids`` so training teaches the model to stop, but
        not in the text).

        Every prompt samples from its own random stream (:class:`~hiergym.agents.generation.RowKeys`), keyed by
        its **row seed**: ``seeds[i]`` (one int per prompt; what the agents pass, from the episode and its
        step), else one derived from ``seed`` and the prompt's position in ``prompts``, else one drawn from
        torch's global generator. A prompt's response depends on its row seed only, not on the other prompts
        of the call, their number or their order.

        ``choices`` (one list or None per prompt): the prompt's response must be one of these texts
        (:mod:`hiergym.agents.constraint`); its log-probs are those of the constrained distribution and its
        ``response_allowed`` the allowed tokens at each position. ``max_new_tokens`` is raised to the longest
        choice, so a constrained response always completes.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        row_seeds = self.row_seeds(len(prompts), seed, seeds) if temperature > 0 else None
        texts = [self.format_prompt(p) for p in prompts]
        encoded = self._encode_texts(texts)
        stops = list(stop or [])
        tries = self.choice_tries(choices, stops, len(prompts))
        if any(t is not None for t in tries):
            max_new_tokens = max(max_new_tokens, *(t.longest for t in tries if t is not None))
        # Sorting by length keeps padding (wasted compute) low inside each micro-batch; which micro-batch a prompt
        # lands in changes no sample (its stream is its row seed's), only logits' float rounding.
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        outs = self._sample(encoded, order, max_new_tokens, temperature, top_p, top_k, stops, tries, row_seeds)
        stats = self.generation_stats
        stats["calls"] = stats.get("calls", 0) + 1
        stats["generated_tokens"] = stats.get("generated_tokens", 0) + sum(len(o[0]) for o in outs)
        return [
            Completion(prompt_text=text, response_text=self._decode_response(response_ids), prompt_token_ids=ids,
                       response_token_ids=response_ids, response_logprobs=logprobs, finish_reason=reason,
                       choices=list(choices[i]) if choices is not None and choices[i] is not None else None,
                       response_allowed=tries[i].along(response_ids) if tries[i] is not None else None)
            for i, (text, ids, (response_ids, logprobs, reason)) in enumerate(zip(texts, encoded, outs, strict=True))
        ]

    @staticmethod
    def row_seeds(rows: int, seed: int | None = None, seeds: Sequence[int] | None = None) -> list[int]:
        """The row seeds of a call of ``rows`` prompts (see :meth:`generate`)."""
        if seeds is not None:
            if len(seeds) != rows:
                raise ValueError(f"seeds: one per prompt, got {len(seeds)} for {rows} prompts")
            return [int(s) for s in seeds]
        if seed is not None:
            return [stable_seed("hiergym.generate", int(seed), i) for i in range(rows)]
        return torch.randint(0, 2**62, (rows,)).tolist()

    def choice_tries(self, choices: Sequence[Sequence[str] | None] | None, stops: Sequence[str], rows: int
                     ) -> list:
        """One :class:`~hiergym.agents.constraint.ChoiceTrie` (or None: unconstrained) per prompt."""
        if choices is None:
            return [None] * rows
        if len(choices) != rows:
            raise ValueError(f"choices: one list (or None) per prompt, got {len(choices)} for {rows} prompts")
        eos = self.tokenizer.eos_token_id
        tries: dict[tuple[str, ...], Any] = {}  # a group's copies share their choices: one trie each
        for c in choices:
            if c is not None and tuple(c) not in tries:
                tries[tuple(c)] = build_trie(self.tokenizer, c, eos, stops)
        return [tries[tuple(c)] if c is not None else None for c in choices]

    def allowed_along(self, choices: Sequence[str] | None, response_ids: Sequence[int], stops: Sequence[str] = ()
                      ) -> list[list[int]] | None:
        """The allowed tokens at every position of a response constrained to ``choices`` (what :meth:`generate`
        records as ``response_allowed``), e.g. for behaviour-cloning demonstrations."""
        trie = build_trie(self.tokenizer, choices, self.tokenizer.eos_token_id, stops)
        return trie.along(response_ids) if trie is not None else None

    def generation_mode(self) -> str:
        """The path :meth:`generate` takes for this model: ``generation``, or the fallback it needs."""
        mode = self.generation
        if mode != "plain" and not loop_supported(self.model):
            return "plain"
        if mode == "cached" and not prefix_cache_supported(self.model):
            return "plain"
        return mode

    def _sample(self, encoded: list[list[int]], order: list[int], max_new_tokens: int, temperature: float,
                top_p: float, top_k: int, stops: list[str], tries: list | None = None,
                seeds: list[int] | None = None) -> list[tuple[list[int], list[float], str]]:
        if temperature > 0 and seeds is None:
            seeds = self.row_seeds(len(encoded))
        mode = self.generation_mode()
        if any(not e for e in encoded):
            mode = "plain"
        tries = tries if tries is not None else [None] * len(encoded)
        results: list[tuple[list[int], list[float], str] | None] = [None] * len(encoded)
        if mode == "plain":
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                outs = self._generate_batch([encoded[i] for i in rows], max_new_tokens, temperature, top_p, top_k,
                                            stops, [tries[i] for i in rows],
                                            [seeds[i] for i in rows] if seeds is not None else None)
                for i, out in zip(rows, outs, strict=True):
                    results[i] = out
            seen = sum(len(e) for e in encoded)
            for key in ("prompt_tokens_seen", "prompt_tokens_computed"):
                self.generation_stats[key] = self.generation_stats.get(key, 0) + seen
            return [r for r in results if r is not None]
        config = getattr(self.model, "generation_config", None)
        sampler = Sampler(temperature, top_p, top_k, getattr(config, "repetition_penalty", 1.0))
        ending = _Stops(self.tokenizer, self.eos_token_ids, stops, max_new_tokens)
        pad = self.tokenizer.pad_token_id
        was_training = self.model.training
        self.model.eval()
        try:
            return cached_generate(self.model, self.prefix_cache, encoded, order, self.batch_size, pad, sampler,
                                   ending, self.generation_stats, tries=tries, seeds=seeds,
                                   decode_batch_bytes=self.decode_batch_bytes)
        finally:
            self.model.train(was_training)

    def _decode_response(self, ids: list[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i not in self.eos_token_ids], skip_special_tokens=True)

    def _generate_batch(
        self, encoded: list[list[int]], max_new_tokens: int, temperature: float, top_p: float, top_k: int,
        stops: list[str], tries: list | None = None, seeds: list[int] | None = None,
    ) -> list[tuple[list[int], list[float], str]]:
        """One micro-batch through ``model.generate``. Sampling goes through the same per-row
        :class:`~hiergym.agents.generation.Sampler` as the cached path (a logits processor after any
        constraint; ``generate`` itself then runs greedy on its one-hot choice), so both paths draw the same
        samples for the same row seeds."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        pad = self.tokenizer.pad_token_id
        input_ids, attention = pad_token_rows(encoded, pad, left=True)
        width = input_ids.shape[1]
        device = self.device
        criterion = _StopOnStrings(self.tokenizer, stops, width, len(encoded), self.eos_token_ids) if stops else None
        sample = temperature > 0
        # generate's own sampling (torch.multinomial over the batch) is never used: see the docstring.
        sampling: dict[str, Any] = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        constrained = tries is not None and any(t is not None for t in tries)
        processors = [TrieLogitsProcessor(tries, width)] if constrained else []
        if sample:
            if seeds is None:
                seeds = self.row_seeds(len(encoded))
            sampler = Sampler(temperature, top_p, top_k)  # the model's repetition penalty: generate applies it
            processors.append(SamplingProcessor(sampler, RowKeys(seeds, device), width))
        if processors:
            sampling["logits_processor"] = LogitsProcessorList(processors)
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                eos_token_id=self.eos_token_ids,
                stopping_criteria=StoppingCriteriaList([criterion]) if criterion else None,
                output_logits=True,
                return_dict_in_generate=True,
                **sampling,
            )
        finally:
            self.model.train(was_training)
        new_tokens = out.sequences[:, width:]
        scale = temperature if sample else 1.0
        # One step at a time keeps memory at one (batch x vocab) float32 matrix however long the response.
        step_logprobs = torch.stack([
            torch.log_softmax(logits.float() / scale, dim=-1).gather(1, new_tokens[:, t:t + 1]).squeeze(1)
            for t, logits in enumerate(out.logits)
        ], dim=1) if out.logits else torch.zeros((len(encoded), 0))
        tokens, logprobs = new_tokens.tolist(), step_logprobs.tolist()
        results = []
        eos = set(self.eos_token_ids)
        for row in range(len(encoded)):
            stopped = criterion.stopped_at[row] if criterion else None
            if stopped is not None:
                end, reason = stopped - width, "stop"
            else:
                end = next((t + 1 for t, tok in enumerate(tokens[row]) if tok in eos), None)
                reason = "stop" if end is not None else "length"
                end = end if end is not None else len(tokens[row])
            response, response_logprobs = tokens[row][:end], logprobs[row][:end]
            trie = tries[row] if constrained else None
            allowed = trie.along(response) if trie is not None else None
            if allowed:
                # ``output_logits`` are the raw logits: a constrained row's log-probs are those under its masks.
                raw = torch.stack([out.logits[t][row] for t in range(len(response))])
                step, _ = masked_log_softmax(raw, scale, allowed)
                response_logprobs = step.gather(1, new_tokens[row, :len(response), None]).squeeze(1).tolist()
            results.append((response, response_logprobs, reason))
        return results

    # ------------------------------------------------------------------------------------ training side
    def sequence_logprobs(
        self,
        prompt_ids_list: Sequence[Sequence[int]],
        response_ids_list: Sequence[Sequence[int]],
        *,
        temperature: float = 1.0,
        return_entropy: bool = False,
        allowed: Sequence[Sequence[Sequence[int]] | None] | None = None,
    ) -> list[torch.Tensor] | tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Log-probs of each response's tokens given its prompt, under the current weights, with gradients.

        Returns one 1-D float32 tensor per pair (length = response length), and with ``return_entropy`` also
        the per-token entropies of the same (temperature-scaled) distributions. Use the temperature the
        responses were sampled at (``Generation.temperature``; 1.0 for greedy) so that the ratio to the
        recorded behaviour log-probs is 1 for unchanged weights. ``allowed`` (per pair, None or the allowed
        tokens at each response position, ``response_allowed``): score under those masks, as constrained
        decoding sampled.
        """
        if len(prompt_ids_list) != len(response_ids_list):
            raise ValueError("prompt_ids_list and response_ids_list must have the same length")
        pad = self.tokenizer.pad_token_id
        lengths = [len(p) + len(r) for p, r in zip(prompt_ids_list, response_ids_list, strict=True)]
        width = max(lengths, default=0)
        device = self.device
        if width == 0:
            empty = [torch.zeros(0, device=device) for _ in prompt_ids_list]
            return (empty, list(empty)) if return_entropy else empty
        # Right padding: every row's response sits after its prompt at unshifted positions.
        input_ids, attention = pad_token_rows(
            [list(p) + list(r) for p, r in zip(prompt_ids_list, response_ids_list, strict=True)], pad)
        logits = self.model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
        logprobs, entropies = [], []
        for row, (p, r) in enumerate(zip(prompt_ids_list, response_ids_list, strict=True)):
            if not r:
                logprobs.append(logits.new_zeros(0, dtype=torch.float32))
                entropies.append(logits.new_zeros(0, dtype=torch.float32))
                continue
            # The logits at position t predict token t + 1: the response tokens are predicted from P-1 .. P+R-2.
            step, entropy = masked_log_softmax(logits[row, len(p) - 1:len(p) + len(r) - 1], temperature,
                                               allowed[row] if allowed is not None else None,
                                               return_entropy=return_entropy)
            target = torch.tensor(list(r), dtype=torch.long, device=device).unsqueeze(1)
            logprobs.append(step.gather(1, target).squeeze(1))
            if return_entropy:
                entropies.append(entropy)
        return (logprobs, entropies) if return_entropy else logprobs

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())
