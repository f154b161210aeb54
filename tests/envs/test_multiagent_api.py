"""The multi-agent games as PettingZoo envs: API tests, seeding, tasks, per-agent info and bad actions."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, seed_test

from hiergym.envs.core import INFO_KEYS
from hiergym.envs.multiagent import GAMES

JUNK = ["", "   ", "x" * 100_000, "\x00\x01\xff", "ünïcödé ☃", "[]", "12345", None, 3.5, b"\xff\xfe", ["b2"]]


def module(game: str):
    return importlib.import_module(f"hiergym.envs.multiagent.{game}")


def assert_info(info: dict) -> None:
    for key in INFO_KEYS:
        assert key in info, f"info lacks {key!r}"
    assert isinstance(info["admissible_actions"], list)
    assert isinstance(info["won"], bool) and isinstance(info["action_valid"], bool)
    assert isinstance(info["state_key"], str) and info["state_key"]
    assert isinstance(info["to_move"], bool)


@pytest.mark.parametrize("game", GAMES)
def test_pettingzoo_api_tests(game: str) -> None:
    m = module(game)
    with warnings.catch_warnings():
        # text observations/actions are not NumPy arrays / Box spaces: PettingZoo only warns about that
        warnings.simplefilter("ignore", UserWarning)
        api_test(m.env(), num_cycles=50)
        parallel_api_test(m.parallel_env(), num_cycles=50)
        seed_test(m.env, num_cycles=20)
        parallel_seed_test(m.parallel_env, num_cycles=20)


def random_legal_aec_game(m, seed: int, **kwargs) -> tuple[dict[str, float], object]:
    """Play a whole game with uniformly random *legal* actions (PettingZoo's sampler only sends junk)."""
    env = m.env(**kwargs)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    totals = dict.fromkeys(env.possible_agents, 0.0)
    for agent in env.agent_iter(max_iter=2000):
        obs, reward, terminated, truncated, info = env.last()
        totals[agent] += reward
        assert isinstance(obs, str) and obs and env.observation_space(agent).contains(obs)
        assert_info(info)
        if terminated or truncated:
            env.step(None)
            continue
        assert info["to_move"] and info["admissible_actions"], "the selected agent must have legal actions"
        env.step(info["admissible_actions"][int(rng.integers(len(info["admissible_actions"])))])
        if agent in env.unwrapped.infos:
            assert env.unwrapped.infos[agent]["action_valid"], "a legal action was flagged invalid"
    assert not env.agents, "the game did not end"
    return totals, env.unwrapped.game


@pytest.mark.parametrize("game", GAMES)
def test_random_legal_play_ends_with_consistent_payoffs(game: str) -> None:
    m = module(game)
    for seed in range(6):
        totals, final = random_legal_aec_game(m, seed)
        assert totals == pytest.approx(final.scores())
        if game in ("tictactoe_v0", "kuhn_poker_v0"):
            assert sum(totals.values()) == pytest.approx(0.0), "competitive games are zero-sum"


@pytest.mark.parametrize("game", GAMES)
def test_parallel_env_applies_only_the_movers(game: str) -> None:
    m = module(game)
    env = m.parallel_env()
    obs, infos = env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(200):
        for info in infos.values():
            assert_info(info)
        actions = {}
        for agent in env.agents:
            legal = infos[agent]["admissible_actions"]
            actions[agent] = legal[int(rng.integers(len(legal)))] if infos[agent]["to_move"] else "junk ignored"
        obs, rewards, terms, truncs, infos = env.step(actions)
        for agent, info in infos.items():
            assert info["action_valid"], f"{agent}: a legal or ignored action was flagged invalid"
        if not env.agents:
            break
    assert not env.agents


@pytest.mark.parametrize("game", GAMES)
def test_same_seed_same_game_and_task_ids(game: str) -> None:
    m = module(game)
    a, b = m.raw_env(), m.raw_env()
    a.reset(seed=5)
    b.reset(seed=5)
    assert a.game.state_key() == b.game.state_key()
    assert [a.observe(p) for p in a.agents] == [b.observe(p) for p in b.agents]
    a.reset(seed=1, options={"split": "eval_in", "task_id": 2})
    b.reset(seed=77, options={"split": "eval_in", "task_id": 2})
    assert a.game.state_key() == b.game.state_key()
    with pytest.raises(ValueError, match="split"):
        a.reset(options={"split": "test"})
    if game != "tictactoe_v0":  # tic-tac-toe from the empty board has no chance: one game only
        keys = {a.reset(seed=s) or a.game.state_key() for s in range(10)}
        assert len(keys) > 1, "different seeds should deal different games"
    outs = {a.reset(options={"split": "eval_out", "task_id": i}) or a.game.state_key() for i in range(5)}
    assert len(outs) > 1


@pytest.mark.parametrize("game", ["tictactoe_v0", "kuhn_poker_v0"])
def test_illegal_move_forfeits_competitive_games(game: str) -> None:
    m = module(game)
    for junk in JUNK:
        env = m.env()
        env.reset(seed=0)
        offender = env.agent_selection
        env.step(junk)  # must not raise
        other = next(p for p in env.possible_agents if p != offender)
        assert env.unwrapped.infos[offender]["action_valid"] is False
        assert env.unwrapped.rewards[offender] < 0 < env.unwrapped.rewards[other]
        if game == "tictactoe_v0":
            assert all(env.unwrapped.terminations.values()), "an illegal move ends tic-tac-toe"
            assert env.unwrapped.infos[other]["won"]
        else:  # poker: the offender folds its hand (one-hand match: the match ends)
            assert env.unwrapped.game.history == "" and env.unwrapped.game.hand == 1
            assert env.unwrapped.rewards[other] == 1.0
    env = m.env()
    env.reset(seed=0)
    if game == "tictactoe_v0":
        env.step("b2")
        env.step("b2")  # occupied cell
        assert env.unwrapped.infos["player_1"]["action_valid"] is False and env.unwrapped.infos["player_0"]["won"]
    else:
        env.step("call")  # nothing to call
        assert env.unwrapped.infos["player_0"]["action_valid"] is False


def test_illegal_move_loses_the_turn_in_negotiation() -> None:
    m = module("negotiation_v0")
    env = m.env()
    env.reset(seed=0)
    key = env.unwrapped.game.state_key()
    for junk in ["accept", "propose[unicorn=3]", "propose[" + "x" * 50 + "]", *JUNK[:4]]:
        speaker = env.agent_selection
        env.step(junk)
        assert env.unwrapped.infos[speaker]["action_valid"] is False
        assert env.agent_selection != speaker, "the turn passes"
        if env.unwrapped.game.is_over():
            break
    game = env.unwrapped.game
    assert game.offer is None and key.split("|turn=")[0] == game.state_key().split("|turn=")[0]
    assert game.outcome == "deadline" or game.turn == 7


def test_invalid_commands_do_nothing_in_the_household() -> None:
    m = module("household_coop_v0")
    env = m.parallel_env()
    obs, infos = env.reset(seed=2)
    world_key = infos["player_0"]["state_key"]
    obs, rewards, terms, truncs, infos = env.step({"player_0": "take the moon", "player_1": None})
    assert infos["player_0"]["action_valid"] is False and infos["player_1"]["action_valid"] is False
    assert "Nothing happens." in obs["player_0"]
    assert infos["player_0"]["state_key"] == world_key and not any(terms.values())


def test_alfworld_household_passes_the_api_tests() -> None:
    m = module("household_coop_v0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        api_test(m.env(world="alfworld"), num_cycles=20)
        parallel_api_test(m.parallel_env(world="alfworld"), num_cycles=20)
    for seed in range(3):
        totals, final = random_legal_aec_game(m, seed, world="alfworld")
        assert totals == pytest.approx(final.scores())


def test_parallel_household_says_reach_the_teammate() -> None:
    env = module("household_coop_v0").parallel_env(goal_visibility="split")
    obs, infos = env.reset(seed=4)
    assert infos["player_0"]["task"] != infos["player_1"]["task"], "split goals: each knows only its part"
    obs, *_ = env.step({"player_0": "say[I will fetch the mug]", "player_1": "wait"})
    assert 'player_0 says: "i will fetch the mug"' in obs["player_1"]
