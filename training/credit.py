"""The learned credit models a run may hold beside the policy, behind two trainer hooks.

- SPA's progress estimator (``reward_shaping="spa"``, ``training/progress.py``) turns the batch's rewards into
  stepwise contributions that sum to each trajectory's outcome, before any estimator runs;
- a turn critic (``training/critic.py``) when the estimator's options ask for one (``archer``: the off-policy
  Q/V critic; ``turn_ppo`` with ``critic="separate"``: the turn-level value critic).

The trainer calls :meth:`CreditModels.before_advantages` on each batch right before ``compute_advantages``
(shaping first, then the critic on the shaped rewards) and :meth:`CreditModels.after_advantages` right after
it; their state (networks, optimizers, replay buffers, samplers) goes into the checkpoint.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hiergym.training.config import TrainConfig
from hiergym.training.trajectory import StepBatch


class CreditModels:
    def __init__(self, config: TrainConfig, policy):
        from hiergym.training.critic import ArcherCritic, TurnValueCritic, policy_trunk
        from hiergym.training.progress import ProgressEstimator

        settings = config.estimator_settings()
        common = dict(vocab_size=int(policy.model.config.vocab_size), pad_id=int(policy.tokenizer.pad_token_id),
                      device=policy.device)
        self.models: dict[str, Any] = {}
        if config.reward_shaping == "spa":
            self.models["spa"] = ProgressEstimator(
                **common, learning_rate=config.spa_learning_rate, updates=config.spa_updates,
                batch_size=config.spa_batch_size, replay=config.spa_replay, mix=config.spa_mix,
                hidden_size=config.spa_hidden_size, layers=config.spa_layers, seed=config.seed + 7_000_001,
                trunk=policy_trunk(policy) if config.spa_init == "policy" else None)
        if settings.turn_critic is not None:
            critic = ArcherCritic if settings.turn_critic == "archer" else TurnValueCritic
            self.models["critic"] = critic(settings, **common, seed=config.seed + 7_000_002,
                                           trunk=policy_trunk(policy) if settings.critic_init == "policy" else None)

    def before_advantages(self, batch: StepBatch) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for model in self.models.values():
            metrics.update(model.before_advantages(batch))
        return metrics

    def after_advantages(self, batch: StepBatch, advantages: np.ndarray) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for model in self.models.values():
            metrics.update(model.after_advantages(batch, advantages))
        return metrics

    def warming_up(self) -> bool:
        """Whether a critic fitted on this batch is still warming up (``critic_warmup_iterations``): the trainer
        then updates no policy level. Read after :meth:`after_advantages`, which counts the batch."""
        return any(getattr(model, "warmup_batch", False) for model in self.models.values())

    def state_dict(self) -> dict[str, Any]:
        return {name: model.state_dict() for name, model in self.models.items()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        for name, model in self.models.items():
            if state and name in state:
                model.load_state_dict(state[name])


def build_credit(config: TrainConfig, policy) -> CreditModels | None:
    """The run's credit models, or None when it uses none (no shaping, no turn critic)."""
    if config.reward_shaping == "none" and config.estimator_settings().turn_critic is None:
        return None
    return CreditModels(config, policy)
