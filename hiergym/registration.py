"""Registration of every hiergym environment under the ``hiergym/`` namespace.

Each environment is one :class:`EnvEntry` in :data:`ENVIRONMENTS`: its id, where it lives, its episode limit,
and the one-line description and key arguments that ``hiergym list`` prints. Entry points are strings, so
registering imports nothing heavy; the module loads on the first ``gymnasium.make``.

Registering also makes ``gymnasium.make_vec(id, vectorization_mode="async")`` right for text observations
(:func:`install_text_shared_memory`): Gymnasium's ``AsyncVectorEnv`` passes observations through shared
memory by default, and its reader for ``Text`` spaces decodes the buffer once, when the vector env is built,
so every later observation would read as the empty buffer (65,536 tab characters).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np


@dataclass(frozen=True)
class EnvEntry:
    id: str
    entry_point: str
    max_episode_steps: int | None
    description: str
    #: Key constructor arguments and their defaults, shown by ``hiergym list``.
    arguments: dict[str, Any] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)


ENVIRONMENTS: tuple[EnvEntry, ...] = (
    EnvEntry(
        id="hiergym/ALFWorld-v0",
        entry_point="hiergym.envs.alfworld.env:AlfWorldEnv",
        max_episode_steps=50,
        description="ALFWorld's six household task types, generated from a seed; native engine or engine=alfworld.",
        arguments={"engine": "native", "task_types": None, "success_reward": 1.0},
    ),
    EnvEntry(
        id="hiergym/TextWorld-v0",
        entry_point="hiergym.envs.textworld_env:TextWorldEnv",
        max_episode_steps=100,
        description="TextWorld games: a .z8/.ulx file, or games generated from a seed by TextWorld's challenges (cached).",
        arguments={"game_file": None, "challenge": "tw-treasure_hunter", "settings": None, "num_games": None},
    ),
    EnvEntry(
        id="hiergym/Sokoban-v0",
        entry_point="hiergym.envs.sokoban:SokobanEnv",
        max_episode_steps=100,
        description="Push every box onto a target; procedurally generated, always solvable rooms.",
        arguments={"dim_room": (6, 6), "num_boxes": 1, "max_steps": 100, "expert_metric": "pushes"},
    ),
    EnvEntry(
        id="hiergym/ToolQA-v0",
        entry_point="hiergym.envs.toolqa:ToolQAEnv",
        max_episode_steps=20,
        description="Answer 1-4 hop questions about a generated encyclopedia with search, lookup and a calculator.",
        arguments={"hops": (1, 2, 3, 4), "top_k": 3, "max_steps": 20},
    ),
    EnvEntry(
        id="hiergym/TicTacToe-v0",
        entry_point="hiergym.envs.multiagent.single_agent:TicTacToeEnv",
        max_episode_steps=30,
        description="Tic-tac-toe against a fixed opponent (view of the PettingZoo game multiagent.tictactoe_v0).",
        arguments={"opponent": "random", "seat": None},
    ),
    EnvEntry(
        id="hiergym/KuhnPoker-v0",
        entry_point="hiergym.envs.multiagent.single_agent:KuhnPokerEnv",
        max_episode_steps=60,
        description="A match of Kuhn poker hands against a fixed opponent (view of multiagent.kuhn_poker_v0).",
        arguments={"opponent": "random", "seat": None, "num_hands": 10},
    ),
    EnvEntry(
        id="hiergym/Negotiation-v0",
        entry_point="hiergym.envs.multiagent.single_agent:NegotiationEnv",
        max_episode_steps=40,
        description="Divide a pool of items with private values against a scripted negotiator (multiagent.negotiation_v0).",
        arguments={"opponent": "expert", "seat": None, "max_turns": 10},
    ),
    EnvEntry(
        id="hiergym/WebShop-v0",
        entry_point="hiergym.envs.webshop.env:WebShopEnv",
        max_episode_steps=15,
        description="Search a product catalog and buy what the instruction asks for (WebShop's pages and reward).",
        arguments={"num_products": "10000 (all with data_dir)", "catalog_seed": 0, "data_dir": None,
                   "human_goals": True},
    ),
    EnvEntry(
        id="hiergym/HouseholdCoop-v0",
        entry_point="hiergym.envs.multiagent.single_agent:HouseholdCoopEnv",
        max_episode_steps=60,
        description="ALFWorld-style two-agent household task with a scripted teammate (multiagent.household_coop_v0).",
        arguments={"opponent": "expert", "seat": None, "max_rounds": 30, "goal_visibility": "shared"},
    ),
)


def register_all() -> None:
    """Register every entry of :data:`ENVIRONMENTS` (idempotent)."""
    install_text_shared_memory()
    for entry in ENVIRONMENTS:
        if entry.id in gym.registry:
            continue
        gym.register(
            id=entry.id,
            entry_point=entry.entry_point,
            max_episode_steps=entry.max_episode_steps,
            kwargs=dict(entry.kwargs),
            disable_env_checker=True,
        )


class SharedTextBatch(Sequence):
    """The strings of a batch of ``Text`` observations in shared memory, decoded when read (a live view).

    Gymnasium's ``AsyncVectorEnv(shared_memory=True)`` reads its observation buffer once, at construction,
    and hands out that object after every ``reset`` / ``step`` (a deep copy of it by default): for a ``Box`` it
    is an array view of the buffer, so it follows the workers' writes; for ``Text`` Gymnasium builds a tuple
    of strings, frozen at the empty buffer. This view decodes the buffer on each access instead. A copy,
    deep copy or pickle of it is the plain tuple of strings that ``SyncVectorEnv`` returns, and it compares
    equal to that tuple.
    """

    def __init__(self, space: gym.spaces.Text, buffer: Any, n: int = 1) -> None:
        self._codes = np.frombuffer(buffer.get_obj(), dtype=np.int32).reshape((n, space.max_length))
        self._chars = np.array(space.character_list)
        self._pad = len(space.character_set)

    def __len__(self) -> int:
        return len(self._codes)

    def _decode(self, row: np.ndarray) -> str:
        return "".join(self._chars[row[row < self._pad]].tolist())

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return tuple(self._decode(row) for row in self._codes[index])
        return self._decode(self._codes[index])

    def __iter__(self) -> Iterator[str]:
        return (self._decode(row) for row in self._codes)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SharedTextBatch | tuple | list):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  (mutable, like the buffer)

    def __repr__(self) -> str:
        return repr(tuple(self))

    def __copy__(self) -> tuple[str, ...]:
        return tuple(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[str, ...]:
        return tuple(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return tuple, (tuple(self),)


def install_text_shared_memory() -> None:
    """Make Gymnasium read ``Text`` observations from shared memory as a live :class:`SharedTextBatch`.

    ``gymnasium.make_vec(id, vectorization_mode="async")`` builds ``AsyncVectorEnv(..., shared_memory=True)``
    directly (an env spec's ``vector_entry_point`` and ``kwargs`` cannot change that), so the fix goes where
    Gymnasium dispatches on the space type: its ``read_from_shared_memory`` for ``Text``. Writing (in the
    workers) is Gymnasium's own and already right. Only the parent process reads, and it has imported hiergym
    to find a ``hiergym/`` id. Idempotent; applies to every ``Text`` space, for which it is Gymnasium's intended
    behaviour. ``vector_kwargs={"shared_memory": False}`` (pickled observations) gives the same result.
    """
    from gymnasium.vector.utils import shared_memory

    if getattr(shared_memory.read_from_shared_memory, "_hiergym_text", False):
        return

    @shared_memory.read_from_shared_memory.register(gym.spaces.Text)
    def _read_text(space: gym.spaces.Text, buffer: Any, n: int = 1) -> SharedTextBatch:
        return SharedTextBatch(space, buffer, n)

    shared_memory.read_from_shared_memory._hiergym_text = True  # type: ignore[attr-defined]


def env_ids() -> list[str]:
    return [entry.id for entry in ENVIRONMENTS]


class UnknownEnvironmentError(ValueError):
    """An environment id that is not registered; the message suggests the closest ids."""


def resolve_env_id(name: str) -> str:
    """The registered id for ``name``; accepts the full id, the id without ``hiergym/``, any case.

    Raises :class:`UnknownEnvironmentError` naming the closest registered ids.
    """
    import difflib

    ids = env_ids()
    by_lower = {i.lower(): i for i in ids}
    by_lower.update({i.split("/", 1)[1].lower(): i for i in ids})
    key = name.strip().lower()
    if key in by_lower:
        return by_lower[key]
    if name in gym.registry:  # any other Gymnasium env is the user's to use
        return name
    close = difflib.get_close_matches(key, list(by_lower), n=3, cutoff=0.4)
    hint = ", ".join(dict.fromkeys(by_lower[c] for c in close)) or ", ".join(ids)
    raise UnknownEnvironmentError(
        f"unknown environment {name!r}; did you mean: {hint}? (`hiergym list` shows every id)"
    )


def parse_env_args(pairs: list[str] | None, *, what: str = "environment argument",
                   example: str = "num_boxes=2") -> dict[str, Any]:
    """Parse ``k=v`` strings (values read as YAML: ``num_boxes=2``, ``dim_room=[7,7]``) into kwargs; errors
    name the ``what`` (an environment or an agent argument) and show an ``example``."""
    import yaml

    kwargs: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} {pair!r} is not of the form key=value (e.g. {example})")
        try:
            kwargs[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = str(exc).splitlines()[0]
            raise ValueError(f"cannot read the value of {what} {pair!r} ({problem}); values are YAML, e.g. "
                             f"{example}") from None
    return kwargs
