"""The token-level clipped policy-gradient loss (PPO/GRPO family), every term named once.

Inputs are padded ``[batch, tokens]`` tensors of the generated (response) tokens with a 0/1 ``mask``:
``logprobs`` under the current policy (with grad), ``old_logprobs`` under the behaviour policy that
sampled them, and ``advantages`` per sequence ``[batch]`` or per token ``[batch, tokens]``.

    ratio      = exp(logprobs - old_logprobs)                                        (ratio_level="token")
               = exp(mean over the turn's tokens of (logprobs - old_logprobs))     (ratio_level="turn")
    pg_token   = max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high))       (PPO clip)
    dual clip  : for A < 0, pg_token = min(pg_token, -A * dual_clip)                  (dual-clip PPO)
    kl_token   = k1: logprobs - ref_logprobs ;  k3: exp(ref - logp) - (ref - logp) - 1 (Schulman's k3)
    loss       = agg(pg_token) + kl_coef * agg(kl_token) - entropy_coef * agg(entropy_token)

``clip_high`` > ``clip_low`` is DAPO's clip-higher. ``aggregation``: ``"token-mean"`` averages over every
unmasked token of the batch; ``"seq-mean"`` averages tokens within each sequence, then sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

AGGREGATIONS = ("token-mean", "seq-mean")
KL_ESTIMATORS = ("k1", "k3")
RATIO_LEVELS = ("token", "turn")


@dataclass(frozen=True)
class LossConfig:
    """The trainer's loss settings, the one declaration of their defaults (``TrainConfig``'s loss fields
    default to these; :func:`hiergym.training.optimize.policy_update` takes one). ``clipped_policy_loss`` on
    its own is the plain PPO clip unless told otherwise (``clip_high=None`` is symmetric)."""

    #: PPO clip range below 1.
    clip_low: float = 0.2
    #: Clip range above 1: clip-higher (DAPO) when larger than ``clip_low``.
    clip_high: float = 0.28
    #: Dual-clip bound for negative advantages (e.g. 3.0); None for none.
    dual_clip: float | None = None
    #: ``token-mean`` or ``seq-mean``.
    aggregation: str = "token-mean"
    #: Weight of the KL to the frozen reference model.
    kl_coef: float = 0.0
    #: ``k1`` or ``k3``.
    kl_estimator: str = "k3"
    #: Weight of the entropy bonus.
    entropy_coef: float = 0.0
    #: Weight of the value loss (estimators with a value head).
    value_coef: float = 0.5
    #: ``token``: PPO's ratio per token; ``turn``: one ratio per turn (generation), the geometric mean of its
    #: tokens' ratios, clipped as a whole (Turn-PPO's turn-level clipping).
    ratio_level: str = "token"

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {self.aggregation!r}")
        if self.ratio_level not in RATIO_LEVELS:
            raise ValueError(f"ratio_level must be one of {', '.join(RATIO_LEVELS)}, got {self.ratio_level!r}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {', '.join(KL_ESTIMATORS)}, got {self.kl_estimator!r}")
        if self.dual_clip is not None and self.dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1 (or null), got {self.dual_clip}")
        if self.clip_low < 0 or self.clip_high < 0:
            raise ValueError(f"clip ranges must be >= 0, got clip_low={self.clip_low}, clip_high={self.clip_high}")

    def policy_loss_options(self) -> dict:
        """The keyword arguments of :func:`clipped_policy_loss`."""
        return dict(clip_low=self.clip_low, clip_high=self.clip_high, dual_clip=self.dual_clip,
                    aggregation=self.aggregation, kl_coef=self.kl_coef, kl_estimator=self.kl_estimator,
                    entropy_coef=self.entropy_coef, ratio_level=self.ratio_level)


@dataclass
class PolicyLoss:
    loss: torch.Tensor
    pg_loss: torch.Tensor
    kl: torch.Tensor
    entropy: torch.Tensor
    clip_fraction: torch.Tensor
    approx_kl: torch.Tensor


def aggregate(values: torch.Tensor, mask: torch.Tensor, aggregation: str = "token-mean") -> torch.Tensor:
    mask = mask.to(values.dtype)
    if aggregation == "token-mean":
        return (values * mask).sum() / mask.sum().clamp_min(1.0)
    if aggregation == "seq-mean":
        per_sequence = (values * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)
        has_tokens = (mask.sum(-1) > 0).to(values.dtype)
        return (per_sequence * has_tokens).sum() / has_tokens.sum().clamp_min(1.0)
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy."""
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        return torch.exp(log_ratio) - log_ratio - 1.0
    raise ValueError(f"kl estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    dual_clip: float | None = None,
    aggregation: str = "token-mean",
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    ratio_level: str = "token",
) -> PolicyLoss:
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logprobs)
    advantages = advantages.to(logprobs.dtype)
    clip_high = clip_low if clip_high is None else clip_high
    log_ratio = logprobs - old_logprobs
    if ratio_level == "turn":  # log of the geometric mean of the turn's token ratios, on every token of it
        weights = mask.to(logprobs.dtype)
        turn = (log_ratio * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)
        ratio = torch.exp(turn)[:, None].expand_as(logprobs)
    elif ratio_level == "token":
        ratio = torch.exp(log_ratio)
    else:
        raise ValueError(f"ratio_level must be one of {RATIO_LEVELS}, got {ratio_level!r}")
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg_token = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        pg_token = torch.where(advantages < 0, torch.minimum(pg_token, -advantages * dual_clip), pg_token)
    pg_loss = aggregate(pg_token, mask, aggregation)

    zero = logprobs.new_zeros(())
    kl = aggregate(kl_penalty(logprobs, ref_logprobs, kl_estimator), mask, aggregation) \
        if ref_logprobs is not None else zero
    entropy_term = aggregate(entropy, mask, aggregation) if entropy is not None else zero
    loss = pg_loss + kl_coef * kl - entropy_coef * entropy_term

    with torch.no_grad():
        clip_fraction = aggregate((clipped > unclipped).to(logprobs.dtype), mask, "token-mean")
        approx_kl = aggregate(0.5 * log_ratio.pow(2), mask, "token-mean")
    return PolicyLoss(loss=loss, pg_loss=pg_loss, kl=kl, entropy=entropy_term,
                      clip_fraction=clip_fraction, approx_kl=approx_kl)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, targets: torch.Tensor,
               clip: float | None = 0.2) -> torch.Tensor:
    """PPO's (optionally clipped) value regression, averaged over rows."""
    unclipped = (values - targets).pow(2)
    if clip is None:
        return 0.5 * unclipped.mean()
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * torch.maximum(unclipped, (clipped_values - targets).pow(2)).mean()
