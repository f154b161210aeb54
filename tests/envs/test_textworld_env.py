"""hiergym/TextWorld-v0: generated (and cached) TextWorld games and game files behind the env contract."""

from __future__ import annotations

import os
import random
import shutil

import gymnasium as gym
import pytest

import hiergym  # noqa: F401
from hiergym.envs.textworld_env import split_settings


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("textworld-games"))


def make(cache_dir: str, **kwargs) -> gym.Env:
    return gym.make("hiergym/TextWorld-v0", cache_dir=cache_dir, num_games=2, **kwargs)


def play(env: gym.Env, plan: list[str]) -> tuple[float, bool, dict]:
    total, terminated, info = 0.0, False, {}
    for command in plan:
        _, reward, terminated, _, info = env.step(command)
        assert info["action_valid"], command
        total += reward
    return total, terminated, info


def test_generated_game_is_seeded_and_the_expert_wins(cache_dir: str) -> None:
    env = make(cache_dir)
    obs, info = env.reset(seed=0)
    assert obs == make(cache_dir).reset(seed=0)[0]
    assert info["admissible_actions"] and info["task"] and info["max_score"] >= 1
    total, terminated, info = play(env, env.unwrapped.expert_plan())
    assert terminated and info["won"] and total == info["max_score"] == info["score"]
    assert env.unwrapped.expert_plan() == []


def test_expert_plans_from_the_current_state(cache_dir: str) -> None:
    env = make(cache_dir)
    rng = random.Random(1)
    for task_id in range(2):
        _, info = env.reset(options={"task_id": task_id})
        # Wander first (taking the wrong object loses a treasure hunt, so only moves and looks).
        for _ in range(3):
            safe = [a for a in info["admissible_actions"] if a.startswith(("go ", "examine", "look", "inventory"))]
            _, _, terminated, _, info = env.step(rng.choice(safe))
        _, terminated, info = play(env, env.unwrapped.expert_plan())
        assert terminated and info["won"]
    # A lost game has no plan.
    _, info = env.reset(options={"task_id": 0})
    wrong = [a for a in info["admissible_actions"] if a.startswith("take ") and a not in env.unwrapped.expert_plan()]
    if wrong:
        _, _, terminated, _, info = env.step(wrong[0])
        if terminated and not info["won"]:
            assert env.unwrapped.expert_plan() is None


def test_games_are_compiled_once_and_reused(cache_dir: str) -> None:
    env = make(cache_dir)
    env.reset(options={"task_id": 1})
    games = sorted(os.listdir(cache_dir))
    stamps = {g: os.path.getmtime(os.path.join(cache_dir, g)) for g in games}
    again = make(cache_dir)
    again.reset(options={"task_id": 1})
    assert sorted(os.listdir(cache_dir)) == games
    assert all(os.path.getmtime(os.path.join(cache_dir, g)) == stamps[g] for g in games)
    assert any(g.endswith(".z8") for g in games) and any(g.endswith(".json") for g in games)


def test_game_file_and_invalid_commands(cache_dir: str) -> None:
    env = make(cache_dir)
    _, info = env.reset(seed=3)
    game_file = info["game_file"]
    played = gym.make("hiergym/TextWorld-v0", game_file=game_file)
    obs, info = played.reset(seed=0)
    assert info["game_file"] == game_file and info["admissible_actions"]
    key = info["state_key"]
    for junk in ["take all", "xyzzy", "", "go to", None]:
        obs, reward, terminated, _, info = played.step(junk)
        assert obs == "Nothing happens." and not info["action_valid"] and info["state_key"] == key
    *_, info = played.step("  " + info["admissible_actions"][0].upper())
    assert info["action_valid"]


@pytest.mark.filterwarnings("ignore:Game .* is not fully supported")
def test_plain_zmachine_game_without_textworld_metadata(cache_dir: str, tmp_path) -> None:
    env = make(cache_dir)
    _, info = env.reset(seed=3)
    bare = tmp_path / "bare.z8"
    shutil.copy(info["game_file"], bare)  # no .json beside it: played as any z-machine game
    played = gym.make("hiergym/TextWorld-v0", game_file=str(bare))
    obs, info = played.reset(seed=0)
    assert info["admissible_actions"] is None and obs
    _, _, _, _, info = played.step("look")
    assert info["action_valid"]
    _, _, _, _, info = played.step("xyzzy")
    assert not info["action_valid"]


def test_eval_out_settings_hold_out_structure() -> None:
    assert split_settings("tw-cooking", {"split": "train"}, "eval_out")["split"] == "test"
    assert split_settings("tw-treasure_hunter", {"level": 1}, "eval_out")["level"] == 6
    assert split_settings("tw-treasure_hunter", {"level": 1}, "eval_in")["level"] == 1
    assert split_settings("custom", {"nb_rooms": 3, "nb_objects": 5, "quest_length": 3}, "eval_out")["quest_length"] == 5


def test_wrong_arguments_are_named(cache_dir: str) -> None:
    with pytest.raises(ValueError, match="challenge"):
        gym.make("hiergym/TextWorld-v0", challenge="zork")
    with pytest.raises(ValueError, match="settings"):
        gym.make("hiergym/TextWorld-v0", settings={"levle": 3})
    with pytest.raises(FileNotFoundError, match="game_file"):
        gym.make("hiergym/TextWorld-v0", game_file="/nonexistent/game.z8")
    with pytest.raises(ValueError, match="task_id"):
        make(cache_dir).reset(options={"task_id": 2})


@pytest.mark.parametrize("challenge", ["tw-cooking", "custom"])
def test_other_generators_make_winnable_games(challenge: str, cache_dir: str) -> None:
    env = gym.make("hiergym/TextWorld-v0", challenge=challenge, cache_dir=cache_dir, num_games=1)
    _, info = env.reset(seed=0)
    assert info["task"] and info["admissible_actions"]
    total, terminated, info = play(env, env.unwrapped.expert_plan())
    assert terminated and info["won"] and total == info["max_score"]
