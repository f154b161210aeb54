"""``reset(options=...)`` that is not a dict (or None) is a clear ``TypeError``, on every env and game."""

from __future__ import annotations

import importlib
from types import MappingProxyType

import gymnasium as gym
import pytest

import hiergym
from hiergym.envs.core import check_options
from hiergym.envs.multiagent import GAMES

NOT_OPTIONS = ["x", 5, "", 0, ["split", "eval_in"], [("split", "eval_in")], ("task_id", 1), b"split", 1.5, True,
               {"split", "train"}]
MESSAGE = r"reset options must be a dict \(or None\)"


@pytest.mark.parametrize("bad", NOT_OPTIONS, ids=repr)
def test_check_options_says_what_options_must_be(bad) -> None:
    with pytest.raises(TypeError, match=MESSAGE) as error:
        check_options(bad)
    assert type(bad).__name__ in str(error.value)


@pytest.mark.parametrize("env_id", hiergym.env_ids())
def test_every_env_refuses_options_that_are_not_a_dict(env_id: str) -> None:
    env = gym.make(env_id)
    first, info = env.reset(seed=4)
    for bad in NOT_OPTIONS:
        with pytest.raises(TypeError, match=MESSAGE):
            env.reset(seed=4, options=bad)
    # nothing was half-done: the env still works, and mappings other than dict are options too
    assert env.reset(seed=4)[0] == first
    obs, info = env.reset(seed=4, options=MappingProxyType({"split": "train"}))
    assert obs == first and info["action_valid"]
    assert env.reset(seed=4, options=None)[0] == first


@pytest.mark.parametrize("game", GAMES)
def test_every_game_refuses_options_that_are_not_a_dict(game: str) -> None:
    m = importlib.import_module(f"hiergym.envs.multiagent.{game}")
    for env in (m.env(), m.parallel_env()):
        for bad in NOT_OPTIONS:
            with pytest.raises(TypeError, match=MESSAGE):
                env.reset(seed=0, options=bad)
        env.reset(seed=0, options={"split": "eval_in", "task_id": 1})
        assert env.agents == env.possible_agents
