"""The tokenizer fitted to an env's text: round trip, compact object names, save/load, and the trainer's use."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from hiergym.agents.policy import CausalLMPolicy
from hiergym.agents.tiny import FORMAT_TOKENS, build_byte_tokenizer, build_text_tokenizer

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


@pytest.mark.parametrize("build", [build_byte_tokenizer, lambda **kw: build_text_tokenizer(TEXTS, 400, **kw)],
                         ids=["byte", "env"])
def test_format_tokens_make_each_tag_one_token_and_change_nothing_else(build, tmp_path):
    plain, tagged = build(), build(format_tokens=True)
    assert len(tagged) == len(plain) + len(FORMAT_TOKENS)
    tag_ids = [tagged(t, add_special_tokens=False)["input_ids"] for t in FORMAT_TOKENS]
    assert tag_ids == [[len(plain) + k] for k in range(len(FORMAT_TOKENS))]
    text = "<subgoal>take pan</subgoal> and <subgoal_done/>go to cabinet 2 (< subgoal > stays text)"
    ids = tagged(text, add_special_tokens=False)["input_ids"]
    assert tagged.decode(ids) == text
    assert ids[0] == tag_ids[4][0] and tag_ids[6][0] in ids
    untagged = "go to cabinet 2\nYou arrive at cabinet 2."  # text without a tag: the same ids as before
    assert tagged(untagged)["input_ids"] == plain(untagged)["input_ids"]
    tagged.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)(text)["input_ids"] == tagged(text)["input_ids"]


def test_a_single_token_stop_string_ends_the_answer_in_both_generation_paths():
    arch = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    outs = {}
    for mode in ("plain", "cached"):
        policy = CausalLMPolicy.tiny(seed=0, tokenizer=build_byte_tokenizer(format_tokens=True), architecture=arch,
                                     generation=mode)
        stop_id = policy.tokenizer.convert_tokens_to_ids("</subgoal>")
        head = torch.nn.Linear(arch["hidden_size"], len(policy.tokenizer), bias=True)
        with torch.no_grad():  # an untied head whose bias makes </subgoal> a likely token at every step
            head.weight.copy_(policy.model.lm_head.weight)
            head.bias.zero_()
            head.bias[stop_id] = 4.0
        policy.model.lm_head = head
        outs[mode] = policy.generate(["plan:\n"] * 6, max_new_tokens=30, temperature=1.0, seed=3,
                                     stop=["</subgoal>"])
    plain, cached = outs["plain"], outs["cached"]
    assert [o.response_token_ids for o in cached] == [o.response_token_ids for o in plain]
    stopped = [o for o in plain if o.finish_reason == "stop"]
    assert stopped and all(o.response_token_ids[-1] == stop_id and o.response_text.endswith("</subgoal>")
                           for o in stopped)
