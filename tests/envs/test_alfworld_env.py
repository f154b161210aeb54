"""hiergym/ALFWorld-v0 on the native engine: tasks, text, commands, expert, splits (no ALFWorld install needed)."""

from __future__ import annotations

import random

import gymnasium as gym
import numpy as np
import pytest

import hiergym  # noqa: F401  (registers the envs)
from hiergym.envs.alfworld.engine import NativeEngine
from hiergym.envs.alfworld.export import pddl_problem
from hiergym.envs.alfworld.world import (
    HELD_OUT_SCENES,
    TASK_TYPES,
    display_names,
    generate_task,
    is_held_out_pair,
)


def make(**kwargs) -> gym.Env:
    return gym.make("hiergym/ALFWorld-v0", **kwargs)


def play(env: gym.Env, actions: list[str]) -> tuple[str, float, bool, dict]:
    obs, reward, terminated, info = "", 0.0, False, {}
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        assert info["action_valid"], f"{action!r} was rejected: {obs}"
    return obs, reward, terminated, info


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_expert_solves_every_task_type(task_type: str) -> None:
    env = make(task_types=[task_type])
    for seed in range(15):
        obs, info = env.reset(seed=seed)
        assert info["task_type"] == task_type
        plan = env.unwrapped.expert_plan()
        assert 0 < len(plan) <= 20
        _, reward, terminated, info = play(env, plan)
        assert terminated and info["won"] and reward == 1.0


def test_expert_finishes_from_any_reachable_state() -> None:
    env = make()
    rng = random.Random(0)
    for seed in range(40):
        _, info = env.reset(seed=seed)
        for _ in range(rng.randint(0, 25)):  # a random admissible walk first
            _, _, terminated, _, info = env.step(rng.choice(info["admissible_actions"]))
            if terminated:
                break
        if info["won"]:
            continue
        plan = env.unwrapped.expert_plan()
        *_, info = play(env, plan)
        assert info["won"], f"seed {seed}: expert failed from a mid-episode state"


def test_welcome_text_and_feedback_follow_alfworld() -> None:
    env = make(task_types=["pick_cool_then_place_in_recep"])
    obs, info = env.reset(seed=3)
    head, view, task = obs.split("\n\n")
    assert head == "-= Welcome to TextWorld, ALFRED! =-"
    assert view.startswith("You are in the middle of a room. Looking quickly around you, you see a ")
    assert ", and a " in view and view.endswith(".")
    assert task == f"Your task is to: {info['task']}." and info["task"].startswith(("put a cool ", "cool some "))
    assert "go to fridge 1" in info["admissible_actions"]
    obs, _, _, _, info = env.step("go to fridge 1")
    assert obs == "You arrive at fridge 1. The fridge 1 is closed."
    assert "open fridge 1" in info["admissible_actions"] and "go to fridge 1" not in info["admissible_actions"]
    obs, _, _, _, info = env.step("open fridge 1")
    assert obs.startswith("You open the fridge 1. The fridge 1 is open. In it, you see ")
    obs, _, _, _, info = env.step("close fridge 1")
    assert obs == "You close the fridge 1."
    assert env.step("look")[0] == "You are facing the fridge 1. Next to it, you see nothing."
    assert env.step("inventory")[0] == "You are not carrying anything."
    assert info["admissible_actions"] == sorted(info["admissible_actions"])
    assert {"help", "inventory", "look"} <= set(info["admissible_actions"])


def test_names_are_numbered_like_alfworlds_demangler() -> None:
    ids = ["Cabinet_bar__plus_00_dot_10", "Cabinet_bar__minus_00_dot_20", "Sink_bar__plus_01_dot_00_bar_SinkBasin"]
    names = display_names(ids)
    # Sorted ids: "cabinet_bar__minus..." < "cabinet_bar__plus...": the first gets the highest number.
    assert names == {"Cabinet_bar__minus_00_dot_20": "cabinet 2", "Cabinet_bar__plus_00_dot_10": "cabinet 1",
                     "Sink_bar__plus_01_dot_00_bar_SinkBasin": "sinkbasin 1"}


def test_invalid_actions_change_nothing() -> None:
    env = make()
    _, info = env.reset(seed=5)
    key = info["state_key"]
    for junk in ["take apple 99 from countertop 1", "go to the moon", "open", "GO TO", "", "x" * 5000, None, 7]:
        obs, reward, terminated, truncated, info = env.step(junk)
        assert obs == "Nothing happens." and info["action_valid"] is False and reward == 0.0
        assert info["state_key"] == key and not terminated


def test_state_key_tracks_state_not_history() -> None:
    env = make(task_types=["pick_and_place_simple"])
    _, info = env.reset(seed=8)
    start = info["state_key"]
    first = info["admissible_actions"][0]
    assert first.startswith("go to ")
    _, _, _, _, moved = env.step(first)
    assert moved["state_key"] != start
    _, _, _, _, looked = env.step("look")
    assert looked["state_key"] == moved["state_key"]
    env.reset(seed=9)
    assert env.reset(seed=8)[1]["state_key"] == start


def test_success_reward_is_configurable() -> None:
    env = make(success_reward=10.0, task_types=["look_at_obj_in_light"])
    env.reset(seed=0)
    _, reward, terminated, _ = play(env, env.unwrapped.expert_plan())
    assert terminated and reward == 10.0


def test_time_limit_is_alfworlds_fifty_steps() -> None:
    env = make()
    env.reset(seed=0)
    for _ in range(49):
        assert env.step("look")[3] is False
    _, _, terminated, truncated, _ = env.step("look")
    assert truncated and not terminated


def test_fixed_evaluation_sets() -> None:
    env = make()
    assert env.unwrapped.eval_set_size("eval_in") == 140
    assert env.unwrapped.eval_set_size("eval_out") == 134
    counts = {t: 0 for t in TASK_TYPES}
    for task_id in range(134):
        _, info = env.reset(options={"split": "eval_out", "task_id": task_id})
        counts[info["task_type"]] += 1
        assert env.unwrapped.task.scene in HELD_OUT_SCENES
    assert counts == {"pick_and_place_simple": 24, "look_at_obj_in_light": 18, "pick_clean_then_place_in_recep": 31,
                      "pick_heat_then_place_in_recep": 23, "pick_cool_then_place_in_recep": 21,
                      "pick_two_obj_and_place": 17}
    with pytest.raises(ValueError, match="140 tasks"):
        env.reset(options={"split": "eval_in", "task_id": 140})
    # The task_types filter selects a subset of the same tasks.
    heat = make(task_types=["pick_heat_then_place_in_recep"])
    assert heat.unwrapped.eval_set_size("eval_in") == 16
    wanted = heat.reset(options={"split": "eval_in", "task_id": 0})[0]
    first_heat = next(i for i in range(140)
                      if env.reset(options={"split": "eval_in", "task_id": i})[1]["task_type"] == heat.unwrapped.task.task_type)
    assert env.reset(options={"split": "eval_in", "task_id": first_heat})[0] == wanted


def test_train_never_generates_held_out_layouts_or_pairs() -> None:
    rng = np.random.default_rng(0)
    eval_out_pairs = 0
    for i in range(300):
        task_type = TASK_TYPES[i % len(TASK_TYPES)]
        task = generate_task(rng, "train", task_type)
        assert task.scene not in HELD_OUT_SCENES
        if task.recep_type is not None:
            assert not is_held_out_pair(task.obj_type, task.recep_type)
        out = generate_task(rng, "eval_out", task_type)
        assert out.scene in HELD_OUT_SCENES
        eval_out_pairs += out.recep_type is not None and is_held_out_pair(out.obj_type, out.recep_type)
    assert eval_out_pairs > 100  # most eval_out goals are held-out pairs


def test_unknown_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="engine"):
        make(engine="thor")
    with pytest.raises(ValueError, match="task type"):
        make(task_types=["pick_and_slice"])


def test_pddl_problem_describes_the_task() -> None:
    task = generate_task(np.random.default_rng(4), "train", "pick_clean_then_place_in_recep")
    problem = pddl_problem(task)
    assert "(:domain alfred)" in problem and "(atLocation agent1 loc_bar_start)" in problem
    for obj, home in zip(task.objects, task.placement, strict=True):
        assert f"(inReceptacle {obj.pddl_id} {task.receptacles[home].pddl_id})" in problem
    assert f"(objectType ?o {task.obj_type}Type)" in problem and "(isClean ?o)" in problem
    assert problem.count("(") == problem.count(")")


def test_native_engine_needs_no_alfworld_and_copies_cheaply() -> None:
    task = generate_task(np.random.default_rng(1), "train", "pick_two_obj_and_place")
    engine = NativeEngine(task)
    plan = engine.expert_plan()
    assert engine.state_key() == NativeEngine(task).state_key()  # planning simulated on a copy
    for command in plan:
        engine.step(command)
    assert engine.won()


# ---------------------------------------------------------------- the expert that knows only what it has seen
def _search_order(engine: NativeEngine, obj_type: str, goal_type: str) -> list[int]:
    """Receptacles by type, then number, kept if they may hold ``obj_type`` and are not of the goal's type."""
    from hiergym.envs.alfworld.world import can_contain

    def key(r: int) -> tuple[str, int]:
        kind, _, number = engine.rec_names[r].rpartition(" ")
        return kind, int(number)
    types = engine._rec_types
    return [r for r in sorted(range(len(types)), key=key) if types[r] != goal_type and can_contain(types[r], obj_type)]


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_observed_expert_solves_every_task_type_with_admissible_commands(task_type: str) -> None:
    env = make(task_types=[task_type], expert_knowledge="observed")
    for seed in range(15):
        env.reset(seed=seed)
        plan = env.unwrapped.expert_plan()
        assert 0 < len(plan) <= 80
        _, reward, terminated, info = play(env, plan)
        assert terminated and info["won"] and reward == 1.0


def test_observed_expert_looks_in_every_candidate_before_the_one_that_holds_the_object() -> None:
    """Hidden knowledge test: with the goal objects moved into the last receptacle it would search, the expert
    goes through every earlier candidate in order (opening the closed ones) before it takes one."""
    import dataclasses

    checked = 0
    for seed in range(40):
        task = generate_task(np.random.default_rng(seed), "train", "pick_and_place_simple")
        engine = NativeEngine(task)
        order = _search_order(engine, task.obj_type, task.recep_type)
        if len(order) < 2:
            continue
        last = order[-1]
        placement = tuple(last if o.type == task.obj_type else loc for o, loc in zip(task.objects, task.placement, strict=True))
        engine = NativeEngine(dataclasses.replace(task, placement=placement))
        plan = engine.expert_plan("observed")
        take = next(i for i, c in enumerate(plan) if c.startswith("take "))
        visited = [c[len("go to "):] for c in plan[:take] if c.startswith("go to ")]
        assert visited == [engine.rec_names[r] for r in order], f"seed {seed}"
        opened = [c[len("open "):] for c in plan[:take] if c.startswith("open ")]
        assert opened == [engine.rec_names[r] for r in order if task.receptacles[r].openable]
        assert plan[take].endswith(f"from {engine.rec_names[last]}")
        checked += 1
    assert checked >= 20


def test_observed_expert_replans_the_rest_of_its_plan_from_any_of_its_states() -> None:
    """Memoryless: from every state on its own path it plans exactly the rest of the path, so each command is a
    function of the current state and what is visible, which is what a cloned policy can learn."""
    env = make(expert_knowledge="observed")
    for seed in range(30):
        env.reset(seed=seed)
        plan = env.unwrapped.expert_plan()
        for k, command in enumerate(plan):
            assert env.unwrapped.expert_plan() == plan[k:], f"seed {seed}, step {k}"
            env.step(command)


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_observed_expert_finishes_from_states_another_policy_reached(task_type: str) -> None:
    """From a random walk, and with goal objects left in goal receptacles (unheated, say, or one of two), where
    goal objects never start: it looks there too."""
    env = make(task_types=[task_type], expert_knowledge="observed")
    rng = random.Random(1)
    for seed in range(12):
        _, info = env.reset(seed=seed)
        for _ in range(rng.randint(0, 30)):
            moves = [a for a in info["admissible_actions"] if a.startswith(("take", "move"))]
            action = rng.choice(moves if moves and rng.random() < 0.5 else info["admissible_actions"])
            _, _, terminated, _, info = env.step(action)
            if terminated:
                break
        if not info["won"]:
            *_, info = play(env, env.unwrapped.expert_plan())
            assert info["won"], f"seed {seed}"
    engine = NativeEngine(generate_task(np.random.default_rng(0), "train", task_type))
    if task_type != "look_at_obj_in_light":  # a goal object in a goal receptacle, the agent elsewhere
        obj = engine._goal_obj_indices[0]
        goal = next(r for r, is_goal in enumerate(engine._goal_recs) if is_goal)
        for command in NativeEngine.expert_plan(engine, "observed"):
            engine.step(command)
            if engine.held == obj:
                break
        if engine.held == obj and not engine.won():
            for command in (engine._goto[goal], *(["open " + engine.rec_names[goal]]
                                                  if engine.task.receptacles[goal].openable else [])):
                engine.step(command)
            engine.step(f"move {engine.obj_names[obj]} to {engine.rec_names[goal]}")
            away = next(r for r in range(len(engine.rec_names)) if r != goal)
            engine.step(engine._goto[away])
            if not engine.won():
                for command in engine.expert_plan("observed"):
                    assert engine.step(command)[1], command
                assert engine.won()


def test_observed_subgoal_names() -> None:
    from hiergym.envs.alfworld.env import observed_subgoal

    assert observed_subgoal("take pan 1 from cabinet 2") == "take pan"
    assert observed_subgoal("cool pan 1 with fridge 1") == "cool pan with fridge 1"
    assert observed_subgoal("move pan 1 to stoveburner 1") == "move pan to stoveburner 1"
    assert observed_subgoal("use desklamp 1") == "use desklamp"
    assert observed_subgoal("go to cabinet 2") == "go to cabinet 2"  # not a subgoal's last command
    for name in ("take pan", "cool pan with fridge 1", "move pan to stoveburner 1", "use desklamp"):
        assert observed_subgoal(name) == name  # idempotent


def test_observed_expert_subgoals_name_only_what_a_planner_can_know() -> None:
    env = make(task_types=["pick_cool_then_place_in_recep"], expert_knowledge="observed")
    env.reset(seed=3)
    subgoals = env.unwrapped.expert_subgoals()
    task = env.unwrapped.task
    obj, recep = task.obj_type.lower(), task.recep_type.lower()
    names = [name for name, _ in subgoals]
    assert names[0] == f"take {obj}" and names[1] == f"cool {obj} with fridge 1"
    assert names[2].startswith(f"move {obj} to {recep} ")
    assert [a for _, steps in subgoals for a in steps] == env.unwrapped.expert_plan()
    assert subgoals[0][1][-1].startswith(f"take {obj} ") and " from " in subgoals[0][1][-1]


def test_unknown_expert_knowledge_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="expert_knowledge 'oracle'.*choose one of full, observed"):
        make(expert_knowledge="oracle")
