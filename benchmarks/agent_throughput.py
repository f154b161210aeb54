"""How much batched acting buys: LLM generation and whole evaluation runs, batched against one at a time.

Prints, in one process on the same prompts and tasks:

1. generation throughput of a policy (``tiny`` by default, or ``--model hf:PATH``): new tokens per second for
   ``--prompts`` Sokoban prompts generated one prompt per call against one batched call (and their ratio);
2. the evaluation harness with the tiny LLM agent on Sokoban: episodes per second with ``batch_size=1``
   against ``batch_size=--batch`` (and their ratio), plus the random and expert agents' steps per second.

    python -m hiergym.benchmarks.agent_throughput [--prompts 16] [--new-tokens 24] [--episodes 16]
"""

from __future__ import annotations

import argparse
import time


def sokoban_prompts(count: int, style: str) -> list[str]:
    import gymnasium as gym

    import hiergym  # noqa: F401
    from hiergym.agents.prompts import executor_prompt

    env = gym.make("hiergym/Sokoban-v0")
    prompts = []
    for task_id in range(count):
        obs, info = env.reset(seed=task_id, options={"split": "eval_in", "task_id": task_id})
        prompts.append(executor_prompt(family="sokoban", style=style, task=info["task"], observation=obs,
                                       admissible=info["admissible_actions"]))
    return prompts


def generation_throughput(policy, prompts: list[str], new_tokens: int) -> tuple[float, float]:
    """(tokens/s one prompt per call, tokens/s one batched call); greedy, no stop string, fixed length."""
    policy.generate(prompts[:2], max_new_tokens=4, temperature=0)  # warm-up
    start = time.perf_counter()
    single = sum(len(policy.generate([p], max_new_tokens=new_tokens, temperature=0)[0].response_token_ids)
                 for p in prompts)
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    batched = sum(len(c.response_token_ids)
                  for c in policy.generate(prompts, max_new_tokens=new_tokens, temperature=0))
    batched_s = time.perf_counter() - start
    return single / single_s, batched / batched_s


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny, tiny:DIR or hf:PATH (default tiny)")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from hiergym.agents.spec import load_backend
    from hiergym.benchmarks.harness import evaluate

    policy = load_backend(args.model)
    style = "compact" if args.model.startswith("tiny") else "full"
    prompts = sokoban_prompts(args.prompts, style)
    print(f"model {args.model} ({policy.num_parameters() / 1e6:.2f}M parameters) on {policy.device}; "
          f"{len(prompts)} Sokoban prompts ({style}, ~{sum(map(len, prompts)) // len(prompts)} characters), "
          f"{args.new_tokens} new tokens each")
    single, batched = generation_throughput(policy, prompts, args.new_tokens)
    print(f"generation: {single:8.1f} tokens/s one prompt per call | {batched:8.1f} tokens/s batched "
          f"| x{batched / single:.1f}")

    common = {"episodes": args.episodes, "max_steps": args.max_steps, "progress": False, "split": "eval_in"}
    runs = {}
    for batch_size in (1, args.batch):
        start = time.perf_counter()
        summary = evaluate("hiergym/Sokoban-v0", args.model, batch_size=batch_size, **common)
        runs[batch_size] = (summary, time.perf_counter() - start)
    (one, t_one), (many, t_many) = runs[1], runs[args.batch]
    print(f"harness, {args.model} agent: {args.episodes / t_one:6.2f} episodes/s with batch_size=1 | "
          f"{args.episodes / t_many:6.2f} with batch_size={args.batch} | x{t_one / t_many:.1f} "
          f"({one['mean_steps']:.0f} steps, {one['tokens_per_episode']:.0f} tokens per episode; return "
          f"{one['mean_return']:.2f} vs {many['mean_return']:.2f} batched)")
    for agent in ("random", "expert"):
        start = time.perf_counter()
        summary = evaluate("hiergym/Sokoban-v0", agent, episodes=50, progress=False, split="eval_in")
        elapsed = time.perf_counter() - start
        print(f"harness, {agent} agent: {50 * summary['mean_steps'] / elapsed:8.0f} steps/s, "
              f"{50 / elapsed:6.1f} episodes/s, success {summary['success_rate']:.0%}")


if __name__ == "__main__":
    main()
