"""Native engine vs the real ALFWorld engine (TextWorld's PDDL engine + ALFWorld's wrappers) on the same tasks:
identical observations, admissible-command sets and ``won`` along expert plans and random admissible walks.

Needs the ``hiergym[alfworld]`` extra (alfworld 0.4.2 + Fast Downward); skipped, with the reason, without it.
"""

from __future__ import annotations

import random
import sys

import gymnasium as gym
import numpy as np
import pytest

import hiergym  # noqa: F401
from hiergym.envs.alfworld.engine import NativeEngine
from hiergym.envs.alfworld.world import TASK_TYPES, generate_task


def _real_engine_or_skip():
    try:
        from hiergym.envs.alfworld.real_engine import RealEngine

        return RealEngine()
    except ImportError as exc:
        pytest.skip(f"real ALFWorld engine unavailable: {exc}")


@pytest.fixture(scope="module")
def real_engine():
    engine = _real_engine_or_skip()
    yield engine
    engine.close()


def assert_same(native: NativeEngine, real, context: str) -> None:
    assert native.admissible_commands() == real.admissible_commands(), context
    assert native.won() == real.won(), context


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_native_matches_real_engine(task_type: str, real_engine, tmp_path) -> None:
    from hiergym.envs.alfworld.export import export_task

    np_rng = np.random.default_rng(sum(map(ord, task_type)))
    walker = random.Random(task_type)
    # One task per type (train layouts for half the types, held-out ones for the others): "look",
    # "inventory", "help", a random admissible walk (with a few invalid commands), then the expert's plan
    # from wherever the walk left it. Real-engine steps cost ~0.1 s, so the sample stays small.
    split = "train" if TASK_TYPES.index(task_type) % 2 == 0 else "eval_out"
    task = generate_task(np_rng, split, task_type)
    native = NativeEngine(task)
    real_engine.load(export_task(task, tmp_path, native.expert_plan()))
    assert native.reset() == real_engine.reset()
    assert_same(native, real_engine, "after reset")
    walk = ["look", "inventory", "help"]  # "look" in the middle of the room differs from the welcome text
    for step in range(11):
        command = walk[step] if step < len(walk) else walker.choice(
            native.admissible_commands() + ["take the moon from the sky", "open drawer 99"])
        expected, valid = native.step(command)
        observed, real_valid = real_engine.step(command)
        assert (expected, valid) == (observed, real_valid), f"{task_type} step {step}: {command!r}"
        assert_same(native, real_engine, f"{task_type} after {command!r}")
        if native.won():
            break
    for command in native.expert_plan():
        expected, _ = native.step(command)
        observed, real_valid = real_engine.step(command)
        assert real_valid and expected == observed, f"{task_type} expert: {command!r}"
        assert_same(native, real_engine, f"{task_type} expert after {command!r}")
    assert real_engine.won(), f"{task_type}: the real engine does not accept the expert's solution"


def test_env_plays_generated_tasks_on_the_real_engine(tmp_path) -> None:
    _real_engine_or_skip().close()
    env = gym.make("hiergym/ALFWorld-v0", engine="alfworld", game_source="generated", cache_dir=str(tmp_path),
                   task_types=["look_at_obj_in_light"])
    native = gym.make("hiergym/ALFWorld-v0", task_types=["look_at_obj_in_light"])
    obs, info = env.reset(seed=2)
    native_obs, native_info = native.reset(seed=2)
    assert (obs, info["admissible_actions"]) == (native_obs, native_info["admissible_actions"])
    assert info["engine"] == "alfworld" and info["state_key"] == native_info["state_key"]
    assert list(tmp_path.glob("*/game.tw-pddl")), "the task was not exported"
    for command in env.unwrapped.expert_plan():
        obs, reward, terminated, truncated, info = env.step(command.upper())
        assert obs == native.step(command)[0] and info["action_valid"]
    assert terminated and info["won"] and reward == 1.0
    # after the end (docs/environments.md, "Episode end"): the terminal observation again, reward 0, invalid
    after, reward, _, _, after_info = env.step("dance")
    assert after == obs and reward == 0.0 and after_info["action_valid"] is False
    env.close()


def test_missing_extra_is_explained(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "fast_downward", None)  # makes `import fast_downward` fail
    with pytest.raises(ImportError, match=r"pip install 'hiergym\[alfworld\]'"):
        gym.make("hiergym/ALFWorld-v0", engine="alfworld", game_source="generated")


def test_real_alfworld_data_folder_is_played_with_the_planner_as_expert(tmp_path, monkeypatch) -> None:
    """ALFWORLD_DATA pointing at ALFWorld's folder layout (json_2.1.1/<split>/<task>/<trial>/game.tw-pddl)."""
    _real_engine_or_skip().close()
    from hiergym.envs.alfworld.export import export_task

    task = generate_task(np.random.default_rng(0), "eval_in", "pick_heat_then_place_in_recep")
    folder = tmp_path / "json_2.1.1" / "valid_seen" / f"pick_heat_then_place_in_recep-{task.obj_type}-None-X-1"
    export_task(task, folder)  # no walkthrough: the planner must find the solution
    sliced = tmp_path / "json_2.1.1" / "valid_seen" / "pick_heat_then_place_in_recep-AppleSliced-None-X-2"
    export_task(task, sliced)  # ALFWorld's env leaves sliced tasks out, and so do we
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    env = gym.make("hiergym/ALFWorld-v0", engine="alfworld")
    assert env.unwrapped.game_source == "alfworld_data"
    obs, info = env.reset(options={"split": "eval_in", "task_id": 0})
    assert obs == NativeEngine(task).reset() and info["task"] == task.description
    assert info["task_type"] == "pick_heat_then_place_in_recep" and info["state_key"]
    with pytest.raises(ValueError, match="1 ALFWorld games"):
        env.reset(options={"split": "eval_in", "task_id": 1})
    obs, info = env.reset(options={"split": "eval_in", "task_id": 0})
    plan = env.unwrapped.expert_plan()
    assert plan
    for command in plan:
        obs, reward, terminated, truncated, info = env.step(command)
    assert terminated and info["won"] and reward == 1.0
    env.close()
