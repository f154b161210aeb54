"""Env steps per second of a B x G group vector env per backend and per env, against a plain loop.

For every registered environment that imports (or those picked with ``--envs``) this plays ``--rounds``
batches of ``--num-tasks`` x ``--group-size`` copies (16 x 8 by default) for up to ``--steps`` lock-step steps
with random admissible actions, and times, in the same process and on the same task seeds:

- ``loop``: a plain Python loop over B*G single ``gymnasium.make`` envs (the baseline);
- ``sync``: :func:`hiergym.make_group_vec` with the in-process backend;
- ``process``: the worker-process backend (``--workers``, default 2);
- ``ray``: the Ray-actor backend (``--workers`` actors of ``--ray-cpus`` CPUs each, on a local Ray instance or
  the cluster of ``--ray-address`` / ``RAY_ADDRESS``; needs ``pip install 'hiergym[ray]'``).

An env pattern may carry env arguments after a colon, ``alfworld:engine=alfworld`` (the real ALFWorld
engine, TextWorld's PDDL planner, instead of the native one), so one run compares a cheap env and an
expensive one.

Resets are part of the timed work (a batch is reset and played, as a trainer does), after one untimed reset
of every task (warming caches such as TextWorld's compiled games); the runners take turns batch by batch so
that a shared machine's changing load weighs on all alike; the figure is env steps (actions executed) per
second of wall time. ``--overlap-gen-ms`` adds a line per env: the process backend stepping
each generation chunk (``step_async``) while a simulated generation (a sleep, like waiting for a GPU) runs
for the next chunks, against generating for all and then stepping all (steps only, resets untimed).

    python -m hiergym.benchmarks.vector_throughput                     # every env, 16x8, both backends
    python -m hiergym.benchmarks.vector_throughput --envs sokoban --rounds 5 --overlap-gen-ms 100
    python -m hiergym.benchmarks.vector_throughput --envs sokoban alfworld:engine=alfworld \
        --backends sync process ray --num-tasks 4 --group-size 4 --rounds 2 --steps 10
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from functools import partial

import gymnasium as gym
import numpy as np

import hiergym
from hiergym.envs.vector import GroupVecEnv, group_task_seed, make_group_vec

#: An action for envs that enumerate none (the env answers it as an invalid action: still a step).
FALLBACK_ACTION = "look"


class CostlyStep(gym.Wrapper):
    """Synthetic cost per step, standing in for an expensive engine: ``cpu`` burns ``ms`` of CPU (a game
    engine in Python), ``sleep`` waits ``ms`` (an engine in another process, a web server, a tool API)."""

    def __init__(self, env: gym.Env, ms: float, kind: str = "cpu") -> None:
        super().__init__(env)
        self.seconds, self.kind = ms / 1000, kind

    def step(self, action):
        if self.kind == "sleep":
            time.sleep(self.seconds)
        else:
            end = time.perf_counter() + self.seconds
            while time.perf_counter() < end:
                pass
        return self.env.step(action)


def make_env(env_id: str, step_cost_ms: float = 0.0, step_cost_kind: str = "cpu",
             env_kwargs: dict | None = None) -> gym.Env:
    env = gym.make(env_id, **(env_kwargs or {}))
    return CostlyStep(env, step_cost_ms, step_cost_kind) if step_cost_ms > 0 else env


def pick_action(info: dict, rng: np.random.Generator) -> str:
    actions = info.get("admissible_actions") or [FALLBACK_ACTION]
    return actions[int(rng.integers(len(actions)))]


def loop_round(envs: list[gym.Env], seeds: list[int], steps: int, split: str,
               rng: np.random.Generator) -> tuple[int, float]:
    """One batch on a plain loop over single envs: each reset with its group's seed, stepped one by one."""
    done_steps = 0
    start = time.perf_counter()
    infos = [env.reset(seed=s, options={"split": split})[1] for env, s in zip(envs, seeds, strict=True)]
    running = [True] * len(envs)
    for _ in range(steps):
        if not any(running):
            break
        for i, env in enumerate(envs):
            if running[i]:
                _, _, terminated, truncated, infos[i] = env.step(pick_action(infos[i], rng))
                done_steps += 1
                running[i] = not (terminated or truncated)
    return done_steps, time.perf_counter() - start


def group_vec_round(env: GroupVecEnv, steps: int, rng: np.random.Generator) -> tuple[int, float]:
    """One batch on the group vector env: ``reset()`` draws the next batch of tasks, then lock-step steps."""
    done_steps = 0
    start = time.perf_counter()
    env.reset()
    for _ in range(steps):
        if not env.running.any():
            break
        actions = [pick_action(info, rng) if running else None
                   for info, running in zip(env.infos, env.running, strict=True)]
        done_steps += int(env.step(actions).active.sum())
    return done_steps, time.perf_counter() - start


def measure(env_id: str, vec: dict[str, GroupVecEnv], task_seeds: list[list[int]], args: argparse.Namespace,
            env_kwargs: dict | None = None) -> dict[str, tuple[int, float]]:
    """Env steps and seconds per runner; the runners take turns batch by batch, so that the load of a shared
    machine drifting during the run weighs on all of them alike. Each runner draws its actions from its own
    generator with the same seed, so all play the same actions on the same tasks."""
    loop_envs = [make_env(env_id, args.step_cost_ms, args.step_cost_kind, env_kwargs) for _ in task_seeds[0]]
    rngs = {runner: np.random.default_rng(args.seed) for runner in ["loop", *vec]}
    totals = {runner: (0, 0.0) for runner in rngs}
    for seeds in task_seeds:
        for runner, rng in rngs.items():
            if runner == "loop":
                steps, seconds = loop_round(loop_envs, seeds, args.steps, args.split, rng)
            else:
                steps, seconds = group_vec_round(vec[runner], args.steps, rng)
            totals[runner] = (totals[runner][0] + steps, totals[runner][1] + seconds)
    for env in loop_envs:
        env.close()
    return totals


def run_overlap(env: GroupVecEnv, rounds: int, steps: int, gen_s: float, chunks: int,
                action_seed: int) -> tuple[float, float]:
    """Wall seconds per lock-step step: generate-all-then-step-all vs chunks pipelined with step_async.

    The batch is generated in ``chunks`` micro-batches costing ``gen_s / chunks`` each, simulated by a sleep
    (the GPU works, this process waits, the env workers are free). Pipelined, each chunk is submitted as soon
    as it is generated, so its env steps run while the next chunks are generated; only the last chunk's env
    time is left exposed.
    """
    rng = np.random.default_rng(action_seed)
    n = env.num_envs
    parts = np.array_split(np.arange(n), chunks)

    def generate(indices: np.ndarray) -> list[str]:
        time.sleep(gen_s / chunks)
        return [pick_action(env.infos[i], rng) for i in indices]

    timings = {}
    for schedule in ("lock-step", "overlapped"):
        total_steps, seconds = 0, 0.0
        for _ in range(rounds):
            env.reset()  # resets are not timed here: only steps can overlap with generation
            start = time.perf_counter()
            for _ in range(steps):
                if not env.running.any():
                    break
                if schedule == "lock-step":
                    actions = [None] * n
                    for part in parts:
                        live = part[env.running[part]]
                        for i, a in zip(live, generate(live), strict=True):
                            actions[i] = a
                    env.step(actions)
                else:
                    for part in parts:
                        live = part[env.running[part]]
                        env.step_async(generate(live), indices=live)
                    env.step_wait()
                total_steps += 1
            seconds += time.perf_counter() - start
        timings[schedule] = seconds / max(total_steps, 1)
    return timings["lock-step"], timings["overlapped"]


def parse_pattern(pattern: str) -> tuple[str, dict]:
    """``"alfworld:engine=alfworld,max_steps=30"`` -> ("alfworld", {"engine": "alfworld", "max_steps": 30})."""
    import yaml

    name, _, rest = pattern.partition(":")
    kwargs = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"env argument {item!r} of {pattern!r} is not key=value")
        kwargs[key.strip()] = yaml.safe_load(value)
    return name, kwargs


def selected_envs(patterns: Sequence[str] | None) -> list[tuple[str, dict]]:
    """(env id, env arguments) of every registered env that a pattern names (default: every env)."""
    ids = hiergym.env_ids()
    if not patterns:
        return [(i, {}) for i in ids]
    chosen = []
    for pattern in patterns:
        name, kwargs = parse_pattern(pattern)
        chosen += [(i, kwargs) for i in ids if name.lower() in i.lower()]
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="*", help="substrings of env ids to run (default: every registered env)")
    parser.add_argument("--num-tasks", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="lock-step steps per batch at most")
    parser.add_argument("--rounds", type=int, default=3, help="batches per measurement")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the process backend")
    parser.add_argument("--backends", nargs="*", default=["sync", "process"], choices=["sync", "process", "ray"])
    parser.add_argument("--ray-address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else local)")
    parser.add_argument("--ray-cpus", type=float, default=1.0, help="CPUs Ray reserves per actor")
    parser.add_argument("--split", default="train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-cost-ms", type=float, default=0.0,
                        help="synthetic extra cost per env step (stands in for an expensive engine)")
    parser.add_argument("--step-cost-kind", choices=["cpu", "sleep"], default="cpu",
                        help="the synthetic cost burns CPU or waits (I/O-bound engines)")
    parser.add_argument("--overlap-gen-ms", type=float, default=0.0,
                        help="also time async overlap with this simulated generation time per batch step")
    parser.add_argument("--overlap-chunks", type=int, default=4, help="generation micro-batches per step")
    args = parser.parse_args(argv)

    env_ids = selected_envs(args.envs)
    if "ray" in args.backends:
        from hiergym.envs.vector.ray_backend import ensure_ray

        ray = ensure_ray(args.ray_address)
        resources = ray.cluster_resources()
        ray_note = (f", ray backend with {args.workers} actors of {args.ray_cpus:g} CPU on "
                    f"{len(ray.nodes())} node(s) ({resources.get('CPU', 0):g} CPUs)")
    else:
        ray_note = ""
    if not env_ids:
        parser.error(f"no registered env matches {args.envs}; registered: {', '.join(hiergym.env_ids())}")
    n = args.num_tasks * args.group_size
    print(f"{args.num_tasks}x{args.group_size} = {n} copies, up to {args.steps} steps x {args.rounds} batches, "
          f"random admissible actions, process backend with {args.workers} workers{ray_note}"
          + (f", +{args.step_cost_ms:g} ms synthetic {args.step_cost_kind} per step" if args.step_cost_ms > 0
             else "") + "\n")
    print(f"{'env':<36} {'runner':<10} {'env steps':>9} {'steps/s':>10} {'vs loop':>8}")
    for env_id, env_kwargs in env_ids:
        label = env_id + (":" + ",".join(f"{k}={v}" for k, v in env_kwargs.items()) if env_kwargs else "")
        # Every task of the timed batches is reset once, untimed, before any runner, so that one-time costs
        # (TextWorld compiles each game into a disk cache) are not charged to whichever runner comes first.
        task_seeds = [[group_task_seed(args.seed, r, i // args.group_size) for i in range(n)]
                      for r in range(args.rounds)]
        try:
            warm = make_env(env_id, env_kwargs=env_kwargs)
            for seed in sorted({s for seeds in task_seeds for s in seeds}):
                warm.reset(seed=seed, options={"split": args.split})
            warm.close()
            factory = partial(make_env, env_id, args.step_cost_ms, args.step_cost_kind, env_kwargs)
            vec = {b: make_group_vec(factory, args.num_tasks, args.group_size, seed=args.seed, split=args.split,
                                     backend=b, num_workers=args.workers if b != "sync" else None,
                                     ray_options={"num_cpus": args.ray_cpus} if b == "ray" else None)
                   for b in args.backends}
        except Exception as exc:  # an env whose dependencies are missing is skipped, not fatal
            print(f"{label:<36} skipped: {type(exc).__name__}: {exc}")
            continue
        # The loop plays exactly the tasks the group env draws: batch r, slot g -> group_task_seed(seed, r, g).
        totals = measure(env_id, vec, task_seeds, args, env_kwargs)
        loop_rate = totals["loop"][0] / totals["loop"][1]
        for k, (runner, (steps, seconds)) in enumerate(totals.items()):
            print(f"{label if k == 0 else '':<36} {runner:<10} {steps:>9} {steps / seconds:>10.0f} "
                  f"{steps / seconds / loop_rate:>7.2f}x")
        if args.overlap_gen_ms > 0 and "process" in vec:
            lock, overlapped = run_overlap(vec["process"], args.rounds, args.steps, args.overlap_gen_ms / 1000,
                                           args.overlap_chunks, args.seed)
            print(f"{'':<36} overlap: {args.overlap_gen_ms:g} ms simulated generation per step in "
                  f"{args.overlap_chunks} chunks: "
                  f"lock-step {lock * 1000:.1f} ms/step, overlapped {overlapped * 1000:.1f} ms/step "
                  f"({lock / overlapped:.2f}x)")
        for env in vec.values():
            env.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
