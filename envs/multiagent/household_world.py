"""A small ALFWorld-style household for several agents: receptacles, objects, partial views, text commands.

This module is the *world* of ``household_coop_v0`` and knows nothing about turns, goals-as-tasks or
PettingZoo, so that the game can later run on the ALFWorld-like generator of ``hiergym.envs.alfworld``
instead: anything that offers :class:`HouseholdWorld`'s methods (``admissible``, ``execute``, ``look``,
``describe_room``, ``holds``, ``state_key``) and a generator with :func:`generate_world`'s signature will do.

Text follows ALFWorld (Shridhar et al., 2021): "You arrive at fridge 1. The fridge 1 is closed.", "On the
countertop 1, you see a apple 1, and a mug 2.", commands ``go to fridge 1``, ``open fridge 1``, ``take apple 1
from countertop 1``, ``put apple 1 in/on fridge 1``, ``clean apple 1 with sinkbasin 1``, ``heat ... with
microwave 1``, ``cool ... with fridge 1``, ``examine ...``, ``look``, ``inventory``. Every agent sees only the
receptacle it stands at (and what it carries); objects in a closed receptacle are hidden until it is opened.
An agent carries at most one object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from hiergym.envs.core import NOTHING_HAPPENS, stable_seed

OPENABLE = ("fridge", "microwave", "cabinet", "drawer")
#: Receptacles every kitchen has (the appliances the goals need), and optional extra storage.
FIXED_RECEPTACLES = ("countertop 1", "diningtable 1", "fridge 1", "microwave 1", "sinkbasin 1",
                     "stoveburner 1", "coffeemachine 1")
STORAGE_KINDS = ("cabinet", "drawer", "shelf")
#: Where loose objects may start.
START_KINDS = ("countertop", "diningtable", "cabinet", "drawer", "shelf", "fridge")
#: Object kinds and the states a goal may ask of them.
OBJECT_STATES = {
    "apple": ("clean", "hot", "cool", None), "tomato": ("clean", "cool", None),
    "potato": ("clean", "hot", "cool", None), "egg": ("hot", "cool", None), "lettuce": ("clean", "cool", None),
    "bread": ("hot", None), "mug": ("clean", "hot", "cool", None), "cup": ("clean", "cool", None),
    "plate": ("clean", None), "bowl": ("clean", None), "knife": ("clean", None), "spoon": ("clean", None),
}
#: The appliance that gives each state.
STATE_APPLIANCE = {"clean": "sinkbasin 1", "hot": "microwave 1", "cool": "fridge 1"}
STATE_VERB = {"clean": "clean", "hot": "heat", "cool": "cool"}
#: Receptacles a goal may ask to put an object in.
GOAL_TARGETS = ("countertop 1", "diningtable 1", "fridge 1", "cabinet 1", "shelf 1", "coffeemachine 1",
                "stoveburner 1", "drawer 1")


@dataclass(frozen=True)
class GoalPart:
    """``put a <state> <kind> in <target>``: some object of ``kind`` with ``state`` (if any) lies in ``target``."""

    kind: str
    state: str | None
    target: str

    def text(self) -> str:
        return f"put a {self.state + ' ' if self.state else ''}{self.kind} in {self.target}"


def held_out(part: GoalPart) -> bool:
    """Goal parts reserved for ``eval_out`` (a fixed fifth of the (kind, state, target) combinations)."""
    return stable_seed("household", part.kind, part.state, part.target) % 5 == 0


@dataclass
class HouseholdWorld:
    receptacles: list[str]
    is_open: dict[str, bool]
    contents: dict[str, list[str]]
    states: dict[str, set[str]] = field(default_factory=dict)
    location: dict[str, str | None] = field(default_factory=dict)
    holding: dict[str, str | None] = field(default_factory=dict)

    # ------------------------------------------------------------------ facts
    @staticmethod
    def kind(name: str) -> str:
        return name.rsplit(" ", 1)[0]

    def openable(self, receptacle: str) -> bool:
        return self.kind(receptacle) in OPENABLE

    def visible(self, receptacle: str) -> bool:
        return not self.openable(receptacle) or self.is_open[receptacle]

    def where(self, obj: str) -> str | None:
        """The receptacle holding ``obj``, or None when an agent carries it."""
        return next((r for r in self.receptacles if obj in self.contents[r]), None)

    def holds(self, part: GoalPart) -> bool:
        """True when the goal part is satisfied."""
        return any(self.kind(o) == part.kind and (part.state is None or part.state in self.states[o])
                   for o in self.contents[part.target])

    # ------------------------------------------------------------------ text
    @staticmethod
    def _list(items: list[str]) -> str:
        if not items:
            return "nothing"
        named = [f"a {x}" for x in items]
        return named[0] if len(named) == 1 else ", ".join(named[:-1]) + f", and {named[-1]}"

    def describe_room(self) -> str:
        return ("You are in the middle of a room. Looking quickly around you, you see "
                f"{self._list(self.receptacles)}.")

    def describe_receptacle(self, receptacle: str) -> str:
        if not self.visible(receptacle):
            return f"The {receptacle} is closed."
        preposition = "In" if self.openable(receptacle) or self.kind(receptacle) == "sinkbasin" else "On"
        stuff = self._list(self.contents[receptacle])
        if self.openable(receptacle):
            return f"The {receptacle} is open. In it, you see {stuff}."
        return f"{preposition} the {receptacle}, you see {stuff}."

    def others_here(self, agent: str) -> list[str]:
        place = self.location[agent]
        return [a for a in self.location if a != agent and place is not None and self.location[a] == place]

    def look(self, agent: str) -> str:
        place = self.location[agent]
        text = self.describe_room() if place is None else (
            f"You are facing the {place}. " + self.describe_receptacle(place))
        company = self.others_here(agent)
        if company:
            text += " " + " and ".join(company) + (" is" if len(company) == 1 else " are") + " here too."
        return text

    def inventory(self, agent: str) -> str:
        held = self.holding[agent]
        return f"You are carrying: a {held}." if held else "You are not carrying anything."

    # ------------------------------------------------------------------ commands
    def admissible(self, agent: str) -> list[str]:
        """Every world command ``agent`` can carry out now (ALFWorld's admissible commands)."""
        place, held = self.location[agent], self.holding[agent]
        actions = [f"go to {r}" for r in self.receptacles if r != place]
        if place is not None:
            if self.openable(place):
                actions.append(f"{'close' if self.is_open[place] else 'open'} {place}")
            if self.visible(place):
                if held is None:
                    actions += [f"take {o} from {place}" for o in self.contents[place]]
                else:
                    actions.append(f"put {held} in/on {place}")
            if held is not None:
                for state, appliance in STATE_APPLIANCE.items():
                    if place == appliance:
                        actions.append(f"{STATE_VERB[state]} {held} with {appliance}")
            actions.append(f"examine {place}")
        actions += ["look", "inventory"]
        return actions

    def canonical(self, agent: str, command: str) -> str | None:
        """The admissible command ``command`` (normalised text) stands for, or None."""
        command = re.sub(r"^move (.+) to (.+)$", r"put \1 in/on \2", command)
        command = re.sub(r"^put (.+?) (?:in|on|in/on|into|onto) (.+)$", r"put \1 in/on \2", command)
        command = re.sub(r"^(go to|goto|walk to) (?:the )?", "go to ", command)
        command = {"l": "look", "i": "inventory", "inv": "inventory"}.get(command, command)
        return command if command in self.admissible(agent) else None

    def execute(self, agent: str, command: str) -> str:
        """Carry out an admissible command and return the feedback (``NOTHING_HAPPENS`` otherwise)."""
        if command not in self.admissible(agent):
            return NOTHING_HAPPENS
        place, held = self.location[agent], self.holding[agent]
        if command.startswith("go to "):
            target = command[len("go to "):]
            self.location[agent] = target
            text = f"You arrive at {target}. " + self.describe_receptacle(target)
            company = self.others_here(agent)
            return text + (" " + " and ".join(company) + " is here too." if company else "")
        if command.startswith("open "):
            self.is_open[place] = True  # type: ignore[index]
            return f"You open the {place}. " + self.describe_receptacle(place)  # type: ignore[arg-type]
        if command.startswith("close "):
            self.is_open[place] = False  # type: ignore[index]
            return f"You close the {place}."
        if command.startswith("take "):
            obj = command[len("take "):].rsplit(" from ", 1)[0]
            self.contents[place].remove(obj)  # type: ignore[index]
            self.holding[agent] = obj
            return f"You pick up the {obj} from the {place}."
        if command.startswith("put "):
            self.contents[place].append(held)  # type: ignore[index, arg-type]
            self.holding[agent] = None
            return f"You put the {held} in/on the {place}."
        for state, verb in STATE_VERB.items():
            if command.startswith(verb + " "):
                self.states[held].add(state)  # type: ignore[index]
                return f"You {verb} the {held} using the {place}."
        if command.startswith("examine "):
            return self.describe_receptacle(place)  # type: ignore[arg-type]
        if command == "look":
            return self.look(agent)
        return self.inventory(agent)

    def state_key(self) -> str:
        recs = ";".join(
            f"{r}{'+' if self.is_open.get(r) else ''}:" + ",".join(
                o + ("(" + "".join(sorted(s[0] for s in self.states[o])) + ")" if self.states[o] else "")
                for o in sorted(self.contents[r]))
            for r in self.receptacles)
        agents = ";".join(f"{a}@{self.location[a] or '-'}/{self.holding[a] or '-'}"
                          + ("(" + "".join(sorted(s[0] for s in self.states[self.holding[a]])) + ")"
                             if self.holding[a] and self.states[self.holding[a]] else "")
                          for a in sorted(self.location))
        return f"{recs}|{agents}"


def generate_world(
    rng: np.random.Generator, agents: tuple[str, ...], split: str, num_parts: int = 2
) -> tuple[HouseholdWorld, tuple[GoalPart, ...]]:
    """A random kitchen and a joint goal of ``num_parts`` parts on different object kinds.

    ``eval_out`` goals have at least one held-out part (:func:`held_out`); the other splits have none.
    Each goal object starts away from its target, in a random storage place, among distractor objects.
    """
    receptacles = list(FIXED_RECEPTACLES)
    for kind, low, high in (("cabinet", 1, 4), ("drawer", 1, 3), ("shelf", 1, 2)):
        receptacles += [f"{kind} {i}" for i in range(1, int(rng.integers(low, high + 1)) + 1)]
    if rng.random() < 0.5:
        receptacles.append("countertop 2")
    receptacles.sort()
    targets = [t for t in GOAL_TARGETS if t in receptacles]
    while True:
        kinds = [str(k) for k in rng.choice(sorted(OBJECT_STATES), size=num_parts, replace=False)]
        parts = []
        for kind in kinds:
            states = OBJECT_STATES[kind]
            state = states[int(rng.integers(len(states)))]
            if kind == "mug" and rng.random() < 0.5:
                target = "coffeemachine 1"
            else:
                target = str(rng.choice([t for t in targets if t != "coffeemachine 1"]))
            parts.append(GoalPart(kind, state, target))
        wanted_out = split == "eval_out"
        if any(held_out(p) for p in parts) == wanted_out:
            break
    starts = [r for r in receptacles if HouseholdWorld.kind(r) in START_KINDS]
    contents: dict[str, list[str]] = {r: [] for r in receptacles}
    counters: dict[str, int] = {}
    others = [k for k in sorted(OBJECT_STATES) if k not in kinds]
    distractors = [str(k) for k in rng.choice(others, size=int(rng.integers(3, 7)), replace=True)]
    for kind, part in [*zip(kinds, parts, strict=True), *((d, None) for d in distractors)]:
        counters[kind] = counters.get(kind, 0) + 1
        name = f"{kind} {counters[kind]}"
        allowed = [r for r in starts if part is None or r != part.target]
        contents[str(rng.choice(allowed))].append(name)
    world = HouseholdWorld(
        receptacles=receptacles,
        is_open={r: False for r in receptacles if HouseholdWorld.kind(r) in OPENABLE},
        contents=contents,
        states={o: set() for objs in contents.values() for o in objs},
        location=dict.fromkeys(agents),
        holding=dict.fromkeys(agents),
    )
    return world, tuple(parts)


def expert_commands(world: HouseholdWorld, agent: str, part: GoalPart) -> list[str]:
    """World commands that make ``part`` hold, for ``agent``, from the true state (a privileged plan).

    Empty when the part already holds. Picks the goal object the agent carries, else the first object of the
    kind that no other agent carries and that is not already doing its job elsewhere.
    """
    if world.holds(part):
        return []
    plan: list[str] = []
    place, held = world.location[agent], world.holding[agent]

    def go(target: str) -> None:
        nonlocal place
        if place != target:
            plan.append(f"go to {target}")
            place = target
        if world.openable(target) and not world.is_open[target] and f"open {target}" not in plan:
            plan.append(f"open {target}")

    if held is not None and world.kind(held) != part.kind:  # put down whatever else it carries first
        if place is None or not world.visible(place):
            return []
        plan.append(f"put {held} in/on {place}")
        held = None
    if held is None:
        candidates = [o for r in world.receptacles for o in world.contents[r]
                      if world.kind(o) == part.kind and r != part.target]
        if not candidates:
            return []
        obj = min(candidates, key=lambda o: (part.state is not None and part.state not in world.states[o], o))
        source = world.where(obj)
        go(source)  # type: ignore[arg-type]
        plan.append(f"take {obj} from {source}")
        held = obj
    if part.state is not None and part.state not in world.states[held]:
        appliance = STATE_APPLIANCE[part.state]
        if place != appliance:
            plan.append(f"go to {appliance}")
            place = appliance
        plan.append(f"{STATE_VERB[part.state]} {held} with {appliance}")
    go(part.target)
    plan.append(f"put {held} in/on {part.target}")
    return plan
