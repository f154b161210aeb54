"""SPA (stepwise progress attribution): step rewards from a progress estimator whose per-step contributions
add up to each trajectory's outcome.

The estimator (:class:`ProgressEstimator`) is a separate transformer over the policy's token ids (the same
:class:`~hiergym.training.critic.SequenceScorer` as the turn critics, a copy of the policy's transformer with
``spa_init="policy"`` or a new small one with ``"fresh"``) with one head ``c`` read at the last
token of an environment step's prompt + response: its predicted contribution ``c_hat_t``. It is trained so that
the contributions of a trajectory sum to the trajectory's outcome R (the sum of its rewards):

    loss = mean over trajectories tau of ( sum_{t in tau} c_hat_t - R_tau )^2

on minibatches of trajectories drawn from a replay (:class:`~hiergym.training.replay.TrajectoryReplay`) that
holds the current batch's trajectories and earlier ones. The batch's rows then get the step rewards

    c_t = c_hat_t + (R - sum_k c_hat_k) / T          (exact sum: sum_t c_t = R on every trajectory)
    r'_t = mix * c_t + (1 - mix) * r_t               (on the rows that took the env action; others keep 0)

SPA's paper uses ``c_hat`` as is (its sum matches R only as well as the estimator is trained); we spread the
remaining difference evenly over the steps, so every trajectory's shaped return is exactly its outcome: an
estimator that reads only trajectory returns (``grpo``, ``rloo``) is unchanged by the shaping, and the
shaping moves only step-level credit (``gigpo``'s step groups, returns-to-go, critics). SPA's grounding bonus
for executable actions is left out: ``invalid_action_penalty`` is already in the rewards, so in R.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hiergym.training.critic import SequenceScorer, unique_rows
from hiergym.training.replay import Trajectory, TrajectoryReplay, trajectories_from_batch
from hiergym.training.trajectory import StepBatch


def exact_contributions(predicted: np.ndarray, trajectory: np.ndarray, outcomes: np.ndarray) -> np.ndarray:
    """``predicted[i]`` (step i of trajectory ``trajectory[i]``) plus the trajectory's remaining difference to
    its outcome spread evenly over its steps: the result sums to ``outcomes[k]`` on every trajectory k."""
    predicted = np.asarray(predicted, np.float64)
    count = np.bincount(trajectory, minlength=len(outcomes)).astype(np.float64)
    total = np.bincount(trajectory, weights=predicted, minlength=len(outcomes))
    residual = (np.asarray(outcomes, np.float64) - total) / np.maximum(count, 1.0)
    return predicted + residual[trajectory]


class ProgressEstimator:
    """SPA's progress estimator and reward shaping (see the module docstring)."""

    def __init__(self, *, vocab_size: int, pad_id: int, device: torch.device, learning_rate: float = 1e-3,
                 updates: int = 32, batch_size: int = 16, replay: int = 512, mix: float = 1.0,
                 hidden_size: int = 64, layers: int = 2, seed: int = 0, trunk: torch.nn.Module | None = None):
        self.net = SequenceScorer(vocab_size, pad_id, ("c",), hidden_size=hidden_size, layers=layers,
                                  seed=seed, trunk=trunk).to(device)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=learning_rate, weight_decay=0.0)
        self.replay = TrajectoryReplay(replay, seed=seed)
        self.updates, self.batch_size, self.mix = updates, batch_size, mix

    def predict(self, steps: Sequence[Sequence[int]], chunk: int = 64) -> torch.Tensor:
        """c_hat of each step's tokens (with gradients when enabled)."""
        parts = [self.net.scores(steps[i:i + chunk],
                                 [(k, len(s) - 1, "c") for k, s in enumerate(steps[i:i + chunk])])
                 for i in range(0, len(steps), chunk)]
        return torch.cat(parts) if parts else torch.zeros(0, device=self.net.device)

    def loss(self, trajectories: Sequence[Trajectory]) -> torch.Tensor:
        steps = [s for t in trajectories for s in t.steps]
        owner = torch.tensor([k for k, t in enumerate(trajectories) for _ in t.steps], device=self.net.device)
        c_hat = self.predict(steps, chunk=max(len(steps), 1))
        sums = torch.zeros(len(trajectories), device=c_hat.device).index_add(0, owner, c_hat)
        outcomes = torch.tensor([t.outcome for t in trajectories], dtype=torch.float32, device=c_hat.device)
        return (sums - outcomes).pow(2).mean()

    def fit(self, updates: int | None = None) -> list[float]:
        """Gradient steps on minibatches of trajectories from the replay."""
        losses = []
        self.net.train()
        for _ in range(self.updates if updates is None else updates):
            sample = self.replay.sample(self.batch_size)
            if not sample:
                break
            loss = self.loss(sample)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
            self.optimizer.step()
            losses.append(float(loss.item()))
        self.net.eval()
        return losses

    def contributions(self, batch: StepBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The acting rows, their exact contributions c_t, and their raw predictions c_hat_t."""
        trajectories, acting, owner = trajectories_from_batch(batch)
        steps = [s for t in trajectories for s in t.steps]
        # trajectories_from_batch lists each trajectory's steps in row order; acting rows are in row order too,
        # so the k-th acting row is the k-th step of the flattened list only after ordering by trajectory.
        order = np.argsort(owner, kind="stable")
        distinct, index = unique_rows([tuple(s.tolist()) for s in steps])  # copies of a group repeat steps
        with torch.no_grad():
            flat = self.predict(distinct).cpu().numpy().astype(np.float64)[index]
        c_hat = np.empty(len(owner))
        c_hat[order] = flat
        outcomes = np.array([t.outcome for t in trajectories])
        return acting, exact_contributions(c_hat, owner, outcomes), c_hat

    def before_advantages(self, batch: StepBatch) -> dict[str, float]:
        """Add the batch's trajectories to the replay, train, and replace the batch's rewards by the shaped ones."""
        trajectories, _, _ = trajectories_from_batch(batch)
        self.replay.add(trajectories)
        losses = self.fit()
        acting, c, c_hat = self.contributions(batch)
        shaped = batch.reward.copy()
        shaped[acting] = self.mix * c + (1.0 - self.mix) * batch.reward[acting]
        batch.reward = shaped
        _, _, owner = trajectories_from_batch(batch)
        outcomes = np.array([t.outcome for t in trajectories])
        residual = outcomes - np.bincount(owner, weights=c_hat, minlength=len(outcomes))
        return {"spa_loss": float(np.mean(losses)) if losses else float("nan"),
                "spa_residual": float(np.abs(residual).mean()) if residual.size else 0.0,
                "spa_replay": len(self.replay)}

    def after_advantages(self, batch: StepBatch, advantages: np.ndarray) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "replay": self.replay.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.replay.load_state_dict(state["replay"])
