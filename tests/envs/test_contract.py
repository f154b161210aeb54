"""The text-environment contract (docs/environments.md), checked on every registered environment."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import hiergym
from hiergym.envs.core import INFO_KEYS

ENV_IDS = hiergym.env_ids()
JUNK_ACTIONS = ["", "   ", "x" * 1_000_000, "\x00\x01\xff", "ünïcödé ☃", "go to", "[]", "click[", "12345"]


def make(env_id: str) -> gym.Env:
    return gym.make(env_id)


def assert_contract_info(info: dict) -> None:
    for key in INFO_KEYS:
        assert key in info, f"info lacks {key!r}"
    assert isinstance(info["task"], str)
    assert isinstance(info["won"], bool)
    assert isinstance(info["action_valid"], bool)
    assert isinstance(info["state_key"], str) and info["state_key"]
    actions = info["admissible_actions"]
    assert actions is None or (isinstance(actions, list) and all(isinstance(a, str) for a in actions))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env(env_id: str) -> None:
    env = make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*is different from the unwrapped version.*")
        warnings.filterwarnings("ignore", message=".*Not able to test alternative render modes.*")
        check_env(env.unwrapped, skip_render_check=False)
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_task(env_id: str) -> None:
    a, b = make(env_id), make(env_id)
    obs_a, info_a = a.reset(seed=123)
    obs_b, info_b = b.reset(seed=123)
    assert obs_a == obs_b and info_a["task"] == info_b["task"] and info_a["state_key"] == info_b["state_key"]
    assert_contract_info(info_a)
    assert info_a["action_valid"] is True
    observations = {a.reset(seed=s)[0] + a.unwrapped.render() for s in range(8)}
    assert len(observations) > 1, "different seeds should give different tasks"
    assert isinstance(obs_a, str) and a.observation_space.contains(obs_a)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_task_id_addresses_split(env_id: str) -> None:
    env = make(env_id)
    first = env.reset(seed=1, options={"split": "eval_in", "task_id": 3})
    second = env.reset(seed=99, options={"split": "eval_in", "task_id": 3})
    assert first[0] == second[0] and first[1]["state_key"] == second[1]["state_key"]
    for split in ("train", "eval_in", "eval_out"):
        obs, info = env.reset(options={"split": split, "task_id": 0})
        assert_contract_info(info)
    with pytest.raises(ValueError, match="split"):
        env.reset(options={"split": "test-set"})
    with pytest.raises(ValueError, match="task_id"):
        env.reset(options={"split": "train", "task_id": -1})


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_junk_actions_are_invalid_steps(env_id: str) -> None:
    env = make(env_id)
    obs, info = env.reset(seed=7)
    key = info["state_key"]
    for junk in [*JUNK_ACTIONS, None, 3.5, b"\xff\xfe", ["up"]]:
        obs, reward, terminated, truncated, info = env.step(junk)
        assert isinstance(obs, str) and obs
        assert info["action_valid"] is False, f"{junk!r} accepted"
        assert_contract_info(info)
        if terminated or truncated:
            break
        assert info["state_key"] == key, f"{junk!r} changed the state"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_expert_wins_from_reset(env_id: str) -> None:
    env = make(env_id)
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        plan = env.unwrapped.expert_plan()
        assert plan, f"no expert plan for seed {seed}"
        for action in plan:
            obs, reward, terminated, truncated, info = env.step(action)
            assert info["action_valid"], f"expert action {action!r} invalid (seed {seed})"
            if terminated or truncated:
                break
        assert info["won"], f"expert did not win seed {seed}"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_admissible_actions_are_valid(env_id: str) -> None:
    env = make(env_id)
    obs, info = env.reset(seed=11)
    if info["admissible_actions"] is None:
        pytest.skip(f"{env_id} does not enumerate admissible actions")
    for action in info["admissible_actions"][:25]:
        env.reset(seed=11)
        _, _, _, _, step_info = env.step(action)
        assert step_info["action_valid"], f"admissible action {action!r} reported invalid"
    env.reset(seed=11)
    _, _, _, _, step_info = env.step("  " + info["admissible_actions"][0].upper() + "  ")
    assert step_info["action_valid"], "case and surrounding whitespace must be forgiven"
