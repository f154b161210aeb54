"""Data-parallel throughput: RL rollout and update tokens/s of the trainer on world size 1 and on world size N
(torchrun, one process per rank), on the same global batch, and the ratio N / 1.

    python -m hiergym.benchmarks.distributed_throughput --nproc 2                 # CPU, gloo: the tiny model
    python -m hiergym.benchmarks.distributed_throughput --nproc 8 --device cuda --architecture qwen2.5-0.5b

Each world size runs ``--iterations`` RL iterations of the ``sokoban`` preset (``--tasks`` x ``--group``
rollouts in all, the groups shared by the ranks; no behaviour cloning) under ``torchrun --standalone``; the
first iteration is a warm-up. Per iteration the trainer's reduced metrics give:

- rollout: generated tokens of every rank / the slowest rank's rollout seconds;
- update: tokens through the model on every rank (prompt and response of each distinct sequence, per epoch)
  / the slowest rank's update seconds (forward, backward, the gradient all-reduce and the optimizer steps).

On a machine with fewer free cores than ranks the ranks compete for them: expect well under N x.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

MARK = "HIERGYM-DISTRIBUTED-THROUGHPUT "


def worker(args: argparse.Namespace) -> None:
    """One rank: the trainer's iterations; rank 0 prints each iteration's reduced metrics."""
    import torch

    from hiergym.benchmarks.trainer_throughput import ARCHITECTURES
    from hiergym.training.config import load_config
    from hiergym.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    overrides = {
        "sft_episodes": 0, "iterations": args.iterations, "num_tasks": args.tasks, "group_size": args.group,
        "max_episode_steps": args.max_steps, "max_new_tokens": args.max_new_tokens, "device": args.device,
        "micro_batch_size": args.micro_batch_size, "mini_batches": 1, "progress": False,
        "out_dir": args.out, "checkpoint_every": 10**9,
        "model_architecture": ARCHITECTURES[args.architecture]}
    trainer = Trainer(load_config("sokoban", overrides=overrides))
    for iteration in range(args.iterations):
        m = trainer.train_iteration(iteration)
        if trainer.dist.is_main:
            print(MARK + json.dumps({k: m[k] for k in ("generated_tokens", "rollout_seconds", "update_forward_tokens",
                                                       "update_seconds", "rows")}), flush=True)
    trainer.train_vec.close()


def measure(nproc: int, args: argparse.Namespace) -> dict[str, float]:
    out = tempfile.mkdtemp(prefix=f"hiergym-dist-throughput-{nproc}-")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "--max-restarts=0", "-m", "hiergym.benchmarks.distributed_throughput", "--worker", "--out", out,
               *_forwarded(args)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"world size {nproc} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    rows = [json.loads(line[len(MARK):]) for line in done.stdout.splitlines() if line.startswith(MARK)]
    measured = rows[1:] or rows
    rollout_s = sum(r["rollout_seconds"] for r in measured)
    update_s = sum(r["update_seconds"] for r in measured)
    return {"rollout": sum(r["generated_tokens"] for r in measured) / rollout_s,
            "update": sum(r["update_forward_tokens"] for r in measured) / update_s,
            "rollout_s": rollout_s / len(measured), "update_s": update_s / len(measured),
            "rows": measured[-1]["rows"]}


def _forwarded(args: argparse.Namespace) -> list[str]:
    return ["--architecture", args.architecture, "--device", args.device, "--iterations", str(args.iterations),
            "--tasks", str(args.tasks), "--group", str(args.group), "--max-steps", str(args.max_steps),
            "--max-new-tokens", str(args.max_new_tokens), "--micro-batch-size", str(args.micro_batch_size),
            "--threads", str(args.threads)]


def main(argv: list[str] | None = None) -> dict[str, float]:
    from hiergym.benchmarks.trainer_throughput import ARCHITECTURES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2, help="ranks of the data-parallel run (compared with 1)")
    parser.add_argument("--architecture", choices=list(ARCHITECTURES), default="tiny")
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (nccl, one GPU per rank)")
    parser.add_argument("--iterations", type=int, default=3, help="RL iterations (the first is a warm-up)")
    parser.add_argument("--tasks", type=int, default=16, help="B, the global number of groups")
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--micro-batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per rank")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    if args.nproc < 2:
        parser.error("--nproc must be at least 2 (world size 1 is always measured)")
    print(f"{args.architecture} model on {args.device}; global batch {args.tasks} tasks x {args.group} rollouts, "
          f"{args.max_steps} steps, up to {args.max_new_tokens} new tokens; {args.iterations} iterations "
          f"(first = warm-up); {os.cpu_count()} CPUs here")
    results = {n: measure(n, args) for n in (1, args.nproc)}
    print(f"\n{'world size':>10} {'rows':>6} {'rollout s':>10} {'rollout tok/s':>14} {'update s':>9} "
          f"{'update tok/s':>13}")
    for n, r in results.items():
        print(f"{n:>10} {r['rows']:>6} {r['rollout_s']:>10.2f} {r['rollout']:>14.0f} {r['update_s']:>9.2f} "
              f"{r['update']:>13.0f}")
    ratio = {k: results[args.nproc][k] / results[1][k] for k in ("rollout", "update")}
    print(f"\nworld size {args.nproc} / 1: rollout {ratio['rollout']:.2f}x, update {ratio['update']:.2f}x")
    return {f"{k}_ratio": v for k, v in ratio.items()}


if __name__ == "__main__":
    main()
