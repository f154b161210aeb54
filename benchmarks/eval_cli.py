"""``hiergym eval`` and ``hiergym compare``: the evaluation harness and run comparison from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from hiergym.benchmarks.harness import default_out_dir, evaluate
from hiergym.benchmarks.summary import compare_chart, load_summary, run_label, summary_markdown
from hiergym.records import load_results
from hiergym.stats import paired_success_difference


def add_eval_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate an agent on an environment",
        description="Evaluate an agent on a hiergym environment: the same tasks for every agent "
        "(task_id 0..N-1 of the split), transcripts and a summary table in --out.",
        epilog="Agent SPECs: random, expert, tiny[:DIR], hf:PATH_OR_ID, openai:MODEL@BASE_URL, smollm2, "
        "package.module:Name. See docs/agents.md.",
    )
    p.add_argument("--env", required=True, help="environment id, e.g. hiergym/Sokoban-v0 (see `hiergym list`)")
    p.add_argument("--env-arg", action="append", default=[], metavar="K=V", help="environment argument, repeatable")
    p.add_argument("--agent", required=True, metavar="SPEC", help="the agent (see below)")
    p.add_argument("--agent-arg", action="append", default=[], metavar="K=V",
                   help="agent argument, repeatable (e.g. mode=hierarchical, temperature=0.7)")
    p.add_argument("--episodes", type=int, default=20, help="number of episodes (default 20)")
    p.add_argument("--split", default="eval_out", help="task split: train, eval_in or eval_out (default)")
    p.add_argument("--seed", type=int, default=0, help="base seed: episode i resets with seed+i (default 0)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="episodes acted on together (default 8 for LLM agents, 1 otherwise)")
    p.add_argument("--step-timeout", type=float, default=300.0,
                   help="seconds one agent step may take before its episode fails (default 300; 0 = none)")
    p.add_argument("--max-steps", type=int, default=None, help="episode step limit (default: the env's)")
    p.add_argument("--out", default=None,
                   help="output directory; re-running with the same one resumes (default runs/eval/ENV__AGENT__...)")
    p.add_argument("--overwrite", action="store_true", help="replace a different run already in --out")
    p.add_argument("--retry-errors", action="store_true", help="on resume, run again the episodes that errored")
    p.add_argument("--save-prompts", action="store_true", help="also write every prompt into the transcripts")
    p.add_argument("--api-key-env", default=None, help="environment variable with the API key (openai: agents)")
    p.add_argument("--label", default=None, help="name of this run in tables")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from hiergym.registration import parse_env_args

    agent_args = parse_env_args(args.agent_arg, what="agent argument", example="temperature=0.7")
    if args.api_key_env:
        agent_args["api_key_env"] = args.api_key_env
    out = args.out or default_out_dir(args.env, args.agent, args.split, args.seed)
    summary = evaluate(
        args.env, args.agent, episodes=args.episodes, split=args.split, seed=args.seed, workers=args.workers,
        batch_size=args.batch_size, env_args=parse_env_args(args.env_arg), agent_args=agent_args,
        step_timeout=args.step_timeout or None, max_steps=args.max_steps, out=out, overwrite=args.overwrite,
        retry_errors=args.retry_errors, save_prompts=args.save_prompts, progress=not args.quiet,
        label=args.label,
    )
    print(summary_markdown([summary]))
    for line in summary["error_examples"]:
        print(f"error: {line}")
    print(f"transcripts and summary in {out}")
    if summary["episodes"] and summary["errors"] == summary["episodes"]:
        print(f"hiergym eval: error: every episode failed; the first: {summary['error_examples'][0]}",
              file=sys.stderr)
        return 1
    return 0


def add_compare_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare", help="compare evaluation runs side by side",
                              description="Print evaluation runs side by side and draw their success rates.")
    p.add_argument("runs", nargs="+", metavar="DIR", help="run directories written by `hiergym eval --out DIR`")
    p.add_argument("--png", default="compare.png",
                   help="bar chart of success rates (default compare.png; needs matplotlib)")
    p.add_argument("--no-png", action="store_true", help="do not draw the chart")
    p.set_defaults(func=run_compare)


def paired_lines(runs: Sequence[str], summaries: Sequence[dict[str, Any]]) -> list[str]:
    """Each run's success against the first run's on the same episodes, when they played the same tasks
    (same env, env arguments, split and seed) and kept their per-episode results."""
    same = ("env", "env_args", "split", "seed")
    if len(runs) < 2 or any(any(s.get(k) != summaries[0].get(k) for k in same) for s in summaries[1:]):
        return []
    try:
        results = [load_results(run) for run in runs]
    except FileNotFoundError:
        return []
    lines = [f"paired against {run_label(summaries[0])} on the same episodes (95% interval, McNemar's exact p):"]
    for summary, result in zip(summaries[1:], results[1:], strict=True):
        d = paired_success_difference(results[0], result)
        lines.append(f"  {run_label(summary)}: {100 * d['difference']:+.1f} points [{100 * d['ci95'][0]:+.1f}, "
                     f"{100 * d['ci95'][1]:+.1f}], {d['gained']} episodes gained, {d['lost']} lost of "
                     f"{d['pairs']}, p = {d['p_value']:.2g}")
    return lines


def run_compare(args: argparse.Namespace) -> int:
    summaries = [load_summary(d) for d in args.runs]
    print(summary_markdown(summaries))
    paired = paired_lines(args.runs, summaries)
    if paired:
        print("\n" + "\n".join(paired))
    if not args.no_png:
        if compare_chart(summaries, args.png):
            print(f"chart: {args.png}")
        else:
            print('(install matplotlib for a chart: pip install "hiergym[plot]")')
    return 0
