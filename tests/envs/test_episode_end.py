"""The episode-end rule (docs/environments.md, "Episode end"), on every registered env and on ToolBudget.

After ``terminated`` (and after truncation by the env's own step limit) every step until ``reset`` answers
the terminal observation with reward 0, the same flags, ``action_valid=False`` and ``admissible_actions=[]``,
and changes nothing.
"""

from __future__ import annotations

import gymnasium as gym
import pytest

import hiergym
from hiergym.envs.core import EpisodeEnd, check_options
from hiergym.envs.sokoban import SokobanEnv
from hiergym.envs.wrappers import ToolBudget

ENV_IDS = hiergym.env_ids()
#: Constructor arguments that give an env its own short time limit (the truncation half of the rule), and an
#: action that uses up a step (or a round) of it.
OWN_LIMITS = {
    "hiergym/Sokoban-v0": ({"max_steps": 3}, "junk"),
    "hiergym/ToolQA-v0": ({"max_steps": 3}, "junk"),
    "hiergym/HouseholdCoop-v0": ({"max_rounds": 2, "opponent": "random"}, "wait"),
}
POST_END_JUNK = ["", "junk", None, 3.5, b"\xff", "x" * 10_000, "\x1cup\x1d"]


def make(env_id: str, **kwargs) -> gym.Env:
    """The registered env; Gymnasium's TimeLimit (outside the env, not part of the rule) is set out of reach."""
    return gym.make(env_id, max_episode_steps=1_000, **kwargs)


def assert_after_end(env: gym.Env, terminal: tuple, actions: list) -> None:
    """Every action in ``actions`` gets the terminal step's answer, per the rule."""
    obs, _, terminated, truncated, info = terminal
    state = info["state_key"]
    for action in actions:
        after = env.step(action)
        assert after[0] == obs, f"{action!r}: not the terminal observation"
        assert after[1:4] == (0.0, terminated, truncated), f"{action!r}: reward/flags {after[1:4]}"
        assert isinstance(after[1], float)
        after_info = after[4]
        assert after_info["action_valid"] is False and after_info["admissible_actions"] == []
        assert after_info["state_key"] == state and after_info["won"] == info["won"]
        expected = {k: v for k, v in info.items() if k not in ("action_valid", "admissible_actions")}
        assert {k: v for k, v in after_info.items() if k not in ("action_valid", "admissible_actions")} == expected


def play_expert(env: gym.Env, seed: int) -> tuple[tuple, list[str]]:
    """Win from ``reset(seed)`` with the expert; returns the terminal step and the commands accepted just
    before it (to try again after the end)."""
    _, info = env.reset(seed=seed)
    commands: list[str] = []
    for action in env.unwrapped.expert_plan():
        commands = [action, *(info["admissible_actions"] or [])][:6]
        result = env.step(action)
        info = result[4]
        if result[2] or result[3]:
            return result, commands
    raise AssertionError("the expert's plan did not end the episode")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_every_registered_env_uses_the_shared_rule(env_id: str) -> None:
    assert isinstance(gym.make(env_id).unwrapped, EpisodeEnd)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_after_termination_nothing_happens_until_reset(env_id: str) -> None:
    env = make(env_id)
    terminal, commands = play_expert(env, seed=0)
    assert terminal[2] and terminal[4]["won"] and env.unwrapped.episode_over
    assert_after_end(env, terminal, [*commands, *POST_END_JUNK])
    # reset starts a normal episode again: the same as a fresh env's
    obs, info = env.reset(seed=1)
    fresh_obs, fresh_info = make(env_id).reset(seed=1)
    assert obs == fresh_obs and info["state_key"] == fresh_info["state_key"] and info["action_valid"]
    assert not env.unwrapped.episode_over
    plan = env.unwrapped.expert_plan()
    assert env.step(plan[0])[4]["action_valid"]


@pytest.mark.parametrize("env_id", sorted(OWN_LIMITS))
def test_after_truncation_by_the_envs_own_limit(env_id: str) -> None:
    kwargs, action = OWN_LIMITS[env_id]
    env = make(env_id, **kwargs).unwrapped  # the env's own limit, not Gymnasium's TimeLimit
    env.reset(seed=0)
    for _ in range(10):
        result = env.step(action)
        if result[2] or result[3]:
            break
    assert result[3] and not result[2], "the env's own limit should truncate"
    assert_after_end(env, result, [action, *(env.unwrapped.expert_plan() or [])[:3], *POST_END_JUNK])


def test_sokoban_pays_the_win_once_and_cannot_be_undone() -> None:
    # the win pushes the box onto the target; one more push right would take it off again
    env = SokobanEnv.from_board("######\n#@$._#\n######")
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("right")
    assert terminated and info["won"] and reward == pytest.approx(-0.1 + 1.0 + 10.0)
    for action in ("right", "left", "left", "right"):  # before: -1.1 and terminated=False, then +9.9 again
        again = env.step(action)
        assert again[:4] == (obs, 0.0, True, False) and again[4]["won"] and not again[4]["action_valid"]
    assert env.render_text() == "######\n#_PV_#\n######", "the state must not change after the win"


def test_toolbudget_end_of_episode_rewards_are_paid_once() -> None:
    env = ToolBudget(gym.make("hiergym/ToolQA-v0", hops=2), reward_mode="correctness")
    env.reset(seed=3)
    for action in env.unwrapped.expert_plan():
        result = env.step(action)
    assert result[2] and result[1] == 1.0 and result[4]["success"]
    assert_after_end(env, result, ["answer[anything]", "lookup[x]", None])
    assert env.step(("answer[again]", {"tokens": 5}))[1] == 0.0


def test_toolbudget_own_truncation_stops_the_episode() -> None:
    env = ToolBudget(gym.make("hiergym/ToolQA-v0", hops=2), max_tool_calls=0, on_exhausted="truncate")
    env.reset(seed=3)
    steps = env.unwrapped._steps
    result = env.step(env.unwrapped.expert_plan()[0])  # a lookup the budget cannot pay for
    assert result[3] and not result[2] and result[4]["tool_call_refused"]
    plan = env.unwrapped.expert_plan()
    assert_after_end(env, result, [plan[-1], *plan[:1], "junk"])  # not even the answer goes through now
    assert env.unwrapped._steps == steps, "nothing reaches the env after the wrapper ended the episode"
    obs, info = env.reset(seed=3)
    assert info["tool_budget_left"] == 0 and not env.episode_over


def test_check_options_copies_mappings() -> None:
    options = {"split": "eval_in"}
    assert check_options(options) == options and check_options(options) is not options
    assert check_options(None) == {}
