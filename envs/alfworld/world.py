"""ALFWorld-style household tasks: vocabulary, scene layouts, and a seeded task generator.

A :class:`Task` is everything the engines need to play one game: the receptacles of an AI2-THOR room layout
(ALFRED's own ids, so names and their numbering come out exactly as ALFWorld's demangler writes them), the
objects placed in them, and the goal. Generation is a pure function of a ``numpy`` generator, the split and
the task type, so the same seed gives the same task in every process.

Splits (see ``docs/alfworld.md``):

- ``train`` and ``eval_in`` use the training layouts and never a held-out (object, receptacle) goal pair;
  they differ only in their random streams (``eval_in`` tasks are unseen tasks of the training distribution).
- ``eval_out`` uses only the held-out layouts (:data:`HELD_OUT_SCENES`) and, whenever the layout offers one,
  a held-out goal pair (:func:`is_held_out_pair`). ``train`` never generates either.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np

from hiergym.envs.alfworld import _alfred_data as data

TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)

#: Rooms each task type is generated in (ALFRED's ``GOALS_VALID``).
VALID_ROOMS = {
    "pick_and_place_simple": ("Kitchen", "LivingRoom", "Bedroom", "Bathroom"),
    "look_at_obj_in_light": ("LivingRoom", "Bedroom"),
    "pick_clean_then_place_in_recep": ("Kitchen", "Bathroom"),
    "pick_heat_then_place_in_recep": ("Kitchen",),
    "pick_cool_then_place_in_recep": ("Kitchen",),
    "pick_two_obj_and_place": ("Kitchen", "LivingRoom", "Bedroom", "Bathroom"),
}

#: Instruction templates, as ALFWorld's goal library words them (one is drawn per task).
TEMPLATES = {
    "pick_and_place_simple": ("put a {obj} in {recep}", "put some {obj} on {recep}"),
    "look_at_obj_in_light": ("look at {obj} under the {toggle}", "examine the {obj} with the {toggle}"),
    "pick_clean_then_place_in_recep": ("put a clean {obj} in {recep}", "clean some {obj} and put it in {recep}"),
    "pick_heat_then_place_in_recep": ("put a hot {obj} in {recep}", "heat some {obj} and put it in {recep}"),
    "pick_cool_then_place_in_recep": ("put a cool {obj} in {recep}", "cool some {obj} and put it in {recep}"),
    "pick_two_obj_and_place": ("put two {obj} in {recep}", "find two {obj} and put them in {recep}"),
}

#: Sizes of the fixed evaluation sets per task type, as in ALFWorld's valid_seen (140) / valid_unseen (134).
EVAL_SET_COMPOSITION = {
    "eval_in": {
        "pick_and_place_simple": 35, "look_at_obj_in_light": 13, "pick_clean_then_place_in_recep": 27,
        "pick_heat_then_place_in_recep": 16, "pick_cool_then_place_in_recep": 25, "pick_two_obj_and_place": 24,
    },
    "eval_out": {
        "pick_and_place_simple": 24, "look_at_obj_in_light": 18, "pick_clean_then_place_in_recep": 31,
        "pick_heat_then_place_in_recep": 23, "pick_cool_then_place_in_recep": 21, "pick_two_obj_and_place": 17,
    },
}

#: Room layouts reserved for ``eval_out`` (two per room type; 10, 219, 308 and 424 are ALFWorld's
#: valid_unseen scenes).
HELD_OUT_SCENES = frozenset({10, 20, 219, 229, 308, 318, 414, 424})

#: Where desk and floor lamps stand (they are not pickupable).
LAMP_RECEPTACLES = ("Desk", "SideTable", "Dresser", "CoffeeTable", "DiningTable", "Shelf", "TVStand")

#: Goal receptacles that would make a task degenerate (heat an apple and put it in the microwave...).
_EXCLUDED_GOAL_RECEPTACLES = {
    "pick_clean_then_place_in_recep": {"SinkBasin", "BathtubBasin"},
    "pick_heat_then_place_in_recep": {"Microwave"},
    "pick_cool_then_place_in_recep": {"Fridge"},
}

_HEATABLE = frozenset(data.HEATABLE)
_COOLABLE = frozenset(data.COOLABLE)
_CLEANABLE = frozenset(data.CLEANABLE)
_TOGGLEABLE = frozenset(data.TOGGLEABLE)
_RECEPTACLE_OBJECTS = frozenset(data.RECEPTACLE_OBJECTS)
_OPENABLE = frozenset(data.OPENABLE)
_CAN_CONTAIN = {r: frozenset(objs) for r, objs in data.CAN_CONTAIN.items()}
_PICKUPABLE = frozenset(o for objs in data.CAN_CONTAIN.values() for o in objs)


def room_of(scene: int) -> str:
    """AI2-THOR room type of a FloorPlan number."""
    return {0: "Kitchen", 2: "LivingRoom", 3: "Bedroom", 4: "Bathroom"}[scene // 100]


def is_held_out_pair(obj_type: str, recep_type: str) -> bool:
    """Whether an (object, receptacle) goal pair is reserved for ``eval_out`` (about one pair in five)."""
    digest = hashlib.sha256(f"{obj_type}/{recep_type}".encode()).digest()
    return digest[0] % 5 == 0


def mangle(alfred_id: str) -> str:
    """An ALFRED id ("Cabinet|+00.02|+02.01|+01.31") as ALFWorld's PDDL files spell it."""
    for old, new in (("|", "_bar_"), ("-", "_minus_"), ("+", "_plus_"), (".", "_dot_"), (",", "_comma_")):
        alfred_id = alfred_id.replace(old, new)
    return alfred_id


def base_name(pddl_id: str) -> str:
    """The display name ALFWorld's ``Demangler`` gives an id, without its number ("sinkbasin", "apple")."""
    lowered = pddl_id.lower()
    name = lowered.split("_bar_", 1)[0]
    return name + "basin" if "basin" in lowered else name


def display_names(pddl_ids: list[str]) -> dict[str, str]:
    """Numbered names exactly as ALFWorld's ``Demangler`` assigns them.

    Ids are sorted (lower-cased, as Fast Downward reads them); within one base name the first id gets the
    highest number, so "a cabinet 3, a cabinet 2, a cabinet 1" is the engine's listing order.
    """
    groups: dict[str, list[str]] = {}
    for pid in sorted(pddl_ids, key=str.lower):
        groups.setdefault(base_name(pid), []).append(pid)
    names = {}
    for name, ids in groups.items():
        for rank, pid in enumerate(ids):
            names[pid] = f"{name} {len(ids) - rank}"
    return names


@dataclass(frozen=True)
class Receptacle:
    pddl_id: str
    type: str
    name: str
    openable: bool


@dataclass(frozen=True)
class Obj:
    pddl_id: str
    type: str
    name: str
    pickupable: bool
    cleanable: bool
    heatable: bool
    coolable: bool
    toggleable: bool
    receptacle_object: bool


@dataclass(frozen=True)
class Task:
    """One generated game. Receptacles and objects are sorted by PDDL id (the engines' listing order)."""

    scene: int
    task_type: str
    obj_type: str
    recep_type: str | None  # None for look_at_obj_in_light
    toggle_type: str | None  # lamp type for look_at_obj_in_light
    description: str  # "put a clean apple in fridge" (no final period)
    receptacles: tuple[Receptacle, ...]
    objects: tuple[Obj, ...]
    #: placement[i] = index of the receptacle that object i starts in
    placement: tuple[int, ...]

    @cached_property
    def key(self) -> str:
        """Short fingerprint that identifies the task (used in ``state_key`` and export file names)."""
        text = repr((self.scene, self.task_type, self.description, [o.pddl_id for o in self.objects],
                     self.placement))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class _Layout:
    scene: int
    room: str
    receptacle_ids: tuple[str, ...]  # mangled
    lowered_ids: frozenset[str]
    receptacle_types: tuple[str, ...]
    object_types: tuple[str, ...]  # pickupable types present
    lamp_types: tuple[str, ...]


@cache
def layout(scene: int) -> _Layout:
    """Per-layout tables, computed once per process."""
    receptacle_ids, present = data.SCENES[scene]
    mangled = tuple(mangle(r) for r in receptacle_ids)
    types = tuple(_receptacle_type(r) for r in receptacle_ids)
    return _Layout(
        scene=scene,
        room=room_of(scene),
        receptacle_ids=mangled,
        lowered_ids=frozenset(r.lower() for r in mangled),
        receptacle_types=types,
        object_types=tuple(o for o in present if o in _PICKUPABLE and any(o in _CAN_CONTAIN[t] for t in types)),
        lamp_types=tuple(o for o in present if o in _TOGGLEABLE) if any(t in LAMP_RECEPTACLES for t in types)
        else (),
    )


def _receptacle_type(alfred_id: str) -> str:
    base = alfred_id.split("|")[0]
    return {"Sink": "SinkBasin", "Bathtub": "BathtubBasin"}.get(base, base)


@cache
def scenes_for(split: str, task_type: str) -> tuple[int, ...]:
    """Layouts a split may use for a task type (layouts that admit at least one goal of that type)."""
    held_out = split == "eval_out"
    result = []
    for scene in sorted(data.SCENES):
        if (scene in HELD_OUT_SCENES) != held_out:
            continue
        lay = layout(scene)
        if lay.room in VALID_ROOMS[task_type] and _goal_options(scene, task_type, split):
            result.append(scene)
    return tuple(result)


@cache
def _goal_options(scene: int, task_type: str, split: str) -> tuple[tuple[str, str | None, str | None], ...]:
    """(object type, goal receptacle type, lamp type) triples a layout offers for a task type and split."""
    lay = layout(scene)
    present_recs = set(lay.receptacle_types)
    options = []
    for obj in lay.object_types:
        if task_type == "pick_clean_then_place_in_recep" and (obj not in _CLEANABLE or "SinkBasin" not in present_recs):
            continue
        if task_type == "pick_heat_then_place_in_recep" and (obj not in _HEATABLE or "Microwave" not in present_recs):
            continue
        if task_type == "pick_cool_then_place_in_recep" and (obj not in _COOLABLE or "Fridge" not in present_recs):
            continue
        if task_type == "look_at_obj_in_light":
            for lamp in lay.lamp_types:
                options.append((obj, None, lamp))
            continue
        for recep in sorted(present_recs):
            if obj not in _CAN_CONTAIN[recep] or recep in _EXCLUDED_GOAL_RECEPTACLES.get(task_type, ()):
                continue
            # Some receptacle other than a goal one must be able to hold the object at the start.
            if not any(obj in _CAN_CONTAIN[r] for r in present_recs if r != recep):
                continue
            held = is_held_out_pair(obj, recep)
            if split != "eval_out" and held:
                continue
            options.append((obj, recep, None))
    if split == "eval_out":
        held_options = [o for o in options if o[1] is not None and is_held_out_pair(o[0], o[1])]
        if held_options:
            return tuple(held_options)
    return tuple(options)


def _coordinate(hundredths: int) -> str:
    sign = "_minus_" if hundredths < 0 else "_plus_"
    return f"{sign}{abs(hundredths) // 100:02d}_dot_{abs(hundredths) % 100:02d}"


#: Mangled ALFRED coordinates ("+01.23" -> "_plus_01_dot_23") for -3.00..+3.00, indexed by hundredths + 300.
_COORDINATES = tuple(_coordinate(v) for v in range(-300, 301))


def _random_id(kind: str, rng: random.Random, used: set[str]) -> str:
    """A fresh object id in ALFRED's mangled form ("Apple_bar__plus_01_dot_20_bar_..."), unique in ``used``."""
    draw, coords = rng.random, _COORDINATES
    while True:
        pid = (f"{kind}_bar_{coords[int(draw() * 601)]}_bar_{coords[300 + int(draw() * 251)]}"
               f"_bar_{coords[int(draw() * 601)]}")
        lowered = pid.lower()
        if lowered not in used:
            used.add(lowered)
            return pid


@cache
def _homes(scene: int, kind: str, excluded_type: str | None) -> tuple[int, ...]:
    """Receptacles (layout order) where an object type may start, the goal receptacle type left out."""
    types = layout(scene).receptacle_types
    if kind in _TOGGLEABLE:
        return tuple(i for i, t in enumerate(types) if t in LAMP_RECEPTACLES)
    return tuple(i for i, t in enumerate(types) if kind in _CAN_CONTAIN[t] and t != excluded_type)


@cache
def _receptacle_table(scene: int) -> tuple[tuple[Receptacle, ...], dict[int, int]]:
    """A layout's receptacles in id order, with ALFWorld's names, and the layout-index -> id-order map.

    Receptacle and object types never share a display name, so receptacle numbering is per layout."""
    lay = layout(scene)
    order = sorted(range(len(lay.receptacle_ids)), key=lambda i: lay.receptacle_ids[i].lower())
    names = display_names(list(lay.receptacle_ids))
    receptacles = tuple(
        Receptacle(lay.receptacle_ids[i], lay.receptacle_types[i], names[lay.receptacle_ids[i]],
                   lay.receptacle_types[i] in _OPENABLE)
        for i in order
    )
    return receptacles, {old: new for new, old in enumerate(order)}


@cache
def _object_flags(kind: str) -> tuple[bool, bool, bool, bool, bool, bool]:
    return (kind in _PICKUPABLE and kind not in _TOGGLEABLE, kind in _CLEANABLE, kind in _HEATABLE,
            kind in _COOLABLE, kind in _TOGGLEABLE, kind in _RECEPTACLE_OBJECTS)


def generate_task(np_rng: np.random.Generator, split: str, task_type: str) -> Task:
    """A random task of ``task_type`` for ``split``, a pure function of ``np_rng``'s state."""
    # One draw from numpy, then Python's generator: ~20x cheaper per call, which keeps reset well under 1 ms.
    rng = random.Random(int(np_rng.integers(2**63 - 1)))
    scenes = scenes_for(split, task_type)
    scene = scenes[rng.randrange(len(scenes))]
    lay = layout(scene)
    options = _goal_options(scene, task_type, split)
    obj_type, recep_type, toggle_type = options[rng.randrange(len(options))]
    template = TEMPLATES[task_type][rng.randrange(2)]
    description = template.format(obj=obj_type.lower(), recep=(recep_type or "").lower(),
                                   toggle=(toggle_type or "").lower())

    # Object types to place: the goal object (several instances), a lamp for look_at tasks, distractors.
    counts: dict[str, int] = {}
    low, high = (2, 4) if task_type == "pick_two_obj_and_place" else (1, 3)
    counts[obj_type] = rng.randint(low, high)
    distractors = [o for o in lay.object_types if o != obj_type]
    for kind in rng.sample(distractors, min(len(distractors), rng.randint(6, 12))):
        counts[kind] = 1 + (rng.random() < 0.5)
    if toggle_type is not None:
        counts[toggle_type] = 1

    used = set(lay.lowered_ids)
    placed: list[tuple[str, str, int]] = []  # (pddl id, type, receptacle index in layout order)
    for kind, count in counts.items():
        homes = _homes(scene, kind, recep_type if kind == obj_type else None)
        for _ in range(count):
            placed.append((_random_id(kind, rng, used), kind, homes[int(rng.random() * len(homes))]))

    receptacles, new_index = _receptacle_table(scene)
    names = display_names([p[0] for p in placed])
    placed.sort(key=lambda p: p[0].lower())
    objects = tuple(Obj(pid, kind, names[pid], *_object_flags(kind)) for pid, kind, _ in placed)
    placement = tuple(new_index[home] for _, _, home in placed)
    return Task(scene, task_type, obj_type, recep_type, toggle_type, description, receptacles, objects, placement)


def can_contain(recep_type: str, obj_type: str) -> bool:
    return obj_type in _CAN_CONTAIN.get(recep_type, ())


def eval_set(split: str) -> tuple[str, ...]:
    """Task types of the fixed evaluation set of ``split``, in task_id order (types interleaved)."""
    composition = EVAL_SET_COMPOSITION[split]
    remaining = dict(composition)
    order: list[str] = []
    while any(remaining.values()):
        for task_type in TASK_TYPES:
            if remaining[task_type]:
                order.append(task_type)
                remaining[task_type] -= 1
    return tuple(order)
