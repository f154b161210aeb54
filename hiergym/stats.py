"""The statistics of evaluations, shared by the trainer and the evaluation harness: the Wilson interval of a
success rate, the paired difference of two runs on the same episodes with McNemar's exact test, and the
aggregate numbers of a set of episode results.

Results are duck-typed (:class:`hiergym.records.EpisodeResult` or anything with the same attributes), so this
module imports nothing else from hiergym.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: The 97.5% quantile of the standard normal: two-sided 95% intervals.
Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (well-behaved at 0, 1 and small n)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At 0 and n successes the bound is exactly 0 / 1; the formula leaves a rounding error there.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def mcnemar_exact_p(gained: int, lost: int) -> float:
    """McNemar's exact two-sided test: a binomial test at 1/2 of the discordant pairs."""
    discordant = gained + lost
    tail = sum(math.comb(discordant, k) for k in range(min(gained, lost) + 1)) / 2 ** discordant
    return min(1.0, 2 * tail)


def paired_success_difference(first: Sequence[Any], second: Sequence[Any], z: float = Z95) -> dict[str, Any]:
    """Success of ``second`` minus ``first`` on the same episodes (matched by episode id), paired.

    Two runs on the same tasks differ only on *discordant* episodes (won by one, lost by the other), so the
    paired difference is far tighter than two separate intervals: ``ci95`` is the normal interval of the mean
    per-episode difference, and ``p_value`` McNemar's exact two-sided test (a binomial test of the discordant
    episodes at 1/2).
    """
    before = {r.episode: bool(r.success) for r in first}
    after = {r.episode: bool(r.success) for r in second}
    common = sorted(before.keys() & after.keys())
    n = len(common)
    gained = sum(after[e] and not before[e] for e in common)
    lost = sum(before[e] and not after[e] for e in common)
    if n == 0:
        return {"pairs": 0, "gained": 0, "lost": 0, "difference": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0}
    difference = (gained - lost) / n
    variance = (gained + lost) / n - difference ** 2
    half = z * math.sqrt(max(variance, 0.0) / n)
    return {"pairs": n, "gained": gained, "lost": lost, "difference": difference,
            "ci95": [difference - half, difference + half], "p_value": mcnemar_exact_p(gained, lost)}


def paired_mean_difference(first: dict[Any, float], second: dict[Any, float], z: float = Z95) -> dict[str, Any]:
    """Mean of ``second[k] - first[k]`` over the keys both have (e.g. a game's payoff before and after training,
    the same game in both), with the normal 95% interval of the mean difference and its two-sided p-value."""
    common = sorted(first.keys() & second.keys())
    n = len(common)
    if n == 0:
        return {"pairs": 0, "difference": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0}
    diffs = [float(second[k]) - float(first[k]) for k in common]
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    se = sd / math.sqrt(n)
    if se == 0:
        p_value = 1.0 if mean == 0 else 0.0
    else:
        p_value = math.erfc(abs(mean / se) / math.sqrt(2))
    return {"pairs": n, "difference": mean, "ci95": [mean - z * se, mean + z * se], "p_value": p_value}


def aggregate_results(results: Sequence[Any]) -> dict[str, Any]:
    """Success with its Wilson interval, returns, steps, invalid actions, tokens and tool calls of a set of
    episodes. Episodes that errored (``error`` set: the agent or the env failed, so the task was never really
    played) are counted apart: ``episodes`` counts all, ``errors`` those, and every rate and mean is over the
    ``episodes_ran`` others."""
    ran = [r for r in results if r.error is None]
    n = len(ran)
    errors = len(results) - n
    if n == 0:
        return {"episodes": len(results), "episodes_ran": 0, "errors": errors}
    wins = sum(r.success for r in ran)
    low, high = wilson_interval(wins, n)
    steps = sum(r.steps for r in ran)
    returns = [r.total_reward for r in ran]
    mean_return = sum(returns) / n
    tool = [r.tool_calls for r in ran if r.tool_calls is not None]
    cost = [r.cost for r in ran if r.cost is not None]
    return {
        "episodes": len(results),
        "episodes_ran": n,
        "successes": wins,
        "success_rate": wins / n,
        "success_ci95": [low, high],
        "mean_return": mean_return,
        "std_return": math.sqrt(sum((x - mean_return) ** 2 for x in returns) / n),
        "mean_steps": steps / n,
        "invalid_action_rate": (sum(r.invalid_actions for r in ran) / steps) if steps else 0.0,
        "parse_error_rate": (sum(r.parse_errors for r in ran) / steps) if steps else 0.0,
        "tokens_per_episode": sum(r.prompt_tokens + r.response_tokens for r in ran) / n,
        "response_tokens_per_episode": sum(r.response_tokens for r in ran) / n,
        "generations_per_episode": sum(r.generations for r in ran) / n,
        "planner_generations_per_episode": sum(r.planner_generations for r in ran) / n,
        "tool_calls_per_episode": (sum(tool) / len(tool)) if tool else None,
        "cost_per_episode": (sum(cost) / len(cost)) if cost else None,
        "truncated": sum(r.truncated for r in ran),
        "errors": errors,
    }


#: The run settings a summary repeats (so runs can be compared, and paired when they played the same tasks).
SUMMARY_CONFIG_KEYS = ("env", "env_args", "agent", "agent_args", "split", "seed", "label")


def summarize(results: Sequence[Any], *, config: dict[str, Any] | None = None,
              wall_time_s: float = 0.0) -> dict[str, Any]:
    """The summary of a run: overall numbers, per task type, and a few error messages."""
    summary: dict[str, Any] = {}
    if config:
        summary.update({k: config.get(k) for k in SUMMARY_CONFIG_KEYS})
    summary.update(aggregate_results(results))
    summary["wall_time_s"] = round(wall_time_s, 3)
    summary["episodes_per_s"] = round(len(results) / wall_time_s, 4) if wall_time_s > 0 else None
    types = sorted({r.task_type for r in results if r.task_type is not None})
    summary["by_task_type"] = {t: aggregate_results([r for r in results if r.task_type == t]) for t in types}
    errors = [f"episode {r.episode}: {r.error}" for r in results if r.error]
    summary["error_examples"] = errors[:5]
    return summary
