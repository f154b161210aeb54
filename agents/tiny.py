"""The built-in ``tiny`` model: a small Llama-architecture transformer with a byte-level tokenizer, built
entirely in code (no download), trainable from scratch on a CPU.

- Tokenizer: one token per byte (256) plus ``<pad>``, ``<bos>``, ``<eos>``; byte ``b`` has id ``b + 3``. It is
  a Hugging Face ``tokenizers`` byte-level model wrapped as a fast tokenizer, so it saves and loads with the
  checkpoint (``save_pretrained`` / ``AutoTokenizer.from_pretrained``) and needs no vocabulary file.
- Or (``tokenizer="env"`` in the trainer) a byte-level BPE tokenizer trained offline on the environment's own
  text (:func:`build_text_tokenizer`), so an object name is a token or two; saved with the checkpoint the same way.
- Either can hold the output format's tags as tokens of their own (``format_tokens=True``, :data:`FORMAT_TOKENS`):
  a hierarchical answer's ``<subgoal>...</subgoal>`` and ``<subgoal_done/>`` cost one decode step each instead
  of 9, 10 and 15 bytes.
- Model: ``LlamaForCausalLM`` from :class:`TinyModelConfig` (4 layers, width 128, tied embeddings; about 0.8M
  parameters), so the trainer treats it exactly like any Hugging Face causal LM.

``tiny`` (no checkpoint) is a randomly initialised model (seeded); ``tiny:DIR`` loads a trained one saved with
:meth:`hiergym.agents.policy.CausalLMPolicy.save`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from hiergym.agents.parsing import SUBGOAL_DONE, SUBGOAL_FAILED

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
#: The output format's tags (``docs/agents.md``), one token each under ``format_tokens=True``; ids after the
#: base vocabulary, in this order. Ordinary (not special) tokens: decoded text keeps them.
FORMAT_TOKENS = ("<think>", "</think>", "<action>", "</action>", "<subgoal>", "</subgoal>", SUBGOAL_DONE,
                 SUBGOAL_FAILED)
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
BYTE_OFFSET = len(SPECIAL_TOKENS)
VOCAB_SIZE = BYTE_OFFSET + 256


@dataclass
class TinyModelConfig:
    """Architecture of the built-in tiny model (a Llama config with small sizes)."""

    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    #: Longest prompt + response in bytes; prompts beyond it are cut from the left.
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True


def build_byte_tokenizer(format_tokens: bool = False):
    """The byte-level fast tokenizer (``<bos>`` prepended, no merges: one token per byte); with
    ``format_tokens``, :data:`FORMAT_TOKENS` are one token each."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_to_char = bytes_to_unicode()
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for byte in range(256):
        vocab[byte_to_char[byte]] = BYTE_OFFSET + byte
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    # use_regex=False: no word splitting, so every byte of the text is one token, spaces included.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return _fast_tokenizer(tokenizer, format_tokens)


def _fast_tokenizer(tokenizer: Any, format_tokens: bool = False) -> Any:
    """A ``tokenizers`` byte-level model with the special tokens, BOS template and left padding (and the
    format tags as tokens), as a fast tokenizer that saves and loads with ``AutoTokenizer``."""
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast

    if format_tokens:  # matched on the raw text before the byte-level split, wherever they occur
        tokenizer.add_tokens([AddedToken(t, normalized=False, single_word=False) for t in FORMAT_TOKENS])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", BOS_ID)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        model_max_length=TinyModelConfig.max_position_embeddings,
    )
    fast.padding_side = "left"
    return fast


def build_text_tokenizer(texts: Iterable[str], vocab_size: int = 2048, format_tokens: bool = False):
    """A byte-level BPE tokenizer trained on ``texts`` (an environment's own prompts and answers): words the env
    repeats ("cabinet", "soapbar", " go to") become single tokens, and any other text still round-trips (the
    256 bytes are in the vocabulary). Special tokens as the byte tokenizer's (``<pad>`` 0, ``<bos>`` 1,
    ``<eos>`` 2); ``format_tokens`` as :func:`build_byte_tokenizer`'s, after the ``vocab_size`` learned ones.
    Deterministic for the same texts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < BYTE_OFFSET + 256:
        raise ValueError(f"tokenizer vocab_size must be >= {BYTE_OFFSET + 256} (the specials and 256 bytes), "
                         f"got {vocab_size}")
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    # GPT-2's word split: merges stay inside a word and its leading space, so a word is a token or a few.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return _fast_tokenizer(tokenizer, format_tokens)


def build_tiny_model(config: TinyModelConfig | None = None, seed: int = 0, *, vocab_size: int = VOCAB_SIZE,
                     **overrides: Any):
    """A freshly initialised tiny ``LlamaForCausalLM`` (deterministic for a given seed); ``vocab_size``: its
    tokenizer's (the byte tokenizer's by default)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = asdict(config or TinyModelConfig())
    cfg.update(overrides)
    llama_config = LlamaConfig(
        vocab_size=vocab_size,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        attention_bias=False,
        **cfg,
    )
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(llama_config)
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = EOS_ID
    model.generation_config.bos_token_id = BOS_ID
    return model
