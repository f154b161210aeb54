"""A cooperative two-agent household task in ALFWorld-style text, as a PettingZoo AEC and Parallel env.

Two agents share a kitchen (cabinets, drawers, fridge, microwave, sinkbasin, coffeemachine, ...) and a joint
goal of two parts, e.g. "put a clean apple in fridge 1 and put a mug in coffeemachine 1". Each agent sees
only the receptacle it stands at and what it carries (objects in closed receptacles stay hidden until
opened), carries at most one object, and can talk to its teammate with ``say[...]``. The episode succeeds
only when the whole joint goal holds. The world lives in :mod:`hiergym.envs.multiagent.household_world`:
``world="builtin"`` (default) is a small generated kitchen; ``world="alfworld"`` is a room (kitchen,
living room, bedroom or bathroom) from ``hiergym.envs.alfworld``'s generator on ALFRED's layouts, with
ALFWorld's rules on what fits where and what can be cleaned, heated or cooled, and the ALFWorld task's goal as
the first part of the joint goal.

    from hiergym.envs.multiagent import household_coop_v0
    env = household_coop_v0.parallel_env(max_rounds=30)

**Turns**: simultaneous. Each round both agents choose an action; the round resolves ``player_0``'s action
first, then ``player_1``'s (so if both grab the same apple, ``player_0`` gets it). The AEC env asks
``player_0`` then ``player_1`` and resolves the round after the second.

**Observation** (text): what your last action did, what your teammate said, what you saw your teammate do at
your location, then your view (``You are facing the countertop 1. On the countertop 1, you see a apple 1.``,
what you carry) and the task.

**Action** (text): ALFWorld commands (``go to X``, ``open X``, ``close X``, ``take O from X``, ``move O to X`` (or ``put O in/on X``),
``clean O with sinkbasin 1``, ``heat O with microwave 1``, ``cool O with fridge 1``, ``examine X``, ``look``,
``inventory``), ``wait``, and ``say[message]`` (up to 300 characters, delivered to the teammate next round).
``admissible_actions`` lists all but ``say``.

**Illegal moves do nothing**: an impossible or malformed command answers "Nothing happens." to its sender
and uses up its round. ``action_valid`` judges a command against the state the agent chose it in: a command
that the teammate's action earlier in the same round made impossible (both took the same apple) also answers
"Nothing happens." but stays valid.

**Reward**: +1 to both agents when the joint goal holds; 0 otherwise.

**Episode end**: termination when the joint goal holds; truncation after ``max_rounds`` rounds.

**Goal visibility**: with ``goal_visibility="shared"`` (default) both agents are told the whole goal, and
either may do either part; the suggested division of labour (``info["my_part"]``) gives part ``i`` to
``player_i``, and working in parallel halves the time. With ``"split"`` each agent is told only its own part:
neither can succeed alone, so they must both work (or talk).

**Info** per agent: the contract keys, ``to_move``, ``agent``, ``location``, ``holding`` (``""``
when in the middle of the room / carrying nothing: every key keeps one type), ``my_part``, ``round``, ``max_rounds``.

**Tasks**: built-in: random kitchens (2-4 cabinets, 1-3 drawers, shelves, distractor objects) and goals over
(object, state, target) combinations; a fixed fifth of those combinations is held out of ``train`` and
``eval_in`` and appears in every ``eval_out`` goal. ALFWorld: ``eval_out`` uses ALFWorld's held-out layouts
and (object, receptacle) pairs, which ``train`` never generates.

**Arguments**: ``max_rounds`` (default 30), ``goal_visibility`` (``"shared"``/``"split"``), ``world``
(``"builtin"``/``"alfworld"``), ``render_mode``, ``max_cycles``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from pettingzoo.utils import wrappers

from hiergym.envs.core import NOTHING_HAPPENS, normalize_action
from hiergym.envs.multiagent import players as players_module
from hiergym.envs.multiagent.base import (
    PASS,
    Event,
    TextGame,
    TextGameAECEnv,
    TextGameParallelEnv,
    is_illegal,
)
from hiergym.envs.multiagent.household_world import (
    START_KINDS,
    STATE_APPLIANCE,
    STATE_VERB,
    GoalPart,
    HouseholdWorld,
    expert_commands,
    generate_alfworld_world,
    generate_world,
)

MAX_SAY_CHARS = 300
WAIT = "wait"
VISIBILITIES = ("shared", "split")
#: World generators by name: (rng, agents, split, num_parts) -> (HouseholdWorld, goal parts).
WORLDS = {"builtin": generate_world, "alfworld": generate_alfworld_world}
_SAY = re.compile(r"^say\s*\[(.*)\]$")


class HouseholdCoopGame(TextGame):
    name = "household_coop_v0"
    illegal_move = PASS

    def __init__(self, max_rounds: int = 30, goal_visibility: str = "shared", world: str = "builtin") -> None:
        if not isinstance(max_rounds, int) or max_rounds < 1:
            raise ValueError(f"max_rounds must be a positive integer, got {max_rounds!r}")
        if goal_visibility not in VISIBILITIES:
            raise ValueError(f"goal_visibility must be one of {VISIBILITIES}, got {goal_visibility!r}")
        if world not in WORLDS:
            raise ValueError(f"world must be one of {tuple(WORLDS)}, got {world!r}")
        self.max_rounds, self.goal_visibility, self.world_name = max_rounds, goal_visibility, world
        self.world: HouseholdWorld | None = None
        self.parts: tuple[GoalPart, ...] = ()
        self.round = 0

    def new_task(self, rng: np.random.Generator, split: str) -> list[Event]:
        self.world, self.parts = WORLDS[self.world_name](rng, self.players, split, num_parts=len(self.players))
        self.round = 0
        return [Event(f"You ({p}) and your teammate ({q}) are in the same house; each of you sees only the "
                      "place where it stands.", (p,))
                for p, q in zip(self.players, self.players[::-1], strict=True)]

    # ------------------------------------------------------------------ rules
    def success(self) -> bool:
        return all(self.world.holds(part) for part in self.parts)  # type: ignore[union-attr]

    def is_over(self) -> bool:
        return self.success()

    def truncated(self) -> bool:
        return self.round >= self.max_rounds and not self.success()

    def to_move(self) -> tuple[str, ...]:
        return () if self.is_over() or self.truncated() else self.players

    def legal_actions(self, player: str) -> list[str]:
        if player not in self.to_move():
            return []
        return [*self.world.admissible(player), WAIT]  # type: ignore[union-attr]

    def parse_action(self, player: str, action: Any) -> str | None:
        text = normalize_action(action)
        if text is None or player not in self.to_move():
            return None
        said = _SAY.match(text)
        if said:
            message = said.group(1).strip()
            return f"say[{message}]" if 0 < len(message) <= MAX_SAY_CHARS else None
        if text == WAIT:
            return WAIT
        return self.world.canonical(player, text)  # type: ignore[union-attr]

    def apply(self, moves: dict[str, str | None]) -> list[Event]:
        world = self.world
        events: list[Event] = []
        for player in self.players:  # resolution order: player_0 first
            move = moves.get(player)
            teammates = tuple(p for p in self.players if p != player)
            if is_illegal(move):
                events.append(Event(NOTHING_HAPPENS, (player,)))
            elif move == WAIT:
                events.append(Event("You wait.", (player,)))
            elif move.startswith("say["):
                events.append(Event(f'You say: "{move[4:-1]}"', (player,)))
                events.append(Event(f'{player} says: "{move[4:-1]}"', teammates))
            elif move not in world.admissible(player):  # the teammate's move earlier this round changed things
                events.append(Event(NOTHING_HAPPENS, (player,)))
            else:
                events.append(Event(world.execute(player, move), (player,)))
                witnesses = tuple(p for p in world.others_here(player) if p in teammates)
                if witnesses and not move.startswith(("look", "inventory", "examine")):
                    events.append(Event(f"You see {player} {_third_person(move)}.", witnesses))
        self.round += 1
        if self.success():
            events.append(Event("The whole task is done. Well done, team!"))
        elif self.round >= self.max_rounds:
            events.append(Event(f"Out of time: {self.max_rounds} rounds are up."))
        return events

    def scores(self) -> dict[str, float]:
        return dict.fromkeys(self.players, 1.0 if self.success() else 0.0)

    def won(self, player: str) -> bool:
        return self.success()

    # ------------------------------------------------------------------ text
    def my_part(self, player: str) -> GoalPart:
        return self.parts[self.players.index(player)]

    def task(self, player: str) -> str:
        if self.goal_visibility == "split":
            return f"{self.my_part(player).text()} (your teammate knows the rest of the team's task)"
        return " and ".join(part.text() for part in self.parts)

    def view(self, player: str) -> str:
        world = self.world
        lines = [world.look(player), world.inventory(player)]  # type: ignore[union-attr]
        if self.success():
            lines.append("The task is done.")
        else:
            lines.append(f"Round {self.round + 1} of {self.max_rounds}. Your task is to: {self.task(player)}")
        return "\n".join(lines)

    def state_key(self) -> str:
        return f"household|{self.world.state_key()}|{'done' if self.success() else 'open'}"  # type: ignore[union-attr]

    def info_extras(self, player: str) -> dict[str, Any]:
        return {
            "agent": player,
            "location": self.world.location[player] or "",  # type: ignore[union-attr]
            "holding": self.world.holding[player] or "",  # type: ignore[union-attr]
            "my_part": self.my_part(player).text(),
            "round": self.round,
            "max_rounds": self.max_rounds,
        }

    def render_text(self) -> str:
        world = self.world
        lines = [f"Task: {' and '.join(p.text() for p in self.parts)} (round {self.round}/{self.max_rounds})"]
        for r in world.receptacles:  # type: ignore[union-attr]
            shut = " (closed)" if world.openable(r) and not world.is_open[r] else ""  # type: ignore[union-attr]
            lines.append(f"  {r}{shut}: {', '.join(world.contents[r]) or '-'}")  # type: ignore[union-attr]
        for p in self.players:
            lines.append(f"  {p} at {world.location[p] or 'the middle of the room'}, "  # type: ignore[union-attr]
                         f"carrying {world.holding[p] or 'nothing'}")  # type: ignore[union-attr]
        return "\n".join(lines)


def _third_person(command: str) -> str:
    verb, _, rest = command.partition(" ")
    if command.startswith("go to "):
        return "go to " + command[len("go to "):]
    return f"{verb} {rest}".strip()


# ---------------------------------------------------------------------------------------- scripted partner
class HouseholdExpert(players_module.ScriptedPlayer):
    """A privileged scripted teammate: it reads the true world (``bind_game``), not just its observation.

    It carries out its own part of the goal (part ``i`` for ``player_i``) by the shortest command sequence,
    then helps with any part still open whose object nobody carries; otherwise it waits. ALFWorld's
    hand-coded expert is privileged the same way. The Gymnasium view and :mod:`~.evaluate` bind it to the
    game; unbound, it can only ``look``.
    """

    name = "expert"

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(seed)
        self.game: HouseholdCoopGame | None = None

    def bind_game(self, game: HouseholdCoopGame) -> None:
        self.game = game

    def act(self, observation: str, info: dict[str, Any]) -> str:
        game = self.game
        if game is None or game.world is None or not info.get("to_move", True):
            return "look" if game is None else WAIT
        agent = info["agent"]
        own = game.my_part(agent)
        for part in (own, *(p for p in game.parts if p != own)):
            commands = expert_commands(game.world, agent, part)
            if commands:
                return commands[0]
        return WAIT


_GOAL_PART = re.compile(r"put a (?:(clean|hot|cool) )?([a-z]+) in ([a-z]+)")


def goal_parts(task: str) -> list[GoalPart]:
    """The goal parts a task text names (``"put a clean apple in fridge and put a mug in cabinet"``)."""
    return [GoalPart(kind, state or None, target) for state, kind, target in _GOAL_PART.findall(task)]


def _search_order(name: str) -> tuple[int, str, int]:
    """Receptacles where loose objects start come first; then by kind and number ("cabinet 10" after 9)."""
    kind, _, number = name.rpartition(" ")
    return (kind not in START_KINDS, kind, int(number) if number.isdigit() else 0)


class HouseholdSearcher(players_module.ScriptedPlayer):
    """A teammate that knows only what it is told and sees, and searches (the expert knows where things are).

    From its ``info`` (the task, where it stands, what it carries, its admissible commands) and its last
    feedback, without binding to the game: it carries the object of a goal part to the appliance the part's
    state needs and then to the part's target; otherwise it takes a goal object it sees (not one already in that
    part's target), opens the closed receptacle it stands at, or walks on to the next receptacle in a fixed order
    (where loose objects start first, cyclic). Its only memory is the states it gave the object it carries (a
    clean, hot or cool object looks no different), so its moves are nearly a function of what a memoryless
    agent with one step of history sees: a teacher for behaviour cloning (``household-selfplay``).
    """

    name = "searcher"

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(seed)
        self._given: dict[str, set[str]] = {}  # object -> states this player gave it
        self._pending: tuple[str, str] | None = None  # (object, state) of its last state command

    def seed(self, seed: int | None) -> None:
        super().seed(seed)
        self._given, self._pending = {}, None

    def act(self, observation: str, info: dict[str, Any]) -> str:
        if not info.get("to_move", True):
            return WAIT
        if self._pending is not None:  # the last state command worked unless it answered "Nothing happens."
            obj, state = self._pending
            if not observation.startswith(NOTHING_HAPPENS):
                self._given.setdefault(obj, set()).add(state)
            self._pending = None
        admissible = list(info.get("admissible_actions") or [])
        here, held = info.get("location") or None, info.get("holding") or None
        parts = goal_parts(str(info.get("task") or observation))
        places = sorted([a[len("go to "):] for a in admissible if a.startswith("go to ")]
                        + ([here] if here else []), key=_search_order)
        kind = HouseholdWorld.kind

        def go_to_kind(target: str) -> str | None:
            if here is not None and kind(here) == target:
                return None
            return next((f"go to {p}" for p in places if kind(p) == target), None)

        if held is not None:
            part = next((p for p in parts if p.kind == kind(held)), None)
            if part is not None and part.state is not None and part.state not in self._given.get(held, set()):
                appliance = STATE_APPLIANCE[part.state]
                if here is not None and kind(here) == appliance:
                    command = f"{STATE_VERB[part.state]} {held} with {here}"
                    if command in admissible:
                        self._pending = (held, part.state)
                        return command
                elif (command := go_to_kind(appliance)) is not None:
                    return command
                part = None  # this object cannot take the state here: put it down and search on
            if part is not None:
                command = go_to_kind(part.target)
                if command is not None:
                    return command
                for command in (f"open {here}", f"move {held} to {here}"):
                    if command in admissible:
                        return command
                return WAIT
            if f"move {held} to {here}" in admissible:  # not a goal object (or one it cannot treat): put it down
                return f"move {held} to {here}"
        else:
            for command in admissible:
                obj = command[len("take "):].rsplit(" from ", 1)[0] if command.startswith("take ") else None
                if obj is not None and any(p.kind == kind(obj) and kind(here) != p.target for p in parts):
                    return command
            if f"open {here}" in admissible:
                return f"open {here}"
        if not places:
            return WAIT
        after = [p for p in places if here is None or _search_order(p) > _search_order(here)]
        return f"go to {(after or places)[0]}"


players_module.register_players(HouseholdCoopGame.name, {
    "random": players_module.RandomPlayer,
    "expert": HouseholdExpert,
    "searcher": HouseholdSearcher,
})


# ---------------------------------------------------------------------------------------- PettingZoo
class raw_env(TextGameAECEnv):  # noqa: N801 - PettingZoo's naming convention
    """Household cooperation AEC env (see the module docstring)."""

    metadata = {"render_modes": ["ansi", "human"], "name": HouseholdCoopGame.name, "is_parallelizable": True}
    game_class = HouseholdCoopGame


class parallel_raw_env(TextGameParallelEnv):  # noqa: N801
    """Household cooperation Parallel env: both agents act every round."""

    metadata = {"render_modes": ["ansi", "human"], "name": HouseholdCoopGame.name}
    game_class = HouseholdCoopGame


def env(**kwargs: Any):
    """The AEC env wrapped in PettingZoo's order-enforcing wrapper."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))


def parallel_env(**kwargs: Any) -> parallel_raw_env:
    return parallel_raw_env(**kwargs)
