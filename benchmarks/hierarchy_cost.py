"""What the hierarchy costs: prompt tokens per decision and seconds per RL iteration, flat against hierarchical.

    python -m hiergym.benchmarks.hierarchy_cost                          # the ALFWorld and WebShop presets
    python -m hiergym.benchmarks.hierarchy_cost --envs alfworld --episodes 50 --iterations 2
    python -m hiergym.benchmarks.hierarchy_cost --envs sokoban-7x7     # the learning benchmark's 7x7, two boxes
    python -m hiergym.benchmarks.hierarchy_cost --envs sokoban-7x7 --set tokenizer=env

1. **Prompt tokens per decision**, on identical environment trajectories: the env's expert played through the
   flat agent and through the hierarchical one (``ExpertDemonstrator``: each agent builds its own prompts with
   its own memory; the hierarchical one plans at the expert's subgoals), every prompt tokenized with one
   tokenizer fitted to both agents' text. Executor and planner decisions apart, and all decisions together.
2. **Seconds per RL iteration**: each agent's preset (``alfworld`` / ``alfworld-hierarchical``, ...) from the same
   fresh tiny model, the preset's behaviour cloning (``--sft-steps N``: N steps instead), then ``--iterations``
   RL iterations on the preset's batch; the rollout and update seconds from the run's metrics, and their ratio
   hierarchical / flat.
   ``--set key=value`` (repeatable) overrides a training option of both agents' runs (``tokenizer=env``).
   Fewer cloning steps are quicker but mislead: a model cloned for 100 steps rarely ends its answers, so its
   decodes run to ``max_new_tokens`` (Sokoban 7x7: 2.1x hierarchical / flat after 100 steps, 4.7x after the
   preset's 600); the preset's cloning gives the answers the runs really generate.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hiergym.benchmarks.learning import ENV_SETTINGS

PRESETS = {"alfworld": ("alfworld", "alfworld-hierarchical"), "webshop": ("webshop", "webshop-hierarchical"),
           "sokoban": ("sokoban", "sokoban-hierarchical"), "sokoban-7x7": ("sokoban", "sokoban-hierarchical")}
#: Settings on top of the presets: the learning benchmark's (``sokoban-7x7``: two boxes, where planning matters).
OVERRIDES: dict[str, dict[str, Any]] = {env: ENV_SETTINGS[env]["overrides"]
                                        for env in PRESETS if env in ENV_SETTINGS}


def prompt_tokens(env: str, episodes: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """Mean prompt tokens per decision of each agent on the same expert episodes."""
    from hiergym.agents.tiny import build_text_tokenizer
    from hiergym.training.config import load_config
    from hiergym.training.demonstrations import expert_demonstrations
    from hiergym.training.trainer import build_agent

    demos = {}
    for agent, preset in zip(("flat", "hierarchical"), PRESETS[env], strict=True):
        config = load_config(preset, overrides=OVERRIDES.get(env, {}))
        demos[agent], _ = expert_demonstrations(config.env_id, build_agent(config, None, temperature=0.0),
                                                episodes=episodes, seed=seed, split="train",
                                                env_kwargs=config.env_kwargs, max_steps=config.max_episode_steps)
    tokenizer = build_text_tokenizer([t for ds in demos.values() for d in ds for t in (d.prompt, d.response)],
                                     load_config(PRESETS[env][0]).tokenizer_vocab_size)
    out = {}
    for agent, ds in demos.items():
        lengths = {level: [len(tokenizer(d.prompt)["input_ids"]) for d in ds if d.level == level]
                   for level in ("executor", "planner")}
        every = lengths["executor"] + lengths["planner"]
        out[agent] = {"decisions": len(every), "executor_decisions": len(lengths["executor"]),
                      "planner_decisions": len(lengths["planner"]),
                      "executor": float(np.mean(lengths["executor"])),
                      "planner": float(np.mean(lengths["planner"])) if lengths["planner"] else float("nan"),
                      "per_decision": float(np.mean(every)),
                      "per_env_step": float(np.sum(every) / max(len(lengths["executor"]), 1))}
    return out


def iteration_seconds(env: str, iterations: int, sft_steps: int | None = None, seed: int = 0,
                      overrides: dict[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """Rollout and update seconds per RL iteration of each agent's preset (with ``overrides`` on both), from
    the same fresh model, cloned for the preset's ``sft_steps`` (or ``sft_steps``)."""
    from hiergym.training.config import load_config
    from hiergym.training.trainer import Trainer

    cloning = {"sft_steps": sft_steps} if sft_steps is not None else {}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for agent, preset in zip(("flat", "hierarchical"), PRESETS[env], strict=True):
            config = load_config(preset, overrides={
                **OVERRIDES.get(env, {}), "iterations": iterations, **cloning, "eval_episodes": 1,
                "eval_out_episodes": 0, "eval_every": 0, "seed": seed, "progress": False,
                "out_dir": str(Path(tmp) / agent), **(overrides or {})})
            Trainer(config).run()
            rows = [json.loads(line) for line in (Path(tmp) / agent / "metrics.jsonl").read_text().splitlines()]
            rl = [r for r in rows if r.get("phase") == "rl"]
            out[agent] = {"rollout_seconds": float(np.mean([r["rollout_seconds"] for r in rl])),
                          "update_seconds": float(np.mean([r["update_seconds"] for r in rl])),
                          "env_steps": float(np.mean([r["env_steps"] for r in rl])),
                          "generated_tokens": float(np.mean([r["generated_tokens"] for r in rl])),
                          "prompt_tokens": float(np.mean([r["prompt_tokens"] for r in rl]))}
            out[agent]["seconds"] = out[agent]["rollout_seconds"] + out[agent]["update_seconds"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=["alfworld", "webshop"], choices=list(PRESETS))
    parser.add_argument("--episodes", type=int, default=50, help="expert episodes for the prompt lengths")
    parser.add_argument("--iterations", type=int, default=2, help="RL iterations timed per agent (0: skip)")
    parser.add_argument("--sft-steps", type=int, default=None, help="behaviour-cloning steps before the timed "
                        "iterations (default: the preset's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a training option for both agents' timed runs (repeatable), e.g. tokenizer=env")
    parser.add_argument("--out", default="", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    from hiergym.training.config import load_config, parse_overrides

    try:
        overrides = parse_overrides(args.set)
        for preset in {p for env in args.envs for p in PRESETS[env]}:
            load_config(preset, overrides=overrides)
    except ValueError as exc:
        parser.error(str(exc))

    import torch

    torch.set_num_threads(1)
    figures: dict[str, Any] = {}
    for env in args.envs:
        tokens = prompt_tokens(env, args.episodes)
        figures[env] = {"prompt_tokens": tokens}
        print(f"\n{env}: prompt tokens per decision on the same {args.episodes} expert episodes")
        print(f"{'agent':<14}{'executor':>10}{'planner':>10}{'per decision':>14}{'per env step':>14}{'decisions':>11}")
        for agent, row in tokens.items():
            print(f"{agent:<14}{row['executor']:>10.1f}{row['planner']:>10.1f}{row['per_decision']:>14.1f}"
                  f"{row['per_env_step']:>14.1f}{row['decisions']:>11}")
        if args.iterations:
            seconds = iteration_seconds(env, args.iterations, args.sft_steps, overrides=overrides)
            figures[env]["iteration_seconds"] = seconds
            cloning = f"{args.sft_steps} BC steps" if args.sft_steps is not None else "the preset's BC steps"
            print(f"{env}: seconds per RL iteration (mean of {args.iterations}, same fresh model, "
                  f"{cloning}{''.join(f', {item}' for item in args.set)})")
            for agent, row in seconds.items():
                print(f"{agent:<14}rollout {row['rollout_seconds']:6.1f}  update {row['update_seconds']:6.1f}  "
                      f"total {row['seconds']:6.1f}  ({row['env_steps']:.0f} env steps, "
                      f"{row['prompt_tokens']:.0f} prompt tokens, {row['generated_tokens']:.0f} generated)")
            ratio = seconds["hierarchical"]["seconds"] / seconds["flat"]["seconds"]
            figures[env]["hierarchical_over_flat"] = ratio
            print(f"hierarchical / flat: {ratio:.2f}x per iteration")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
