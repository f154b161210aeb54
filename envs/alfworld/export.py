"""Write a generated task as an ALFWorld game: a PDDL problem for ALFWorld's ``alfred.pddl`` domain, wrapped
in a ``.tw-pddl`` file (JSON with the domain, the ``alfred.twl2`` grammar carrying the instruction, the
problem and a walkthrough) that TextWorld's PDDL engine and ALFWorld's ``AlfredTWEnv`` load as they load
ALFWorld's own ``game.tw-pddl`` files.

The domain and grammar come from the ``alfworld`` package (the ``hiergym[alfworld]`` extra); only writing the
problem text (:func:`pddl_problem`) works without it.
"""

from __future__ import annotations

import json
import os

from hiergym.envs.alfworld.world import Task, can_contain

#: Goals as ALFWorld's goal library states them (``alfworld.gen.goal_library``), per task type.
_GOALS = {
    "pick_and_place_simple": """
        (exists (?r - receptacle)
            (exists (?o - object)
                (and
                    (inReceptacle ?o ?r)
                    (objectType ?o {obj}Type)
                    (receptacleType ?r {recep}Type)
                )
            )
        )""",
    "pick_clean_then_place_in_recep": """
        (exists (?r - receptacle)
            (exists (?o - object)
                (and
                    (cleanable ?o)
                    (objectType ?o {obj}Type)
                    (receptacleType ?r {recep}Type)
                    (isClean ?o)
                    (inReceptacle ?o ?r)
                )
            )
        )""",
    "pick_heat_then_place_in_recep": """
        (exists (?r - receptacle)
            (exists (?o - object)
                (and
                    (heatable ?o)
                    (objectType ?o {obj}Type)
                    (receptacleType ?r {recep}Type)
                    (isHot ?o)
                    (inReceptacle ?o ?r)
                )
            )
        )""",
    "pick_cool_then_place_in_recep": """
        (exists (?r - receptacle)
            (exists (?o - object)
                (and
                    (coolable ?o)
                    (objectType ?o {obj}Type)
                    (receptacleType ?r {recep}Type)
                    (isCool ?o)
                    (inReceptacle ?o ?r)
                )
            )
        )""",
    "pick_two_obj_and_place": """
        (exists (?r - receptacle)
            (exists (?o1 - object)
                (and
                    (objectType ?o1 {obj}Type)
                    (receptacleType ?r {recep}Type)
                    (inReceptacle ?o1 ?r)
                    (exists (?o2 - object)
                        (and
                            (not (= ?o1 ?o2))
                            (objectType ?o2 {obj}Type)
                            (receptacleType ?r {recep}Type)
                            (inReceptacle ?o2 ?r)
                        )
                    )
                )
            )
        )""",
    "look_at_obj_in_light": """
        (exists (?ot - object ?r - receptacle ?a - agent ?l - location)
            (and
                (objectType ?ot {toggle}Type)
                (toggleable ?ot)
                (isToggled ?ot)
                (receptacleAtLocation ?r ?l)
                (atLocation ?a ?l)
                (inReceptacle ?ot ?r)
            )
        )
        (exists (?o - object ?a - agent)
            (and
                (objectType ?o {obj}Type)
                (holds ?a ?o)
            )
        )""",
}

START_LOCATION = "loc_bar_start"


def _location(index: int) -> str:
    return f"loc_bar_{index + 1}"


def pddl_problem(task: Task) -> str:
    """The PDDL problem of a task's initial state and goal, for ALFWorld's ``alfred`` domain."""
    recs, objs = task.receptacles, task.objects
    otypes = sorted({o.type for o in objs} | {task.obj_type} | ({task.toggle_type} if task.toggle_type else set()))
    rtypes = sorted({r.type for r in recs} | ({task.recep_type} if task.recep_type else set()))
    lines = [f"(define (problem hiergym_{task.key})", "    (:domain alfred)", "    (:objects", "        agent1 - agent"]
    lines += [f"        {t}Type - otype" for t in otypes]
    lines += [f"        {t}Type - rtype" for t in rtypes]
    lines += [f"        {o.pddl_id} - object" for o in objs]
    lines += [f"        {r.pddl_id} - receptacle" for r in recs]
    lines += [f"        {START_LOCATION} - location"] + [f"        {_location(i)} - location" for i in range(len(recs))]
    lines += ["    )", "    (:init", f"        (atLocation agent1 {START_LOCATION})"]
    for i, r in enumerate(recs):
        lines.append(f"        (receptacleType {r.pddl_id} {r.type}Type)")
        lines.append(f"        (receptacleAtLocation {r.pddl_id} {_location(i)})")
        if r.openable:
            lines.append(f"        (openable {r.pddl_id})")
    for o, home in zip(objs, task.placement, strict=True):
        lines.append(f"        (objectType {o.pddl_id} {o.type}Type)")
        for flag in ("pickupable", "cleanable", "heatable", "coolable", "toggleable"):
            if getattr(o, flag):
                lines.append(f"        ({flag} {o.pddl_id})")
        if o.receptacle_object:
            lines.append(f"        (isReceptacleObject {o.pddl_id})")
        lines.append(f"        (inReceptacle {o.pddl_id} {recs[home].pddl_id})")
        lines.append(f"        (objectAtLocation {o.pddl_id} {_location(home)})")
    for rt in rtypes:
        for ot in otypes:
            if can_contain(rt, ot):
                lines.append(f"        (canContain {rt}Type {ot}Type)")
    goal = _GOALS[task.task_type].format(obj=task.obj_type, recep=task.recep_type, toggle=task.toggle_type)
    lines += ["    )", "    (:goal", "        (and" + goal, "        )", "    )", ")", ""]
    return "\n".join(lines)


def tw_pddl_game(task: Task, walkthrough: list[str] | None = None) -> dict:
    """The ``.tw-pddl`` content (a JSON object) of a task; requires the ``alfworld`` package."""
    from hiergym.envs.alfworld.real_engine import require_alfworld

    require_alfworld()
    from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH

    with open(ALFRED_PDDL_PATH) as f:
        domain = f.read()
    with open(ALFRED_TWL2_PATH) as f:
        grammar = f.read().replace("UNKNOWN GOAL", task.description)
    game = {"pddl_domain": domain, "grammar": grammar, "pddl_problem": pddl_problem(task), "solvable": True}
    if walkthrough is not None:
        game["walkthrough"] = list(walkthrough)
    return game


def export_task(task: Task, directory: str | os.PathLike, walkthrough: list[str] | None = None) -> str:
    """Write ``<directory>/<task_type>-<key>/game.tw-pddl`` (ALFWorld's layout) and return its path."""
    folder = os.path.join(os.fspath(directory), f"{task.task_type}-{task.key}")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "game.tw-pddl")
    game = tw_pddl_game(task, walkthrough)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(game, f)
    os.replace(tmp, path)  # atomic: parallel workers may export the same task
    return path
