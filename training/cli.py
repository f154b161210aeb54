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
    p.add_argument("--preset", default=None, help="preset name (sokoban, alfworld, webshop, tictactoe-selfplay, "
                   "kuhn-selfplay, ...); default sokoban")
    p.add_argument("--config", default=None, help="YAML file of options")
    p.add_argument("--out", default=None, help="output directory (default: runs/<preset>)")
    p.add_argument("--model", default=None, metavar="PATH_OR_HF_ID",
                   help="'tiny' (default), 'tiny:DIR', or a local Hugging Face model path / id already in the cache")
    p.add_argument("--help-config", action="store_true", help="list every option with its default and exit")


def _load(args: argparse.Namespace):
    from hiergym.training.config import DEFAULT_PRESET, describe_config, load_config

    if args.help_config:
        print(describe_config())
        return None
    preset = args.preset or DEFAULT_PRESET
    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"model={args.model}")
    if args.out:
        overrides.append(f"out_dir={args.out}")
    elif not any(o.startswith("out_dir=") for o in overrides):
        overrides.append(f"out_dir=runs/{preset}")
    return load_config(preset, args.config, overrides)


def run_train(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return 0
    # Under torchrun, a rank's exception goes to the launcher's error file, so the job's failure report
    # (its "Root Cause") shows that rank's traceback.
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(_train)(config, args.resume)


def _train(config, resume: bool) -> int:
    import torch

    from hiergym.training.distributed import launched_rank
    from hiergym.training.trainer import Trainer

    if config.device in ("cpu", "auto") and not torch.cuda.is_available():
        torch.set_num_threads(1)  # small models on few cores: one thread avoids contention
    if config.game:  # a multi-agent game: self-play (training/selfplay.py)
        from hiergym.training.selfplay import SelfPlayTrainer, format_selfplay_summary

        print(format_selfplay_summary(SelfPlayTrainer(config, resume=resume).run()))
        return 0
    summary = Trainer(config, resume=resume).run()
    if launched_rank() == 0:  # torchrun: every rank holds the same summary; one prints it
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
    from hiergym.training.distributed import launched_rank

    summary = Trainer(dataclasses.replace(config, iterations=0)).run()
    if launched_rank() != 0:
        return 0
    print(json.dumps({"success_after_sft": summary["success_before_rl"],
                      "model": f"{config.out_dir}/checkpoint/model"}, indent=2))
    return 0


def print_summary(summary: dict) -> None:
    evaluations = {e["label"]: e for e in summary["evaluations"]}
    print(f"\n{summary['env_id']} · {summary['agent']} agent · {summary['estimator']} · "
          f"{summary['iterations']} RL iterations · {summary['eval_episodes']} fixed eval tasks "
          f"({decoding_name(summary.get('eval_temperature', 0.0))})")
    print(f"{'':<22}{'success':>9}  {'95% interval':<15}{'return':>8}{'invalid':>9}")
    for label, name in (("before_rl", "before RL (after BC)"), ("after_rl", "after RL")):
        e = evaluations.get(label)
        if e is None:
            continue
        low, high = e["success_ci95"]
        print(f"{name:<22}{e['success_rate']:>9.1%}  {f'[{low:.0%}, {high:.0%}]':<15}{e['mean_return']:>8.2f}"
              f"{e['invalid_action_rate']:>9.1%}")
    gain = summary.get("rl_gain")
    if gain:
        low, high = gain["ci95"]
        print(f"RL gain, paired on the same tasks: {100 * gain['difference']:+.1f} points [{100 * low:+.1f}, "
              f"{100 * high:+.1f}] ({gain['gained']} tasks gained, {gain['lost']} lost; McNemar p = "
              f"{gain['p_value']:.2g})")
    held_out = summary.get("eval_out")
    if held_out:
        paired = held_out["paired"]
        low, high = paired["ci95"]
        print(f"held-out (eval_out, {held_out['episodes']} tasks): {held_out['success_before_rl']:.1%} -> "
              f"{held_out['success_after_rl']:.1%}, {100 * paired['difference']:+.1f} points [{100 * low:+.1f}, "
              f"{100 * high:+.1f}] (p = {paired['p_value']:.2g})")
    for task_type, row in (summary.get("by_task_type") or {}).items():
        print(f"  {task_type:<34}{row['success_before_rl']:>7.1%} -> {row['success_after_rl']:.1%} "
              f"({row['episodes']} tasks)")
    decoding = summary.get("decoding") or {}
    if decoding.get("action_constraint", "none") != "none":
        print(f"decoding restricted (action_constraint={decoding['action_constraint']}); "
              f"tokenizer {decoding['tokenizer']}")
    print(f"metrics, checkpoint and curves in {summary['out_dir']}")


def decoding_name(temperature: float) -> str:
    return "greedy" if not temperature else f"sampled at temperature {temperature:g}"
