"""Packed scoring (prompts' shared prefixes and each distinct prompt forwarded once) gives the log-probs and the
gradient of unpacked scoring; truncated importance sampling weights the policy-gradient term as documented."""

from __future__ import annotations

import random

import pytest
import torch

from hiergym.agents.generation import packed_logprobs
from hiergym.agents.policy import CausalLMPolicy
from hiergym.training.loss import clipped_policy_loss
from hiergym.training.optimize import TrainSequence, ValueHead, policy_update

torch.set_num_threads(1)

ARCH = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}


@pytest.fixture()
def policy() -> CausalLMPolicy:
    return CausalLMPolicy.tiny(seed=0, architecture=ARCH)


def _rows(policy) -> list[TrainSequence]:
    """Rows like a group's: one prompt with several responses (and a repeated row), prompts that share a prefix,
    a prompt that is a prefix of another, an unrelated one."""
    torch.manual_seed(0)
    texts = [("room A\nplayer at 2,3\n", "left"), ("room A\nplayer at 2,3\n", "up"),
             ("room A\nplayer at 2,3\n", "left"), ("room A\nplayer at 2,4\n", "down"),
             ("room A\n", "right"), ("room A\nplayer at 2,3\nbox moved\n", "left"), ("other room\n", "up")]
    rows = []
    for k, (prompt, response) in enumerate(texts):
        prompt_ids = policy.encode_prompt(prompt)
        response_ids = policy.tokenizer(response, add_special_tokens=False)["input_ids"] + [policy.eos_token_ids[0]]
        with torch.no_grad():
            old = policy.sequence_logprobs([prompt_ids], [response_ids])[0]
        rows.append(TrainSequence(prompt_ids, response_ids, (old + 0.3 * torch.randn_like(old)).tolist(),
                                  advantage=(-1.0) ** k * (0.5 + 0.25 * k), value_target=0.1 * k, old_value=0.0))
    return rows


def test_packed_logprobs_and_entropies_equal_unpacked(policy) -> None:
    rows = _rows(policy)
    prompts, responses = [r.prompt_ids for r in rows], [r.response_ids for r in rows]
    temperatures = [1.0, 0.7, 1.0, 1.3, 1.0, 0.7, 1.0]
    stats: dict[str, int] = {}
    packed = packed_logprobs(policy.model, policy.tokenizer.pad_token_id, prompts, responses, temperatures,
                             return_entropy=True, stats=stats)
    for k, (prompt, response, t) in enumerate(zip(prompts, responses, temperatures, strict=True)):
        logps, entropy = policy.sequence_logprobs([prompt], [response], temperature=t, return_entropy=True)
        torch.testing.assert_close(packed["logprobs"][k], logps[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(packed["entropy"][k], entropy[0], atol=1e-5, rtol=1e-5)
    # The shared "room A\n..." prefixes and the repeated prompt are forwarded once.
    assert stats["forward_tokens"] < sum(len(p) + len(r) for p, r in zip(prompts, responses, strict=True)) * 0.6


def _update_change(policy, rows, micro_batch_size: int = 3, **kwargs) -> tuple[list[torch.Tensor], dict]:
    """Parameter change of one plain-SGD step (lr 1, no gradient clipping): minus the gradient used."""
    before = [p.detach().clone() for p in policy.model.parameters()]
    optimizer = torch.optim.SGD(policy.model.parameters(), lr=1.0)
    summary = policy_update(policy, optimizer, rows, micro_batch_size=micro_batch_size, clip_low=0.2, clip_high=0.28,
                            max_grad_norm=1e9, rng=random.Random(0), **kwargs)
    change = [b - p.detach() for b, p in zip(before, policy.model.parameters(), strict=True)]
    with torch.no_grad():
        for p, b in zip(policy.model.parameters(), before, strict=True):
            p.copy_(b)
    return change, summary


def _reference_gradient(policy, rows, tis_cap: float | None = None) -> list[torch.Tensor]:
    """The token-mean clipped loss over every row, each row forwarded on its own, written out by hand."""
    policy.model.zero_grad(set_to_none=True)
    policy.model.eval()
    with torch.no_grad():
        train_old = [policy.sequence_logprobs([r.prompt_ids], [r.response_ids])[0] for r in rows]
    policy.model.train()
    logps = [policy.sequence_logprobs([r.prompt_ids], [r.response_ids])[0] for r in rows]
    width = max(len(lp) for lp in logps)

    def pad(values):
        return torch.stack([torch.nn.functional.pad(torch.as_tensor(v, dtype=torch.float32), (0, width - len(v)))
                            for v in values])

    logprobs, rollout, mask = pad(logps), pad([r.old_logprobs for r in rows]), pad([[1.0] * len(lp) for lp in logps])
    advantages = torch.tensor([r.advantage for r in rows])
    old = rollout
    if tis_cap is not None:
        old = pad(train_old)
        advantages = advantages[:, None] * torch.exp(old - rollout).clamp(max=tis_cap) * mask
    clipped_policy_loss(logprobs, old, advantages, mask, clip_low=0.2, clip_high=0.28).loss.backward()
    gradient = [p.grad.detach().clone() for p in policy.model.parameters()]
    policy.model.zero_grad(set_to_none=True)
    policy.model.eval()
    return gradient


def test_packed_update_has_the_unpacked_gradient_with_fewer_forwarded_tokens(policy) -> None:
    rows = _rows(policy)
    packed, packed_summary = _update_change(policy, rows, packed=True)
    unpacked, unpacked_summary = _update_change(policy, rows, packed=False)
    expected = _reference_gradient(policy, rows)
    assert any(g.abs().max() > 0 for g in expected)
    for got, want in zip(packed, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    for got, want in zip(unpacked, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert packed_summary["tokens"] == unpacked_summary["tokens"]
    assert packed_summary["forward_tokens"] < 0.7 * unpacked_summary["forward_tokens"]


def test_packed_update_with_a_value_head_matches_unpacked(policy) -> None:
    """The value head reads the prompt's last hidden state from the packed forward instead of a second forward.
    (One micro-batch: the value loss is a mean over each micro-batch's rows, so its gradient depends on how the
    rows are split, and packing orders them by prompt.)"""
    rows = _rows(policy)
    changes = []
    for packed in (True, False):
        torch.manual_seed(1)
        head = ValueHead(policy.model.config.hidden_size)
        torch.nn.init.normal_(head.linear.weight, std=0.5)
        changes.append(_update_change(policy, rows, micro_batch_size=16, packed=packed, value_head=head,
                                      value_coef=0.5)[0])
    for got, want in zip(*changes, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_packed_values_equal_a_plain_forward(policy) -> None:
    """The rollout's values (value-based estimators) from the packed forward equal the padded batch forward."""
    prompts = [row.prompt_ids for row in _rows(policy)]
    torch.manual_seed(2)
    head = ValueHead(policy.model.config.hidden_size)
    torch.nn.init.normal_(head.linear.weight, std=0.5)
    with torch.no_grad():
        torch.testing.assert_close(head.packed(policy.model, prompts, policy.tokenizer.pad_token_id),
                                   head(policy.model, prompts, policy.tokenizer.pad_token_id), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("packed", [True, False])
def test_truncated_importance_sampling(policy, packed) -> None:
    rows = _rows(policy)
    change, summary = _update_change(policy, rows, packed=packed, tis_cap=1.2)
    expected = _reference_gradient(policy, rows, tis_cap=1.2)
    for got, want in zip(change, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    # The behaviour log-probs were perturbed by 0.3 * N(0, 1): the mismatch is reported, some weights capped.
    assert 0.1 < summary["logprob_mismatch"] < 0.5
    assert 0 < summary["tis_clipped_fraction"] < 1 and summary["tis_weight_mean"] <= 1.2
    # Exact behaviour log-probs (what the CPU sampler records) give weights of 1 and the plain update.
    for row in rows:
        with torch.no_grad():
            row.old_logprobs = policy.sequence_logprobs([row.prompt_ids], [row.response_ids])[0].tolist()
    with_tis, summary = _update_change(policy, rows, packed=packed, tis_cap=2.0)
    without, _ = _update_change(policy, rows, packed=packed)
    assert summary["logprob_mismatch"] < 1e-5 and summary["tis_clipped_fraction"] == 0
    for got, want in zip(with_tis, without, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
