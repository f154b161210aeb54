"""The clipped token loss on toy tensors: clipping, masking, aggregation, KL and entropy terms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hiergym.training.loss import LossConfig, aggregate, clipped_policy_loss, kl_penalty, value_loss

torch.set_num_threads(1)


def test_ratio_one_gives_minus_advantage() -> None:
    logp = torch.zeros(2, 3, requires_grad=True)
    out = clipped_policy_loss(logp, torch.zeros(2, 3), torch.tensor([1.0, -2.0]), torch.ones(2, 3))
    assert out.pg_loss.item() == pytest.approx(-(1.0 * 3 - 2.0 * 3) / 6)
    out.loss.backward()
    # d/dlogp of -A * ratio at ratio 1 is -A, averaged over 6 tokens.
    assert torch.allclose(logp.grad, torch.tensor([[-1 / 6] * 3, [2 / 6] * 3]))


def test_positive_advantage_is_clipped_above() -> None:
    logp = torch.full((1, 1), math.log(1.5), requires_grad=True)  # ratio 1.5 > 1.2
    out = clipped_policy_loss(logp, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1))
    assert out.pg_loss.item() == pytest.approx(-1.2)
    out.loss.backward()
    assert logp.grad.abs().item() == 0.0  # clipped: no gradient pushes further
    assert out.clip_fraction.item() == 1.0


def test_clip_higher_is_asymmetric() -> None:
    logp = torch.full((1, 1), math.log(1.25))
    out = clipped_policy_loss(logp, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1),
                              clip_low=0.2, clip_high=0.28)
    assert out.pg_loss.item() == pytest.approx(-1.25)  # inside 1 + 0.28: unclipped


def test_negative_advantage_clipped_below_and_dual_clip() -> None:
    low = torch.full((1, 1), math.log(0.5))  # ratio 0.5 < 0.8: pessimistic max keeps the clipped 0.8
    out = clipped_policy_loss(low, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1))
    assert out.pg_loss.item() == pytest.approx(0.8)
    huge = torch.full((1, 1), math.log(10.0))  # ratio 10 with A < 0: loss 10 without dual clip, 3 with it
    plain = clipped_policy_loss(huge, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1))
    dual = clipped_policy_loss(huge, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1), dual_clip=3.0)
    assert plain.pg_loss.item() == pytest.approx(10.0)
    assert dual.pg_loss.item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="dual_clip"):
        clipped_policy_loss(huge, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1), dual_clip=0.5)


def test_masked_tokens_do_not_count() -> None:
    logp = torch.tensor([[0.0, 5.0], [0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    out = clipped_policy_loss(logp, torch.zeros(2, 2), torch.tensor([[1.0, 100.0], [1.0, 1.0]]), mask)
    assert out.pg_loss.item() == pytest.approx(-1.0)
    out.loss.backward()
    assert logp.grad[0, 1].item() == 0.0


def test_token_mean_vs_seq_mean() -> None:
    values = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    assert aggregate(values, mask, "token-mean").item() == pytest.approx(8 / 5)
    assert aggregate(values, mask, "seq-mean").item() == pytest.approx((1 + 4) / 2)
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(values, mask, "sum")


def test_kl_estimators() -> None:
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(math.log(2))
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 - math.log(0.5) - 1)
    assert kl_penalty(ref, ref, "k3").item() == pytest.approx(0.0)


def test_kl_and_entropy_terms_enter_the_loss() -> None:
    logp = torch.zeros(1, 2)
    ref = torch.full((1, 2), -1.0)
    ent = torch.full((1, 2), 2.0)
    out = clipped_policy_loss(logp, logp, torch.zeros(1), torch.ones(1, 2), ref_logprobs=ref, kl_coef=0.5,
                              entropy=ent, entropy_coef=0.1)
    expected_kl = math.exp(-1) + 1 - 1
    assert out.kl.item() == pytest.approx(expected_kl)
    assert out.loss.item() == pytest.approx(0.5 * expected_kl - 0.1 * 2.0, abs=1e-6)  # float32


def test_value_loss_clipping() -> None:
    values, old, targets = torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([0.0])
    assert value_loss(values, old, targets, clip=None).item() == pytest.approx(2.0)
    assert value_loss(values, old, targets, clip=0.2).item() == pytest.approx(2.0)  # max keeps the worse


def test_turn_level_ratio_clips_the_whole_turn() -> None:
    # Token ratios 2 and 1/2: each token alone would be clipped, their geometric mean 1 is not.
    logp = torch.tensor([[math.log(2.0), math.log(0.5)]], requires_grad=True)
    out = clipped_policy_loss(logp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2), ratio_level="turn")
    assert out.pg_loss.item() == pytest.approx(-1.0) and out.clip_fraction.item() == 0.0
    out.loss.backward()  # d r / d logp_j = r / T on every token of the turn
    np.testing.assert_allclose(logp.grad.numpy(), [[-0.5, -0.5]])  # loss = mean(-A r) = -r
    # A turn whose geometric-mean ratio is past 1 + clip is clipped as a whole: no gradient on any of its tokens.
    far = torch.full((1, 3), math.log(1.5), requires_grad=True)
    out = clipped_policy_loss(far, torch.zeros(1, 3), torch.tensor([1.0]), torch.ones(1, 3), ratio_level="turn")
    out.loss.backward()
    assert out.clip_fraction.item() == 1.0 and far.grad.abs().sum().item() == 0.0
    with pytest.raises(ValueError, match="ratio_level"):
        LossConfig(ratio_level="episode")
