"""``hiergym train`` and ``hiergym sft``: the trainer from the command line (argparse setup imports no torch)."""

from __future__ import annotations

import argparse
import json


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train an agent (behaviour cloning, then RL with a group advantage estimator)",
        description="Train with the hierarchical advantage trainer. Options: defaults < --preset < --config "
        "YAML < KEY=VALUE overrides (e.g. iterations=10 estimator=grpo). `--help-config` lists every option.",
    )
    _common(p)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint if there is one")
    p.set_defaults(func=run_train)


def add_sft_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sft",
        help="behaviour cloning from the environment's expert only (no RL)",
        description="Behaviour-clone the agent on expert demonstrations in its own prompt/output format, "
        "evaluate, and save the model to OUT/checkpoint/model (usable as --model tiny:OUT/checkpoint/model).",
    )
    _common(p)
    p.set_defaults(func=run_sft)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--preset", default=None, help="preset name (sokoban, alfworld, webshop, ...); default sokoban")
    p.add_argument("--config", default=None, help="YAML file of options")
    p.add_argument("--out", default=None, help="output directory (default: runs/<preset>)")
    p.add_argument("--help-config", action="store_true", help="list every option with its default and exit")


def _load(args: argparse.Namespace):
    from hiergym.training.config import DEFAULT_PRESET, describe_config, load_config

    if args.help_config:
        print(describe_config())
        return None
    preset = args.preset or DEFAULT_PRESET
    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"out_dir={args.out}")
    elif not any(o.startswith("out_dir=") for o in overrides):
        overrides.append(f"out_dir=runs/{preset}")
    return load_config(preset, args.config, overrides)


def run_train(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return 0
    import torch

    from hiergym.training.trainer import Trainer

    if config.device in ("cpu", "auto") and not torch.cuda.is_available():
        torch.set_num_threads(1)  # small models on few cores: one thread avoids contention
    summary = Trainer(config, resume=args.resume).run()
    print_summary(summary)
    return 0


def run_sft(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return 0
    import dataclasses

    import torch

    from hiergym.training.trainer import Trainer

    if not torch.cuda.is_available():
        torch.set_num_threads(1)
    summary = Trainer(dataclasses.replace(config, iterations=0)).run()
    print(json.dumps({"success_after_sft": summary["success_before_rl"],
                      "model": f"{config.out_dir}/checkpoint/model"}, indent=2))
    return 0


def print_summary(summary: dict) -> None:
    before, after = summary["success_before_rl"], summary["success_after_rl"]
    print(f"\n{summary['env_id']} · {summary['agent']} agent · {summary['estimator']} · "
          f"{summary['iterations']} RL iterations · {summary['eval_episodes']} fixed eval tasks")
    print(f"{'':<22}{'success':>10}{'return':>10}")
    print(f"{'before RL (after BC)':<22}{before:>10.1%}{summary['return_before_rl']:>10.2f}")
    print(f"{'after RL':<22}{after:>10.1%}{summary['return_after_rl']:>10.2f}")
    print(f"metrics, checkpoint and curves in {summary['out_dir']}")
