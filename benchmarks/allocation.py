"""Rollout allocation benchmark: uniform versus Knapsack RL's allocation for a fixed policy, same budget and seeds.

    python -m hiergym.benchmarks.allocation                         # Sokoban and ALFWorld
    python -m hiergym.benchmarks.allocation --envs sokoban --batches 40

Both allocations play the same task pool (task ids ``0 .. pool - 1`` of the train split, ``num_tasks`` distinct
ones sampled per batch, with replacement across batches: the same ids in the same order for both) with the
same budget of ``num_tasks x group_size`` rollouts per batch (``training/allocation.py``).

A fixed stochastic policy (the env's expert taking a random admissible action with probability ``--epsilon``:
tasks differ in how often it still succeeds) plays ``--batches`` batches; only the allocation learns. This
isolates the allocation's effect: the share of groups with both a success and a failure (a non-zero GRPO
advantage), the rollouts and env steps consumed. The same comparison while the policy learns is the learning
benchmark's allocation axis (``python -m hiergym.benchmarks.learning --allocations uniform knapsack
--task-pool N``: paired evaluation gains and success against the rollouts consumed).

Writes ``OUT/allocation.md`` and ``OUT/allocation.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ALLOCATIONS = ("uniform", "knapsack")
ENVS: dict[str, dict[str, Any]] = {
    "sokoban": {"env_id": "hiergym/Sokoban-v0", "env_kwargs": {"end_on_dead_end": True}, "max_steps": 20,
                "epsilon": 0.4},
    "alfworld": {"env_id": "hiergym/ALFWorld-v0", "env_kwargs": {}, "max_steps": 15, "epsilon": 0.6},
}


class VecNoisyExpert:
    """The env's expert through a group vector env (``vec.call("expert_plan")``), taking a uniformly random
    admissible action with probability ``epsilon``; one generator per copy, reseeded per batch."""

    batched = True

    def __init__(self, vec: Any, epsilon: float, seed: int):
        self.vec, self.epsilon, self.seed, self.batch = vec, float(epsilon), int(seed), 0

    def reset(self, tasks: list[str], infos: list[dict[str, Any]]) -> None:
        self.batch += 1
        self.rngs = [np.random.default_rng([self.seed, self.batch, k]) for k in range(len(tasks))]

    def act(self, observations: list[str], infos: list[dict[str, Any]]) -> list[str]:
        actions = []
        for info in infos:
            k = int(info["episode_index"])
            choices = info.get("admissible_actions") or []
            if choices and self.rngs[k].random() < self.epsilon:
                actions.append(str(choices[int(self.rngs[k].integers(len(choices)))]))
                continue
            plan = self.vec.call("expert_plan", indices=[k])[0] or [""]
            actions.append(plan[0])
        return actions


def policy_run(env: str, allocation: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from hiergym.envs.vector import make_group_vec
    from hiergym.training.allocation import RolloutAllocator, group_signal
    from hiergym.training.rollout import collect_rollouts

    settings = ENVS[env]
    vec = make_group_vec(settings["env_id"], num_tasks=args.num_tasks, group_size=args.group_size, seed=seed,
                         max_episode_steps=settings["max_steps"], **settings["env_kwargs"])
    allocator = RolloutAllocator(mode=allocation, task_pool=args.pool, num_tasks=args.num_tasks,
                                 group_size=args.group_size, seed=seed, **(args.allocator or {}))
    agent = VecNoisyExpert(vec, settings["epsilon"] if args.epsilon is None else args.epsilon, seed)
    state: dict[str, Any] = {}
    rows = []
    started = time.perf_counter()
    for batch in range(args.batches):
        plan = allocator.plan(state, batch)
        rollout = collect_rollouts(vec, agent, **plan.rollout_arguments())
        allocator.update(state, plan, rollout.episodes)
        rows.append({**group_signal(rollout.episodes), "success": rollout.success_rate, **plan.metrics()})
    vec.close()
    return {"rows": rows, "seconds": time.perf_counter() - started}


def summarize_policy(runs: list[dict[str, Any]], warmup: int) -> dict[str, float]:
    rows = [r for run in runs for r in run["rows"][warmup:]]
    return {"mixed": float(np.mean([r["mixed_success_groups"] for r in rows])),
            "mixed_rollouts": float(np.mean([r["mixed_success_rollouts"] for r in rows])),
            "nonzero_return": float(np.mean([r["nonzero_return_groups"] for r in rows])),
            "rollouts": float(np.mean([r["rollouts"] for r in rows])),
            "env_steps": float(np.mean([r["env_steps"] for r in rows])),
            "success": float(np.mean([r["success"] for r in rows])),
            "group_max": float(np.mean([r.get("group_size_max", 0) for r in rows])),
            "seconds": float(np.mean([run["seconds"] for run in runs]))}


def report(policy: dict[str, dict[str, dict[str, float]]], args: argparse.Namespace) -> str:
    lines = [f"# Rollout allocation: uniform vs knapsack ({args.num_tasks} tasks x {args.group_size} rollouts per "
             f"batch, pool of {args.pool} train task ids, seeds {', '.join(map(str, args.seeds))})", "",
             f"## Fixed noisy-expert policy, {args.batches} batches (first {args.warmup} left out of the means)",
             "", "| env | allocation | groups with a success and a failure | rollouts in such groups | "
             "groups with unequal returns | rollouts / batch | env steps / batch | success | largest group | "
             "s/run |", "|---|---|---|---|---|---|---|---|---|---|"]
    for env, by_allocation in policy.items():
        for allocation, row in by_allocation.items():
            lines.append(f"| {env} | {allocation} | {row['mixed']:.1%} | {row['mixed_rollouts']:.1%} | "
                         f"{row['nonzero_return']:.1%} | "
                         f"{row['rollouts']:.1f} | {row['env_steps']:.0f} | {row['success']:.1%} | "
                         f"{row['group_max']:.1f} | {row['seconds']:.0f} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--num-tasks", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--pool", type=int, default=32, help="train task ids in the pool")
    parser.add_argument("--batches", type=int, default=40, help="batches per run")
    parser.add_argument("--warmup", type=int, default=8, help="batches left out of the means")
    parser.add_argument("--epsilon", type=float, default=None, help="the expert's noise (default per env)")
    parser.add_argument("--allocator", type=json.loads, default=None,
                        help='RolloutAllocator settings as JSON, e.g. \'{"decay": 0.8, "cost": "rollouts"}\'')
    parser.add_argument("--out", default="runs/allocation")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policy: dict[str, dict[str, dict[str, float]]] = {}
    raw: dict[str, Any] = {}
    for env in args.envs:
        policy[env] = {}
        for allocation in ALLOCATIONS:
            runs = [policy_run(env, allocation, args, seed) for seed in args.seeds]
            raw[f"policy/{env}/{allocation}"] = runs
            policy[env][allocation] = summarize_policy(runs, args.warmup)
            print(f"policy {env} {allocation}: {policy[env][allocation]}", flush=True)
    text = report(policy, args)
    print(text)
    (out / "allocation.md").write_text(text + "\n")
    (out / "allocation.json").write_text(json.dumps(raw, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
