"""Replay buffers of past turns and trajectories, kept in the trainer's checkpoint.

- :class:`TurnReplay` holds *turns* (one generation each: prompt ids, response ids, reward, next prompt ids,
  terminal flag, environment steps to the next turn), the transitions ArCHer's off-policy critic learns from
  by temporal differences (``training/critic.py``).
- :class:`TrajectoryReplay` holds whole trajectories (the token ids of every environment step and the
  trajectory's outcome), what SPA's progress estimator is trained on (``training/progress.py``).

Both are first-in first-out with a fixed capacity, draw minibatches from their own seeded NumPy generator,
and save to / load from plain arrays (:meth:`state_dict`), so a resumed run continues with the identical
buffer and the identical minibatch draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hiergym.training.advantages import factorize, turn_links
from hiergym.training.trajectory import EXECUTOR, StepBatch


def _pack(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Token rows as one flat int64 array and the offsets of each row (len(rows) + 1 of them)."""
    lengths = np.array([len(r) for r in rows], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
    return flat, offsets


def _unpack(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(flat[offsets[i]:offsets[i + 1]], np.int64) for i in range(len(offsets) - 1)]


def _ids(tokens: Any) -> np.ndarray:
    return np.asarray(list(tokens), np.int64)


@dataclass
class Turn:
    """One turn: the state (prompt), the action (response), its reward, and where it led."""

    prompt: np.ndarray
    response: np.ndarray
    reward: float
    #: The next turn's prompt (empty at the end of the trajectory).
    next_prompt: np.ndarray
    #: The trajectory ended with this turn (nothing to bootstrap from).
    terminal: bool
    #: Environment steps from this turn to the next (0 from a planner turn to the executor turn of its step).
    delta_steps: int


def turns_from_batch(batch: StepBatch) -> list[Turn]:
    """The batch's rows as turns, each linked to the next row of its trajectory (rows without a prompt are
    left out: a non-LLM agent has no text state for the critic)."""
    if batch.records is None:
        raise ValueError("turns need the batch's records (token ids): build it with StepBatch.from_records")
    has_next, delta = turn_links(batch)
    turns = []
    for i, record in enumerate(batch.records):
        if not record.prompt_token_ids:
            continue
        linked = bool(has_next[i]) and bool(batch.records[i + 1].prompt_token_ids)
        turns.append(Turn(prompt=_ids(record.prompt_token_ids), response=_ids(record.response_token_ids),
                          reward=float(batch.reward[i]),
                          next_prompt=_ids(batch.records[i + 1].prompt_token_ids) if linked else np.zeros(0, np.int64),
                          terminal=not linked, delta_steps=int(delta[i]) if linked else 0))
    return turns


class TurnReplay:
    """A first-in first-out buffer of :class:`Turn` s with a seeded sampler."""

    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = int(capacity)
        self.turns: list[Turn] = []
        self.rng = np.random.default_rng(seed)
        #: Turns ever added (the oldest kept one is number ``added - len(self)``).
        self.added = 0

    def __len__(self) -> int:
        return len(self.turns)

    def add(self, turns: list[Turn]) -> None:
        self.turns.extend(turns)
        self.added += len(turns)
        if len(self.turns) > self.capacity:
            del self.turns[: len(self.turns) - self.capacity]

    def sample(self, size: int) -> list[Turn]:
        """``size`` turns drawn uniformly with replacement (none from an empty buffer)."""
        if not self.turns:
            return []
        return [self.turns[i] for i in self.rng.integers(0, len(self.turns), size)]

    def state_dict(self) -> dict[str, Any]:
        prompts, prompt_offsets = _pack([t.prompt for t in self.turns])
        responses, response_offsets = _pack([t.response for t in self.turns])
        nexts, next_offsets = _pack([t.next_prompt for t in self.turns])
        return {"capacity": self.capacity, "added": self.added, "rng": self.rng.bit_generator.state,
                "prompts": prompts, "prompt_offsets": prompt_offsets, "responses": responses,
                "response_offsets": response_offsets, "next_prompts": nexts, "next_offsets": next_offsets,
                "rewards": np.array([t.reward for t in self.turns], np.float64),
                "terminal": np.array([t.terminal for t in self.turns], bool),
                "delta_steps": np.array([t.delta_steps for t in self.turns], np.int64)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity = int(state["capacity"])
        self.added = int(state["added"])
        self.rng.bit_generator.state = state["rng"]
        prompts = _unpack(state["prompts"], state["prompt_offsets"])
        responses = _unpack(state["responses"], state["response_offsets"])
        nexts = _unpack(state["next_prompts"], state["next_offsets"])
        self.turns = [Turn(p, r, float(w), n, bool(d), int(k)) for p, r, w, n, d, k in
                      zip(prompts, responses, state["rewards"], nexts, state["terminal"], state["delta_steps"],
                          strict=True)]


@dataclass
class Trajectory:
    """One trajectory for SPA: the tokens (prompt + response) of each environment step, and its outcome."""

    steps: list[np.ndarray]
    outcome: float


def acting_rows(batch: StepBatch) -> np.ndarray:
    """The rows that took an environment action: the last executor row of each (trajectory, step). An
    executor generation that gave its subgoal up before a new plan took none and carries no reward."""
    rows = np.flatnonzero(batch.level == EXECUTOR)
    acting = np.zeros(len(batch), bool)
    if rows.size:
        codes, num_codes = factorize(batch.traj_id[rows], batch.step[rows])
        last = np.full(num_codes, -1, np.int64)
        np.maximum.at(last, codes, rows)  # rows of a step are in generation order: the acting one is last
        acting[last] = True
    return acting


def trajectories_from_batch(batch: StepBatch) -> tuple[list[Trajectory], np.ndarray, np.ndarray]:
    """The batch's trajectories for SPA (outcome = the sum of the trajectory's rewards), the acting rows, and
    the trajectory index of each acting row (in the order of the returned list)."""
    if batch.records is None:
        raise ValueError("SPA needs the batch's records (token ids): build it with StepBatch.from_records")
    acting = acting_rows(batch)
    codes, inverse = np.unique(batch.traj_id, return_inverse=True)
    outcomes = np.bincount(inverse, weights=batch.reward, minlength=len(codes))
    steps: list[list[np.ndarray]] = [[] for _ in codes]
    for i in np.flatnonzero(acting):
        r = batch.records[i]
        steps[inverse[i]].append(_ids([*r.prompt_token_ids, *r.response_token_ids]))
    return ([Trajectory(s, float(o)) for s, o in zip(steps, outcomes, strict=True)], acting,
            inverse[acting].astype(np.int64))


class TrajectoryReplay:
    """A first-in first-out buffer of :class:`Trajectory` s with a seeded sampler."""

    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = int(capacity)
        self.trajectories: list[Trajectory] = []
        self.rng = np.random.default_rng(seed)
        self.added = 0

    def __len__(self) -> int:
        return len(self.trajectories)

    def add(self, trajectories: list[Trajectory]) -> None:
        kept = [t for t in trajectories if t.steps]
        self.trajectories.extend(kept)
        self.added += len(kept)
        if len(self.trajectories) > self.capacity:
            del self.trajectories[: len(self.trajectories) - self.capacity]

    def sample(self, size: int) -> list[Trajectory]:
        """``size`` distinct trajectories (all of them when fewer are kept)."""
        if len(self.trajectories) <= size:
            return list(self.trajectories)
        return [self.trajectories[i] for i in self.rng.choice(len(self.trajectories), size, replace=False)]

    def state_dict(self) -> dict[str, Any]:
        counts = np.array([len(t.steps) for t in self.trajectories], np.int64)
        tokens, offsets = _pack([s for t in self.trajectories for s in t.steps])
        return {"capacity": self.capacity, "added": self.added, "rng": self.rng.bit_generator.state,
                "steps_per_trajectory": counts, "tokens": tokens, "offsets": offsets,
                "outcomes": np.array([t.outcome for t in self.trajectories], np.float64)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity = int(state["capacity"])
        self.added = int(state["added"])
        self.rng.bit_generator.state = state["rng"]
        rows = _unpack(state["tokens"], state["offsets"])
        bounds = np.concatenate([[0], np.cumsum(state["steps_per_trajectory"])]).astype(np.int64)
        self.trajectories = [Trajectory(rows[bounds[k]:bounds[k + 1]], float(o))
                             for k, o in enumerate(state["outcomes"])]
