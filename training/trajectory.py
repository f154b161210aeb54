"""The trajectory contract: what a rollout records, and the columnar batch that estimators consume.

A rollout produces one :class:`StepRecord` (defined in :mod:`hiergym.records`, below every layer that makes
or reads one) per *generation* of the agent:

- ``level="executor"`` rows are environment steps (a flat agent produces only these): the observation the
  agent saw, the action text it produced, the reward the env returned for it.
- ``level="planner"`` rows are subgoal decisions of a hierarchical agent. They act on no environment, so
  their ``reward`` is 0; ``step`` is the index of the environment step the subgoal was written before, and
  ``segment`` is the subgoal segment the decision opens.

Every row carries its group (the G rollouts of one task from the same seed), its trajectory, its step index,
level, subgoal segment, anchor (the env's ``state_key`` before the action), the texts, the token ids and the
behaviour log-probs of the generated tokens, so that any estimator can run on a finished batch without
extra rollouts. :class:`StepBatch` is the columnar (NumPy) view of a list of records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hiergym.records import LEVELS, StepRecord

EXECUTOR, PLANNER = 0, 1

__all__ = ["EXECUTOR", "LEVELS", "PLANNER", "StepBatch", "StepRecord", "anchor_hash"]


def anchor_hash(state_key: str) -> int:
    """A stable non-negative 63-bit code of a state key: equal keys, equal codes (in every process)."""
    return int.from_bytes(hashlib.blake2b(state_key.encode(), digest_size=8).digest(), "little") >> 1


def _anchor_codes(anchors: Sequence[str] | Sequence[int] | np.ndarray) -> np.ndarray:
    values = np.asarray(anchors)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    return np.fromiter((anchor_hash(str(a)) for a in values), dtype=np.int64, count=len(values))


@dataclass
class StepBatch:
    """One row per record; every field a NumPy array of equal length.

    ``anchor`` holds :func:`anchor_hash` codes of the state keys (int64), so grouping a million rows is a
    vectorised integer operation; the texts and token data stay in ``records``.

    Rows of one trajectory are contiguous and ordered by ``(step, level)`` with a planner row before the
    executor row of the same step; :meth:`from_records` sorts them so.
    """

    group_id: np.ndarray
    traj_id: np.ndarray
    step: np.ndarray
    level: np.ndarray
    segment: np.ndarray
    anchor: np.ndarray
    reward: np.ndarray
    done: np.ndarray
    invalid: np.ndarray
    value: np.ndarray
    records: list[StepRecord] | None = None
    #: Q(s, a) of each row's turn from a turn critic (ArCHer), when one is used; else None.
    q_value: np.ndarray | None = None
    #: The seat of each row in a multi-agent game (``StepRecord.role``); None reads as all zeros.
    role: np.ndarray | None = None

    def roles(self) -> np.ndarray:
        """``role`` as an int64 array (zeros when the batch has none)."""
        return np.zeros(len(self), np.int64) if self.role is None else np.asarray(self.role, np.int64)

    def __len__(self) -> int:
        return int(self.reward.shape[0])

    @classmethod
    def from_records(cls, records: Sequence[StepRecord]) -> StepBatch:
        order = sorted(
            range(len(records)),
            key=lambda i: (records[i].traj_id, records[i].step, -LEVELS.index(records[i].level)),
        )
        rows = [records[i] for i in order]
        for r in rows:
            if r.level not in LEVELS:
                raise ValueError(f"unknown level {r.level!r}; choose one of {LEVELS}")
        return cls(
            group_id=np.array([r.group_id for r in rows], dtype=np.int64),
            traj_id=np.array([r.traj_id for r in rows], dtype=np.int64),
            step=np.array([r.step for r in rows], dtype=np.int64),
            level=np.array([LEVELS.index(r.level) for r in rows], dtype=np.int8),
            segment=np.array([r.segment for r in rows], dtype=np.int64),
            anchor=_anchor_codes([r.anchor for r in rows]),
            reward=np.array([r.reward for r in rows], dtype=np.float64),
            done=np.array([r.done for r in rows], dtype=bool),
            invalid=np.array([r.invalid for r in rows], dtype=bool),
            value=np.array([r.value for r in rows], dtype=np.float64),
            records=rows,
            role=np.array([r.role for r in rows], dtype=np.int64),
        )

    @classmethod
    def from_arrays(
        cls,
        *,
        group_id: Sequence[int] | np.ndarray,
        traj_id: Sequence[int] | np.ndarray,
        step: Sequence[int] | np.ndarray,
        reward: Sequence[float] | np.ndarray,
        anchor: Sequence[str] | Sequence[int] | np.ndarray | None = None,
        level: Sequence[int] | np.ndarray | None = None,
        segment: Sequence[int] | np.ndarray | None = None,
        done: Sequence[bool] | np.ndarray | None = None,
        invalid: Sequence[bool] | np.ndarray | None = None,
        value: Sequence[float] | np.ndarray | None = None,
        role: Sequence[int] | np.ndarray | None = None,
    ) -> StepBatch:
        """Build a batch straight from columns (rows must already be contiguous per trajectory, in step order).

        ``anchor`` may be state-key strings (hashed with :func:`anchor_hash`) or integer codes. Missing columns
        default to: anchor = unique per row (no two rows share a state), level = executor, segment = 0,
        done = last row of each trajectory, invalid = False, value = NaN.
        """
        traj = np.asarray(traj_id, dtype=np.int64)
        n = traj.shape[0]
        if done is None:
            done_arr = np.ones(n, dtype=bool)
            done_arr[:-1] = traj[1:] != traj[:-1]
        else:
            done_arr = np.asarray(done, dtype=bool)
        return cls(
            group_id=np.asarray(group_id, dtype=np.int64),
            traj_id=traj,
            step=np.asarray(step, dtype=np.int64),
            level=np.zeros(n, np.int8) if level is None else np.asarray(level, dtype=np.int8),
            segment=np.zeros(n, np.int64) if segment is None else np.asarray(segment, dtype=np.int64),
            anchor=-np.arange(1, n + 1, dtype=np.int64) if anchor is None else _anchor_codes(anchor),
            reward=np.asarray(reward, dtype=np.float64),
            done=done_arr,
            invalid=np.zeros(n, bool) if invalid is None else np.asarray(invalid, dtype=bool),
            value=np.full(n, np.nan) if value is None else np.asarray(value, dtype=np.float64),
            role=None if role is None else np.asarray(role, dtype=np.int64),
        )
