"""ToolBudget: tool and token budgets, refusal and truncation, tracker, cost accounting and reward modes."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
from gymnasium.envs.registration import EnvSpec

import hiergym  # noqa: F401  (registers the envs)
from hiergym.envs.core import make_info, normalize_action, text_action_space, text_observation_space
from hiergym.envs.wrappers import ToolBudget, otc_tool_reward

BUDGET_KEYS = (
    "tool_calls_used", "tool_calls_refused", "tool_cost", "tool_budget", "tool_budget_left", "tokens_used",
    "token_budget", "tokens_left", "cost", "budget_exhausted", "tool_call_refused",
)


class ShopEnv(gym.Env):
    """A tiny WebShop-like env: ``search[q]`` is the tool, ``click[buy]`` wins, everything else is invalid."""

    metadata = {"render_modes": ["ansi"]}

    def __init__(self) -> None:
        self.observation_space, self.action_space = text_observation_space(), text_action_space()
        self.searches = 0

    def _info(self, valid: bool, won: bool = False) -> dict:
        return make_info(task="buy", admissible_actions=None, won=won, action_valid=valid,
                         state_key=f"searches={self.searches}")

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.searches = 0
        return "Shop home.", self._info(True)

    def step(self, action):
        text = normalize_action(action) or ""
        if text.startswith("search[") and text.endswith("]"):
            self.searches += 1
            return f"results {self.searches}", 0.0, False, False, self._info(True)
        if text == "click[buy]":
            return "Bought.", 1.0, True, False, self._info(True, won=True)
        return "Nothing happens.", -0.01, False, False, self._info(False)


def shop(**kwargs) -> ToolBudget:
    env = ShopEnv()
    env.spec = EnvSpec(id="hiergym/WebShop-v0")
    return ToolBudget(env, **kwargs)


def toolqa(seed: int = 1, **kwargs) -> tuple[ToolBudget, str, dict]:
    env = ToolBudget(gym.make("hiergym/ToolQA-v0", hops=3), **kwargs)
    obs, info = env.reset(seed=seed)
    return env, obs, info


def run(env: ToolBudget, actions: list) -> tuple[float, list]:
    total, steps = 0.0, []
    for action in actions:
        step = env.step(action)
        total += step[1]
        steps.append(step)
        if step[2] or step[3]:
            break
    return total, steps


def test_tool_calls_are_counted_and_refused_when_spent() -> None:
    env, obs, info = toolqa(max_tool_calls=2)
    assert obs.endswith("[budget] tool calls left: 2/2") and obs.isascii()
    assert all(k in info for k in BUDGET_KEYS) and info["tool_budget_left"] == 2
    plan = env.unwrapped.expert_plan()  # 3 lookups then the answer
    for expected_left, action in zip((1, 0), plan[:2], strict=True):
        obs, _, _, _, info = env.step(action)
        assert info["action_valid"] and info["tool_budget_left"] == expected_left
    assert info["budget_exhausted"] and obs.endswith("tool calls left: 0/2")
    key = info["state_key"]
    obs, reward, terminated, truncated, info = env.step(plan[2])
    assert obs.startswith("Tool call refused") and info["tool_call_refused"] and not info["action_valid"]
    assert not terminated and not truncated and reward == 0.0
    assert info["tool_calls_used"] == 2 and info["tool_calls_refused"] == 1 and info["state_key"] == key
    assert env.unwrapped._steps == 3  # the refused call still took a step (time limits apply)
    # the agent may still answer
    obs, reward, terminated, _, info = env.step(plan[-1])
    assert terminated and reward == 1.0 and info["success"] and info["tool_productivity"] == 0.5


def test_truncate_mode_ends_the_episode_instead() -> None:
    env, _, _ = toolqa(max_tool_calls=1, on_exhausted="truncate")
    plan = env.unwrapped.expert_plan()
    assert env.step(plan[0])[3] is False
    obs, reward, terminated, truncated, info = env.step(plan[1])
    assert truncated and not terminated and reward == 0.0 and "truncated" in obs
    assert info["success"] is False and info["tool_productivity"] == 0.0
    assert env.reset(seed=1)[1]["tool_calls_used"] == 0


def test_token_budget_via_report_tokens_and_action_tuples() -> None:
    env, obs, _ = toolqa(max_tokens=100, token_price=0.01)
    assert obs.endswith("[budget] tool calls used: 0 | tokens left: 100/100")
    plan = env.unwrapped.expert_plan()
    env.report_tokens(40)
    _, _, _, _, info = env.step(plan[0])
    assert info["tokens_used"] == 40 and info["tokens_left"] == 60 and info["cost"] == pytest.approx(1.4)
    obs, _, _, _, info = env.step((plan[1], {"tokens": 70}))  # over budget: this call is refused
    assert info["tool_call_refused"] and "token budget" in obs and info["tokens_left"] == 0
    assert info["budget_exhausted"] and info["tool_calls_used"] == 1
    _, reward, terminated, _, info = env.step((plan[-1], {"tokens": 5}))  # answering still works
    assert terminated and reward == 1.0 and info["tokens_used"] == 115
    with pytest.raises(ValueError, match="tokens"):
        env.report_tokens(-1)


def test_tool_costs_detection_any_env_and_errors() -> None:
    env = shop(max_tool_calls=1)
    assert env.tool_costs == {"search": 1.0}
    obs, info = env.reset()
    assert obs == "Shop home.\n[budget] tool calls left: 1/1" and info["state_key"] == "searches=0|tool_budget_left:1"
    assert env.step("search[red shoes]")[4]["tool_calls_used"] == 1
    obs, reward, _, _, info = env.step("search[blue shoes]")
    assert info["tool_call_refused"] and env.unwrapped.searches == 1 and reward == pytest.approx(-0.01)
    assert env.step("click[buy]")[4]["success"]
    # a predicate decides, with per-call costs in budget units
    env = shop(max_tool_calls=3, tool_costs=lambda a: 2.0 if a.startswith("search[") else None)
    env.reset()
    assert env.step("search[x]")[4]["tool_budget_left"] == 1
    assert env.step("search[y]")[4]["tool_call_refused"]
    plain = ShopEnv()
    with pytest.raises(ValueError, match="tool_costs"):
        ToolBudget(plain)
    assert ToolBudget(plain, tool_costs={"Search": 2}).tool_costs == {"search": 2.0}
    for bad in ({"max_tool_calls": -1}, {"reward_mode": "nope"}, {"on_exhausted": "explode"}):
        with pytest.raises(ValueError):
            ToolBudget(plain, tool_costs={"search": 1}, **bad)


def test_junk_actions_never_raise_under_a_budget() -> None:
    env, _, info = toolqa(max_tool_calls=1, max_tokens=10)
    for junk in ["", "x" * 100_000, "\x00\xff", None, 3.5, ["lookup[x]"], ("lookup[x]", {}), "lookup[]"]:
        obs, _, terminated, truncated, info = env.step(junk)
        assert isinstance(obs, str) and not terminated and not truncated
    assert info["tool_calls_used"] == 1 and info["tool_call_refused"]  # "lookup[]" was the second call


def test_otc_tool_reward_shape() -> None:
    assert otc_tool_reward(3, 3) == pytest.approx(1.0)
    assert otc_tool_reward(0, 3) == 0.0
    assert otc_tool_reward(6, 3) == pytest.approx(math.sin(4 / 3 * math.pi / 2 * 1))  # f = 2*3*6/9 = 4
    assert otc_tool_reward(4, 2) < otc_tool_reward(3, 2) < otc_tool_reward(2, 2)
    assert otc_tool_reward(1, 2) < 1.0
    assert otc_tool_reward(0, 0) == 1.0 and otc_tool_reward(0, None) == 1.0
    assert otc_tool_reward(2, None, smoothing=1.0) == pytest.approx(math.cos(2 * math.pi / 5))
    assert 0.0 <= otc_tool_reward(1000, 1) <= 0.01


def test_reward_mode_correctness() -> None:
    env, _, _ = toolqa(reward_mode="correctness")
    plan = env.unwrapped.expert_plan()
    total, steps = run(env, plan)
    assert total == 1.0 and [s[1] for s in steps] == [0.0, 0.0, 0.0, 1.0]
    assert steps[-1][4]["reward_correctness"] == 1.0
    env.reset(seed=1)
    total, _ = run(env, ["lookup[nobody]", "answer[wrong]"])
    assert total == 0.0


def test_reward_mode_otc_scales_correctness_by_tool_efficiency() -> None:
    env, _, info = toolqa(reward_mode="otc", otc_alpha=1.0)
    n, plan = info["minimal_tool_calls"], env.unwrapped.expert_plan()
    assert n == 3
    total, steps = run(env, plan)  # optimal: m = n
    assert total == pytest.approx(1.0) and steps[-1][4]["reward_tool"] == pytest.approx(1.0)
    env.reset(seed=1)
    total, steps = run(env, ["search[founded]", "calculate[1+1]", *plan])  # two extra calls: m = 5
    expected = math.sin((2 * 3 * 5 / 8) * math.pi / 6)
    assert total == pytest.approx(expected) and steps[-1][4]["tool_calls_used"] == 5
    env.reset(seed=1)
    total, _ = run(env, [*plan[:-1], "answer[wrong]"])  # optimal calls, wrong answer
    assert total == 0.0
    env.reset(seed=1)
    total, _ = run(env, [plan[-1]])  # a correct answer with no calls (a lucky guess) earns nothing
    assert total == 0.0


def test_reward_mode_otc_without_minimal_calls_from_the_env() -> None:
    for optimal, expected in ((None, math.cos(math.pi / 3)), (1, 1.0), (2, math.sin((4 / 3) * math.pi / 4))):
        env = shop(reward_mode="otc", otc_optimal_calls=optimal)
        env.reset()
        total, steps = run(env, ["search[chair]", "click[buy]"])
        assert total == pytest.approx(expected) and steps[-1][4]["success"]


def test_reward_mode_cost_penalty() -> None:
    env, _, _ = toolqa(reward_mode="cost_penalty", cost_coef=0.1, token_price=0.001)
    plan = env.unwrapped.expert_plan()
    total, steps = run(env, [(a, {"tokens": 100}) for a in plan])
    cost = 4 * 100 * 0.001 + 3  # tokens over 4 steps, 3 unit-cost lookups
    assert steps[-1][4]["cost"] == pytest.approx(cost)
    assert total == pytest.approx(1.0 - 0.1 * cost)
    assert steps[0][1] == pytest.approx(-0.1 * (1 + 0.1))  # charged as incurred
    env.reset(seed=1)
    total, _ = run(env, [*plan[:-1], "answer[wrong]"])
    assert total == pytest.approx(-0.3)


def test_budget_wrapper_keeps_the_contract_info() -> None:
    env, _, info = toolqa(max_tool_calls=4)
    for key in ("task", "admissible_actions", "won", "action_valid", "state_key"):
        assert key in info
    assert info["state_key"].endswith("|tool_budget_left:4")
    unkeyed = ToolBudget(gym.make("hiergym/ToolQA-v0"), max_tool_calls=4, budget_in_state_key=False,
                         show_tracker=False)
    obs, info = unkeyed.reset(seed=1)
    assert "tool_budget_left" not in info["state_key"] and "[budget]" not in obs


def test_look_ahead_charges_count_against_the_budget_and_prepaid_calls_are_paid_once() -> None:
    env = ToolBudget(gym.make("hiergym/ToolQA-v0"), max_tool_calls=3, token_price=0.01)
    _, info = env.reset(seed=0, options={"split": "eval_in", "task_id": 0})
    assert env.unwrapped.last_reset == {"seed": 0, "options": {"split": "eval_in", "task_id": 0}}
    lookup = info["admissible_actions"][0]
    env.charge_lookahead(tool_calls=2, tool_cost=2.0, tokens=100)  # two calls made in a simulation copy
    assert env.budget_left() == {"tool_budget": 3, "tool_budget_left": 1.0, "token_budget": None, "tokens_left": None}
    assert env.lookahead_tool_calls == 2
    env.prepay_next_call()  # the next call repeats one of them: not charged again
    _, _, _, _, info = env.step(lookup)
    assert info["tool_calls_used"] == 2 and info["tool_cost"] == 2.0 and info["lookahead_tool_calls"] == 2
    assert info["tokens_used"] == 100 and info["cost"] == pytest.approx(3.0)
    _, _, _, _, info = env.step(lookup)  # prepaid was for one step only
    assert info["tool_calls_used"] == 3 and info["tool_budget_left"] == 0
    _, _, _, _, info = env.step(lookup)
    assert info["tool_call_refused"]
    with pytest.raises(ValueError, match="tool_calls"):
        env.charge_lookahead(tool_calls=-1)
    env.reset(seed=1)
    assert env.lookahead_tool_calls == 0 and env.budget_left()["tool_budget_left"] == 3
