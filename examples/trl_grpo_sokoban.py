"""A few GRPO steps of TRL's ``GRPOTrainer`` on hiergym's Sokoban, multi-turn, on a CPU, fully offline.

The model is hiergym's built-in ``tiny`` model (a small ``LlamaForCausalLM`` with a byte-level tokenizer, both
built in code) or a checkpoint of it (``--model DIR``, e.g. ``runs/sokoban/checkpoint/model`` from
``hiergym train``). Episodes are played by :class:`hiergym.integrations.trl.MultiTurnRollout` in the compact
prompt style the tiny model is behaviour-cloned on; the reward is the episode's return.

    pip install -e ".[trl]"
    python examples/trl_grpo_sokoban.py --steps 2 --out /tmp/trl-sokoban

A fresh (untrained) model writes no valid action, so every rollout of a group gets the same return and
GRPO's advantages are zero: the run shows the plumbing, not learning. Start from a behaviour-cloned
checkpoint (``--model``) for a signal.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--model", default=None, help="a tiny checkpoint directory (default: a fresh tiny model)")
    parser.add_argument("--steps", type=int, default=2, help="GRPO optimizer steps")
    parser.add_argument("--tasks", type=int, default=8, help="Sokoban rooms in the training set")
    parser.add_argument("--group-size", type=int, default=2, help="rollouts per room (num_generations)")
    parser.add_argument("--batch-size", type=int, default=4, help="rollouts per optimizer step")
    parser.add_argument("--max-turns", type=int, default=3, help="actions per episode")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="longest model turn (tokens = bytes)")
    parser.add_argument("--max-completion-length", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output directory (default: a temporary one)")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the example; returns the trainer's last logged metrics and the number of rollouts played."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in TRL 1.x

    import torch
    from trl import GRPOConfig, GRPOTrainer

    from hiergym.agents.policy import CausalLMPolicy
    from hiergym.integrations.trl import MultiTurnRollout, episode_return_reward, success_reward, task_dataset

    torch.set_num_threads(1)
    policy = CausalLMPolicy.tiny(args.model, seed=args.seed, device="cpu")
    model, tokenizer = policy.model, policy.tokenizer
    model.train()

    dataset = task_dataset("hiergym/Sokoban-v0", "train", num_tasks=args.tasks, instructions="",
                           env_kwargs={"end_on_dead_end": True})
    rollout = MultiTurnRollout(style="compact", max_turns=args.max_turns, max_new_tokens=args.max_new_tokens)
    played: list[int] = []

    def counted_rollout(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        out = rollout(prompts, trainer)
        played.append(len(prompts))
        return out

    with tempfile.TemporaryDirectory() as scratch:
        config = GRPOConfig(
            output_dir=args.out or scratch,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            num_generations=args.group_size,
            max_completion_length=args.max_completion_length,
            learning_rate=args.learning_rate,
            temperature=1.0,
            beta=0.0,  # no reference model: one model in memory
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            bf16=False,
            gradient_checkpointing=False,
            use_cpu=True,
            dataloader_num_workers=0,
            seed=args.seed,
            disable_tqdm=True,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[episode_return_reward, success_reward],
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            rollout_func=counted_rollout,
        )
        trainer.train()
        rollout.close()
        logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    last = logs[-1] if logs else {}
    print(f"{len(logs)} GRPO steps, {sum(played)} rollouts; last step: "
          + ", ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, int | float)))
    return {"metrics": last, "steps": len(logs), "rollouts": sum(played)}


if __name__ == "__main__":
    main()
