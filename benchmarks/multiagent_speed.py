"""Speed of the multi-agent games: PettingZoo AEC and Parallel steps/s, Gymnasium views, resets, experts.

For every game (``--games``) it plays ``--episodes`` games with uniformly random *legal* actions and prints:

- ``aec steps/s``: ``env.step`` calls per second of the AEC env (agent_iter loop; dead steps not counted);
- ``parallel steps/s``: ``step`` calls per second of the Parallel env;
- ``view steps/s``: agent steps per second of the Gymnasium view against its default opponent (the
  opponent's moves run inside each step);
- ``reset ms``: median AEC ``reset(seed=...)`` time (task generation included);
- ``expert ms``: median ``expert_plan()`` time of the Gymnasium view from reset (simulation on deep copies).

Baseline: PettingZoo's own ``classic.tictactoe_v3`` (integer actions with an action mask) is timed in the same
process with the same random-legal loop when it imports (it needs ``pygame``: ``pip install --target
/tmp/pz-classic pygame`` and ``PYTHONPATH=/tmp/pz-classic``); the table gives hiergym's speed relative to it.

    python -m hiergym.benchmarks.multiagent_speed --episodes 300
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np

import hiergym  # noqa: F401  (registers the Gymnasium views)
from hiergym.envs.multiagent import GAMES

VIEW_IDS = {
    "tictactoe_v0": "hiergym/TicTacToe-v0",
    "kuhn_poker_v0": "hiergym/KuhnPoker-v0",
    "negotiation_v0": "hiergym/Negotiation-v0",
    "household_coop_v0": "hiergym/HouseholdCoop-v0",
}


def aec_steps_per_s(make_env: Callable[[], object], episodes: int, legal: Callable) -> float:
    env = make_env()
    rng = np.random.default_rng(0)
    steps, elapsed = 0, 0.0
    for episode in range(episodes):
        env.reset(seed=episode)
        start = time.perf_counter()
        for _agent in env.agent_iter():
            obs, reward, terminated, truncated, info = env.last()
            if terminated or truncated:
                env.step(None)
                continue
            env.step(legal(obs, info, rng))
            steps += 1
        elapsed += time.perf_counter() - start
    return steps / elapsed


def _text_legal(obs, info, rng) -> str:
    actions = info["admissible_actions"]
    return actions[int(rng.integers(len(actions)))]


def _masked_legal(obs, info, rng) -> int:
    legal = np.flatnonzero(obs["action_mask"])
    return int(legal[int(rng.integers(len(legal)))])


def parallel_steps_per_s(module, episodes: int) -> float:
    env = module.parallel_env()
    rng = np.random.default_rng(0)
    steps, elapsed = 0, 0.0
    for episode in range(episodes):
        obs, infos = env.reset(seed=episode)
        start = time.perf_counter()
        while env.agents:
            actions = {a: (_text_legal(None, infos[a], rng) if infos[a]["to_move"] else "") for a in env.agents}
            obs, rewards, terms, truncs, infos = env.step(actions)
            steps += 1
        elapsed += time.perf_counter() - start
    return steps / elapsed


def view_steps_per_s(env_id: str, episodes: int) -> float:
    env = gym.make(env_id)
    rng = np.random.default_rng(0)
    steps, elapsed = 0, 0.0
    for episode in range(episodes):
        obs, info = env.reset(seed=episode)
        done = False
        start = time.perf_counter()
        while not done:
            obs, reward, terminated, truncated, info = env.step(_text_legal(obs, info, rng))
            done = terminated or truncated
            steps += 1
        elapsed += time.perf_counter() - start
    return steps / elapsed


def median_ms(function: Callable[[int], object], runs: int) -> float:
    times = []
    for i in range(runs):
        start = time.perf_counter()
        function(i)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="+", default=list(GAMES), choices=GAMES)
    parser.add_argument("--episodes", type=int, default=200, help="games per measurement (default 200)")
    parser.add_argument("--expert-runs", type=int, default=20, help="expert_plan calls timed (default 20)")
    args = parser.parse_args(argv)

    header = f"{'game':<20}{'aec steps/s':>13}{'parallel steps/s':>18}{'view steps/s':>14}{'reset ms':>10}{'expert ms':>11}"
    print(header)
    print("-" * len(header))
    aec_rates = {}
    for game in args.games:
        module = importlib.import_module(f"hiergym.envs.multiagent.{game}")
        aec = aec_steps_per_s(module.env, args.episodes, _text_legal)
        aec_rates[game] = aec
        par = parallel_steps_per_s(module, args.episodes)
        view = view_steps_per_s(VIEW_IDS[game], args.episodes)
        raw = module.raw_env()
        reset = median_ms(lambda i, raw=raw: raw.reset(seed=i), 200)
        view_env = gym.make(VIEW_IDS[game]).unwrapped

        def expert(i: int, view_env=view_env) -> None:
            view_env.reset(seed=i)
            view_env.expert_plan()

        expert_ms = median_ms(expert, args.expert_runs)
        print(f"{game:<20}{aec:>13,.0f}{par:>18,.0f}{view:>14,.0f}{reset:>10.3f}{expert_ms:>11.2f}")

    if "tictactoe_v0" in args.games:
        try:
            from pettingzoo.classic import tictactoe_v3
        except ImportError as exc:
            print(f"\nbaseline pettingzoo.classic.tictactoe_v3 skipped: {exc} (see the module docstring)")
        else:
            base = aec_steps_per_s(tictactoe_v3.env, args.episodes, _masked_legal)
            ours = aec_rates["tictactoe_v0"]
            print(f"\nbaseline pettingzoo.classic.tictactoe_v3 (integer actions, same loop): {base:,.0f} aec steps/s; "
                  f"hiergym tictactoe_v0 (text) runs at {ours / base:.2f}x its speed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
