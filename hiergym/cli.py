"""The ``hiergym`` command line.

Subcommands live in :data:`SUBCOMMANDS`: a name and the ``module:function`` that adds its parser. Each adder
must import only light modules at module level (argparse setup must not load torch), and sets
``func=handler`` on its parser; a handler returns an exit code. Errors a person can fix are raised as
:class:`CliError` (or ``ValueError`` from argument parsing helpers) and printed as one clear line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

import hiergym
from hiergym.registration import ENVIRONMENTS, UnknownEnvironmentError, parse_env_args, resolve_env_id

#: name -> "module:add_parser". Builtins first; other subpackages add theirs here.
SUBCOMMANDS: dict[str, str] = {
    "list": "hiergym.cli:add_list_parser",
    "train": "hiergym.training.cli:add_train_parser",
    "sft": "hiergym.training.cli:add_sft_parser",
    "play": "hiergym.cli:add_play_parser",
    "eval": "hiergym.benchmarks.eval_cli:add_eval_parser",
    "compare": "hiergym.benchmarks.eval_cli:add_compare_parser",
    "arena": "hiergym.benchmarks.arena_cli:add_arena_parser",
    "serve": "hiergym.envs.webshop.server:add_serve_parser",
}


class CliError(Exception):
    """A mistake in the command line that the user can fix; printed without a traceback."""


def make_env(env_id: str, env_args: list[str] | None = None, **extra: Any):
    """``gymnasium.make`` with the id resolved and ``k=v`` arguments parsed; clear errors for both."""
    import gymnasium as gym

    resolved = resolve_env_id(env_id)
    kwargs = {**parse_env_args(env_args), **extra}
    try:
        return gym.make(resolved, **kwargs)
    except TypeError as exc:
        entry = next((e for e in ENVIRONMENTS if e.id == resolved), None)
        known = ", ".join(entry.arguments) if entry else "see the environment's docstring"
        raise CliError(f"bad arguments for {resolved}: {exc}. Key arguments: {known}") from None


# --------------------------------------------------------------------------------------------- list
def add_list_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("list", help="list every registered environment")
    p.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    width = max(len(e.id) for e in ENVIRONMENTS)
    for entry in ENVIRONMENTS:
        print(f"{entry.id:<{width}}  {entry.description}")
        arguments = ", ".join(f"{k}={v!r}" for k, v in entry.arguments.items())
        steps = entry.max_episode_steps
        print(f"{'':<{width}}  max_episode_steps={steps}" + (f"; arguments: {arguments}" if arguments else ""))
    from hiergym.envs.multiagent import GAMES  # light: the package's __init__ imports nothing

    print("\nMulti-agent games (PettingZoo AEC and Parallel; see docs/multiagent.md):")
    for game in GAMES:
        print(f"  hiergym.envs.multiagent.{game}  (.env(), .parallel_env())")
    return 0


# --------------------------------------------------------------------------------------------- play
def add_play_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "play",
        help="play an environment in the terminal",
        description="Play an environment: type a command at the prompt; 'hint' asks the expert for its next "
        "move, 'quit' ends. With --expert the expert plays the whole episode.",
    )
    p.add_argument("env_id", help="environment id, e.g. hiergym/Sokoban-v0 (see `hiergym list`)")
    p.add_argument("--seed", type=int, default=0, help="task seed (default 0)")
    p.add_argument("--split", default="train", help="task split: train, eval_in or eval_out")
    p.add_argument("--expert", action="store_true", help="let the built-in expert play and show its moves")
    p.add_argument("--env-arg", action="append", metavar="K=V", help="environment argument, repeatable")
    p.set_defaults(func=run_play)


def _print_state(obs: str, info: dict[str, Any]) -> None:
    print(obs)
    actions = info.get("admissible_actions")
    if actions:
        shown = actions if len(actions) <= 40 else [*actions[:40], f"... ({len(actions) - 40} more)"]
        print("admissible actions: " + ", ".join(shown))


def run_play(args: argparse.Namespace) -> int:
    env = make_env(args.env_id, args.env_arg)
    obs, info = env.reset(seed=args.seed, options={"split": args.split})
    if info.get("task"):
        print(f"task: {info['task']}")
    _print_state(obs, info)
    total, steps = 0.0, 0
    plan: list[str] = []
    while True:
        if args.expert:
            if not plan:
                plan = list(env.unwrapped.expert_plan() or [])
                if not plan:
                    print("the expert has no plan from this state")
                    break
            action = plan.pop(0)
            print(f"> {action}")
        else:
            try:
                action = input("> ")
            except EOFError:
                print()
                break
            if action.strip().lower() in {"quit", "exit", "q"}:
                break
            if action.strip().lower() == "hint":
                plan = list(env.unwrapped.expert_plan() or [])
                print(f"expert: {plan[0] if plan else '(no plan from here)'}")
                continue
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        steps += 1
        _print_state(obs, info)
        print(f"reward {float(reward):+.2f}  (total {total:+.2f})" + ("" if info.get("action_valid", True)
                                                                     else "  [invalid action]"))
        if terminated or truncated:
            break
    outcome = "won" if info.get("won") else "not won"
    print(f"episode over after {steps} steps: {outcome}, return {total:+.2f}")
    env.close()
    return 0


# --------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hiergym", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"hiergym {hiergym.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for target in SUBCOMMANDS.values():
        module_name, _, function = target.partition(":")
        getattr(importlib.import_module(module_name), function)(subparsers)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, except that KEY=VALUE overrides may also follow an option
    (``train --out DIR iterations=5``), which argparse alone does not gather into the positional list."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        takes_overrides = isinstance(getattr(args, "overrides", None), list)
        if takes_overrides and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CliError, UnknownEnvironmentError, ValueError, FileNotFoundError) as exc:
        print(f"hiergym {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
