"""Evaluation runs for people: the Markdown table of one or more run summaries, a run directory's summary, and
the bar chart of ``hiergym compare``. The numbers themselves come from :mod:`hiergym.stats`."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hiergym.records import load_results
from hiergym.stats import summarize


def _fmt(value: Any, kind: str = "float") -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "int":
        return f"{value:.0f}"
    return f"{value:.2f}" if abs(value) < 1000 else f"{value:.0f}"


def run_label(summary: dict[str, Any]) -> str:
    return summary.get("label") or f"{summary.get('agent')} @ {summary.get('env')}"


def summary_markdown(summaries: Sequence[dict[str, Any]]) -> str:
    """A Markdown table, one row per run, and a per-task-type success table when the envs have types."""
    header = ("| run | episodes | success (95% CI) | mean return | mean steps | invalid actions | tokens/ep "
              "| tool calls/ep | errors | wall time |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for s in summaries:
        ci = s.get("success_ci95") or [None, None]
        success = (f"{_fmt(s.get('success_rate'), 'pct')} ({_fmt(ci[0], 'pct')}-{_fmt(ci[1], 'pct')})"
                   if s.get("episodes") else "-")
        lines.append(
            f"| {run_label(s)} | {s.get('episodes', 0)} | {success} | {_fmt(s.get('mean_return'))} "
            f"| {_fmt(s.get('mean_steps'))} | {_fmt(s.get('invalid_action_rate'), 'pct')} "
            f"| {_fmt(s.get('tokens_per_episode'), 'int')} | {_fmt(s.get('tool_calls_per_episode'))} "
            f"| {s.get('errors', 0)} | {_fmt(s.get('wall_time_s'))} s |"
        )
    types = sorted({t for s in summaries for t in (s.get("by_task_type") or {})})
    if types:
        lines += ["", "| task type | " + " | ".join(run_label(s) for s in summaries) + " |",
                  "|---|" + "---|" * len(summaries)]
        for t in types:
            cells = []
            for s in summaries:
                part = (s.get("by_task_type") or {}).get(t)
                cells.append(f"{_fmt(part['success_rate'], 'pct')} (n={part['episodes']})"
                             if part and part.get("episodes") else "-")
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_summary(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The summary of a run directory (recomputed from ``results.jsonl`` when ``summary.json`` is missing)."""
    path = Path(directory)
    if (path / "summary.json").is_file():
        return json.loads((path / "summary.json").read_text())
    if (path / "results.jsonl").is_file():
        results = load_results(path)
        config = json.loads((path / "run.json").read_text()) if (path / "run.json").is_file() else {}
        return summarize(results, config=config)
    raise FileNotFoundError(f"{path} is not an evaluation run directory (no summary.json or results.jsonl; "
                            "make one with `hiergym eval --out DIR`)")


def compare_chart(summaries: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> bool:
    """A bar chart of success rates with their 95% intervals; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = [run_label(s) for s in summaries]
    rates = [100 * (s.get("success_rate") or 0.0) for s in summaries]
    cis = [s.get("success_ci95") or [0.0, 0.0] for s in summaries]
    errors = [[r - 100 * c[0] for r, c in zip(rates, cis, strict=True)],
              [100 * c[1] - r for r, c in zip(rates, cis, strict=True)]]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(labels) + 1.5), 3.8))
    ax.bar(range(len(labels)), rates, yerr=errors, capsize=4, color="#4C72B0")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title("success rate with 95% Wilson interval")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
