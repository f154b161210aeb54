"""ALFWorld-style households for several agents: receptacles, objects, partial views, text commands.

This module is the *world* of ``household_coop_v0``; it knows nothing about turns or PettingZoo. Worlds come
from two generators with one signature, ``(rng, agents, split) -> (HouseholdWorld, goal parts)``:

- :func:`generate_world`: a small built-in kitchen (fixed appliances, a few cabinets, drawers, shelves);
- :func:`generate_alfworld_world`: a room from ``hiergym.envs.alfworld``'s generator (ALFRED's AI2-THOR
  layouts, object types and which receptacle may hold what), with the ALFWorld task's goal as the first part
  and a second part drawn on the same room.

Text follows ALFWorld (Shridhar et al., 2021) and ``hiergym/ALFWorld-v0``: "You arrive at fridge 1. The fridge
1 is closed.", "On the countertop 1, you see a apple 1, and a mug 2.", commands ``go to fridge 1``, ``open
fridge 1``, ``take apple 1 from countertop 1``, ``move apple 1 to fridge 1`` (``put apple 1 in/on fridge 1`` is
read the same), ``clean apple 1 with sinkbasin 1``, ``heat ... with microwave 1``, ``cool ... with fridge 1``,
``examine ...``, ``look``, ``inventory``. Every agent sees only the receptacle it stands at (and what it
carries); objects in a closed receptacle are hidden until it is opened. An agent carries at most one object.
Goals name receptacle *types*, as ALFWorld's do: "put a clean apple in fridge" holds for any fridge.
"""

from __future__ import annotations

import functools
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
#: The kind of receptacle that gives each state.
STATE_APPLIANCE = {"clean": "sinkbasin", "hot": "microwave", "cool": "fridge"}
STATE_VERB = {"clean": "clean", "hot": "heat", "cool": "cool"}
#: Receptacle kinds a built-in goal may ask to put an object in.
GOAL_TARGETS = ("countertop", "diningtable", "fridge", "cabinet", "shelf", "coffeemachine", "stoveburner", "drawer")
#: ALFWorld task types whose goal can be one part of a joint goal, and the state each asks for.
ALFWORLD_PART_TYPES = {
    "pick_and_place_simple": None,
    "pick_clean_then_place_in_recep": "clean",
    "pick_heat_then_place_in_recep": "hot",
    "pick_cool_then_place_in_recep": "cool",
}


@functools.lru_cache(maxsize=65536)
def _kind(name: str) -> str:
    """"cabinet 2" -> "cabinet" (names end in their number)."""
    return name.rsplit(" ", 1)[0]


@dataclass(frozen=True)
class GoalPart:
    """``put a <state> <kind> in <target>``: an object of ``kind`` with ``state`` (if any) lies in a receptacle of
    kind ``target`` (e.g. ``"fridge"``)."""

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
    """The state of a household and its rules. Names are ALFWorld display names ("cabinet 2", "apple 1")."""

    receptacles: list[str]
    is_open: dict[str, bool]  # openable receptacles only
    contents: dict[str, list[str]]
    states: dict[str, set[str]] = field(default_factory=dict)
    location: dict[str, str | None] = field(default_factory=dict)
    holding: dict[str, str | None] = field(default_factory=dict)
    #: object name -> the states it can take ("clean", "hot", "cool"); None: every state
    abilities: dict[str, frozenset[str]] | None = None
    #: receptacle name -> object kinds it can hold; None: anything fits anywhere
    accepts: dict[str, frozenset[str]] | None = None
    #: objects that cannot be picked up (ALFWorld's lamps)
    fixed_objects: frozenset[str] = frozenset()
    #: where the layout comes from: "builtin" or "alfworld:<AI2-THOR FloorPlan number>"
    origin: str = "builtin"

    def __post_init__(self) -> None:
        # receptacles never change: index them by kind once (goal tests run on every info)
        self.by_kind: dict[str, list[str]] = {}
        for receptacle in self.receptacles:
            self.by_kind.setdefault(self.kind(receptacle), []).append(receptacle)

    # ------------------------------------------------------------------ facts
    @staticmethod
    def kind(name: str) -> str:
        return _kind(name)

    def openable(self, receptacle: str) -> bool:
        return receptacle in self.is_open

    def fits(self, obj: str, receptacle: str) -> bool:
        return self.accepts is None or self.kind(obj) in self.accepts[receptacle]

    def can_become(self, obj: str, state: str) -> bool:
        return self.abilities is None or state in self.abilities[obj]

    def of_kind(self, kind: str) -> list[str]:
        return self.by_kind.get(kind, [])

    def visible(self, receptacle: str) -> bool:
        return not self.openable(receptacle) or self.is_open[receptacle]

    def where(self, obj: str) -> str | None:
        """The receptacle holding ``obj``, or None when an agent carries it."""
        return next((r for r in self.receptacles if obj in self.contents[r]), None)

    def holds(self, part: GoalPart) -> bool:
        """True when the goal part is satisfied."""
        return any(self.kind(o) == part.kind and (part.state is None or part.state in self.states[o])
                   for r in self.of_kind(part.target) for o in self.contents[r])

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
                    actions += [f"take {o} from {place}" for o in self.contents[place] if o not in self.fixed_objects]
                elif self.fits(held, place):
                    actions.append(f"move {held} to {place}")
            if held is not None:
                for state, appliance in STATE_APPLIANCE.items():
                    if self.kind(place) == appliance and self.can_become(held, state):
                        actions.append(f"{STATE_VERB[state]} {held} with {place}")
            actions.append(f"examine {place}")
        actions += ["look", "inventory"]
        return actions

    def canonical(self, agent: str, command: str) -> str | None:
        """The admissible command ``command`` (normalised text) stands for, or None."""
        command = re.sub(r"^put (.+?) (?:in/on|in|on|into|onto) (.+)$", r"move \1 to \2", command)
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
        if command.startswith("move "):
            self.contents[place].append(held)  # type: ignore[index, arg-type]
            self.holding[agent] = None
            return f"You move the {held} to the {place}."
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
    """A random built-in kitchen and a joint goal of ``num_parts`` parts on different object kinds.

    ``eval_out`` goals have at least one held-out part (:func:`held_out`); the other splits have none.
    Each goal object starts away from its target, in a random storage place, among distractor objects.
    """
    receptacles = list(FIXED_RECEPTACLES)
    for kind, low, high in (("cabinet", 1, 4), ("drawer", 1, 3), ("shelf", 1, 2)):
        receptacles += [f"{kind} {i}" for i in range(1, int(rng.integers(low, high + 1)) + 1)]
    if rng.random() < 0.5:
        receptacles.append("countertop 2")
    receptacles.sort()
    kinds_present = {HouseholdWorld.kind(r) for r in receptacles}
    targets = [t for t in GOAL_TARGETS if t in kinds_present]
    while True:
        kinds = [str(k) for k in rng.choice(sorted(OBJECT_STATES), size=num_parts, replace=False)]
        parts = []
        for kind in kinds:
            states = OBJECT_STATES[kind]
            state = states[int(rng.integers(len(states)))]
            if kind == "mug" and rng.random() < 0.5:
                target = "coffeemachine"
            else:
                target = str(rng.choice([t for t in targets if t != "coffeemachine"]))
            parts.append(GoalPart(kind, state, target))
        if any(held_out(p) for p in parts) == (split == "eval_out"):
            break
    starts = [r for r in receptacles if HouseholdWorld.kind(r) in START_KINDS]
    contents: dict[str, list[str]] = {r: [] for r in receptacles}
    counters: dict[str, int] = {}
    others = [k for k in sorted(OBJECT_STATES) if k not in kinds]
    distractors = [str(k) for k in rng.choice(others, size=int(rng.integers(3, 7)), replace=True)]
    for kind, part in [*zip(kinds, parts, strict=True), *((d, None) for d in distractors)]:
        counters[kind] = counters.get(kind, 0) + 1
        name = f"{kind} {counters[kind]}"
        allowed = [r for r in starts if part is None or HouseholdWorld.kind(r) != part.target]
        contents[str(rng.choice(allowed))].append(name)
    objects = [o for objs in contents.values() for o in objs]
    world = HouseholdWorld(
        receptacles=receptacles,
        is_open={r: False for r in receptacles if HouseholdWorld.kind(r) in OPENABLE},
        contents=contents,
        states={o: set() for o in objects},
        location=dict.fromkeys(agents),
        holding=dict.fromkeys(agents),
        abilities={o: frozenset(s for s in OBJECT_STATES[HouseholdWorld.kind(o)] if s) for o in objects},
    )
    return world, tuple(parts)


#: Rooms :func:`generate_alfworld_world` draws before it gives up on a goal of that many parts.
MAX_ROOM_DRAWS = 1000


def generate_alfworld_world(
    rng: np.random.Generator, agents: tuple[str, ...], split: str, num_parts: int = 2
) -> tuple[HouseholdWorld, tuple[GoalPart, ...]]:
    """A room from ``hiergym.envs.alfworld``'s generator with a joint goal of ``num_parts`` parts.

    The first part is the goal of an ALFWorld task (pick-and-place, clean, heat or cool) generated for
    ``split``, so ``eval_out`` uses ALFWorld's held-out layouts and goal pairs. The other parts are drawn on the
    same room: another object type already placed there, a receptacle type that can hold it (and holds no
    object of that type yet), a state the object can take when the room has the appliance, and, outside
    ``eval_out``, never one of ALFWorld's held-out (object, receptacle) pairs. A room where the goal does not
    fit is drawn again from the same ``rng`` (at most :data:`MAX_ROOM_DRAWS` rooms, then ``ValueError``).
    """
    for _ in range(MAX_ROOM_DRAWS):
        drawn = _draw_alfworld_world(rng, agents, split, num_parts)
        if drawn is not None:
            return drawn
    raise ValueError(f"no ALFWorld room of split {split!r} fits a goal of {num_parts} parts in {MAX_ROOM_DRAWS} "
                     "draws; use fewer parts (num_parts)")


def _draw_alfworld_world(rng: np.random.Generator, agents: tuple[str, ...], split: str, num_parts: int
                         ) -> tuple[HouseholdWorld, tuple[GoalPart, ...]] | None:
    """One room and its goal, or None when the goal does not fit the room."""
    from hiergym.envs.alfworld import world as alfworld

    types = list(ALFWORLD_PART_TYPES)
    task = alfworld.generate_task(rng, split, types[int(rng.integers(len(types)))])
    receptacles = [r.name for r in task.receptacles]
    rec_kind = {r.type: HouseholdWorld.kind(r.name) for r in task.receptacles}
    obj_kind = {o.type: HouseholdWorld.kind(o.name) for o in task.objects}
    contents: dict[str, list[str]] = {r: [] for r in receptacles}
    for obj, home in zip(task.objects, task.placement, strict=True):
        contents[receptacles[home]].append(obj.name)
    abilities = {o.name: frozenset(state for state, able in (("clean", o.cleanable), ("hot", o.heatable),
                                                             ("cool", o.coolable)) if able)
                 for o in task.objects}
    world = HouseholdWorld(
        receptacles=receptacles,
        is_open={r.name: False for r in task.receptacles if r.openable},
        contents=contents,
        states={o.name: set() for o in task.objects},
        location=dict.fromkeys(agents),
        holding=dict.fromkeys(agents),
        abilities=abilities,
        accepts={r.name: frozenset(obj_kind[o.type] for o in task.objects if alfworld.can_contain(r.type, o.type))
                 for r in task.receptacles},
        fixed_objects=frozenset(o.name for o in task.objects if not o.pickupable),
        origin=f"alfworld:{task.scene}",
    )
    parts = [GoalPart(obj_kind[task.obj_type], ALFWORLD_PART_TYPES[task.task_type], rec_kind[task.recep_type])]
    appliances = {HouseholdWorld.kind(r) for r in receptacles}
    if parts[0].state is not None and STATE_APPLIANCE[parts[0].state] not in appliances:
        # a few ALFRED sinks get another kind than "sinkbasin" (alfworld.world.base_name): nobody could clean here
        return None
    used_types = {task.obj_type}
    by_type = {o.type: o for o in task.objects if o.pickupable}
    options = []
    for obj_type, sample in sorted(by_type.items()):
        if obj_type in used_types:
            continue
        where = {task.receptacles[h].type for o, h in zip(task.objects, task.placement, strict=True)
                 if o.type == obj_type}
        for recep in task.receptacles:
            if recep.type in where or not alfworld.can_contain(recep.type, obj_type):
                continue
            if split != "eval_out" and alfworld.is_held_out_pair(obj_type, recep.type):
                continue
            target = rec_kind[recep.type]
            for state in (None, *sorted(abilities[sample.name])):
                if state is not None and (STATE_APPLIANCE[state] not in appliances
                                          or STATE_APPLIANCE[state] == target):
                    continue
                options.append(GoalPart(obj_kind[obj_type], state, target))
    options = sorted(set(options), key=lambda p: (p.kind, p.state or "", p.target))
    for _ in range(num_parts - 1):
        fresh = [p for p in options if p.kind not in {q.kind for q in parts}]
        if not fresh:  # a room too bare for another part: draw another room
            return None
        parts.append(fresh[int(rng.integers(len(fresh)))])
    return world, tuple(parts)


def expert_commands(world: HouseholdWorld, agent: str, part: GoalPart) -> list[str]:
    """World commands that make ``part`` hold, for ``agent``, from the true state (a privileged plan).

    Empty when the part already holds or the agent cannot make it hold (e.g. the object is in a teammate's
    hands). Uses the goal object the agent carries, else the first object of the kind that lies outside the
    target receptacles (preferring one already in the right state).
    """
    if world.holds(part):
        return []
    plan: list[str] = []
    place, held = world.location[agent], world.holding[agent]
    opened: set[str] = set()

    def go(target: str) -> None:
        nonlocal place
        if place != target:
            plan.append(f"go to {target}")
            place = target

    def open_here() -> None:
        if world.openable(place) and not world.is_open[place] and place not in opened:  # type: ignore[arg-type]
            plan.append(f"open {place}")
            opened.add(place)  # type: ignore[arg-type]

    if held is not None and world.kind(held) != part.kind:  # put down whatever else it carries first
        if place is None or not world.visible(place) or not world.fits(held, place):
            return []
        plan.append(f"move {held} to {place}")
        held = None
    if held is None:
        candidates = [o for r in world.receptacles if world.kind(r) != part.target for o in world.contents[r]
                      if world.kind(o) == part.kind and o not in world.fixed_objects]
        if not candidates:
            return []
        obj = min(candidates, key=lambda o: (part.state is not None and part.state not in world.states[o], o))
        source = world.where(obj)
        go(source)  # type: ignore[arg-type]
        open_here()
        plan.append(f"take {obj} from {source}")
        held = obj
    if part.state is not None and part.state not in world.states[held]:
        appliances = world.of_kind(STATE_APPLIANCE[part.state])
        if not appliances or not world.can_become(held, part.state):
            return []
        go(appliances[0])
        plan.append(f"{STATE_VERB[part.state]} {held} with {appliances[0]}")
    targets = [r for r in world.of_kind(part.target) if world.fits(held, r)]
    if not targets:
        return []
    go(place if place in targets else targets[0])  # type: ignore[arg-type]
    open_here()
    plan.append(f"move {held} to {place}")
    return plan
