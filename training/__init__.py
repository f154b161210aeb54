"""hiergym.training: group rollouts, advantage estimators and the hierarchical trainer (see docs/training.md).

``from hiergym.training import TrainConfig, Trainer, load_config`` works; the names load on first use, so that
importing the package pulls in no torch until the trainer is used.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public names -> the module that defines them.
_PUBLIC = {
    "TrainConfig": "hiergym.training.config",
    "PRESETS": "hiergym.training.config",
    "load_config": "hiergym.training.config",
    "Trainer": "hiergym.training.trainer",
    "ESTIMATORS": "hiergym.training.advantages",
    "ESTIMATOR_OPTIONS": "hiergym.training.advantages",
    "compute_advantages": "hiergym.training.advantages",
    "estimator_options": "hiergym.training.advantages",
    "LossConfig": "hiergym.training.loss",
    "StepBatch": "hiergym.training.trajectory",
    "StepRecord": "hiergym.training.trajectory",
    "collect_rollouts": "hiergym.training.rollout",
    "expert_demonstrations": "hiergym.training.demonstrations",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'hiergym.training' has no attribute {name!r}")
