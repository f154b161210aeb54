"""Trainer throughput: RL rollout and update tokens/s beside plain transformers generate and forward/backward
on the same model, prompts and sequences, in one process.

    python -m hiergym.benchmarks.trainer_throughput                               # CPU: the preset's tiny model
    python -m hiergym.benchmarks.trainer_throughput --architecture qwen2.5-0.5b --device cuda   # real size
    python -m hiergym.benchmarks.trainer_throughput --nproc 2          # world size 2 against 1 (torchrun)

The model is the built-in byte-level Llama at the chosen architecture (``tiny``: the ``sokoban`` preset's
120k parameters; ``qwen2.5-0.5b``: Qwen2.5-0.5B's hidden size, layers, heads and grouped KV heads with the byte
vocabulary, about 360M parameters), randomly initialised, or any local model with ``--model``. The trainer
runs ``--iterations`` RL iterations of the ``sokoban`` preset (``--tasks`` x ``--group`` rollouts, no
behaviour cloning, so the responses run to ``--max-new-tokens`` as an untrained model's do), and prints per
iteration:

- rollout: generated tokens/s (and prompt tokens/s) of the whole rollout: env steps, prompts and log-probs
  included;
- update: tokens/s through the model in the policy update (every distinct sequence, prompt and response, per
  epoch: forward, backward and optimizer steps);

and then the baselines on the same model: ``model.generate`` on the last batch's prompts (batched as the
policy batches them, sampling, a fixed ``--max-new-tokens``) and a plain forward/backward (next-token loss, no
optimizer) over the last batch's distinct sequences in micro-batches of the trainer's size; with the ratios
trainer / baseline.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from typing import Any

#: Named architectures of the built-in byte-level model (``TinyModelConfig`` fields).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2},
    "qwen2.5-0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                     "num_attention_heads": 14, "num_key_value_heads": 2, "rope_theta": 1000000.0},
}


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_generate(policy, prompts: list[list[int]], new_tokens: int) -> float:
    """Generated tokens/s of ``model.generate`` alone: left-padded batches of the policy's batch size,
    sampling, exactly ``new_tokens`` per prompt."""
    import torch

    from hiergym.agents.policy import pad_token_rows

    model, pad, device = policy.model, policy.tokenizer.pad_token_id, policy.device
    model.eval()
    generated, seconds = 0, 0.0
    for start in range(0, len(prompts), policy.batch_size):
        chunk = prompts[start:start + policy.batch_size]
        input_ids, attention = pad_token_rows(chunk, pad, left=True)
        width = input_ids.shape[1]
        _synchronize(device)
        began = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True,
                                 pad_token_id=pad)
        _synchronize(device)
        seconds += time.perf_counter() - began
        generated += (out.shape[1] - width) * len(chunk)
    return generated / seconds


def plain_forward_backward(policy, sequences: list[list[int]], micro_batch_size: int) -> float:
    """Tokens/s of a plain forward and backward (next-token loss) over right-padded micro-batches."""
    from hiergym.agents.policy import pad_token_rows

    model, pad, device = policy.model, policy.tokenizer.pad_token_id, policy.device
    model.train()
    tokens, seconds = 0, 0.0
    for start in range(0, len(sequences), micro_batch_size):
        chunk = sequences[start:start + micro_batch_size]
        input_ids, attention = pad_token_rows(chunk, pad)
        labels = input_ids.masked_fill(attention == 0, -100)
        _synchronize(device)
        began = time.perf_counter()
        loss = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                     labels=labels.to(device)).loss
        loss.backward()
        _synchronize(device)
        seconds += time.perf_counter() - began
        tokens += sum(len(s) for s in chunk)
    model.zero_grad(set_to_none=True)
    model.eval()
    return tokens / seconds


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", choices=list(ARCHITECTURES), default="tiny")
    parser.add_argument("--model", default=None, help="a local Hugging Face model instead of --architecture")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--iterations", type=int, default=3, help="RL iterations (the first is a warm-up)")
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=8, help="env steps per episode")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--micro-batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--nproc", type=int, default=1,
                        help="> 1: data-parallel world size N against 1 under torchrun, on the same global batch "
                        "(hiergym.benchmarks.distributed_throughput)")
    args = parser.parse_args(argv)
    if args.nproc > 1:
        from hiergym.benchmarks.distributed_throughput import main as distributed_main

        if args.model:
            parser.error("--nproc compares the built-in model's architectures only (--architecture)")
        return distributed_main(["--nproc", str(args.nproc), "--architecture", args.architecture,
                                 "--device", "cpu" if args.device == "auto" else args.device,
                                 "--iterations", str(args.iterations), "--tasks", str(args.tasks),
                                 "--group", str(args.group), "--max-steps", str(args.max_steps),
                                 "--max-new-tokens", str(args.max_new_tokens),
                                 "--micro-batch-size", str(args.micro_batch_size), "--threads", str(args.threads)])

    import numpy as np
    import torch

    from hiergym.training.config import load_config
    from hiergym.training.rollout import collect_rollouts
    from hiergym.training.trainer import Trainer, build_agent

    torch.set_num_threads(args.threads)
    overrides: dict[str, Any] = {
        "sft_episodes": 0, "iterations": args.iterations, "num_tasks": args.tasks, "group_size": args.group,
        "max_episode_steps": args.max_steps, "max_new_tokens": args.max_new_tokens, "device": args.device,
        "micro_batch_size": args.micro_batch_size, "mini_batches": 1, "progress": False,
        "out_dir": tempfile.mkdtemp(prefix="hiergym-throughput-"), "checkpoint_every": 10**9}
    if args.model:
        overrides["model"] = args.model
    else:
        overrides["model_architecture"] = ARCHITECTURES[args.architecture]
    trainer = Trainer(load_config("sokoban", overrides=overrides))
    policy = trainer.policy
    name = args.model or args.architecture
    dtype = next(policy.model.parameters()).dtype
    print(f"model: {name}, {policy.num_parameters() / 1e6:.1f}M parameters, {dtype} on {policy.device}; "
          f"{args.tasks} tasks x {args.group} rollouts, {args.max_steps} steps, up to {args.max_new_tokens} "
          "new tokens per step")
    print(f"{'iteration':>9} {'rows':>6} {'rollout s':>10} {'gen tok/s':>10} {'prompt tok/s':>13} "
          f"{'update s':>9} {'update tok/s':>13}")
    rows = []
    for iteration in range(args.iterations):
        m = trainer.train_iteration(iteration)
        row = {"generate": m["generated_tokens"] / m["rollout_seconds"],
               "prompt": m["prompt_tokens"] / m["rollout_seconds"],
               "update": m["update_forward_tokens"] / m["update_seconds"]}
        rows.append(row)
        print(f"{iteration + 1:>9} {m['rows']:>6} {m['rollout_seconds']:>10.2f} {row['generate']:>10.0f} "
              f"{row['prompt']:>13.0f} {m['update_seconds']:>9.2f} {row['update']:>13.0f}")
    measured = rows[1:] or rows  # the first iteration pays for warm-up
    trainer_rates = {k: float(np.mean([r[k] for r in measured])) for k in ("generate", "update")}

    # The baselines run on the prompts and sequences of one more batch from the same policy.
    rollout = collect_rollouts(trainer.train_vec, build_agent(trainer.config, policy, trainer.config.temperature))
    prompts = [r.prompt_token_ids for r in rollout.records]
    # The rows the update forwards: those with a response, identical (prompt, response) pairs once.
    distinct = {(tuple(r.prompt_token_ids), tuple(r.response_token_ids)): None
                for r in rollout.records if r.response_token_ids}
    baseline = {"generate": plain_generate(policy, prompts, args.max_new_tokens),
                "update": plain_forward_backward(policy, [list(p + r) for p, r in distinct], args.micro_batch_size)}
    trainer.train_vec.close()
    shutil.rmtree(trainer.out, ignore_errors=True)
    print(f"\n{'':<34}{'trainer':>10}{'plain':>10}{'ratio':>8}")
    for key, label, plain in (("generate", "rollout generation (tokens/s)", "generate"),
                              ("update", "update (tokens/s through the model)", "fwd/bwd")):
        print(f"{label:<34}{trainer_rates[key]:>10.0f}{baseline[key]:>10.0f}"
              f"{trainer_rates[key] / baseline[key]:>8.2f}   (plain: {plain})")
    return {**{f"trainer_{k}": v for k, v in trainer_rates.items()}, **{f"plain_{k}": v for k, v in baseline.items()}}


if __name__ == "__main__":
    main()
