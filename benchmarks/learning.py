"""Learning benchmark: the advantage estimators side by side, at the same budget, seeds and model.

    python -m hiergym.benchmarks.learning                      # 3 envs, both agents, 8 estimators, 3 seeds
    python -m hiergym.benchmarks.learning --envs alfworld --estimators grpo gigpo hiper --seeds 0 1 2
    python -m hiergym.benchmarks.learning --estimators grpo gigpo archer turn_ppo gigpo+spa --agents flat
    python -m hiergym.benchmarks.learning --envs sokoban --agents flat --estimators grpo --task-pool 128 \
        --allocations uniform knapsack                   # Knapsack RL's rollout allocation against uniform

For every environment and seed, the agent is behaviour-cloned once on the expert (the shared start), then
each estimator trains a copy of that start for the same number of RL iterations on the same rollout budget
(``num_tasks x group_size`` trajectories per iteration, the same task seeds) and is evaluated greedily on
the same fixed evaluation tasks every ``eval_every`` iterations. Both agents run by default, the hierarchical
planner/executor agent and the flat one (``--agents``), each from its own behaviour-cloned start (the same
expert episodes, steps and model), so ``hiper`` gets the subgoal segments it is built for and every estimator
of an agent sees the same rows. The table gives each run's paired gain (the same evaluation tasks before and
after RL: points, 95% interval, McNemar p), ALFWorld's long multi-subgoal types apart, and seconds per iteration.

``NAME+spa`` runs estimator NAME on SPA's shaped step rewards (``reward_shaping=spa``), ``NAME+placebo`` its
control with the advantages permuted over the batch's rows (``placebo_advantages``: what the updates do without
credit), and
``NAME:key=value,key=value`` with those estimator options (``archer:warmup_iterations=3``). Every run logs the
environment steps its rollouts consumed (``env_steps`` in ``metrics.jsonl``), and the table and the plot give
evaluation success against the cumulative RL environment steps as well as against iterations: sample
efficiency is what the off-policy critic (``archer``) claims.

``--allocations uniform knapsack`` runs every estimator once per rollout allocation (``rollout_allocation``,
Knapsack RL; ``training/allocation.py``) on the same recurring task pool (``--task-pool N``: train task ids
``0..N-1``, the same ids per batch for both) and budget. Every run's table row gives the share of groups with
a non-zero advantage and of rollouts in groups with both a success and a failure (means over RL iterations),
and the curve gives evaluation success against the rollouts and environment steps consumed.

Prints the success curves and a final table (mean and spread over seeds of evaluation success before and
after RL); writes them, with every run's metrics, to ``OUT/learning.md`` and ``OUT/learning.json`` (and
``OUT/learning.png`` when matplotlib is installed). Finished runs are kept: the same command continues a
killed benchmark where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from hiergym.training.config import TrainConfig, load_config

ESTIMATORS = ("grpo", "gigpo", "hgpo", "hiper", "hiper:form=value", "archer", "turn_ppo", "gigpo+spa")
ALLOCATIONS = ("uniform", "knapsack")

#: Per-environment settings of the benchmark: the trainer's preset for each agent, and overrides on top.
ENV_SETTINGS: dict[str, dict[str, Any]] = {
    "sokoban": {"presets": {"flat": "sokoban", "hierarchical": "sokoban-hierarchical"}, "overrides": {}},
    # Where planning matters: two boxes in a 7x7 room.
    "sokoban-7x7": {"presets": {"flat": "sokoban", "hierarchical": "sokoban-hierarchical"}, "overrides": {
        "env_kwargs": {"dim_room": [7, 7], "num_boxes": 2, "end_on_dead_end": True}, "max_episode_steps": 30}},
    # All six task types; constrained decoding and the env tokenizer (the presets).
    "alfworld": {"presets": {"flat": "alfworld", "hierarchical": "alfworld-hierarchical"}, "overrides": {}},
}
#: ALFWorld's task types with several subgoals, reported apart.
LONG_TASK_TYPES = ("pick_two_obj_and_place", "pick_heat_then_place_in_recep", "pick_cool_then_place_in_recep",
                   "pick_clean_then_place_in_recep")


def run_config(env: str, seed: int, estimator: str, args: argparse.Namespace, start_model: str | None,
               out: Path, allocation: str = "uniform") -> TrainConfig:
    settings = ENV_SETTINGS[env]
    preset = settings["presets"][args.agent]
    name, options = parse_estimator(estimator)
    name, _, shaping = name.partition("+")
    placebo = shaping == "placebo"  # NAME+placebo: the control run, advantages permuted (placebo_advantages)
    shaping = "" if placebo else shaping
    batch = {k: v for k, v in (("num_tasks", args.num_tasks), ("group_size", args.group_size)) if v}
    overrides: dict[str, Any] = {**settings["overrides"], **batch, "agent": args.agent,
                                 "seed": seed, "reward_shaping": shaping or "none", "placebo_advantages": placebo,
                                 "estimator": name, "estimator_options": options, "iterations": args.iterations,
                                 "eval_every": args.eval_every, "eval_episodes": args.eval_episodes,
                                 "out_dir": str(out), "progress": False, "checkpoint_every": args.iterations}
    if start_model is not None:  # RL from the shared behaviour-cloned start
        overrides.update(model=f"tiny:{start_model}", sft_episodes=0, rollout_allocation=allocation,
                         task_pool=getattr(args, "task_pool", 0))
    else:  # the behaviour-cloning run: no RL
        overrides.update(iterations=0)
    return load_config(preset, overrides=overrides)


def run_label(estimator: str, allocation: str, args: argparse.Namespace) -> str:
    """The run's name in the tables: the estimator spec, and its allocation when the pool is a benchmark axis."""
    if not getattr(args, "task_pool", 0):
        return estimator
    return f"{estimator} @ {allocation} (pool {args.task_pool})"


def run_dir(where: Path, estimator: str, allocation: str, args: argparse.Namespace) -> Path:
    """A run's folder under its seed's: ``gigpo``, ``hiper-form=value``, ``grpo-pool16-knapsack``."""
    name = estimator.replace(":", "-")
    pool = getattr(args, "task_pool", 0)
    return where / (f"{name}-pool{pool}-{allocation}" if pool else name)


def parse_estimator(spec: str) -> tuple[str, dict[str, Any]]:
    """``"archer:warmup_iterations=3,critic_updates=64"`` -> ``("archer", {"warmup_iterations": 3, ...})``."""
    import yaml

    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"estimator option {item!r} of {spec!r} is not key=value")
        options[key.strip()] = yaml.safe_load(value)
    return name, options


def train(config: TrainConfig) -> dict[str, Any]:
    """One run, skipped when it already finished (its summary.json exists)."""
    from hiergym.training.trainer import Trainer

    summary_path = Path(config.out_dir) / "summary.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    started = time.perf_counter()
    summary = Trainer(config, resume=True).run()
    summary["wall_seconds"] = time.perf_counter() - started
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _rl_rows(out_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(out_dir) / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [r for r in rows if r.get("phase") == "rl"]


def _cumulative(rl_rows: list[dict[str, Any]], key: str) -> dict[int, int]:
    """Cumulative ``key`` after each iteration of a run's RL rows (0 before RL)."""
    consumed, total = {0: 0}, 0
    for row in rl_rows:
        total += int(row.get(key, 0))
        consumed[int(row["iteration"])] = total
    return consumed


def env_steps_by_iteration(out_dir: str | Path) -> dict[int, int]:
    """Cumulative RL environment steps after each iteration of a run (0 before RL), from its metrics."""
    return _cumulative(_rl_rows(out_dir), "env_steps")


def _rl_metric_mean(rl_rows_by_run: list[list[dict[str, Any]]], key: str) -> float:
    """A per-iteration RL metric's mean over the iterations of each run, then over runs (nan when absent)."""
    means = [np.mean(values) for values in ([row[key] for row in rows if key in row] for rows in rl_rows_by_run)
             if values]
    return float(np.mean(means)) if means else float("nan")


def curve(summary: dict[str, Any]) -> list[tuple[int, float]]:
    """(iteration, eval success) points of a run, iteration 0 being the start of RL."""
    from hiergym.training.trainer import evaluation_iteration

    return sorted((evaluation_iteration(e["label"], summary["iterations"]), e["success_rate"])
                  for e in summary["evaluations"] if not e["label"].endswith("_eval_out"))  # eval_in's curve


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread over seeds of one estimator's runs on one env."""
    before = np.array([r["success_before_rl"] for r in runs])
    after = np.array([r["success_after_rl"] for r in runs])
    curves = [curve(r) for r in runs]
    iterations = [i for i, _ in curves[0]]
    mean_curve = [float(np.mean([dict(c).get(i, np.nan) for c in curves])) for i in iterations]
    rl = [_rl_rows(r["out_dir"]) for r in runs]  # each run's metrics, read once
    steps = [_cumulative(rows, "env_steps") for rows in rl]
    mean_steps = [float(np.mean([s.get(i, np.nan) for s in steps])) for i in iterations]
    rollouts = [_cumulative(rows, "rollouts") for rows in rl]
    mean_rollouts = [float(np.mean([c.get(i, np.nan) for c in rollouts])) for i in iterations]
    gains = [r["rl_gain"] for r in runs if r.get("rl_gain")]
    long_types = [_types_success(r, LONG_TASK_TYPES) for r in runs]
    return {
        "paired": [{k: g[k] for k in ("difference", "ci95", "p_value", "gained", "lost", "pairs")} for g in gains],
        "long_types_before": _mean_or_none([b for b, _ in long_types if b is not None]),
        "long_types_after": _mean_or_none([a for _, a in long_types if a is not None]),
        "seconds_per_iteration": float(np.mean([_seconds_per_iteration(rows) for rows in rl])),
        "curve_env_steps": mean_steps, "env_steps_mean": mean_steps[-1] if mean_steps else 0.0,
        "curve_rollouts": mean_rollouts,
        **{key: _rl_metric_mean(rl, key) for key in ("nonzero_advantage_groups", "mixed_success_rollouts",
                                                        "mixed_success_groups", "train_success")},
        "seeds": len(runs), "before_mean": float(before.mean()), "after_mean": float(after.mean()),
        "after_std": float(after.std()), "gain_mean": float((after - before).mean()),
        "gain_std": float((after - before).std()), "curve_iterations": iterations, "curve_mean": mean_curve,
        "seconds_mean": float(np.mean([r.get("wall_seconds", np.nan) for r in runs])),
    }


def _mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _types_success(summary: dict[str, Any], types: tuple[str, ...]) -> tuple[float | None, float | None]:
    """Success before and after RL over the eval tasks of ``types`` (None without per-type results)."""
    rows = [row for name, row in (summary.get("by_task_type") or {}).items() if name in types]
    if not rows:
        return None, None
    count = sum(r["episodes"] for r in rows)
    return (sum(r["success_before_rl"] * r["episodes"] for r in rows) / count,
            sum(r["success_after_rl"] * r["episodes"] for r in rows) / count)


def _seconds_per_iteration(rl: list[dict[str, Any]]) -> float:
    """Mean wall seconds of an RL iteration (rollout + update), from the run's RL rows."""
    return float(np.mean([r.get("rollout_seconds", 0) + r.get("update_seconds", 0) for r in rl])) if rl else np.nan


def _share(value: float) -> str:
    return "-" if value != value else f"{value:.1%}"  # nan: no run logged it


def _paired_text(paired: list[dict[str, Any]]) -> str:
    return "; ".join(f"{100 * p['difference']:+.1f} [{100 * p['ci95'][0]:+.1f}, {100 * p['ci95'][1]:+.1f}] "
                     f"p={p['p_value']:.2g}" for p in paired)


def report(results: dict[str, dict[str, dict[str, Any]]], args: argparse.Namespace) -> str:
    lines = [f"# Learning benchmark: {', '.join(args.agents)} tiny agent, {args.iterations} RL iterations, seeds "
             f"{', '.join(map(str, args.seeds))}", ""]
    for key, by_estimator in results.items():
        env, agent = key.split("/")
        settings = ENV_SETTINGS[env]
        config = load_config(settings["presets"][agent], overrides=settings["overrides"])
        tasks, group = args.num_tasks or config.num_tasks, args.group_size or config.group_size
        lines += [f"## {env}, {agent} agent ({config.env_id}; {tasks} tasks x {group} rollouts per iteration, "
                  f"{args.eval_episodes} eval tasks of {config.eval_split})", "",
                  "| run | success before RL | after RL (mean ± std) | gain (mean ± std) | paired gain per seed "
                  "(points, 95% interval, McNemar p) | long types before -> after | groups with non-zero advantage "
                  "| rollouts in mixed-success groups | eval curve (iteration [rollouts, RL env steps]: success) "
                  "| s/iteration |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for estimator, row in by_estimator.items():
            points = " · ".join(f"{i} [{r:,.0f}, {n:,.0f}]: {s:.2f}" for i, r, n, s in zip(
                row["curve_iterations"], row["curve_rollouts"], row["curve_env_steps"], row["curve_mean"],
                strict=True))
            long_types = ("-" if row["long_types_before"] is None else
                          f"{row['long_types_before']:.1%} -> {row['long_types_after']:.1%}")
            lines.append(f"| {estimator} | {row['before_mean']:.1%} | {row['after_mean']:.1%} ± "
                         f"{row['after_std']:.1%} | {row['gain_mean']:+.1%} ± {row['gain_std']:.1%} | "
                         f"{_paired_text(row['paired'])} | {long_types} | {_share(row['nonzero_advantage_groups'])} | "
                         f"{_share(row['mixed_success_rollouts'])} | {points} | "
                         f"{row['seconds_per_iteration']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, dict[str, dict[str, Any]]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.5), squeeze=False)
    for ax, (env, by_estimator) in zip(axes[0], results.items(), strict=True):
        for estimator, row in by_estimator.items():
            ax.plot(row["curve_env_steps"], row["curve_mean"], "o-", label=estimator)
        ax.set_title(env.replace("/", ", ") + " agent")
        ax.set_xlabel("RL environment steps consumed")
        ax.set_ylabel("eval success (mean over seeds)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=list(ENV_SETTINGS), choices=list(ENV_SETTINGS))
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS),
                        help=f"of {', '.join(ESTIMATORS)}; NAME:key=value,... sets estimator options")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=10, help="RL iterations per run")
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--eval-episodes", type=int, default=64)
    parser.add_argument("--agents", nargs="+", choices=("hierarchical", "flat"), default=["hierarchical", "flat"],
                        help="each agent gets its own behaviour-cloned start (the same expert episodes and steps)")
    parser.add_argument("--num-tasks", type=int, default=0, help="tasks per iteration (0: the env's setting)")
    parser.add_argument("--group-size", type=int, default=0, help="rollouts per task (0: the env's setting)")
    parser.add_argument("--allocations", nargs="+", choices=ALLOCATIONS, default=["uniform"],
                        help="rollout allocations to compare (knapsack needs --task-pool)")
    parser.add_argument("--task-pool", type=int, default=0,
                        help="train on task ids 0..N-1 of the train split, recurring (0: a fresh task stream)")
    parser.add_argument("--out", default="runs/learning")
    args = parser.parse_args(argv)
    if "knapsack" in args.allocations and args.task_pool < 1:
        parser.error("--allocations knapsack needs recurring tasks to estimate: add --task-pool N (e.g. 32)")
    for spec in args.estimators:
        if parse_estimator(spec)[0] not in {parse_estimator(e)[0] for e in ESTIMATORS}:
            parser.error(f"unknown estimator {spec!r}: choose among {', '.join(ESTIMATORS)}")

    out = Path(args.out)

    def load(env: str, agent: str, label: str, *config_args: Any) -> TrainConfig:
        try:
            return run_config(env, *config_args)
        except ValueError as exc:
            parser.error(f"{env}, {agent} agent, {label}: {exc}")

    # Every run's config loads before any training (a bad combination is one line now): per env and agent, per
    # seed the behaviour-cloning run and the RL runs from its checkpoint.
    plans: list[tuple[str, list[str], list[tuple[int, TrainConfig, list[tuple[str, TrainConfig]]]]]] = []
    for env in args.envs:
        for agent in args.agents:
            one = argparse.Namespace(**{**vars(args), "agent": agent})
            specs = [(e, a, run_label(e, a, args)) for e in args.estimators for a in args.allocations]
            seeds = []
            for seed in args.seeds:
                where = out / env / agent / f"seed{seed}"
                start_model = str(where / "bc" / "checkpoint" / "model")
                seeds.append((seed, load(env, agent, "behaviour cloning", seed, "gigpo", one, None, where / "bc"),
                              [(label, load(env, agent, label, seed, estimator, one, start_model,
                                            run_dir(where, estimator, allocation, args), allocation))
                               for estimator, allocation, label in specs]))
            plans.append((f"{env}/{agent}", [label for _, _, label in specs], seeds))

    import torch

    torch.set_num_threads(1)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    runs: dict[str, Any] = {}
    for key, labels, seeds in plans:
        by_run: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
        for seed, cloning, rl_runs in seeds:
            train(cloning)
            for label, config in rl_runs:
                summary = train(config)
                by_run[label].append(summary)
                runs[f"{key}/seed{seed}/{label}"] = {"config": dataclasses.asdict(config), "summary": summary}
                print(f"{key.replace('/', ' ')} seed {seed} {label}: success {summary['success_before_rl']:.3f} -> "
                      f"{summary['success_after_rl']:.3f}", flush=True)
        results[key] = {label: aggregate(r) for label, r in by_run.items()}
    text = report(results, args)
    print(text)
    (out / "learning.md").write_text(text + "\n")
    (out / "learning.json").write_text(json.dumps({"results": results, "runs": runs}, indent=1, default=float) + "\n")
    if plot(results, out / "learning.png"):
        print(f"curves: {out / 'learning.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
