"""Straightforward loop implementations of the estimators: the reference the vectorised ones are checked
against in tests and timed against in ``benchmarks/estimators_speed.py``. Readable, slow, obviously right.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from hiergym.training.trajectory import StepBatch


def _rows_by_trajectory(batch: StepBatch) -> dict[int, list[int]]:
    rows: dict[int, list[int]] = defaultdict(list)
    for i in range(len(batch)):
        rows[int(batch.traj_id[i])].append(i)
    return rows


def _relative(values: dict[int, float], members: dict[object, list[int]], normalize: str) -> dict[int, float]:
    out = {}
    for rows in members.values():
        vals = [values[r] for r in rows]
        mean = sum(vals) / len(vals)
        std = (sum((v - mean) ** 2 for v in vals) / max(len(vals) - 1, 1)) ** 0.5
        for r in rows:
            if len(rows) < 2:
                out[r] = 0.0
            elif normalize == "std":
                out[r] = (values[r] - mean) / (std + 1e-6)
            else:
                out[r] = values[r] - mean
    return out


def grpo_loop(batch: StepBatch, normalize: str = "std") -> np.ndarray:
    trajectories = _rows_by_trajectory(batch)
    returns = {t: sum(batch.reward[r] for r in rows) for t, rows in trajectories.items()}
    groups: dict[object, list[int]] = defaultdict(list)
    for t, rows in trajectories.items():
        groups[int(batch.group_id[rows[0]])].append(t)
    relative = _relative(returns, groups, normalize)
    out = np.zeros(len(batch))
    for t, rows in trajectories.items():
        for r in rows:
            out[r] = relative[t]
    return out


def returns_to_go_loop(batch: StepBatch, gamma: float) -> dict[int, float]:
    returns: dict[int, float] = {}
    for rows in _rows_by_trajectory(batch).values():
        running, last_step = 0.0, None
        for r in reversed(rows):
            if batch.level[r] == 0:
                if last_step is not None:
                    running *= gamma ** (last_step - batch.step[r])
                running = batch.reward[r] + running
                last_step = batch.step[r]
            returns[r] = running
    return returns


def gigpo_loop(batch: StepBatch, gamma: float = 0.95, step_weight: float = 1.0, normalize: str = "mean") -> np.ndarray:
    episode = grpo_loop(batch, normalize)
    returns = returns_to_go_loop(batch, gamma)
    anchor_groups: dict[object, list[int]] = defaultdict(list)
    for r in range(len(batch)):
        anchor_groups[(int(batch.group_id[r]), int(batch.level[r]), int(batch.anchor[r]))].append(r)
    step = _relative(returns, anchor_groups, normalize)
    return np.array([episode[r] + step_weight * step[r] for r in range(len(batch))])


def hgpo_loop(batch: StepBatch, depth: int = 2, gamma: float = 0.95, step_weight: float = 1.0,
              normalize: str = "mean", weight_power: float = 1.0) -> np.ndarray:
    episode = grpo_loop(batch, normalize)
    returns = returns_to_go_loop(batch, gamma)
    history: dict[int, list[int | None]] = {}
    for rows in _rows_by_trajectory(batch).values():
        executor_anchor = {int(batch.step[r]): int(batch.anchor[r]) for r in rows if batch.level[r] == 0}
        first = min(int(batch.step[r]) for r in rows)
        for r in rows:
            t = int(batch.step[r])
            history[r] = [executor_anchor.get(t - k) if t - k >= first else None for k in range(depth + 1)]
    weighted = np.zeros(len(batch))
    total = np.zeros(len(batch))
    for k in range(depth + 1):
        groups: dict[object, list[int]] = defaultdict(list)
        for r in range(len(batch)):
            groups[(int(batch.group_id[r]), int(batch.level[r]), tuple(history[r][: k + 1]))].append(r)
        relative = _relative(returns, groups, normalize)
        for rows in groups.values():
            if len(rows) >= 2:
                for r in rows:
                    weighted[r] += (k + 1) ** weight_power * relative[r]
                    total[r] += (k + 1) ** weight_power
    step = np.divide(weighted, total, out=np.zeros_like(weighted), where=total > 0)
    return np.array([episode[r] for r in range(len(batch))]) + step_weight * step
