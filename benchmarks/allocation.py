"""Rollout allocation benchmark: uniform versus Knapsack RL's allocation on the same budget and seeds.

    python -m hiergym.benchmarks.allocation                         # both parts, Sokoban and ALFWorld
    python -m hiergym.benchmarks.allocation --part policy --batches 40
    python -m hiergym.benchmarks.allocation --part learning --envs sokoban --seeds 0 1 --iterations 12

Both allocations play the same task pool (task ids ``0 .. pool - 1`` of the train split, ``num_tasks`` distinct
ones sampled per batch, with replacement across batches: the same ids in the same order for both) with the
same budget of ``num_tasks x group_size`` rollouts per batch (``training/allocation.py``).

- ``policy``: a fixed stochastic policy (the env's expert taking a random admissible action with probability
  ``--epsilon``: tasks differ in how often it still succeeds) plays ``--batches`` batches; only the allocation
  learns. This isolates the allocation's effect: the share of groups with both a success and a failure (a
  non-zero GRPO advantage), the rollouts and env steps consumed.
- ``learning``: the trainer (tiny model, flat agent, GRPO) from one shared behaviour-cloned start, once per
  allocation: the share of groups with a non-zero success signal and with a non-zero advantage per iteration,
  and evaluation success against the rollouts (and env steps) consumed.

Writes ``OUT/allocation.md`` and ``OUT/allocation.json``; finished learning runs are kept (the same command
continues a killed benchmark).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from hiergym.benchmarks.learning import train

ALLOCATIONS = ("uniform", "knapsack")
ENVS: dict[str, dict[str, Any]] = {
    "sokoban": {"env_id": "hiergym/Sokoban-v0", "env_kwargs": {"end_on_dead_end": True}, "max_steps": 20,
                "epsilon": 0.4, "preset": "sokoban", "overrides": {}},
    "alfworld": {"env_id": "hiergym/ALFWorld-v0", "env_kwargs": {}, "max_steps": 15, "epsilon": 0.6,
                 "preset": "alfworld", "overrides": {
                     "env_kwargs": {"task_types": ["pick_and_place_simple"]}, "max_episode_steps": 15,
                     "history_window": 1, "max_new_tokens": 32, "sft_steps": 150, "sft_episodes": 60,
                     "sft_batch_size": 16, "sft_learning_rate": 3e-3, "learning_rate": 5e-4,
                     "model_architecture": {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2}}},
}


# ------------------------------------------------------------------------------------------ part 1: fixed policy
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


# ------------------------------------------------------------------------------------------ part 2: learning
def learning_config(env: str, allocation: str | None, seed: int, args: argparse.Namespace, out: Path,
                    start_model: str | None):
    from hiergym.training.config import load_config

    settings = ENVS[env]
    overrides: dict[str, Any] = {**settings["overrides"], "agent": "flat", "estimator": "grpo", "seed": seed,
                                 "num_tasks": args.num_tasks, "group_size": args.group_size,
                                 "task_pool": args.pool, "iterations": args.iterations,
                                 "eval_every": args.eval_every, "eval_episodes": args.eval_episodes,
                                 "out_dir": str(out), "progress": False, "checkpoint_every": max(args.iterations, 1)}
    if start_model is None:
        overrides.update(iterations=0)
    else:
        overrides.update(model=f"tiny:{start_model}", sft_episodes=0, rollout_allocation=allocation)
    return load_config(settings["preset"], overrides=overrides)


def learning_run(env: str, allocation: str, seed: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from hiergym.training.trainer import evaluation_iteration

    start_dir = out / env / f"seed{seed}" / "bc"
    train(learning_config(env, None, seed, args, start_dir, None))
    run_dir = out / env / f"seed{seed}" / allocation
    summary = train(learning_config(env, allocation, seed, args, run_dir, str(start_dir / "checkpoint" / "model")))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rows if r["phase"] == "rl"]
    cumulative = np.cumsum([0] + [r["rollouts"] for r in rl]).tolist()
    steps = np.cumsum([0] + [r["env_steps"] for r in rl]).tolist()
    curve = [(evaluation_iteration(e["label"], summary["iterations"]), e["success_rate"]) for e in summary["evaluations"]]
    return {"mixed": [r["mixed_success_groups"] for r in rl],
            "mixed_rollouts": [r.get("mixed_success_rollouts", float("nan")) for r in rl],
            "nonzero_adv": [r["nonzero_advantage_groups"] for r in rl],
            "train_success": [r["train_success"] for r in rl], "rollouts": cumulative, "env_steps": steps,
            "curve": [(i, cumulative[i], steps[i], s) for i, s in sorted(curve)],
            "seconds": summary.get("wall_seconds", float("nan"))}


# ------------------------------------------------------------------------------------------ report
def report(policy: dict[str, dict[str, dict[str, float]]], learning: dict[str, dict[str, list[dict[str, Any]]]],
           args: argparse.Namespace) -> str:
    lines = [f"# Rollout allocation: uniform vs knapsack ({args.num_tasks} tasks x {args.group_size} rollouts per "
             f"batch, pool of {args.pool} train task ids, seeds {', '.join(map(str, args.seeds))})", ""]
    if policy:
        lines += [f"## Fixed noisy-expert policy, {args.batches} batches (first {args.warmup} left out of the means)",
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
    if learning:
        lines += [f"## Learning (tiny model, flat agent, GRPO, {args.iterations} RL iterations from a shared "
                  "behaviour-cloned start)", "",
                  "| env | allocation | mixed-success groups (mean over iterations) | rollouts in them | groups "
                  "with non-zero advantage | train success | eval success at (iteration, rollouts used, env steps): "
                  "success | s/run |", "|---|---|---|---|---|---|---|---|"]
        for env, by_allocation in learning.items():
            for allocation, runs in by_allocation.items():
                mixed = np.mean([np.mean(r["mixed"]) for r in runs])
                mixed_rollouts = np.mean([np.mean(r["mixed_rollouts"]) for r in runs])
                adv = np.mean([np.mean(r["nonzero_adv"]) for r in runs])
                train_success = np.mean([np.mean(r["train_success"]) for r in runs])
                points = []
                for k, (i, rollouts, steps, _) in enumerate(runs[0]["curve"]):
                    success = np.mean([r["curve"][k][3] for r in runs])
                    points.append(f"({i}, {rollouts}, {steps}): {success:.3f}")
                lines.append(f"| {env} | {allocation} | {mixed:.1%} | {mixed_rollouts:.1%} | {adv:.1%} | "
                             f"{train_success:.1%} | {' · '.join(points)} | "
                             f"{np.mean([r['seconds'] for r in runs]):.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("policy", "learning", "both"), default="both")
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--num-tasks", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--pool", type=int, default=32, help="train task ids in the pool")
    parser.add_argument("--batches", type=int, default=40, help="policy part: batches per run")
    parser.add_argument("--warmup", type=int, default=8, help="policy part: batches left out of the means")
    parser.add_argument("--epsilon", type=float, default=None, help="policy part: the expert's noise (default per env)")
    parser.add_argument("--iterations", type=int, default=12, help="learning part: RL iterations")
    parser.add_argument("--eval-every", type=int, default=4)
    parser.add_argument("--eval-episodes", type=int, default=64)
    parser.add_argument("--allocator", type=json.loads, default=None,
                        help='policy part: RolloutAllocator settings as JSON, e.g. \'{"decay": 0.8, "cost": "rollouts"}\'')
    parser.add_argument("--out", default="runs/allocation")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policy: dict[str, dict[str, dict[str, float]]] = {}
    learning: dict[str, dict[str, list[dict[str, Any]]]] = {}
    raw: dict[str, Any] = {}
    for env in args.envs:
        if args.part in ("policy", "both"):
            policy[env] = {}
            for allocation in ALLOCATIONS:
                runs = [policy_run(env, allocation, args, seed) for seed in args.seeds]
                raw[f"policy/{env}/{allocation}"] = runs
                policy[env][allocation] = summarize_policy(runs, args.warmup)
                print(f"policy {env} {allocation}: {policy[env][allocation]}", flush=True)
        if args.part in ("learning", "both"):
            learning[env] = {}
            for allocation in ALLOCATIONS:
                runs = [learning_run(env, allocation, seed, args, out) for seed in args.seeds]
                raw[f"learning/{env}/{allocation}"] = runs
                learning[env][allocation] = runs
                print(f"learning {env} {allocation}: {[r['curve'] for r in runs]}", flush=True)
    text = report(policy, learning, args)
    print(text)
    (out / "allocation.md").write_text(text + "\n")
    (out / "allocation.json").write_text(json.dumps(raw, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
