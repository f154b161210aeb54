"""The causal-LM policy on the built-in tiny model: generation, log-probs, stop strings, save/load."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from hiergym.agents.policy import CausalLMPolicy, ModelNotAvailableError  # noqa: E402
from hiergym.agents.tiny import BOS_ID, BYTE_OFFSET, EOS_ID, build_byte_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def policy() -> CausalLMPolicy:
    return CausalLMPolicy.tiny(seed=0)


def test_byte_tokenizer_round_trips_any_text():
    tok = build_byte_tokenizer()
    text = "push up\n  <action>X</action> é{}"
    ids = tok(text)["input_ids"]
    assert ids[0] == BOS_ID
    assert ids[1:] == [BYTE_OFFSET + b for b in text.encode()]
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_generate_records_tokens_and_behaviour_logprobs(policy):
    prompts = ["short", "a much longer prompt " * 5]
    outs = policy.generate(prompts, max_new_tokens=12, temperature=1.0, seed=3)
    assert len(outs) == 2
    for out, prompt in zip(outs, prompts, strict=True):
        assert out.prompt_text == prompt
        assert out.prompt_token_ids == policy.encode_prompt(prompt)
        assert 1 <= len(out.response_token_ids) <= 12
        assert len(out.response_logprobs) == len(out.response_token_ids)
        assert all(lp <= 0 for lp in out.response_logprobs)
    # The recorded behaviour log-probs are what the (left-padding-free) training forward recomputes.
    recomputed = policy.sequence_logprobs([o.prompt_token_ids for o in outs],
                                          [o.response_token_ids for o in outs], temperature=1.0)
    for out, lp in zip(outs, recomputed, strict=True):
        assert lp.requires_grad
        assert torch.allclose(lp.detach(), torch.tensor(out.response_logprobs), atol=1e-4)


def test_same_seed_same_samples_and_greedy_is_deterministic(policy):
    a = policy.generate(["abc", "de"], max_new_tokens=6, temperature=1.0, seed=7)
    b = policy.generate(["abc", "de"], max_new_tokens=6, temperature=1.0, seed=7)
    assert [o.response_token_ids for o in a] == [o.response_token_ids for o in b]
    g1 = policy.generate(["abc"], max_new_tokens=6, temperature=0)
    g2 = policy.generate(["abc", "xyz"], max_new_tokens=6, temperature=0)
    assert g1[0].response_token_ids == g2[0].response_token_ids  # padding does not change the result


def test_stop_strings_cut_the_response(policy):
    # Greedy decoding of the untrained model repeats one byte; stopping on that byte ends after it.
    first = policy.generate(["hello"], max_new_tokens=5, temperature=0)[0]
    byte = first.response_text[0]
    out = policy.generate(["hello"], max_new_tokens=5, temperature=0, stop=[byte])[0]
    assert out.response_text == byte
    assert out.finish_reason == "stop"
    assert len(out.response_token_ids) == len(byte.encode())


def test_entropy_and_gradient_flow(policy):
    ids = policy.encode_prompt("grad")
    logprobs, entropy = policy.sequence_logprobs([ids], [[BYTE_OFFSET + 65, EOS_ID]], return_entropy=True)
    assert logprobs[0].shape == (2,) and entropy[0].shape == (2,)
    logprobs[0].sum().backward()
    grads = [p.grad for p in policy.model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    policy.model.zero_grad(set_to_none=True)


def test_save_and_load_round_trip(policy, tmp_path):
    policy.save(tmp_path / "ckpt")
    loaded = CausalLMPolicy.tiny(tmp_path / "ckpt")
    a = policy.generate(["same"], max_new_tokens=6, temperature=0)[0]
    b = loaded.generate(["same"], max_new_tokens=6, temperature=0)[0]
    assert a.response_token_ids == b.response_token_ids
    assert not loaded.use_chat_template


def test_missing_models_give_a_clear_error(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="tiny checkpoint"):
        CausalLMPolicy.tiny(tmp_path / "nothing")
    with pytest.raises(ModelNotAvailableError, match="offline"):
        CausalLMPolicy.from_pretrained("no-such-org/no-such-model-xyz", device="cpu")


def test_chat_template_is_applied_when_the_tokenizer_has_one():
    from hiergym.agents.tiny import build_tiny_model

    tokenizer = build_byte_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    chat = CausalLMPolicy(build_tiny_model(seed=1), tokenizer, system_prompt="be brief")
    assert chat.use_chat_template
    text = chat.format_prompt("push the box")
    assert text == "<system>be brief</system><user>push the box</user><assistant>"
    # The template's text is encoded as is (no extra special tokens).
    assert chat.encode_prompt("push the box") == [BYTE_OFFSET + b for b in text.encode()]
    out = chat.generate(["push the box"], max_new_tokens=3, temperature=0)[0]
    assert out.prompt_text == text and len(out.response_token_ids) == 3
    plain = CausalLMPolicy(build_tiny_model(seed=1), build_byte_tokenizer(), use_chat_template=False)
    assert plain.format_prompt("push the box") == "push the box"


def test_long_prompts_are_cut_from_the_left():
    from hiergym.agents.tiny import build_tiny_model

    short = CausalLMPolicy(build_tiny_model(seed=0), build_byte_tokenizer(), max_prompt_tokens=16)
    ids = short.encode_prompt("x" * 100 + "the end")
    assert len(ids) == 16 and bytes(i - BYTE_OFFSET for i in ids[-7:]) == b"the end"
    out = short.generate(["y" * 200], max_new_tokens=2, temperature=0.5, top_p=0.9, seed=0)[0]
    assert len(out.prompt_token_ids) == 16 and len(out.response_token_ids) == 2


def test_tiny_architecture_overrides():
    wider = CausalLMPolicy.tiny(seed=0, architecture={"hidden_size": 64, "num_hidden_layers": 2,
                                                      "num_attention_heads": 2, "num_key_value_heads": 1})
    assert wider.model.config.hidden_size == 64 and wider.model.config.num_key_value_heads == 1
    assert wider.num_parameters() < CausalLMPolicy.tiny(seed=0).num_parameters()
    assert len(wider.generate(["x"], max_new_tokens=2, temperature=0)[0].response_token_ids) == 2
