"""The policy update: identical rollout rows share one forward/backward without changing the gradient."""

from __future__ import annotations

import random

import pytest
import torch

from hiergym.agents.policy import CausalLMPolicy
from hiergym.training.loss import clipped_policy_loss
from hiergym.training.optimize import TrainSequence, identical_sequences, policy_update

torch.set_num_threads(1)


def _sequence(policy, prompt: str, response: str, advantage: float) -> TrainSequence:
    prompt_ids = policy.encode_prompt(prompt)
    response_ids = policy.tokenizer(response, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        old = policy.sequence_logprobs([prompt_ids], [response_ids])[0]
    # Behaviour log-probs a little off the current ones, so that some tokens are clipped.
    return TrainSequence(prompt_ids, response_ids, (old + 0.3 * torch.randn_like(old)).tolist(), advantage)


def _gradient_of_update(policy, sequences) -> list[torch.Tensor]:
    """Parameter change of one plain-SGD step (lr 1, no gradient-norm clipping): minus the gradient used."""
    before = [p.detach().clone() for p in policy.model.parameters()]
    optimizer = torch.optim.SGD(policy.model.parameters(), lr=1.0)
    policy_update(policy, optimizer, sequences, micro_batch_size=2, clip_low=0.2, clip_high=0.28,
                  max_grad_norm=1e9, rng=random.Random(0))
    change = [before_p - p.detach() for before_p, p in zip(before, policy.model.parameters(), strict=True)]
    with torch.no_grad():
        for p, b in zip(policy.model.parameters(), before, strict=True):
            p.copy_(b)
    return change


def _reference_gradient(policy, sequences) -> list[torch.Tensor]:
    """The token-mean clipped loss over every row, each row forwarded on its own."""
    policy.model.zero_grad(set_to_none=True)
    policy.model.train()
    logps = policy.sequence_logprobs([s.prompt_ids for s in sequences], [s.response_ids for s in sequences])
    width = max(len(lp) for lp in logps)
    logprobs = torch.stack([torch.nn.functional.pad(lp, (0, width - len(lp))) for lp in logps])
    old = torch.stack([torch.nn.functional.pad(torch.tensor(s.old_logprobs), (0, width - len(s.old_logprobs)))
                       for s in sequences])
    mask = torch.stack([torch.nn.functional.pad(torch.ones(len(lp)), (0, width - len(lp))) for lp in logps])
    advantages = torch.tensor([s.advantage for s in sequences])
    clipped_policy_loss(logprobs, old, advantages, mask, clip_low=0.2, clip_high=0.28).loss.backward()
    gradient = [p.grad.detach().clone() for p in policy.model.parameters()]
    policy.model.zero_grad(set_to_none=True)
    policy.model.eval()
    return gradient


def test_identical_rows_share_a_forward_and_keep_their_own_advantages() -> None:
    torch.manual_seed(0)
    policy = CausalLMPolicy.tiny(seed=0, architecture={"hidden_size": 32, "intermediate_size": 64,
                                                       "num_hidden_layers": 1})
    first = _sequence(policy, "room A\n", "left", 1.5)
    same_as_first = TrainSequence(first.prompt_ids, first.response_ids, first.old_logprobs, -0.7)
    second = _sequence(policy, "room B\n", "down", -1.0)
    third = _sequence(policy, "room C, longer\n", "up", 0.4)
    rows = [first, second, same_as_first, third]
    assert identical_sequences(rows) == [[0, 2], [1], [3]]

    change = _gradient_of_update(policy, rows)
    expected = _reference_gradient(policy, rows)
    assert any(g.abs().max() > 0 for g in expected)
    for got, want in zip(change, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_update_counts_the_tokens_it_runs_through_the_model() -> None:
    policy = CausalLMPolicy.tiny(seed=0, architecture={"hidden_size": 32, "intermediate_size": 64,
                                                       "num_hidden_layers": 1})
    first = _sequence(policy, "room A\n", "left", 1.0)
    second = _sequence(policy, "room B, longer\n", "down", -1.0)
    rows = [first, second, TrainSequence(first.prompt_ids, first.response_ids, first.old_logprobs, 0.5)]
    optimizer = torch.optim.SGD(policy.model.parameters(), lr=0.0)
    summary = policy_update(policy, optimizer, rows, epochs=2, rng=random.Random(0), packed=False)
    distinct = [first, second]  # the repeated row shares its forward (packed scoring: tests/training/test_packed_scoring.py)
    assert summary["unique_sequences"] == 2 and summary["sequences"] == 3
    assert summary["forward_tokens"] == 2 * sum(len(s.prompt_ids) + len(s.response_ids) for s in distinct)


def test_learning_rate_warm_up_ramps_over_the_optimizers_own_steps_and_resumes():
    from hiergym.training.optimize import warm_up_learning_rate

    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight], lr=1e-3, weight_decay=0.0)
    rates = []
    for _ in range(3):
        rates.append(warm_up_learning_rate(optimizer, 1e-3, 4))
        weight.grad = torch.ones(3)
        optimizer.step()
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4])
    before = weight.detach().clone()
    resumed = torch.optim.AdamW([weight], lr=1e-3, weight_decay=0.0)  # a resumed run: the saved state loaded
    resumed.load_state_dict(optimizer.state_dict())
    assert warm_up_learning_rate(resumed, 1e-3, 4) == pytest.approx(1e-3)
    assert warm_up_learning_rate(resumed, 1e-3, 4) == pytest.approx(1e-3)  # no step taken: the same rate
    weight.grad = torch.ones(3)
    resumed.step()
    assert warm_up_learning_rate(resumed, 1e-3, 4) == pytest.approx(1e-3) and not torch.equal(weight, before)
    # A fresh Adam's first step moves each weight by about the rate, whatever the gradient's size: the reason.
    tiny = torch.nn.Parameter(torch.zeros(1))
    fresh = torch.optim.AdamW([tiny], lr=1e-3, weight_decay=0.0)
    tiny.grad = torch.full((1,), 1e-6)
    fresh.step()
    assert float(tiny.detach()) == pytest.approx(-1e-3, rel=1e-2)
