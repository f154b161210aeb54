"""Generation and scoring that do not recompute what they have computed: a KV cache shared by prompt prefixes.

:class:`~hiergym.agents.policy.CausalLMPolicy` samples through one of two paths (``generation=...``):

- ``"plain"``: ``model.generate`` on left-padded micro-batches, a fresh cache per call (the reference).
- ``"cached"`` (the default): a sampling loop over the model's forward whose prompt KV states live in a radix
  tree of token prefixes (:class:`PrefixCache`) that outlives the call. A prefix shared by several prompts (the
  G copies of a group, the common start of every prompt) is computed once, and a prompt that starts with
  something an earlier call computed (a state seen before, the next turn of an episode) computes only the rest,
  until the weights change (parameter version counters) or the token budget evicts it (least recently used
  first). The tokens the decode steps compute (the prompt's last token and the response) are added too, so a
  next prompt that extends ``prompt + response`` reuses all of it. The tree is computed level by level: each
  level is one batched forward of the new segments with their ancestors' KV as a ``DynamicCache`` (left-padded,
  the holes masked, explicit positions).

The loop samples as the plain path does: the same micro-batches in the same order (consecutive ones decoded
together while their cache fits ``decode_batch_bytes``, which changes no sample), HF's temperature / top-k /
top-p warpers, ``argmax`` when greedy, EOS and stop strings checked the same way. Sampling is **per row** in
both paths (:class:`Sampler`, which the plain path runs as ``model.generate``'s last logits processor): each
row's token is the Gumbel-max of its warped scores with counter-based noise keyed by the row's seed, the
response position and the token id (:class:`RowKeys`), an exact draw from the same distribution as
``torch.multinomial`` but one that no other row of the batch affects. So a prompt with a given row seed
samples the same response alone, in any batch and in any order (on any rank). Logits equal ``model.generate``'s
up to float rounding (about 1e-6 on CPU: the attention reduces over differently padded keys, and a matrix
product's rounding depends on its row count, which is why even ``model.generate`` gives a prompt slightly
different logits in a different batch), so a seed gives the same samples except where two candidates tie
within that rounding. Behaviour log-probs are ``log_softmax(logits / T)`` of the sampled tokens.

:func:`packed_logprobs` scores (prompt, response) pairs the same way for the update: the tree of the prompts is
computed once per call, with gradients, and every response attends to its prompt's KV (the prompt's KV expanded
over its responses), so a prompt shared by several responses, or a prefix shared by several prompts, is
forwarded once. Its log-probs and gradients equal those of :meth:`CausalLMPolicy.sequence_logprobs` up to float
rounding.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from hiergym.agents.constraint import mask_logits, masked_log_softmax

GENERATION_MODES = ("plain", "cached")
#: Default token budget of the ``"cached"`` mode's prefix cache (prompt and response tokens kept between calls).
DEFAULT_PREFIX_CACHE_TOKENS = 262_144
#: Rows x (cached + new tokens) per forward when computing the prefix tree (bounds the cache and attention size).
PREFILL_BUDGET = 65_536
#: Default bytes of KV cache a decode batch may hold (``CausalLMPolicy(decode_batch_bytes=...)``): the plain path's
#: micro-batches of ``batch_size`` rows decode together while their rows x (longest prompt + new tokens) x the
#: model's KV bytes per token fit (a row samples the same in any batch), so short prompts take fewer steps.
DEFAULT_DECODE_BATCH_BYTES = 256 * 2**20
#: A merged decode batch holds at most this many of the plain path's micro-batches (the rows x vocabulary
#: temporaries of sampling grow with it).
MAX_MERGED_MICRO_BATCHES = 8

#: ``generation_config`` fields that would make ``model.generate`` apply logits processors the hand-written loop
#: does not (compared with a default ``GenerationConfig``); a model that sets one is sampled with ``"plain"``.
_PROCESSOR_FIELDS = ("no_repeat_ngram_size", "bad_words_ids", "min_length", "min_new_tokens",
                     "sequence_bias", "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id",
                     "forced_eos_token_id", "exponential_decay_length_penalty", "renormalize_logits", "min_p",
                     "typical_p", "epsilon_cutoff", "eta_cutoff", "top_h", "encoder_repetition_penalty",
                     "encoder_no_repeat_ngram_size", "guidance_scale", "watermarking_config")


# ------------------------------------------------------------------------------------------ transformers glue
def _forward_names(model: Any) -> tuple[str, str]:
    """The forward's cache keyword (``cache`` in transformers 5, ``past_key_values`` before) and its
    logits-to-keep keyword."""
    names = _forward_names_cache.get(type(model))
    if names is None:
        # A peft wrapper passes keywords through to the model it wraps: read that one's signature.
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        params = set(inspect.signature(base.forward).parameters)
        cache = "cache" if "cache" in params else "past_key_values"
        keep = "logits_to_keep" if "logits_to_keep" in params else (
            "num_logits_to_keep" if "num_logits_to_keep" in params else "")
        names = _forward_names_cache[type(model)] = (cache, keep)
    return names


_forward_names_cache: dict[type, tuple[str, str]] = {}


def _call(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
          cache: Any, *, last_only: bool, hidden: bool = False) -> Any:
    """The model's forward on new tokens after ``cache``; ``attention_mask`` is the 2D key mask (cache + new).

    With SDPA attention the 4D boolean mask (key mask and causality among the new tokens) is built here, which
    is what transformers would build from the 2D one, minus its per-call overhead."""
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        queries, keys = input_ids.shape[1], attention_mask.shape[1]
        mask = attention_mask.bool()[:, None, None, :]
        if queries > 1:
            causal = (torch.arange(keys, device=mask.device)[None, :]
                      <= torch.arange(keys - queries, keys, device=mask.device)[:, None])
            mask = mask & causal[None, None]
        attention_mask = mask
    cache_name, keep_name = _forward_names(model)
    kwargs: dict[str, Any] = {cache_name: cache, "use_cache": True}
    if last_only and keep_name:
        kwargs[keep_name] = 1
    if hidden:
        kwargs["output_hidden_states"] = True
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)


def _output_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _new_cache(kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> Any:
    """A ``DynamicCache``, empty or holding the given per-layer (keys, values) of shape [batch, heads, len, dim]."""
    from transformers import DynamicCache

    if not kv:
        return DynamicCache()
    try:
        return DynamicCache(ddp_cache_data=kv)
    except TypeError:  # older transformers
        return DynamicCache.from_legacy_cache(tuple(kv))


_growing_layer: Any = None


def _decode_cache(kv: list[tuple[torch.Tensor, torch.Tensor]] | None, filled: int, whole: bool = False) -> Any:
    """A cache for decoding: its layers keep their states in the given buffers ([rows, heads, filled + room,
    dim], the first ``filled`` columns set; :func:`_gather_past` with ``room``) and write each step's states in
    place, where a ``DynamicCache`` copies the whole cache every step (about 40% of a decode step of the tiny
    model). With ``whole`` the attention gets the whole buffers (the caller's mask hides the columns not yet
    written, which must hold finite numbers): contiguous keys make SDPA's decode step about a third faster than
    the first-columns view. A ``DynamicCache`` where this transformers has no cache layers."""
    global _growing_layer
    try:
        from transformers.cache_utils import Cache, DynamicLayer
    except ImportError:
        DynamicLayer = None
    if not kv or DynamicLayer is None or not hasattr(DynamicLayer, "reorder_cache"):
        return _new_cache([(keys[:, :, :filled], values[:, :, :filled]) for keys, values in kv] if kv else None)
    if _growing_layer is None:
        class GrowingLayer(DynamicLayer):
            def __init__(self, key_buffer: torch.Tensor, value_buffer: torch.Tensor, filled: int, whole: bool):
                super().__init__()
                self.key_buffer, self.value_buffer, self.filled = key_buffer, value_buffer, filled
                self.whole = whole
                self.is_initialized, self.device, self.dtype = True, key_buffer.device, key_buffer.dtype
                self._views()

            def _views(self) -> None:
                self.keys = self.key_buffer[:, :, :self.filled]
                self.values = self.value_buffer[:, :, :self.filled]

            def update(self, key_states, value_states, *args, **kwargs):
                new = key_states.shape[-2]
                if self.filled + new > self.key_buffer.shape[2]:  # out of room: grow like a DynamicLayer
                    grow = (0, 0, 0, max(new, self.key_buffer.shape[2]))
                    self.key_buffer = torch.nn.functional.pad(self.key_buffer, grow)
                    self.value_buffer = torch.nn.functional.pad(self.value_buffer, grow)
                self.key_buffer[:, :, self.filled:self.filled + new] = key_states
                self.value_buffer[:, :, self.filled:self.filled + new] = value_states
                self.filled += new
                self._views()
                if self.whole:
                    return self.key_buffer, self.value_buffer
                return self.keys, self.values

            def get_seq_length(self) -> int:
                return self.filled

            def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
                self.key_buffer = self.key_buffer.index_select(0, beam_idx.to(self.device))
                self.value_buffer = self.value_buffer.index_select(0, beam_idx.to(self.device))
                self._views()

        _growing_layer = GrowingLayer
    try:
        return Cache(layers=[_growing_layer(keys, values, filled, whole) for keys, values in kv])
    except TypeError:
        return _new_cache([(keys[:, :, :filled], values[:, :, :filled]) for keys, values in kv])


def _layer_kv(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))


def prefix_cache_supported(model: Any) -> bool:
    """Whether the model's cache is a plain per-layer key/value cache (no sliding-window, linear or recurrent
    layers), which the prefix tree stores and recombines."""
    from transformers import DynamicCache

    try:
        layers = getattr(DynamicCache(config=model.config), "layers", None)
    except TypeError:
        return getattr(model.config, "sliding_window", None) is None
    if layers is None:
        return True
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in layers)


def loop_supported(model: Any) -> bool:
    """Whether the hand-written loop samples as ``model.generate`` would: the model's generation config sets no
    logits processor beyond a repetition penalty, temperature, top-k and top-p."""
    config = getattr(model, "generation_config", None)
    if config is None:
        return True
    from transformers import GenerationConfig

    default = GenerationConfig()
    return all(getattr(config, name, None) == getattr(default, name, None) for name in _PROCESSOR_FIELDS)


def weights_fingerprint(model: Any) -> tuple:
    """Changes whenever a parameter is replaced or modified in place (optimizer steps, ``load_state_dict``)."""
    return tuple((id(p), p._version, p.dtype, p.device) for p in model.parameters())


# ------------------------------------------------------------------------------------------ sampling
_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2**32`` for int64 tensors of 32-bit values, without int64 overflow (16-bit halves)."""
    return ((x & 0xFFFF) * c + ((((x >> 16) * c) & 0xFFFF) << 16)) & _M32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit mixer (``lowbias32``) on int64 tensors of 32-bit values: exact integer arithmetic, so
    the same bits on every device and in every batch."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


_token_codes: dict[tuple[int, str], torch.Tensor] = {}


class RowKeys:
    """The random streams of a micro-batch's rows: row ``r``'s noise at response position ``t`` for token ``v``
    is a function of (``seeds[r]``, ``t``, ``v``) only (counter-based: hashed, nothing drawn from a generator
    whose state other rows advance), so a row samples the same tokens alone, in any batch, at any position of
    it, on any rank."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        values = [int(s) % 2**64 for s in seeds]
        lo = torch.tensor([v & _M32 for v in values], dtype=torch.long, device=device)
        hi = torch.tensor([v >> 32 for v in values], dtype=torch.long, device=device)
        self._base = _hash32(lo ^ _hash32(hi ^ 0x3C6EF372))
        self._salt = _hash32(self._base ^ 0x5851F42D)

    def __len__(self) -> int:
        return int(self._base.shape[0])

    def select(self, index: torch.Tensor) -> RowKeys:
        """The keys of rows ``index`` (a tensor of row positions)."""
        out = RowKeys.__new__(RowKeys)
        out._base, out._salt = self._base[index], self._salt[index]
        return out

    def gumbel(self, step: int, vocab: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """[rows, vocab] standard Gumbel noise of response position ``step``."""
        device = self._base.device
        codes = _token_codes.get((vocab, str(device)))
        if codes is None:
            codes = _token_codes[(vocab, str(device))] = _hash32(torch.arange(vocab, device=device) ^ 0x1B873593)
        row = _hash32(self._base ^ (int(step) & _M32))
        bits = _hash32(_hash32(row[:, None] ^ codes[None, :]) ^ self._salt[:, None])
        uniform = (bits.to(dtype) + 0.5) / 2.0**32
        return -torch.log(-torch.log(uniform))


class Sampler:
    """One sampling step of a micro-batch: the model's repetition penalty, HF's temperature / top-k / top-p
    warpers (the ones ``model.generate`` applies), then one token per row.

    Sampling is per row (Gumbel-max): the token is ``argmax(warped scores + Gumbel noise)`` with the row's own
    counter-based noise (:class:`RowKeys`), which draws exactly from ``softmax(warped scores)`` (what
    ``torch.multinomial`` drew from) but makes a row's samples independent of the other rows of its batch.
    Greedy (``temperature=0``) is ``argmax``.
    """

    def __init__(self, temperature: float, top_p: float, top_k: int, repetition_penalty: float = 1.0):
        self.sample = temperature > 0
        #: ``generate`` applies the model's ``generation_config.repetition_penalty`` (before the warpers, greedy
        #: too) to the tokens of each row's input: its prompt, its left padding and what it generated so far.
        self.penalty = float(repetition_penalty or 1.0)
        self.scale = temperature if self.sample else 1.0
        self.warpers = []
        if self.sample:
            from transformers.generation.logits_process import (
                TemperatureLogitsWarper,
                TopKLogitsWarper,
                TopPLogitsWarper,
            )

            if temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(temperature))
            if top_k:
                self.warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
            if top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))

    def choose(self, scores: torch.Tensor, keys: RowKeys | None, step: int) -> torch.Tensor:
        """One token per row of ``scores`` (after any processors: penalty, constraint masks), sampled with the
        rows' ``keys`` at response position ``step``."""
        if not self.sample:
            return torch.argmax(scores, dim=-1)
        if keys is None or len(keys) != scores.shape[0]:
            raise ValueError("sampling needs one key per row")
        for warper in self.warpers:
            scores = warper(None, scores)
        dtype = torch.float32 if scores.device.type == "mps" else torch.float64
        return torch.argmax(scores.to(dtype) + keys.gumbel(step, scores.shape[-1], dtype), dim=-1)

    def __call__(self, logits: torch.Tensor, keys: RowKeys | None, step: int, present: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens and behaviour log-probs of rows whose float32 logits are given (``keys``: theirs; ``present``:
        [rows, vocab], the tokens the repetition penalty applies to). The log-probs are those of the raw logits,
        as the plain path records them."""
        scores = logits
        if self.penalty != 1.0 and present is not None:
            # RepetitionPenaltyLogitsProcessor's arithmetic, on a presence mask instead of gather/scatter.
            penalised = torch.where(logits < 0, logits * self.penalty, logits / self.penalty)
            scores = torch.where(present, penalised, logits)
        tokens = self.choose(scores, keys, step)
        logprobs = torch.log_softmax(logits / self.scale, dim=-1).gather(1, tokens[:, None]).squeeze(1)
        return tokens, logprobs


class SamplingProcessor:
    """``model.generate``'s sampling through :class:`Sampler` (the plain path): a ``LogitsProcessor``, last in
    the list, that picks each row's token with its own keys and leaves only it (0, every other token
    ``-inf``) for ``generate``'s greedy ``argmax``. ``prompt_width``: where generation started."""

    def __init__(self, sampler: Sampler, keys: RowKeys, prompt_width: int):
        self.sampler, self.keys, self.prompt_width = sampler, keys, prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        tokens = self.sampler.choose(scores.float(), self.keys, input_ids.shape[1] - self.prompt_width)
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(scores.shape[0], device=scores.device), tokens] = 0.0
        return out


class _RowState:
    """The response of one row as it is sampled, and how it ended."""

    __slots__ = ("tokens", "logprobs", "reason")

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.logprobs: list[float] = []
        self.reason: str | None = None


class _Stops:
    """End-of-response tests in ``model.generate``'s order: EOS (kept), a stop string in the decoded tail of the
    response (the window of :class:`hiergym.agents.policy._StopOnStrings`), ``max_new_tokens``."""

    def __init__(self, tokenizer: Any, eos: Sequence[int], stops: Sequence[str], max_new_tokens: int):
        self.tokenizer = tokenizer
        self.eos = set(eos)
        self.stops = [s for s in stops if s]
        self.window = max((len(s.encode()) for s in self.stops), default=0) + 2
        self.max_new_tokens = max_new_tokens

    def update(self, state: _RowState, token: int, logprob: float) -> bool:
        state.tokens.append(token)
        state.logprobs.append(logprob)
        if token in self.eos:
            state.reason = "stop"
        elif self.stops:
            tail = self.tokenizer.decode(state.tokens[-self.window:], skip_special_tokens=False)
            if any(stop in tail for stop in self.stops):
                state.reason = "stop"
        if state.reason is None and len(state.tokens) >= self.max_new_tokens:
            state.reason = "length"
        return state.reason is not None


# ------------------------------------------------------------------------------------------ the prefix tree
class _Node:
    __slots__ = ("tokens", "kv", "children", "parent", "used", "length")

    def __init__(self, tokens: tuple[int, ...], parent: _Node | None):
        self.tokens = tokens
        #: [layers, 2, kv heads, len(tokens), head dim], or None until computed.
        self.kv: torch.Tensor | None = None
        self.children: dict[int, _Node] = {}
        self.parent = parent
        self.used = 0
        #: Tokens on the path from the root to the end of this node.
        self.length = (parent.length if parent is not None else 0) + len(tokens)

    @property
    def ready(self) -> bool:
        return self.parent is None or self.kv is not None


class PrefixCache:
    """A radix tree of token sequences whose nodes hold the KV states of their tokens (see the module docstring).

    ``max_tokens`` bounds the tokens kept between calls (least recently used leaves go first); 0 keeps
    nothing between calls (every call still shares prefixes within itself).
    """

    def __init__(self, max_tokens: int = DEFAULT_PREFIX_CACHE_TOKENS):
        self.max_tokens = max_tokens
        self.clear()

    def clear(self) -> None:
        self.root = _Node((), None)
        self.tokens = 0
        self.clock = 0
        self.fingerprint: tuple | None = None

    def check(self, model: Any) -> None:
        """Drop everything if the weights changed since the states were computed."""
        fingerprint = weights_fingerprint(model)
        if fingerprint != self.fingerprint:
            self.clear()
            self.fingerprint = fingerprint

    def insert(self, sequence: Sequence[int], created: list[_Node] | None = None) -> _Node:
        """The node whose path is ``sequence``, splitting nodes and adding (uncomputed) ones as needed."""
        self.clock += 1
        sequence = tuple(sequence)
        node, i = self.root, 0
        node.used = self.clock
        while i < len(sequence):
            child = node.children.get(sequence[i])
            if child is None:
                child = _Node(sequence[i:], node)
                node.children[sequence[i]] = child
                self.tokens += len(child.tokens)
                if created is not None:
                    created.append(child)
                child.used = self.clock
                return child
            k = len(child.tokens)
            if sequence[i:i + k] != child.tokens:  # the sequence leaves this node inside it: find where
                k, limit = 0, min(k, len(sequence) - i)
                while k < limit and child.tokens[k] == sequence[i + k]:
                    k += 1
            if k < len(child.tokens):
                child = self._split(child, k, created)
            child.used = self.clock
            node, i = child, i + k
        return node

    def _split(self, node: _Node, k: int, created: list[_Node] | None) -> _Node:
        """Split ``node`` after its first ``k`` tokens; returns the new upper part (``node`` stays the lower)."""
        parent = node.parent
        upper = _Node(node.tokens[:k], parent)
        parent.children[node.tokens[0]] = upper
        node.tokens = node.tokens[k:]
        node.parent = upper
        upper.children[node.tokens[0]] = node
        upper.used = node.used
        if node.kv is not None:
            upper.kv, node.kv = node.kv[:, :, :, :k], node.kv[:, :, :, k:]
        elif created is not None:
            created.append(upper)
        return upper

    def evict(self) -> None:
        """Drop least recently used leaves until the kept tokens fit ``max_tokens``."""
        if self.max_tokens <= 0:
            fingerprint = self.fingerprint
            self.clear()
            self.fingerprint = fingerprint
            return
        if self.tokens <= self.max_tokens:
            return
        leaves = []
        stack = [self.root]
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            if not node.children and node.parent is not None:
                leaves.append(node)
        import heapq

        heap = [(n.used, id(n), n) for n in leaves]
        heapq.heapify(heap)
        target = int(self.max_tokens * 0.8)
        while heap and self.tokens > target:
            _, _, node = heapq.heappop(heap)
            parent = node.parent
            del parent.children[node.tokens[0]]
            self.tokens -= len(node.tokens)
            if parent.parent is not None and not parent.children:
                heapq.heappush(heap, (parent.used, id(parent), parent))


def _gather_past(ends: list[_Node], width: int, room: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Per-layer (keys, values) [rows, heads, width, dim] of the paths from the root to each of ``ends``,
    left-padded with zeros (and ``room`` more columns, zeros, to decode into). Without gradients every node's
    states are copied once per row straight into place;
    with gradients each distinct path is concatenated once and indexed per row (slice assignments would make
    the backward pass copy the whole buffer once per assignment)."""
    if width == 0:
        return None
    template = next(n.kv for n in ends if n.parent is not None)
    layers, _, heads, _, dim = template.shape
    if torch.is_grad_enabled() and template.requires_grad:
        distinct: dict[int, int] = {}
        paths = []
        for end in ends:
            if id(end) in distinct:
                continue
            distinct[id(end)] = len(paths)
            parts, node = [], end
            while node.parent is not None:
                parts.append(node.kv)
                node = node.parent
            path = torch.cat(parts[::-1], dim=3) if parts else template.new_zeros((layers, 2, heads, 0, dim))
            paths.append(torch.nn.functional.pad(path, (0, 0, width - end.length, 0)))
        index = torch.tensor([distinct[id(end)] for end in ends], device=template.device)
        past = torch.stack(paths, dim=2).index_select(2, index)
    else:
        # Zeros: the padding, and the room, which is not attended before it is written but which SDPA may
        # read (0 x NaN is NaN).
        past = template.new_zeros((layers, 2, len(ends), heads, width + room, dim))
        for row, end in enumerate(ends):
            offset, node = width - end.length, end
            while node.parent is not None:
                start = offset + node.length - len(node.tokens)
                past[:, :, row, :, start:start + len(node.tokens)] = node.kv
                node = node.parent
    return [(past[layer, 0], past[layer, 1]) for layer in range(layers)]


def _segment_forward(model: Any, pad_id: int, parents: list[_Node], segments: list[Sequence[int]], *,
                     logits: bool = False, hidden: bool = False) -> tuple[Any, int, torch.Tensor]:
    """One forward of token ``segments``, each continuing the path of its parent node (the parents' KV as the
    cache, left-padded; the segments right-padded). Returns the output, the past width and the per-layer KV
    of the whole batch after the forward ([layers, 2, rows, heads, past + segment width, dim])."""
    device = next(model.parameters()).device
    lengths = [p.length for p in parents]
    width = max(lengths)
    seg_width = max(len(s) for s in segments)
    rows = len(segments)
    past = _gather_past(parents, width)
    input_ids = torch.full((rows, seg_width), pad_id, dtype=torch.long)
    attention = torch.zeros((rows, width + seg_width), dtype=torch.long)
    for r, (segment, length) in enumerate(zip(segments, lengths, strict=True)):
        input_ids[r, :len(segment)] = torch.tensor(list(segment), dtype=torch.long)
        attention[r, width - length:width + len(segment)] = 1
    position_ids = torch.tensor(lengths, dtype=torch.long)[:, None] + torch.arange(seg_width)[None, :]
    cache = _new_cache(past)
    out = _call(model, input_ids.to(device), attention.to(device), position_ids.to(device), cache,
                last_only=not logits, hidden=hidden)
    # Only the new columns: [layers, 2, rows, heads, segment width, dim].
    kv = torch.stack([torch.stack((keys[:, :, width:], values[:, :, width:]))
                      for keys, values in _layer_kv(_output_cache(out))])
    return out, width, kv


#: Cost units of the prefill chunker (one unit: a query attending to one key): a token's other work (its
#: projections and MLP) and a forward's fixed cost, which a chunk's padding may waste before a new forward pays.
_TOKEN_COST = 256
_FORWARD_COST = 131_072


def _prefill_chunks(wave: list[_Node], budget: int) -> list[list[_Node]]:
    """``wave``'s nodes in forwards: sorted by segment length (then past length), a chunk grows while the work
    its padding wastes (right-padded segments, left-padded pasts; counted in query-key pairs plus a token cost)
    stays within a forward's fixed cost or a fifth of its real work, and its rows x (past + segment) tokens
    within ``budget``. Sorting by past length first put 3- and 179-token segments in one forward, most of the
    prefill's time in the default run."""
    def work(n: _Node) -> int:
        return len(n.tokens) * (n.parent.length + len(n.tokens) + _TOKEN_COST)

    order = sorted(wave, key=lambda n: (len(n.tokens), n.parent.length))
    chunks: list[list[_Node]] = []
    chunk: list[_Node] = []
    widest = longest = real = 0
    for node in order:
        if chunk:
            w, s_ = max(widest, node.parent.length), max(longest, len(node.tokens))
            rows, useful = len(chunk) + 1, real + work(node)
            padded = rows * s_ * (w + s_ + _TOKEN_COST)
            if rows * (w + s_) > budget or padded - useful > max(_FORWARD_COST, useful // 5):
                chunks.append(chunk)
                chunk, widest, longest, real = [], 0, 0, 0
        chunk.append(node)
        widest, longest = max(widest, node.parent.length), max(longest, len(node.tokens))
        real += work(node)
    if chunk:
        chunks.append(chunk)
    return chunks


def _budget_chunks(wave: list[_Node], budget: int) -> list[list[_Node]]:
    """``wave``'s nodes sorted by past length (then segment length), chunks bounded by rows x (past + segment)
    tokens: how the packed update groups its prompts. Its figures were measured with these chunks (another
    grouping changes the gradients' low bits, and a run's figures with them), so it keeps them."""
    order = sorted(wave, key=lambda n: (n.parent.length, len(n.tokens)))
    chunks: list[list[_Node]] = []
    start = 0
    while start < len(order):
        end, widest, longest = start, 0, 0
        while end < len(order):
            widest = max(widest, order[end].parent.length)
            longest = max(longest, len(order[end].tokens))
            if end > start and (end - start + 1) * (widest + longest) > budget:
                break
            end += 1
        chunks.append(order[start:end])
        start = end
    return chunks


def compute_nodes(model: Any, pad_id: int, nodes: list[_Node], budget: int = PREFILL_BUDGET,
                  by_segment_length: bool = False) -> int:
    """Compute the KV of uncomputed ``nodes``, one level of the tree per batched forward (each node's ancestors
    are computed before it), in :func:`_prefill_chunks` (``by_segment_length``: generation) or
    :func:`_budget_chunks`. Returns the number of tokens forwarded."""
    pending = [n for n in nodes if n.kv is None]
    forwarded = 0
    while pending:
        wave = [n for n in pending if n.parent.ready]
        pending = [n for n in pending if not n.parent.ready]
        if not wave:
            raise RuntimeError("prefix tree: uncomputed nodes without a computed parent")
        for chunk in (_prefill_chunks if by_segment_length else _budget_chunks)(wave, budget):
            _, _, kv = _segment_forward(model, pad_id, [n.parent for n in chunk], [n.tokens for n in chunk])
            for r, node in enumerate(chunk):
                node.kv = kv[:, :, r, :, :len(node.tokens)].contiguous()
            forwarded += sum(len(n.tokens) for n in chunk)
    return forwarded


@torch.no_grad()
def cached_generate(model: Any, store: PrefixCache, encoded: list[list[int]], order: list[int],
                    batch_size: int, pad_id: int, sampler: Sampler, stops: _Stops,
                    stats: dict[str, int] | None = None, tries: Sequence[Any] | None = None,
                    seeds: Sequence[int] | None = None, decode_batch_bytes: int = DEFAULT_DECODE_BATCH_BYTES
                    ) -> list[tuple[list[int], list[float], str]]:
    """All prompts of a call: the tree of their prefixes (all but the last token) computed once, then the plain
    path's micro-batches, in its order and merged while they fit ``decode_batch_bytes``, decoded from it,
    starting with the prompts' last tokens.
    ``tries`` (per prompt, a :class:`~hiergym.agents.constraint.ChoiceTrie` or None) constrain the responses;
    ``seeds`` (per prompt; needed when sampling) key each row's random stream (:class:`RowKeys`);
    ``decode_batch_bytes``: see :data:`DEFAULT_DECODE_BATCH_BYTES` (0: decode in the plain micro-batches)."""
    store.check(model)
    created: list[_Node] = []
    ends = [store.insert(e[:-1], created) for e in encoded]
    computed = compute_nodes(model, pad_id, created, by_segment_length=True)
    if stats is not None:
        stats["prompt_tokens_seen"] = stats.get("prompt_tokens_seen", 0) + sum(len(e) for e in encoded)
        # The last prompt token of each row is computed by its first decode step.
        stats["prompt_tokens_computed"] = stats.get("prompt_tokens_computed", 0) + computed + len(encoded)
    results: list[tuple[list[int], list[float], str] | None] = [None] * len(encoded)
    device = next(model.parameters()).device
    lengths = [len(e) for e in encoded]
    # Whether generate would see a row left-padded: shorter than the longest prompt of its plain micro-batch
    # (a repetition penalty then counts the pad token as present, whatever batch the row decodes in).
    padded = [False] * len(encoded)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        longest = max(lengths[i] for i in rows)
        for i in rows:
            padded[i] = lengths[i] < longest
    computed_node = next((n for n in ends if n.kv is not None), None)
    token_bytes = (computed_node.kv[:, :, :, :1].numel() * computed_node.kv.element_size()
                   if computed_node is not None else 0)
    budget = decode_batch_bytes // token_bytes if token_bytes else 0
    for rows in _decode_batches(order, lengths, batch_size, stops.max_new_tokens, budget):
        keys = RowKeys([seeds[i] for i in rows], device) if seeds is not None else None
        outs = _decode(model, store, [encoded[i] for i in rows], [ends[i] for i in rows], [padded[i] for i in rows],
                       pad_id, sampler, stops, device, [tries[i] for i in rows] if tries is not None else None, keys)
        for i, out in zip(rows, outs, strict=True):
            results[i] = out
    store.evict()
    return [r for r in results if r is not None]


def _decode_batches(order: list[int], lengths: list[int], batch_size: int, max_new_tokens: int,
                    budget: int) -> list[list[int]]:
    """``order`` in the plain path's micro-batches of ``batch_size``, consecutive ones merged (at most
    :data:`MAX_MERGED_MICRO_BATCHES`) while the merged batch's rows x (its longest prompt + ``max_new_tokens``)
    stay within ``budget`` tokens (a batch one micro-batch long may exceed it; 0: no merging)."""
    batches: list[list[int]] = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        if batches:
            merged = batches[-1] + rows
            if (len(merged) <= MAX_MERGED_MICRO_BATCHES * batch_size
                    and len(merged) * (max(lengths[i] for i in merged) + max_new_tokens) <= budget):
                batches[-1] = merged
                continue
        batches.append(rows)
    return batches


def _decode(model: Any, store: PrefixCache, encoded: list[list[int]], ends: list[_Node], padded: Sequence[bool],
            pad_id: int, sampler: Sampler, stops: _Stops, device: torch.device, tries: Sequence[Any] | None = None,
            keys: RowKeys | None = None) -> list[tuple[list[int], list[float], str]]:
    rows = len(encoded)
    constrained = tries is not None and any(t is not None for t in tries)
    lengths = [n.length for n in ends]
    width = max(lengths)
    room = stops.max_new_tokens
    past = _gather_past(ends, width, room=room)
    # SDPA attends over the whole buffers (the mask hides what is not written yet; `_gather_past` zeroes it).
    cache = _decode_cache(past, width, getattr(model.config, "_attn_implementation", None) == "sdpa")
    # Only the buffer-backed layers return whole buffers (a DynamicCache fallback returns the written columns).
    whole = all(getattr(layer, "whole", False) for layer in getattr(cache, "layers", None) or [None])
    attention = torch.zeros((rows, width + (room if whole else 1)), dtype=torch.long)
    for r, length in enumerate(lengths):
        attention[r, width - length:width + 1] = 1
    attention = attention.to(device)
    inputs = torch.tensor([e[-1] for e in encoded], dtype=torch.long, device=device)
    position = torch.tensor(lengths, dtype=torch.long, device=device)
    states = [_RowState() for _ in range(rows)]
    # Batch position -> row, None once the row has finished. Finished rows stay in the batch (their samples
    # are ignored) until a quarter of it has finished: dropping them from the cache copies all of it.
    batch_rows: list[int | None] = list(range(rows))
    finished = 0
    present = None
    step = 0
    while True:
        out = _call(model, inputs[:, None], attention, position[:, None], cache, last_only=True)
        cache = _output_cache(out)
        logits = out.logits[:, -1].float()
        if constrained:
            logits = mask_logits(logits, [tries[r].allowed(states[r].tokens)
                                          if r is not None and tries[r] is not None else None
                                          for r in batch_rows])
        if sampler.penalty != 1.0 and present is None:
            present = _prompt_tokens(encoded, padded, pad_id, logits.shape[-1], device)
        tokens, logprobs = sampler(logits, keys, step, present)
        step += 1
        for k, (r, token, logprob) in enumerate(zip(batch_rows, tokens.tolist(), logprobs.tolist(), strict=True)):
            if r is not None and stops.update(states[r], token, logprob):
                _remember(store, encoded[r], ends[r], states[r].tokens, cache, k, width)
                batch_rows[k] = None
                finished += 1
        if finished == len(batch_rows):
            break
        if present is not None:
            present[torch.arange(len(batch_rows), device=device), tokens] = True
        if 4 * finished >= len(batch_rows):
            keep = [k for k, r in enumerate(batch_rows) if r is not None]
            index = torch.tensor(keep, device=device)
            cache.reorder_cache(index)
            attention, position, tokens = attention[index], position[index], tokens[index]
            present = present[index] if present is not None else None
            keys = keys.select(index) if keys is not None else None
            batch_rows, finished = [batch_rows[k] for k in keep], 0
        inputs = tokens
        if whole:
            attention[:, width + step] = 1
        else:
            attention = torch.cat([attention, attention.new_ones((len(batch_rows), 1))], dim=1)
        position = position + 1
    return [(s.tokens, s.logprobs, s.reason or "length") for s in states]


def _prompt_tokens(encoded: list[list[int]], padded: Sequence[bool], pad_id: int, vocab: int,
                   device: torch.device) -> torch.Tensor:
    """[rows, vocab] True where a token is in a row's input as ``generate`` sees it: the prompt, and the pad
    token for a row ``generate`` left-pads (shorter than its micro-batch's longest prompt)."""
    present = torch.zeros((len(encoded), vocab), dtype=torch.bool)
    for row, (ids, pads) in enumerate(zip(encoded, padded, strict=True)):
        present[row, [i for i in ids if i < vocab]] = True
        if pads:
            present[row, pad_id] = True
    return present.to(device)


def _remember(store: PrefixCache, prompt: list[int], end: _Node, response: list[int], cache: Any, row: int,
              width: int) -> None:
    """Add the tokens a row's decode computed (its prompt's last token and the response but its last token) to
    the prefix cache, under its prompt's node."""
    if store.max_tokens <= 0:
        return
    fed = [prompt[-1], *response[:-1]]
    created: list[_Node] = []
    node = store.insert([*prompt[:-1], *fed], created)
    if not created:
        return
    kv = torch.stack([torch.stack((keys[row, :, width:width + len(fed)], values[row, :, width:width + len(fed)]))
                      for keys, values in _layer_kv(cache)])
    # Only the new nodes (the part of the path no earlier row added) take their slice of the states.
    for new in created:
        begin = new.length - len(new.tokens) - end.length
        new.kv = kv[:, :, :, begin:begin + len(new.tokens)].contiguous()
    del node


# ------------------------------------------------------------------------------------------ packed scoring
def packed_logprobs(model: Any, pad_id: int, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                    temperatures: Sequence[float], *, return_entropy: bool = False, return_hidden: bool = False,
                    stats: dict[str, int] | None = None,
                    allowed: Sequence[Sequence[Sequence[int]] | None] | None = None) -> dict[str, list[torch.Tensor]]:
    """Log-probs of each response given its prompt (with gradients when enabled), the prompts' shared prefixes
    and each distinct prompt forwarded once (see the module docstring).

    Returns ``{"logprobs": [...], "entropy": [...], "hidden": [...]}``: per pair a 1-D float32 tensor of the
    response's token log-probs at its temperature, the entropies of the same distributions (with
    ``return_entropy``) and the last hidden state at the prompt's final token (with ``return_hidden``, what
    :class:`hiergym.training.optimize.ValueHead` reads). ``allowed``: per pair None or the allowed tokens at
    each response position (constrained decoding's masks, :func:`~hiergym.agents.constraint.masked_log_softmax`).
    """
    store = PrefixCache(max_tokens=0)
    created: list[_Node] = []
    ends = [store.insert(list(p)[:-1], created) for p in prompts]
    forwarded = compute_nodes(model, pad_id, created)
    segments = [[p[-1], *r] for p, r in zip(prompts, responses, strict=True)]
    out, _, _ = _segment_forward(model, pad_id, ends, segments, logits=True, hidden=return_hidden)
    forwarded += sum(len(s) for s in segments)
    if stats is not None:
        stats["forward_tokens"] = stats.get("forward_tokens", 0) + forwarded
    device = out.logits.device
    result: dict[str, list[torch.Tensor]] = {"logprobs": [], "entropy": [], "hidden": []}
    for row, (response, temperature) in enumerate(zip(responses, temperatures, strict=True)):
        n = len(response)
        step, entropy = masked_log_softmax(out.logits[row, :n], temperature,
                                           allowed[row] if allowed is not None else None,
                                           return_entropy=return_entropy)
        target = torch.tensor(list(response), dtype=torch.long, device=device)[:, None]
        result["logprobs"].append(step.gather(1, target).squeeze(1))
        if return_entropy:
            result["entropy"].append(entropy)
        if return_hidden:
            result["hidden"].append(out.hidden_states[-1][row, 0])
    return result
