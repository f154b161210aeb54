"""The text-environment contract shared by every single-agent hiergym environment.

See ``docs/environments.md``. In short, a hiergym env is a :class:`gymnasium.Env` whose observations and
actions are plain strings, whose ``reset(seed=...)`` gives the same task for the same seed, whose ``info``
always carries :data:`INFO_KEYS`, which never raises on a malformed action, and which offers
``expert_plan()``.

This module holds the small pieces every env uses so that they all behave alike: the text spaces, action
normalisation, task selection from ``seed``/``options`` (splits and task ids), and the info builder.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

#: Keys every single-agent env puts in ``info`` on reset and on every step.
INFO_KEYS = ("task", "admissible_actions", "won", "action_valid", "state_key")

#: Task splits: ``train``; ``eval_in`` (unseen tasks of the training distribution); ``eval_out``
#: (held-out structure: combinations, layouts or categories never generated for ``train``).
SPLITS = ("train", "eval_in", "eval_out")

#: Characters an observation may contain (printable ASCII, newlines and tabs).
TEXT_CHARSET = frozenset(string.printable)

#: Longest action an env reads; anything longer is an invalid action (never an exception).
MAX_ACTION_CHARS = 4096

#: Feedback for an action the env does not understand or cannot carry out (ALFWorld's wording).
NOTHING_HAPPENS = "Nothing happens."


def text_observation_space(max_length: int = 65536) -> spaces.Text:
    """Observation space for string observations of printable ASCII."""
    return spaces.Text(max_length=max_length, min_length=1, charset=TEXT_CHARSET)


def text_action_space(max_length: int = MAX_ACTION_CHARS) -> spaces.Text:
    """Action space for string actions. Envs accept *any* value at ``step``; this only describes valid ones."""
    return spaces.Text(max_length=max_length, min_length=0, charset=TEXT_CHARSET)


def normalize_action(action: Any) -> str | None:
    """Canonical form of an action: stripped, lower-cased, inner whitespace collapsed.

    Returns ``None`` for anything that cannot be a command at all (not text, too long, non-printable
    characters); the caller then treats the step as an invalid action.
    """
    if isinstance(action, bytes | bytearray):
        try:
            action = bytes(action).decode("utf-8")
        except UnicodeDecodeError:
            return None
    elif isinstance(action, np.str_):
        action = str(action)
    elif isinstance(action, int | np.integer) and not isinstance(action, bool):
        action = str(int(action))
    if not isinstance(action, str) or len(action) > MAX_ACTION_CHARS:
        return None
    text = " ".join(action.split()).lower()
    if not text or not all(ch in TEXT_CHARSET for ch in text):
        return None
    return text


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from any printable parts, identical across processes and Python versions."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def select_task(
    env_name: str,
    np_random: np.random.Generator,
    options: Mapping[str, Any] | None,
    *,
    default_split: str = "train",
) -> tuple[str, int | None, np.random.Generator]:
    """Resolve ``reset`` options into ``(split, task_id, task_rng)``.

    - ``options["task_id"]`` (int) picks the task_id-th task of ``options["split"]``: the same task in every
      process, whatever the env's seed (this is how fixed evaluation sets are addressed).
    - Otherwise the task is drawn from the env's own ``np_random`` (seeded by ``reset(seed=...)``), so the same
      seed gives the same task and an unseeded reset draws the next one.

    Raises ``ValueError`` naming the valid choices for an unknown split or a bad task id: options are code
    written by a person, unlike actions, so a mistake there should be loud.
    """
    options = dict(options or {})
    split = options.get("split", default_split)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for {env_name}; choose one of {', '.join(SPLITS)}")
    task_id = options.get("task_id")
    if task_id is not None:
        if isinstance(task_id, bool) or not isinstance(task_id, int | np.integer) or task_id < 0:
            raise ValueError(f"task_id must be a non-negative integer, got {task_id!r}")
        task_id = int(task_id)
        return split, task_id, np.random.default_rng(stable_seed(env_name, split, task_id))
    seed = int(np_random.integers(0, 2**63 - 1))
    return split, None, np.random.default_rng(stable_seed(env_name, split, "seeded", seed))


def make_info(
    *,
    task: str,
    admissible_actions: list[str] | None,
    won: bool,
    action_valid: bool,
    state_key: str,
    **extra: Any,
) -> dict[str, Any]:
    """The ``info`` dict of the contract, with env-specific extras after the shared keys."""
    info: dict[str, Any] = {
        "task": task,
        "admissible_actions": list(admissible_actions) if admissible_actions is not None else None,
        "won": bool(won),
        "action_valid": bool(action_valid),
        "state_key": state_key,
    }
    info.update(extra)
    return info
