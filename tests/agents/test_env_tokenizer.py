"""The tokenizer fitted to an env's text: round trip, compact object names, save/load, and the trainer's use."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from hiergym.agents.policy import CausalLMPolicy
from hiergym.agents.tiny import build_byte_tokenizer, build_text_tokenizer

torch.set_num_threads(1)

TEXTS = ["task: put a cool pan in stoveburner\nYou arrive at cabinet 2. The cabinet 2 is closed.",
         "actions: go to cabinet 1, go to cabinet 2, open cabinet 2, take pan 1 from cabinet 2"] * 40


def test_round_trip_of_any_text_and_short_object_names():
    tokenizer = build_text_tokenizer(TEXTS, vocab_size=400)
    for text in ["go to cabinet 12", "naïve — text\n\twith unicode ✓", "", "take soapbar 2 from cabinet 3"]:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    words = tokenizer("go to cabinet 2", add_special_tokens=False)["input_ids"]
    assert len(words) <= 4 < len(build_byte_tokenizer()("go to cabinet 2", add_special_tokens=False)["input_ids"])
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert build_text_tokenizer(TEXTS, vocab_size=400).get_vocab() == tokenizer.get_vocab()  # deterministic
    with pytest.raises(ValueError, match="vocab_size"):
        build_text_tokenizer(TEXTS, vocab_size=100)


def test_saved_with_the_model_and_loaded_by_auto_tokenizer(tmp_path):
    tokenizer = build_text_tokenizer(TEXTS, vocab_size=400)
    policy = CausalLMPolicy.tiny(seed=0, tokenizer=tokenizer, architecture={"hidden_size": 32, "intermediate_size": 64,
                                                                             "num_hidden_layers": 1})
    assert policy.model.config.vocab_size == len(tokenizer)
    policy.save(tmp_path / "model")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "model")
    text = "open cabinet 2\nYou open the cabinet 2."
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    again = CausalLMPolicy.tiny(tmp_path / "model")
    prompt = again.encode_prompt("go to cabinet 1\n")
    assert prompt == policy.encode_prompt("go to cabinet 1\n")
    with torch.no_grad():
        assert torch.allclose(again.model(torch.tensor([prompt])).logits, policy.model(torch.tensor([prompt])).logits)
