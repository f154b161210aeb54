"""Registration of every hiergym environment under the ``hiergym/`` namespace.

Each environment is one :class:`EnvEntry` in :data:`ENVIRONMENTS`: its id, where it lives, its episode limit,
and the one-line description and key arguments that ``hiergym list`` prints. Entry points are strings, so
registering imports nothing heavy; the module loads on the first ``gymnasium.make``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym


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


def parse_env_args(pairs: list[str] | None) -> dict[str, Any]:
    """Parse ``k=v`` strings (values read as YAML: ``num_boxes=2``, ``dim_room=[7,7]``) into kwargs."""
    import yaml

    kwargs: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"environment argument {pair!r} is not of the form key=value (e.g. num_boxes=2)")
        try:
            kwargs[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"cannot read the value of environment argument {pair!r}: {exc}") from None
    return kwargs
