"""hiergym.training: group rollouts, advantage estimators and the hierarchical trainer (see docs/training.md)."""
