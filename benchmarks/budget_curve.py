"""Success versus tool-call budget on ToolQA, for the expert and a random agent.

Each agent plays the same fixed evaluation set (``eval_in`` task ids 0..N-1) of ``hiergym/ToolQA-v0`` under
:class:`hiergym.envs.wrappers.ToolBudget` with budgets of 1, 2, 4, 8 and 16 tool calls, and the script prints
success, average tool calls, tool productivity (successes per tool call, OTC's metric), cost per success
(unified cost: tool costs plus reported tokens times ``--token-price``) and the mean OTC reward. With
matplotlib installed it also writes the success-versus-budget curve as a PNG.

- ``expert``: reads the pages the env's ``expert_plan()`` names (the minimal calls) and answers once it has
  seen every needed fact. It is budget-aware: when the tracker says no call is left before it has what it
  needs, it answers ``unknown`` at once rather than spend steps on refused calls. It never answers from
  facts it has not seen, so its curve shows what a budget allows: success is the share of questions needing
  at most that many pages.
- ``searcher``: the expert's reading, but it searches for each page's title before looking the page up:
  twice the calls for the same answers, so it needs twice the budget, and OTC scores it 0.87, not 1.
- ``random``: each step, with probability 0.2 answers a random candidate (a number or an entity name it has
  seen), otherwise makes a random admissible lookup or searches random question words.

Agents report a made-up token count per action (``--tokens-per-action``) so that the cost column exercises
the token accounting.

``--search`` adds test-time search (``agents/bavt.py``): the plain agent and the BAVT agent with the same
backend, played by the harness's episode driver (``play_evaluation``) under ``ToolBudget``, on ToolQA
(budgets 1..16 tool calls) and on the ALFWorld-like env (every command a tool call of cost 1; budgets 4..64).
The backend is the env's expert taking a random admissible action with probability ``--epsilon`` (an
imperfect, stochastic proposer; ``--search-backend`` takes any agent SPEC). BAVT's simulated tool calls count
against the same budget, so ``calls`` is all the test-time tool calls (``look`` the share made in look-ahead).

    python -m hiergym.benchmarks.budget_curve                       # 200 tasks, budgets 1..16
    python -m hiergym.benchmarks.budget_curve --episodes 50 --hops 3 --png budget_curve.png
    python -m hiergym.benchmarks.budget_curve --search --episodes 100 --epsilon 0.5
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

import hiergym  # noqa: F401  (registers the envs)
from hiergym.envs.wrappers import ToolBudget

BUDGETS = (1, 2, 4, 8, 16)
_NUMBER = re.compile(r"\d[\d,]*")
_WORD = re.compile(r"[A-Za-z]{4,}")

#: An agent maps (env, observation, info, rng, episode memory) to an action; memory["seen"] lists observations.
Agent = Callable[[gym.Env, str, dict, np.random.Generator, dict], str]


def expert_agent(env: gym.Env, observation: str, info: dict, rng: np.random.Generator, memory: dict) -> str:
    plan = env.unwrapped.expert_plan()
    if len(plan) == 1:  # every needed fact seen: the answer is known
        return plan[0]
    left = info["tool_budget_left"]
    if left is not None and left < 1:
        return "answer[unknown]"
    return plan[0]


def searcher_agent(env: gym.Env, observation: str, info: dict, rng: np.random.Generator, memory: dict) -> str:
    action = expert_agent(env, observation, info, rng, memory)
    if not action.startswith("lookup[") or memory.get("searched") == action:
        return action
    memory["searched"] = action
    return f"search[{action[len('lookup['):-1]}]"


def random_agent(env: gym.Env, observation: str, info: dict, rng: np.random.Generator, memory: dict) -> str:
    if rng.random() < 0.2:
        text = " ".join(memory["seen"])
        candidates = _NUMBER.findall(text) + [a[len("lookup["):-1] for a in info["admissible_actions"] or []]
        return f"answer[{candidates[int(rng.integers(len(candidates)))]}]" if candidates else "answer[unknown]"
    lookups = info["admissible_actions"] or []
    if lookups and rng.random() < 0.7:
        return lookups[int(rng.integers(len(lookups)))]
    words = _WORD.findall(info["task"]) or ["founded"]
    chosen = rng.choice(words, size=min(2, len(words)), replace=False)
    return f"search[{' '.join(chosen)}]"


AGENTS: dict[str, Agent] = {"expert": expert_agent, "searcher": searcher_agent, "random": random_agent}


@dataclass
class Row:
    agent: str
    budget: int
    success: float
    tool_calls: float
    productivity: float
    cost_per_success: float
    otc_reward: float
    ms_per_episode: float


def play(agent_name: str, budget: int, episodes: int, hops: Sequence[int], tokens_per_action: int,
         token_price: float, seed: int) -> Row:
    env = ToolBudget(gym.make("hiergym/ToolQA-v0", hops=tuple(hops)), max_tool_calls=budget,
                     token_price=token_price, reward_mode="otc")
    agent, rng = AGENTS[agent_name], np.random.default_rng(seed)
    successes = calls = 0
    cost = otc = 0.0
    start = time.perf_counter()
    for task_id in range(episodes):
        observation, info = env.reset(options={"split": "eval_in", "task_id": task_id})
        memory: dict = {"seen": [observation]}
        done, reward = False, 0.0
        while not done:
            action = agent(env, observation, info, rng, memory)
            observation, reward, terminated, truncated, info = env.step((action, {"tokens": tokens_per_action}))
            memory["seen"].append(observation)
            done = terminated or truncated
        successes += int(info["success"])
        calls += info["tool_calls_used"]
        cost += info["cost"]
        otc += reward
    elapsed = time.perf_counter() - start
    return Row(
        agent_name, budget, successes / episodes, calls / episodes,
        successes / calls if calls else float("nan"),
        cost / successes if successes else float("nan"), otc / episodes, 1000 * elapsed / episodes,
    )


def print_table(rows: list[Row]) -> None:
    print(f"{'agent':<8} {'budget':>6} {'success':>8} {'calls':>6} {'productivity':>12} {'cost/success':>12} "
          f"{'otc reward':>10} {'ms/episode':>10}")
    for r in rows:
        print(f"{r.agent:<8} {r.budget:>6} {r.success:>8.3f} {r.tool_calls:>6.2f} {r.productivity:>12.3f} "
              f"{r.cost_per_success:>12.2f} {r.otc_reward:>10.3f} {r.ms_per_episode:>10.2f}")


def save_png(rows: list[Row], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for agent in AGENTS:
        mine = [r for r in rows if r.agent == agent]
        ax.plot([r.budget for r in mine], [r.success for r in mine], marker="o", label=agent)
    ax.set_xscale("log", base=2)
    ax.set_xticks(BUDGETS, [str(b) for b in BUDGETS])
    ax.set_xlabel("tool-call budget")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.05)
    ax.set_title("ToolQA-v0: success vs budget")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------ test-time search
SEARCH_ENVS: dict[str, dict] = {
    "toolqa": {"env_id": "hiergym/ToolQA-v0", "budgets": (1, 2, 4, 8, 16), "max_steps": 20, "tool_costs": None},
    "alfworld": {"env_id": "hiergym/ALFWorld-v0", "budgets": (4, 8, 16, 32, 64), "max_steps": 50,
                 "tool_costs": "every command"},
}


@dataclass
class SearchRow:
    env: str
    agent: str
    budget: int
    success: float
    tool_calls: float
    lookahead_calls: float
    steps: float
    ms_per_episode: float


def _every_command(action: str) -> float:
    return 1.0


def search_play(env: str, spec: str, budget: int, episodes: int, agent_args: dict, seed: int = 0,
                tracker: bool = True) -> SearchRow:
    """One agent SPEC on ``episodes`` eval_in tasks of ``env`` under ``ToolBudget(max_tool_calls=budget)``,
    through the harness's driver (``play_evaluation``); ``tracker``: the budget line in the observations."""
    from hiergym.agents.spec import make_agent
    from hiergym.driver import play_evaluation

    settings = SEARCH_ENVS[env]
    costs = _every_command if settings["tool_costs"] else None
    envs = [ToolBudget(gym.make(settings["env_id"]), max_tool_calls=budget, tool_costs=costs, show_tracker=tracker)
            for _ in range(episodes)]
    agent = make_agent(spec, env_id=settings["env_id"], agent_args=dict(agent_args), seed=seed)
    start = time.perf_counter()
    results = play_evaluation(envs, agent, range(episodes), seed=seed, split="eval_in",
                              max_steps=settings["max_steps"])
    elapsed = time.perf_counter() - start
    lookahead = [float(e.lookahead_tool_calls) for e in envs]
    for e in envs:
        e.close()
    return SearchRow(env, spec, budget, float(np.mean([r.success for r in results])),
                     float(np.mean([r.tool_calls or 0.0 for r in results])), float(np.mean(lookahead)),
                     float(np.mean([r.steps for r in results])), 1000 * elapsed / episodes)


def search_rows(envs: Sequence[str], backend: str, epsilon: float, episodes: int, seed: int,
                tracker: bool = True) -> list[SearchRow]:
    args = {"epsilon": epsilon} if backend == "expert" else {}
    rows = []
    for env in envs:
        for budget in SEARCH_ENVS[env]["budgets"]:
            for spec in (backend, f"bavt:{backend}"):
                rows.append(search_play(env, spec, budget, episodes, args, seed, tracker))
                print(f"{env} {spec} budget {budget}: success {rows[-1].success:.3f}", file=sys.stderr, flush=True)
    return rows


def print_search_table(rows: list[SearchRow]) -> None:
    width = max([12, *(len(r.agent) for r in rows)])
    print(f"{'env':<9} {'agent':<{width}} {'budget':>6} {'success':>8} {'calls':>6} {'look':>6} {'steps':>6} "
          f"{'ms/episode':>10}")
    for r in rows:
        print(f"{r.env:<9} {r.agent:<{width}} {r.budget:>6} {r.success:>8.3f} {r.tool_calls:>6.2f} "
              f"{r.lookahead_calls:>6.2f} {r.steps:>6.1f} {r.ms_per_episode:>10.1f}")


def save_search_png(rows: list[SearchRow], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    envs = list(dict.fromkeys(r.env for r in rows))
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.5), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        for agent in dict.fromkeys(r.agent for r in rows):
            mine = [r for r in rows if r.env == env and r.agent == agent]
            ax.plot([r.budget for r in mine], [r.success for r in mine], marker="o", label=agent)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("tool-call budget (look-ahead included)")
        ax.set_ylabel("success rate")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{env}: plain vs BAVT")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=200, help="eval_in tasks per agent and budget")
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    parser.add_argument("--hops", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--tokens-per-action", type=int, default=50)
    parser.add_argument("--token-price", type=float, default=0.001, help="cost of one token, in tool-call units")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random agent")
    parser.add_argument("--png", default="budget_curve.png", help="where to write the curve (needs matplotlib)")
    parser.add_argument("--search", action="store_true",
                        help="plain vs BAVT agent with the same backend, on ToolQA and ALFWorld (instead)")
    parser.add_argument("--search-envs", nargs="+", default=list(SEARCH_ENVS), choices=list(SEARCH_ENVS))
    parser.add_argument("--search-backend", default="expert", help="agent SPEC both play (default: noisy expert)")
    parser.add_argument("--epsilon", type=float, default=0.5, help="the expert backend's random-action rate")
    parser.add_argument("--no-tracker", action="store_true",
                        help="leave the budget line out of the observations (for a backend trained without it: "
                             "BAVT's proposals never see it, so the plain agent then reads the same prompts)")
    args = parser.parse_args(argv)
    if args.search:
        rows = search_rows(args.search_envs, args.search_backend, args.epsilon, args.episodes, args.seed,
                           tracker=not args.no_tracker)
        print(f"eval_in tasks 0..{args.episodes - 1}; backend {args.search_backend}"
              + (f" (epsilon {args.epsilon:g})" if args.search_backend == "expert" else ""))
        print_search_table(rows)
        png = args.png if args.png != "budget_curve.png" else "budget_search.png"
        if save_search_png(rows, png):
            print(f"curve written to {png}")
        return 0
    rows = [
        play(agent, budget, args.episodes, args.hops, args.tokens_per_action, args.token_price, args.seed)
        for agent in AGENTS
        for budget in args.budgets
    ]
    print(f"hiergym/ToolQA-v0, eval_in tasks 0..{args.episodes - 1}, hops {args.hops}")
    print_table(rows)
    if save_png(rows, args.png):
        print(f"curve written to {args.png}")
    else:
        print("matplotlib is not installed: no PNG written (pip install matplotlib)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
