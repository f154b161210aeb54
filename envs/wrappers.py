"""Wrappers for any hiergym environment. :class:`ToolBudget` puts explicit tool-call and token budgets on an
env, shows the agent what is left (BATS's Budget Tracker), accounts for cost, and offers cost-aware rewards
(OTC-PO's tool-efficiency-scaled correctness, or correctness minus a cost penalty). See ``docs/budgets.md``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym

from hiergym.envs.core import EpisodeEnd, normalize_action

#: Which actions are tool calls, and what each costs, for envs that do not declare ``default_tool_costs``.
#: Keys are matched (lower case) against the env id.
DEFAULT_TOOL_COSTS_BY_ENV: dict[str, dict[str, float]] = {
    "webshop": {"search": 1.0},
}

REWARD_MODES = ("env", "correctness", "otc", "cost_penalty")
ON_EXHAUSTED = ("refuse", "truncate")

ToolCosts = Mapping[str, float] | Callable[[str], float | None]

_TOOL_CALL = re.compile(r"^([a-z_][a-z0-9_]*)\[.*\]$")
#: The contract guarantees that an empty action is an invalid step that changes nothing but counts as a
#: step; a refused tool call is passed on as one so that time limits and per-step rewards still apply.
_PASS_ACTION = ""


def otc_tool_reward(tool_calls: int, optimal_calls: int | None, smoothing: float = 1.0) -> float:
    """OTC-PO's tool-use reward ``r_tool`` in [0, 1] (Wang et al., 2025, "OTC: Optimal Tool Calls via RL").

    With ``m`` calls made and ``n`` the optimal number:

    - ``n`` known and > 0 (OTC-GRPO's shape): ``sin(f(m, n) * pi / (2n))`` with ``f(m, n) = 2nm / (m + n)``;
      1 at ``m = n``, falling to 0 at ``m = 0`` and as ``m`` grows (0.87 at ``m = 2n``).
    - ``n = 0``: 1 when ``m = 0``, else ``cos(m * pi / (2m + c))`` (``c`` = ``smoothing``).
    - ``n`` unknown (``None``): OTC-PPO's shape ``cos(m * pi / (2m + c))``, which only rewards fewer calls.
    """
    m = max(0, int(tool_calls))
    if optimal_calls is None or optimal_calls <= 0:
        return 1.0 if m == 0 else max(0.0, math.cos(m * math.pi / (2 * m + smoothing)))
    n = int(optimal_calls)
    mapped = 2 * n * m / (m + n)
    return max(0.0, math.sin(mapped * math.pi / (2 * n)))


class ToolBudget(EpisodeEnd, gym.Wrapper):
    """Explicit tool-call and token budgets, a budget tracker, cost accounting and cost-aware rewards.

    **Tool calls.** An action ``name[...]`` is a tool call when ``name`` has a cost in ``tool_costs`` (a
    mapping tool name -> cost), or, when ``tool_costs`` is a callable, when it returns a cost for the
    normalised action (``None`` for not a tool call). Without ``tool_costs`` the wrapper uses the env's
    ``default_tool_costs`` attribute (ToolQA: search, lookup and calculate cost 1; answer is free and not a
    call), else :data:`DEFAULT_TOOL_COSTS_BY_ENV` by env id (WebShop: ``search``). ``max_tool_calls`` is the
    tool budget in cost units (with unit costs, a number of calls); ``None`` means unlimited.

    **Tokens.** The agent reports how many tokens it generated for the next action, either with
    :meth:`report_tokens` before ``step`` or by stepping ``(action, {"tokens": n})``. ``max_tokens`` bounds
    their sum over the episode (``None``: unlimited).

    **When a budget is spent.** With ``on_exhausted="refuse"`` (default) a tool call that the remaining tool
    budget cannot pay for, or any tool call once the token budget is exceeded, is refused: the env receives an
    empty (invalid, no-effect) action so the step still counts, and the observation says why. Other actions,
    such as ``answer[...]``, still go through. With ``"truncate"`` such a call ends the episode (truncated).
    Nothing raises.

    **Look-ahead.** An agent that searches in simulation copies of the env charges what it spent there with
    :meth:`charge_lookahead` (tool calls, their cost, tokens): it counts in the same totals and budgets, and
    apart in ``lookahead_tool_calls`` / ``lookahead_tool_cost``. :meth:`prepay_next_call` tells the wrapper
    that the next real call repeats one already paid for in a look-ahead from the same state (each distinct
    tool execution is paid once). :meth:`budget_left` is what is left now.

    **After the episode ends** (the env's end or the wrapper's own truncation), every step until ``reset``
    repeats the last (decorated) observation with reward 0 and ``action_valid=False``, and nothing is
    counted or passed on to the env (the contract's rule, :class:`~hiergym.envs.core.EpisodeEnd`): the
    end-of-episode rewards of ``"correctness"`` and ``"otc"`` are paid once.

    **Observation.** With ``show_tracker`` each string observation ends with a line such as
    ``[budget] tool calls left: 3/8 | tokens left: 1200/4096``.

    **Info** (always): ``tool_calls_used``, ``tool_calls_refused``, ``tool_cost``, ``tool_budget``,
    ``tool_budget_left``, ``tokens_used``, ``token_budget``, ``tokens_left``, ``cost`` (unified:
    ``tokens_used * token_price + tool_cost``), ``budget_exhausted``, ``tool_call_refused`` (this step). At the
    end of an episode also ``success`` (``info["won"]``), ``tool_productivity`` (success per tool call, OTC's
    metric; ``None`` when no call was made) and ``reward_correctness`` / ``reward_tool``. With a tool budget
    and ``budget_in_state_key``, ``state_key`` gains the remaining tool budget, which is part of the state.

    **Reward** (``reward_mode``): ``"env"`` passes the env's reward through; ``"correctness"`` is 1.0 at the
    end of an episode the agent won, else 0.0; ``"otc"`` is ``otc_alpha * otc_tool_reward(m, n) *
    correctness`` at the end, with ``m`` the tool calls made and ``n`` the env's ``info["minimal_tool_calls"]``
    (else ``otc_optimal_calls``; OTC-PPO's shape when neither is known); ``"cost_penalty"`` is correctness at the end minus
    ``cost_coef`` times each step's cost as it is incurred, so an episode returns
    ``correctness - cost_coef * cost``.

    Args:
        env: any env with string actions (hiergym's contract).
        max_tool_calls: tool budget in cost units (unit costs: calls); None for unlimited.
        max_tokens: budget over the tokens the agent reports; None for unlimited.
        tool_costs: tool name -> cost, or a function of the normalised action returning a cost or None.
        token_price: cost of one reported token in the unified cost.
        on_exhausted: ``"refuse"`` or ``"truncate"``.
        reward_mode: ``"env"``, ``"correctness"``, ``"otc"`` or ``"cost_penalty"``.
        cost_coef: weight of the unified cost in ``"cost_penalty"``.
        otc_alpha, otc_smoothing: OTC's scale and smoothing constant ``c``.
        otc_optimal_calls: the optimal number of calls when the env does not report ``minimal_tool_calls``.
        show_tracker: append the budget line to string observations.
        budget_in_state_key: add the remaining tool budget to ``state_key``.
    """

    def __init__(
        self,
        env: gym.Env,
        max_tool_calls: float | None = None,
        max_tokens: int | None = None,
        *,
        tool_costs: ToolCosts | None = None,
        token_price: float = 0.0,
        on_exhausted: str = "refuse",
        reward_mode: str = "env",
        cost_coef: float = 0.1,
        otc_alpha: float = 1.0,
        otc_smoothing: float = 1.0,
        otc_optimal_calls: int | None = None,
        show_tracker: bool = True,
        budget_in_state_key: bool = True,
    ) -> None:
        super().__init__(env)
        if max_tool_calls is not None and max_tool_calls < 0:
            raise ValueError(f"max_tool_calls must be >= 0 or None, got {max_tool_calls}")
        if max_tokens is not None and max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0 or None, got {max_tokens}")
        if on_exhausted not in ON_EXHAUSTED:
            raise ValueError(f"on_exhausted must be one of {ON_EXHAUSTED}, got {on_exhausted!r}")
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
        if token_price < 0 or cost_coef < 0:
            raise ValueError("token_price and cost_coef must be non-negative")
        self.max_tool_calls = max_tool_calls
        self.max_tokens = max_tokens
        self.tool_costs = self._resolve_tool_costs(env, tool_costs)
        self.token_price = float(token_price)
        self.on_exhausted = on_exhausted
        self.reward_mode = reward_mode
        self.cost_coef = float(cost_coef)
        self.otc_alpha = float(otc_alpha)
        self.otc_smoothing = float(otc_smoothing)
        self.otc_optimal_calls = otc_optimal_calls
        self.show_tracker = show_tracker
        self.budget_in_state_key = budget_in_state_key
        self._reset_counters()

    # ------------------------------------------------------------------------------------------ API
    def report_tokens(self, tokens: int) -> None:
        """Report the tokens the agent generated for its next action (added up until that ``step``)."""
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ValueError(f"tokens must be a non-negative int, got {tokens!r}")
        self._pending_tokens += tokens

    def charge_lookahead(self, tool_calls: int = 0, tool_cost: float = 0.0, tokens: int = 0) -> None:
        """Charge test-time compute the agent spent outside this env: tool calls it executed in simulation copies
        (a look-ahead search such as ``agents/bavt.py``) and the tokens it generated for them.

        They count at once in ``tool_calls_used``, ``tool_cost``, ``tokens_used`` and ``cost``, against the
        same budgets (``tool_budget_left`` shrinks; a call the rest cannot pay is refused as usual), and apart
        in ``lookahead_tool_calls`` / ``lookahead_tool_cost``. The agent is trusted, as with its token reports.
        """
        if isinstance(tool_calls, bool) or not isinstance(tool_calls, int) or tool_calls < 0:
            raise ValueError(f"tool_calls must be a non-negative int, got {tool_calls!r}")
        if not isinstance(tool_cost, int | float) or tool_cost < 0:
            raise ValueError(f"tool_cost must be a non-negative number, got {tool_cost!r}")
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ValueError(f"tokens must be a non-negative int, got {tokens!r}")
        self._tool_calls_used += tool_calls
        self._tool_cost += float(tool_cost)
        self._lookahead_calls += tool_calls
        self._lookahead_cost += float(tool_cost)
        self._tokens_used += tokens

    def prepay_next_call(self) -> None:
        """The next step's tool call repeats one the agent already paid for in a look-ahead from this very state
        (charged with :meth:`charge_lookahead`; it has the result cached): it is executed without being charged
        or counted again, whatever the budget left. Only that one step."""
        self._prepaid = True

    @property
    def lookahead_tool_calls(self) -> int:
        """Tool calls charged this episode by :meth:`charge_lookahead`."""
        return self._lookahead_calls

    def budget_left(self) -> dict[str, float | None]:
        """What is left now (look-ahead charges included): ``tool_budget``, ``tool_budget_left``,
        ``token_budget``, ``tokens_left`` (None when unlimited)."""
        return {"tool_budget": self.max_tool_calls, "tool_budget_left": self._tool_budget_left(),
                "token_budget": self.max_tokens, "tokens_left": self._tokens_left()}

    def tool_cost(self, action: Any) -> float | None:
        """The cost of ``action`` if it is a tool call, else ``None``."""
        text = normalize_action(action)
        if text is None:
            return None
        if callable(self.tool_costs):
            cost = self.tool_costs(text)
            return None if cost is None else float(cost)
        match = _TOOL_CALL.match(text)
        if match is None or match.group(1) not in self.tool_costs:
            return None
        return float(self.tool_costs[match.group(1)])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._reset_counters()
        observation, info = self.env.reset(seed=seed, options=options)
        self._last_observation, self._last_info = observation, dict(info)
        return self._decorate(observation, dict(info))

    def step(self, action: Any):
        action = self._take_reported_tokens(action)
        step_cost = self._pending_tokens * self.token_price
        self._tokens_used += self._pending_tokens
        self._pending_tokens = 0
        self._refused_now = False
        prepaid, self._prepaid = self._prepaid, False

        cost = self.tool_cost(action)
        if cost is not None and prepaid:
            cost = None  # paid in a look-ahead already
        if cost is not None and not self._can_pay(cost):
            self._refused_now = True
            self._tool_calls_refused += 1
            if self.on_exhausted == "truncate":
                observation = f"{self._refusal_reason()} The episode is truncated."
                info = dict(self._last_info, action_valid=False)
                return self._finish(observation, 0.0, False, True, info, step_cost)
            _, env_reward, terminated, truncated, info = self.env.step(_PASS_ACTION)
            observation = f"{self._refusal_reason()} Actions that are not tool calls, such as a final answer, still work."
            return self._finish(observation, env_reward, terminated, truncated, dict(info), step_cost)

        if cost is not None:
            self._tool_calls_used += 1
            self._tool_cost += cost
            step_cost += cost
        observation, env_reward, terminated, truncated, info = self.env.step(action)
        return self._finish(observation, env_reward, terminated, truncated, dict(info), step_cost)

    # ------------------------------------------------------------------------------------------ internals
    def _reset_counters(self) -> None:
        self._tool_calls_used = 0
        self._tool_calls_refused = 0
        self._tool_cost = 0.0
        self._tokens_used = 0
        self._pending_tokens = 0
        self._refused_now = False
        self._prepaid = False
        self._lookahead_calls = 0
        self._lookahead_cost = 0.0
        self._last_observation: Any = None
        self._last_info: dict[str, Any] = {}

    def _take_reported_tokens(self, action: Any) -> Any:
        """Accept the ``(action, {"tokens": n})`` convention."""
        if isinstance(action, tuple) and len(action) == 2 and isinstance(action[1], Mapping):
            self.report_tokens(action[1].get("tokens", 0))
            return action[0]
        return action

    def _tool_budget_left(self) -> float | None:
        return None if self.max_tool_calls is None else max(0.0, self.max_tool_calls - self._tool_cost)

    def _tokens_left(self) -> int | None:
        return None if self.max_tokens is None else max(0, self.max_tokens - self._tokens_used)

    def _tokens_exceeded(self) -> bool:
        return self.max_tokens is not None and self._tokens_used > self.max_tokens

    def _can_pay(self, cost: float) -> bool:
        if self._tokens_exceeded():
            return False
        left = self._tool_budget_left()
        return left is None or cost <= left + 1e-9

    def _exhausted(self) -> bool:
        left = self._tool_budget_left()
        return self._tokens_exceeded() or (left is not None and left <= 1e-9)

    def _refusal_reason(self) -> str:
        if self._tokens_exceeded():
            return f"Tool call refused: the token budget is spent ({self._tokens_used} of {self.max_tokens} used)."
        return (
            f"Tool call refused: the tool budget is spent ({_fmt(self._tool_cost)} of "
            f"{_fmt(self.max_tool_calls)} used)."
        )

    def _tracker(self) -> str:
        parts = []
        if self.max_tool_calls is not None:
            parts.append(f"tool calls left: {_fmt(self._tool_budget_left())}/{_fmt(self.max_tool_calls)}")
        else:
            parts.append(f"tool calls used: {_fmt(self._tool_cost)}")
        if self.max_tokens is not None:
            parts.append(f"tokens left: {self._tokens_left()}/{self.max_tokens}")
        return "[budget] " + " | ".join(parts)

    def _finish(self, observation, env_reward, terminated, truncated, info, step_cost):
        done = bool(terminated or truncated)
        won = bool(info.get("won", False))
        reward = self._reward(float(env_reward), step_cost, done, won, info)
        self._last_observation, self._last_info = observation, dict(info)
        observation, info = self._decorate(observation, info)
        if done:
            info["success"] = won
            info["tool_productivity"] = (
                float(won) / self._tool_calls_used if self._tool_calls_used else None
            )
        return observation, reward, bool(terminated), bool(truncated), info

    def _reward(self, env_reward: float, step_cost: float, done: bool, won: bool, info: dict) -> float:
        if self.reward_mode == "env":
            return env_reward
        correctness = float(won) if done else 0.0
        if done:
            info["reward_correctness"] = correctness
        if self.reward_mode == "correctness":
            return correctness
        if self.reward_mode == "otc":
            if not done:
                return 0.0
            optimal = info.get("minimal_tool_calls", self.otc_optimal_calls)
            tool_reward = otc_tool_reward(self._tool_calls_used, optimal, self.otc_smoothing)
            info["reward_tool"] = tool_reward
            return self.otc_alpha * tool_reward * correctness
        return correctness - self.cost_coef * step_cost

    def _decorate(self, observation: Any, info: dict[str, Any]):
        info.update(
            tool_calls_used=self._tool_calls_used,
            tool_calls_refused=self._tool_calls_refused,
            tool_cost=self._tool_cost,
            tool_budget=self.max_tool_calls,
            tool_budget_left=self._tool_budget_left(),
            tokens_used=self._tokens_used,
            token_budget=self.max_tokens,
            tokens_left=self._tokens_left(),
            cost=self._tokens_used * self.token_price + self._tool_cost,
            budget_exhausted=self._exhausted(),
            tool_call_refused=self._refused_now,
            lookahead_tool_calls=self._lookahead_calls,
            lookahead_tool_cost=self._lookahead_cost,
        )
        if self.budget_in_state_key and self.max_tool_calls is not None and "state_key" in info:
            info["state_key"] = f"{info['state_key']}|tool_budget_left:{_fmt(self._tool_budget_left())}"
        if self.show_tracker and isinstance(observation, str):
            observation = f"{observation}\n{self._tracker()}"
        return observation, info

    @staticmethod
    def _resolve_tool_costs(env: gym.Env, tool_costs: ToolCosts | None) -> ToolCosts:
        if tool_costs is not None:
            if not callable(tool_costs):
                bad = {k: v for k, v in tool_costs.items() if not isinstance(v, int | float) or v < 0}
                if bad:
                    raise ValueError(f"tool costs must be non-negative numbers, got {bad}")
                return {str(k).lower(): float(v) for k, v in tool_costs.items()}
            return tool_costs
        declared = getattr(env.unwrapped, "default_tool_costs", None)
        if declared:
            return dict(declared)
        env_id = (env.spec.id if env.spec is not None else type(env.unwrapped).__name__).lower()
        for key, costs in DEFAULT_TOOL_COSTS_BY_ENV.items():
            if key in env_id:
                return dict(costs)
        raise ValueError(
            f"ToolBudget cannot tell which actions of {env_id!r} are tool calls; pass tool_costs, e.g. "
            "tool_costs={'search': 1.0}, or a function action -> cost (None for actions that are not tool calls)"
        )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
