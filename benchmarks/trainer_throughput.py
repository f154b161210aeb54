"""Trainer throughput: rollout generation through the cached path against plain ``model.generate`` on the same
calls, the prompt tokens it computes, and the packed update against the unpacked one, in one process.

    python -m hiergym.benchmarks.trainer_throughput                               # CPU: the preset's tiny model
    python -m hiergym.benchmarks.trainer_throughput --sft-steps 600               # ... cloned first (short answers)
    python -m hiergym.benchmarks.trainer_throughput --architecture qwen2.5-0.5b --device cuda   # real size
    python -m hiergym.benchmarks.trainer_throughput --nproc 2          # world size 2 against 1 (torchrun)

The model is the built-in byte-level Llama at the chosen architecture (``tiny``: the ``sokoban`` preset's
120k parameters; ``qwen2.5-0.5b``: Qwen2.5-0.5B's hidden size, layers, heads and grouped KV heads with the byte
vocabulary, about 360M parameters), randomly initialised, or any local model with ``--model`` (``tiny:DIR``
for a trained checkpoint). With ``--sft-steps N`` the trainer behaviour-clones it first, as the ``sokoban``
preset does (600 steps), so the batches are the default run's (short answers that stop); without, an untrained
model's answers run to ``--max-new-tokens``. The trainer runs ``--iterations`` RL iterations of the ``sokoban``
preset (``--tasks`` x ``--group`` rollouts) with its default paths (cached generation, packed update) and
prints per iteration the rollout's generated tokens/s (env steps, prompts and log-probs included), the prompt
tokens the rollout computed against those its prompts hold, and the update's forwarded tokens per trained token.

Then, on one more batch from the same policy, the comparisons, each on identical inputs:

- generation: every ``generate`` call of that rollout replayed through ``generation="plain"`` (``model.generate``)
  and ``"cached"`` (a fresh prefix cache, as after an update), call by call interleaved, ``--repeats`` times
  (each call's fastest time counts): generated tokens/s of each, the ratio, whether they sampled the same
  tokens, and the prompt tokens computed against seen;
- update: ``policy_update`` (``--mini-batches`` optimizer steps, learning rate 0) on that batch's rows, packed and
  unpacked: trained (response) tokens/s and forwarded tokens per trained token; and, as before, a plain
  forward/backward (next-token loss, no optimizer) over the batch's distinct sequences in micro-batches.
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


def record_generate_calls(policy) -> list[tuple[list, dict, list]]:
    """Wrap ``policy.generate`` so that every call's prompts, arguments and completions are kept (in the returned
    list; ``del policy.generate`` unwraps it)."""
    calls: list[tuple[list, dict, list]] = []
    original = policy.generate

    def generate(prompts, **kwargs):
        out = original(prompts, **kwargs)
        calls.append((list(prompts), dict(kwargs), out))
        return out

    policy.generate = generate
    return calls


def replay_generation(policy, calls, repeats: int) -> dict[str, dict[str, Any]]:
    """Every recorded call through ``generation="plain"`` and ``"cached"``, call by call interleaved (the cached
    path's prefix cache starts empty and carries over between the calls, as in a rollout after an update), the
    whole sequence ``repeats`` times; each call counts with its fastest time, so that a busy machine's spikes
    fall out. Returns per path: tokens/s, seconds, the completions and the prompt-token counters."""
    mode = policy.generation
    best = {"plain": [float("inf")] * len(calls), "cached": [float("inf")] * len(calls)}
    samples: dict[str, list] = {}
    stats: dict[str, dict[str, int]] = {}
    for _ in range(max(1, repeats)):
        policy.prefix_cache.clear()
        counters = {"plain": {}, "cached": {}}
        outs: dict[str, list] = {"plain": [], "cached": []}
        for k, (prompts, kwargs, _) in enumerate(calls):
            for path in ("plain", "cached"):
                policy.generation = path
                policy.generation_stats = counters[path]
                _synchronize(policy.device)
                began = time.perf_counter()
                outs[path].append(policy.generate(prompts, **kwargs))
                _synchronize(policy.device)
                best[path][k] = min(best[path][k], time.perf_counter() - began)
        samples, stats = outs, counters
    policy.generation = mode
    generated = sum(len(o.response_token_ids) for _, _, outs_ in calls for o in outs_)
    return {path: {"tokens_per_s": generated / sum(best[path]), "seconds": sum(best[path]),
                   "samples": samples[path], "stats": stats[path]} for path in ("plain", "cached")}


def update_comparison(policy, records, *, temperature: float, mini_batches: int, micro_batch_size: int,
                      packed: bool) -> dict[str, float]:
    """One ``policy_update`` on the batch's rows (random advantages, learning rate 0): trained tokens/s and
    forwarded tokens per trained token."""
    import random

    import torch

    from hiergym.training.optimize import TrainSequence, policy_update

    rng = random.Random(0)
    sequences = [TrainSequence(r.prompt_token_ids, r.response_token_ids, r.response_logprobs, rng.gauss(0, 1),
                               temperature=temperature if temperature > 0 else 1.0)
                 for r in records if r.response_token_ids]
    optimizer = torch.optim.SGD(policy.model.parameters(), lr=0.0)
    _synchronize(policy.device)
    began = time.perf_counter()
    summary = policy_update(policy, optimizer, sequences, mini_batches=mini_batches,
                            micro_batch_size=micro_batch_size, rng=random.Random(0), packed=packed)
    _synchronize(policy.device)
    seconds = time.perf_counter() - began
    return {"tokens_per_s": summary["tokens"] / seconds, "seconds": seconds,
            "forward_per_token": summary["forward_tokens"] / summary["tokens"]}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", choices=list(ARCHITECTURES), default="tiny")
    parser.add_argument("--model", default=None, help="a local Hugging Face model (or tiny:DIR) instead of "
                        "--architecture")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--iterations", type=int, default=3, help="RL iterations (the first is a warm-up)")
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=8, help="env steps per episode")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--micro-batch-size", type=int, default=32)
    parser.add_argument("--mini-batches", type=int, default=1, help="optimizer steps per batch (the preset: 2)")
    parser.add_argument("--sft-steps", type=int, default=0, help="behaviour-clone first, as the preset does "
                        "(600 steps on --sft-episodes expert episodes); 0: an untrained model")
    parser.add_argument("--sft-episodes", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="replays of the generation comparison (each call "
                        "counts with its fastest time)")
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
        "sft_episodes": args.sft_episodes if args.sft_steps else 0, "sft_steps": args.sft_steps,
        "iterations": args.iterations, "num_tasks": args.tasks, "group_size": args.group,
        "max_episode_steps": args.max_steps, "max_new_tokens": args.max_new_tokens, "device": args.device,
        "micro_batch_size": args.micro_batch_size, "mini_batches": args.mini_batches, "progress": False,
        "out_dir": tempfile.mkdtemp(prefix="hiergym-throughput-"), "checkpoint_every": 10**9}
    if args.model:
        overrides["model"] = args.model
    else:
        overrides["model_architecture"] = ARCHITECTURES[args.architecture]
    trainer = Trainer(load_config("sokoban", overrides=overrides))
    policy = trainer.policy
    cfg = trainer.config
    if args.sft_steps:
        trainer.behaviour_clone()
    name = args.model or args.architecture
    dtype = next(policy.model.parameters()).dtype
    start = f"behaviour-cloned ({args.sft_steps} steps)" if args.sft_steps else "untrained"
    print(f"model: {name}, {policy.num_parameters() / 1e6:.1f}M parameters, {dtype} on {policy.device}; "
          f"{args.tasks} tasks x {args.group} rollouts, {args.max_steps} steps, up to {args.max_new_tokens} "
          f"new tokens per step; {start}"
          f"; generation {policy.generation_mode()}")
    print(f"{'iteration':>9} {'rows':>6} {'rollout s':>10} {'gen tok/s':>10} {'prompt computed/seen':>21} "
          f"{'update s':>9} {'fwd/trained':>12}")
    rows = []
    for iteration in range(args.iterations):
        policy.generation_stats = {}
        m = trainer.train_iteration(iteration)
        stats = policy.generation_stats
        row = {"generate": m["generated_tokens"] / m["rollout_seconds"],
               "update": m["update_forward_tokens"] / m["update_seconds"]}
        rows.append(row)
        computed = f"{stats.get('prompt_tokens_computed', 0)}/{stats.get('prompt_tokens_seen', 0)}"
        print(f"{iteration + 1:>9} {m['rows']:>6} {m['rollout_seconds']:>10.2f} {row['generate']:>10.0f} "
              f"{computed:>21} {m['update_seconds']:>9.2f} "
              f"{m['update_forward_tokens'] / max(m['update_tokens'], 1):>12.2f}")
    measured = rows[1:] or rows  # the first iteration pays for warm-up
    trainer_rates = {k: float(np.mean([r[k] for r in measured])) for k in ("generate", "update")}

    # The comparisons run on the calls, prompts and sequences of one more batch from the same policy.
    calls = record_generate_calls(policy)
    rollout = collect_rollouts(trainer.train_vec, build_agent(cfg, policy, cfg.temperature))
    del policy.generate
    replays = replay_generation(policy, calls, args.repeats)
    plain, cached = replays["plain"], replays["cached"]
    pairs = [(a.response_token_ids, b.response_token_ids) for ca, cb in zip(plain["samples"], cached["samples"],
                                                                            strict=True)
             for a, b in zip(ca, cb, strict=True)]
    differing = sum(a != b for a, b in pairs)
    seen = cached["stats"].get("prompt_tokens_seen", 0)
    computed = cached["stats"].get("prompt_tokens_computed", 0)
    updates = {packed: update_comparison(policy, rollout.records, temperature=cfg.temperature,
                                         mini_batches=args.mini_batches, micro_batch_size=args.micro_batch_size,
                                         packed=packed) for packed in (False, True)}
    distinct = {(tuple(r.prompt_token_ids), tuple(r.response_token_ids)): None
                for r in rollout.records if r.response_token_ids}
    baseline = {"generate": plain_generate(policy, [r.prompt_token_ids for r in rollout.records],
                                           args.max_new_tokens),
                "update": plain_forward_backward(policy, [list(p + r) for p, r in distinct], args.micro_batch_size)}
    trainer.train_vec.close()
    shutil.rmtree(trainer.out, ignore_errors=True)

    ratio = cached["tokens_per_s"] / plain["tokens_per_s"]
    print(f"\nthe same {len(calls)} generate calls ({len(pairs)} prompts, {sum(len(a) for a, _ in pairs)} tokens "
          f"generated), replayed {args.repeats}x, call by call interleaved, each call's fastest time:")
    print(f"{'':<44}{'cached':>10}{'plain':>10}{'ratio':>8}")
    print(f"{'generation (tokens/s)':<44}{cached['tokens_per_s']:>10.0f}{plain['tokens_per_s']:>10.0f}{ratio:>8.2f}"
          f"   (plain: model.generate; {'same samples' if not differing else f'{differing} samples differ'})")
    print(f"{'prompt tokens computed / seen':<44}{computed:>10}{seen:>10}{computed / max(seen, 1):>8.3f}")
    print(f"\nthe update on that batch ({args.mini_batches} optimizer step(s), micro-batches of "
          f"{args.micro_batch_size}):")
    print(f"{'':<44}{'packed':>10}{'unpacked':>10}{'ratio':>8}")
    print(f"{'update (trained tokens/s)':<44}{updates[True]['tokens_per_s']:>10.0f}"
          f"{updates[False]['tokens_per_s']:>10.0f}{updates[True]['tokens_per_s'] / updates[False]['tokens_per_s']:>8.2f}")
    print(f"{'update forward tokens per trained token':<44}{updates[True]['forward_per_token']:>10.2f}"
          f"{updates[False]['forward_per_token']:>10.2f}"
          f"{updates[True]['forward_per_token'] / updates[False]['forward_per_token']:>8.2f}")
    print(f"\n{'':<44}{'trainer':>10}{'plain':>10}{'ratio':>8}")
    for key, label, what in (("generate", "rollout generation (tokens/s)", "generate, fixed length"),
                             ("update", "update (tokens/s through the model)", "fwd/bwd")):
        print(f"{label:<44}{trainer_rates[key]:>10.0f}{baseline[key]:>10.0f}"
              f"{trainer_rates[key] / baseline[key]:>8.2f}   (plain: {what})")
    return {**{f"trainer_{k}": v for k, v in trainer_rates.items()}, **{f"plain_{k}": v for k, v in baseline.items()},
            "cached_generate_replay": cached["tokens_per_s"], "plain_generate_replay": plain["tokens_per_s"],
            "generate_ratio": ratio, "differing_samples": float(differing),
            "prompt_tokens_seen": float(seen), "prompt_tokens_computed": float(computed),
            "packed_update": updates[True]["tokens_per_s"], "unpacked_update": updates[False]["tokens_per_s"],
            "packed_forward_per_token": updates[True]["forward_per_token"],
            "unpacked_forward_per_token": updates[False]["forward_per_token"]}


if __name__ == "__main__":
    main()
