"""The PettingZoo games after game over follow PettingZoo's conventions, in both APIs.

Parallel (as PettingZoo's ``aec_to_parallel`` and ``parallel_api_test`` expect): once ``agents`` is empty a
step changes nothing and returns five empty dicts. AEC: each done agent is stepped once with ``None`` (which
removes it; another action raises PettingZoo's ``ValueError``), and once ``agents`` is empty a step does
nothing.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
from pettingzoo.utils.conversions import aec_to_parallel

from hiergym.envs.multiagent import GAMES

EMPTY = ({}, {}, {}, {}, {})


def module(game: str):
    return importlib.import_module(f"hiergym.envs.multiagent.{game}")


def finish_parallel(env, seed: int) -> None:
    """Play random legal moves until the game is over."""
    rng = np.random.default_rng(seed)
    obs, infos = env.reset(seed=seed)
    for _ in range(500):
        if not env.agents:
            return
        actions = {}
        for agent in env.agents:
            legal = infos[agent]["admissible_actions"]
            actions[agent] = legal[int(rng.integers(len(legal)))] if legal else ""
        obs, rewards, terminations, truncations, infos = env.step(actions)
    raise AssertionError("the game did not end")


def finish_aec(env, seed: int) -> None:
    """Play random legal moves until every agent is done (not yet removed)."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    for _ in range(500):
        agent = env.agent_selection
        if env.terminations[agent] or env.truncations[agent]:
            return
        legal = env.infos[agent]["admissible_actions"]
        env.step(legal[int(rng.integers(len(legal)))])
    raise AssertionError("the game did not end")


@pytest.mark.parametrize("game", GAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_parallel_step_after_game_over_returns_five_empty_dicts(game: str, seed: int) -> None:
    env = module(game).parallel_env()
    finish_parallel(env, seed)
    key = env.state()
    everyone = dict.fromkeys(env.possible_agents, "look")
    for actions in ({}, everyone, {"player_0": None}, {"nobody": "junk"}, dict.fromkeys(env.possible_agents, 5)):
        assert env.step(actions) == EMPTY
        assert env.agents == [] and env.state() == key, "a step after game over changed the game"
    obs, infos = env.reset(seed=seed)
    assert env.agents == env.possible_agents and set(obs) == set(infos) == set(env.possible_agents)


@pytest.mark.parametrize("game", GAMES)
def test_parallel_step_before_reset_and_bad_containers(game: str) -> None:
    env = module(game).parallel_env()
    assert env.step({}) == EMPTY  # no live agent yet
    env.reset(seed=0)
    for not_a_dict in (None, "b2", ["b2"], 5):
        with pytest.raises(TypeError, match="dict from agent name to action"):
            env.step(not_a_dict)


def test_household_parallel_matches_pettingzoos_own_conversion() -> None:
    """The household is the one parallelizable game: PettingZoo's aec_to_parallel of its AEC env gives the
    same five empty dicts after the game as the native Parallel env."""
    m = module("household_coop_v0")
    native = m.parallel_env(max_rounds=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = aec_to_parallel(m.env(max_rounds=3))
        for env in (native, converted):
            env.reset(seed=0)
            for _ in range(3):
                env.step(dict.fromkeys(env.agents, "wait"))
            assert env.agents == []
            assert tuple(dict(part) for part in env.step({})) == EMPTY


@pytest.mark.parametrize("game", GAMES)
@pytest.mark.parametrize("wrapped", [False, True])
def test_aec_dead_steps_then_nothing(game: str, wrapped: bool) -> None:
    m = module(game)
    env = m.env() if wrapped else m.raw_env()
    finish_aec(env, seed=0)
    raw = env.unwrapped
    key = raw.game.state_key()
    # a done agent must be stepped with None (PettingZoo's rule); anything else is refused and changes nothing
    dead = env.agent_selection
    with pytest.raises(ValueError, match="only valid action is None"):
        env.step("look")
    assert dead in env.agents
    removed = []
    while env.agents:
        agent = env.agent_selection
        obs, reward, terminated, truncated, info = env.last()
        assert terminated or truncated
        env.step(None)
        assert agent not in env.agents
        removed.append(agent)
    assert sorted(removed) == sorted(env.possible_agents)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the order-enforcing wrapper warns about a step after the end
        for action in (None, "look", 5, "\x1cb2"):
            env.step(action)  # nothing happens, nothing raises
    assert env.agents == [] and raw.game.state_key() == key
    env.reset(seed=1)
    assert env.agents == env.possible_agents


@pytest.mark.parametrize("game", GAMES)
def test_aec_step_before_reset_on_the_raw_env_does_nothing(game: str) -> None:
    env = module(game).raw_env()
    env.step("look")
    assert env.agents == []
