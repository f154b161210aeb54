"""``pickle`` and ``copy.deepcopy`` of every registered env, fresh and mid-episode: the copy continues as the original."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import gymnasium as gym
import pytest

import hiergym

ENV_IDS = hiergym.env_ids()


def _action(info: dict[str, Any], step: int) -> str:
    actions = info["admissible_actions"] or ["look"]
    return actions[(2 * step + 1) % len(actions)].replace("<query>", "shirt")


def _clones(env: gym.Env) -> dict[str, gym.Env]:
    return {"pickle": pickle.loads(pickle.dumps(env)), "deepcopy": copy.deepcopy(env)}


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_fresh_env_pickles_and_resets_like_the_original(env_id: str) -> None:
    env = gym.make(env_id)
    clones = _clones(env)
    obs, info = env.reset(seed=5)
    for name, clone in clones.items():
        clone_obs, clone_info = clone.reset(seed=5)
        assert clone_obs == obs and clone_info["state_key"] == info["state_key"], name
        clone.close()
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_env_after_reset_and_steps_continues_identically(env_id: str) -> None:
    env = gym.make(env_id)
    _, info = env.reset(seed=7)
    for step in range(3):
        _, _, terminated, truncated, info = env.step(_action(info, step))
        if terminated or truncated:
            _, info = env.reset()
    clones = _clones(env)
    for step in range(3, 6):
        action = _action(info, step)
        expected = env.step(action)
        for name, clone in clones.items():
            got = clone.step(action)
            assert got[0] == expected[0], (name, action)
            assert got[1:4] == expected[1:4], (name, action)
            assert got[4]["state_key"] == expected[4]["state_key"] and got[4]["won"] == expected[4]["won"], name
            assert got[4]["admissible_actions"] == expected[4]["admissible_actions"], name
        info = expected[4]
        if expected[2] or expected[3]:
            break
    assert clones["pickle"].unwrapped.expert_plan() == env.unwrapped.expert_plan()
    for clone in clones.values():
        clone.close()
    env.close()


def test_webshop_copies_share_the_loaded_shop() -> None:
    env = gym.make("hiergym/WebShop-v0")
    env.reset(seed=0)
    clone = pickle.loads(pickle.dumps(env))
    assert clone.unwrapped.shop is env.unwrapped.shop  # loaded again from the in-process cache, not copied
    assert clone.unwrapped.catalog is env.unwrapped.catalog


def test_textworld_replays_its_history(tmp_path) -> None:
    env = gym.make("hiergym/TextWorld-v0", cache_dir=str(tmp_path))
    _, info = env.reset(seed=2)
    assert {"look", "inventory"} <= set(info["admissible_actions"])
    for command in ("look", "inventory", "xyzzy"):  # two commands reach the game, an invalid one does not
        env.step(command)
    clone = copy.deepcopy(env)
    assert clone.unwrapped._history == env.unwrapped._history == ["look", "inventory"]
    assert clone.unwrapped._env is not env.unwrapped._env  # its own game, replayed
    assert clone.unwrapped.expert_plan() == env.unwrapped.expert_plan()
    rest = env.unwrapped.expert_plan()
    for command in rest:
        expected, got = env.step(command), clone.step(command)
        assert got[:4] == expected[:4]
    assert got[4]["won"] and expected[4]["won"]
