"""The text-environment contract shared by every single-agent hiergym environment.

See ``docs/environments.md``. In short, a hiergym env is a :class:`gymnasium.Env` whose observations and
actions are plain strings, whose ``reset(seed=...)`` gives the same task for the same seed, whose ``info``
always carries :data:`INFO_KEYS`, which never raises on a malformed action, and which offers
``expert_plan()``.

This module holds the small pieces every env uses so that they all behave alike: the text spaces, action
normalisation, task selection from ``seed``/``options`` (splits and task ids), the info builder, and the
episode-end rule (:class:`EpisodeEnd`).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import re
import string
from collections.abc import Callable, Mapping
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
#: Characters a valid action may contain: printable ASCII, space, tab, CR and LF (see :func:`normalize_action`).
ACTION_CHARSET = frozenset(string.printable) - {"\x0b", "\x0c"}

#: Longest action an env reads; anything longer is an invalid action (never an exception).
MAX_ACTION_CHARS = 4096

#: Feedback for an action the env does not understand or cannot carry out (ALFWorld's wording).
NOTHING_HAPPENS = "Nothing happens."


def text_observation_space(max_length: int = 65536) -> spaces.Text:
    """Observation space for string observations of printable ASCII."""
    return spaces.Text(max_length=max_length, min_length=1, charset=TEXT_CHARSET)


def text_action_space(max_length: int = MAX_ACTION_CHARS) -> spaces.Text:
    """Action space for string actions. Envs accept *any* value at ``step``; this only describes valid ones."""
    return spaces.Text(max_length=max_length, min_length=0, charset=ACTION_CHARSET)


#: The only whitespace an action may contain: ASCII space, tab, carriage return and line feed.
ACTION_WHITESPACE = " \t\r\n"
#: ASCII characters an action must not contain: control characters other than :data:`ACTION_WHITESPACE`
#: (``\x0b``, ``\x0c`` and ``\x1c``-``\x1f`` included, which ``str.split()`` would silently treat as spaces).
_FORBIDDEN_ASCII = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def normalize_action(action: Any) -> str | None:
    """Canonical form of an action, or ``None`` when it cannot be a command at all.

    The one rule every env (and every PettingZoo game) reads actions by:

    1. Only text is read: ``str``; ``bytes``/``bytearray`` as UTF-8; a non-bool integer as its decimal digits.
       Anything else (``None``, floats, lists, ...) is ``None``.
    2. At most :data:`MAX_ACTION_CHARS` characters, all printable ASCII (``" "`` to ``"~"``) or one of the
       whitespace characters of :data:`ACTION_WHITESPACE` (space, tab, CR, LF). *Any* other character makes
       the whole action ``None``: non-ASCII (``"\xa0"``, ``"\u2003"``, KELVIN SIGN ``"\u212a"``, ...), and
       the other ASCII control characters. This is checked on the raw text, before anything is stripped or
       case-folded, so no character can vanish or turn into a letter on the way.
    3. Runs of space/tab/CR/LF become one space, the ends are stripped, letters are lower-cased (ASCII only,
       since nothing else is left). An empty result is ``None``.

    The caller treats ``None`` as an invalid action (never an exception).
    """
    if isinstance(action, str):
        pass
    elif isinstance(action, bytes | bytearray):
        if len(action) > MAX_ACTION_CHARS:
            return None
        try:
            action = bytes(action).decode("utf-8")
        except UnicodeDecodeError:
            return None
    elif isinstance(action, int | np.integer) and not isinstance(action, bool):
        try:
            action = str(int(action))
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            return None
    else:
        return None
    if len(action) > MAX_ACTION_CHARS or not action.isascii() or _FORBIDDEN_ASCII.search(action):
        return None
    text = " ".join(action.split()).lower()
    return text or None


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from any printable parts, identical across processes and Python versions."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def check_options(options: Any) -> dict[str, Any]:
    """``reset``'s ``options`` as a new dict: ``None`` is ``{}``; a mapping is copied; anything else raises a
    ``TypeError`` saying what options must be (rather than an obscure error from ``dict(options)``)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        shown = repr(options)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise TypeError(
            f"reset options must be a dict (or None), such as {{'split': 'eval_in', 'task_id': 0}}; "
            f"got {type(options).__name__} {shown}"
        )
    return dict(options)


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

    Raises ``ValueError`` naming the valid choices for an unknown split or a bad task id, and ``TypeError``
    when ``options`` is not a dict (:func:`check_options`): options are code written by a person, unlike
    actions, so a mistake there should be loud.
    """
    options = check_options(options)
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


# ------------------------------------------------------------------------------------------------ episode end
class EpisodeEnd:
    """The episode-end rule of the contract, for single-agent envs and wrappers (docs/environments.md).

    Once a ``step`` returns ``terminated`` or ``truncated`` (the env's own step limit; Gymnasium's
    ``TimeLimit`` sits outside the env), every further ``step`` until ``reset`` answers the same terminal
    observation, reward ``0.0``, the same ``terminated`` / ``truncated`` flags, and the terminal ``info``
    with ``action_valid=False`` and ``admissible_actions=[]`` (nothing is accepted any more); the state does
    not change and the action is not even read. ``reset`` also checks ``options`` (:func:`check_options`).

    Use it as the first base class: ``class MyEnv(EpisodeEnd, gym.Env)``. It wraps the ``step`` and ``reset``
    that the class (or any subclass) defines, so an env needs no code for it; :attr:`episode_over` tells
    whether the episode has ended.

    It also records the arguments of the last ``reset`` in :attr:`last_reset` (``{"seed", "options"}``): every
    hiergym env is deterministic given them, so ``gym.make(env.spec.id, **env.spec.kwargs)``, ``reset(**
    last_reset)`` and the same actions restore any state of the episode (``agents/bavt.py`` searches so).
    """

    _episode_final: tuple[Any, bool, bool, dict[str, Any]] | None = None
    #: ``{"seed": ..., "options": ...}`` of the last ``reset`` (None before the first).
    last_reset: dict[str, Any] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, guard in (("step", _guard_step), ("reset", _guard_reset)):
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "_episode_end_guard", False):
                setattr(cls, name, guard(method))

    @property
    def episode_over(self) -> bool:
        """The episode has terminated or been truncated by the env itself; only ``reset`` does anything now."""
        return self._episode_final is not None


def after_episode_end(observation: Any, terminated: bool, truncated: bool, info: Mapping[str, Any]):
    """The step tuple of the episode-end rule (see :class:`EpisodeEnd`) from the terminal step's results."""
    info = copy.deepcopy(dict(info))
    info["action_valid"] = False
    if "admissible_actions" in info:
        info["admissible_actions"] = []
    return observation, 0.0, bool(terminated), bool(truncated), info


def _guard_step(step: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(step)
    def guarded_step(self, action, *args: Any, **kwargs: Any):
        final = self._episode_final
        if final is not None:
            return after_episode_end(*final)
        result = step(self, action, *args, **kwargs)
        observation, _, terminated, truncated, info = result
        if terminated or truncated:
            self._episode_final = (observation, bool(terminated), bool(truncated), copy.deepcopy(dict(info)))
        return result

    guarded_step._episode_end_guard = True  # type: ignore[attr-defined]
    return guarded_step


def _copied(options: dict[str, Any]) -> dict[str, Any]:
    try:
        return copy.deepcopy(options)
    except Exception:  # noqa: BLE001 - an uncopyable option value: keep the references
        return dict(options)


def _guard_reset(reset: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(reset)
    def guarded_reset(self, *args: Any, **kwargs: Any):
        options = check_options(kwargs.get("options"))
        self._episode_final = None
        # What restores this episode: reset(**last_reset) and the same actions replay it (look-ahead agents).
        self.last_reset = {"seed": kwargs.get("seed"), "options": _copied(options) if kwargs.get("options") is not None
                           else None}
        return reset(self, *args, **kwargs)

    guarded_reset._episode_end_guard = True  # type: ignore[attr-defined]
    return guarded_reset
