"""What a step of the group vector env returns: :class:`StepOutput` and the per-copy rows it is stacked from."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hiergym.records import StepRecord


# ------------------------------------------------------------------------------------------- step output
@dataclass
class StepOutput:
    """The rows of one :meth:`GroupVecEnv.step` (all copies) or :meth:`GroupVecEnv.poll` (the finished ones).

    Row ``r`` describes copy ``indices[r]``. An *active* row is a step the copy really took: its action was
    executed (or failed with ``error``), and every field describes that step; ``group_id``, ``traj_id`` and
    ``step`` are those of the trajectory the action belonged to. An inactive row is a masked copy (finished,
    waiting for the batch or group reset): reward 0, its last observation and info, ``terminated`` /
    ``truncated`` / ``error`` repeating how its episode ended, and the ids of its current trajectory.

    ``observations`` are what each copy shows *now*, i.e. the next prompt. When ``autoreset`` is set the
    copy's group was reset in this call: the observation and info are the new episode's (Gymnasium's
    SAME_STEP), the step's own final observation and info are in ``info["final_obs"]`` / ``info["final_info"]``,
    and the copy's new ids are in :attr:`GroupVecEnv.traj_ids` etc.

    Unpacks like Gymnasium: ``obs, rewards, terminated, truncated, infos = env.step(actions)``.
    """

    indices: np.ndarray
    observations: list[str]
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    infos: list[dict[str, Any]]
    #: The copy executed an action in this call (its row is a real step to record).
    active: np.ndarray
    group_id: np.ndarray
    traj_id: np.ndarray
    #: Index of the step within its trajectory: 0 for the first action after reset.
    step: np.ndarray
    #: ``state_key`` before the action (the GiGPO anchor state).
    anchor: np.ndarray
    #: ``state_key`` after the action (the final state when the episode ended; before any autoreset).
    next_state_key: np.ndarray
    #: The env flagged the action invalid (``info["action_valid"] is False``).
    invalid: np.ndarray
    won: np.ndarray
    #: The step failed: the env raised or its worker died or hung; the episode is over (``terminated``).
    error: np.ndarray
    #: The copy's group was reset in this call; ``observations`` already show the new episode.
    autoreset: np.ndarray
    #: The observation the action answered (the prompt of this step).
    prev_observations: list[str]
    #: The action text as submitted ("" for masked copies).
    actions: list[str]

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __iter__(self) -> Iterator[Any]:
        """Gymnasium's step tuple: observations, rewards, terminated, truncated, infos."""
        return iter((self.observations, self.rewards, self.terminated, self.truncated, self.infos))

    @property
    def done(self) -> np.ndarray:
        return self.terminated | self.truncated

    def to_records(self) -> list[StepRecord]:
        """One :class:`hiergym.records.StepRecord` (the trainer's rows) per active row (level ``executor``).

        Token ids and log-probs are the agent's to fill in; error rows are included (``done=True``, reward 0):
        drop their groups with ``self.error`` if the trainer should not learn from them.
        """
        return [
            StepRecord(
                group_id=int(self.group_id[r]),
                traj_id=int(self.traj_id[r]),
                step=int(self.step[r]),
                anchor=str(self.anchor[r]),
                observation=self.prev_observations[r],
                action=self.actions[r],
                reward=float(self.rewards[r]),
                done=bool(self.terminated[r] or self.truncated[r]),
                invalid=bool(self.invalid[r]),
            )
            for r in np.flatnonzero(self.active)
        ]


@dataclass(slots=True)
class _Row:
    """One copy's row of a :class:`StepOutput`, built as results arrive."""

    index: int
    observation: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    active: bool
    group_id: int
    traj_id: int
    step: int
    anchor: str
    next_state_key: str
    invalid: bool = False
    won: bool = False
    error: bool = False
    autoreset: bool = False
    prev_observation: str = ""
    action: str = ""


def _stack_rows(rows: Sequence[_Row]) -> StepOutput:
    rows = sorted(rows, key=lambda r: r.index)
    return StepOutput(
        indices=np.array([r.index for r in rows], dtype=np.int64),
        observations=[r.observation for r in rows],
        rewards=np.array([r.reward for r in rows], dtype=np.float64),
        terminated=np.array([r.terminated for r in rows], dtype=bool),
        truncated=np.array([r.truncated for r in rows], dtype=bool),
        infos=[r.info for r in rows],
        active=np.array([r.active for r in rows], dtype=bool),
        group_id=np.array([r.group_id for r in rows], dtype=np.int64),
        traj_id=np.array([r.traj_id for r in rows], dtype=np.int64),
        step=np.array([r.step for r in rows], dtype=np.int64),
        anchor=np.array([r.anchor for r in rows], dtype=object),
        next_state_key=np.array([r.next_state_key for r in rows], dtype=object),
        invalid=np.array([r.invalid for r in rows], dtype=bool),
        won=np.array([r.won for r in rows], dtype=bool),
        error=np.array([r.error for r in rows], dtype=bool),
        autoreset=np.array([r.autoreset for r in rows], dtype=bool),
        prev_observations=[r.prev_observation for r in rows],
        actions=[r.action for r in rows],
    )


