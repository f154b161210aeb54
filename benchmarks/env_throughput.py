"""Single-environment throughput: median reset time (task generation included) and steps per second.

One function per environment family (:data:`FAMILIES`) returns rows for its configurations; ``--envs`` picks
families. Where a reference implementation is importable, the same figures for it are measured in the same
process, and the table gives the ratio (reference time / hiergym time).

Sokoban (``sokoban``): for each size (6x6/1, 7x7/2, 10x10/3, 12x12/4 boxes), ``--resets`` resets of
``hiergym/Sokoban-v0`` with distinct seeds (each generates a room, proves it solvable and solves it
optimally) and ``--steps`` steps with random directions (resetting when an episode ends, resets not timed).
When gym-sokoban (0.0.6) is importable, its ``generate_room`` (the reverse-play search, retried as its
``reset`` does when a room scores zero) and its ``step`` (with its cheapest observation, ``tiny_rgb_array``)
are timed too, on up to ``--baseline-resets`` rooms or ``--baseline-budget`` seconds per size. gym-sokoban
needs the old ``gym`` and ``pkg_resources``; to keep them out of the project's environment::

    pip install --target /tmp/gym-sokoban-site --no-deps gym-sokoban==0.0.6 gym==0.26.2 gym_notices \\
        imageio pillow "setuptools<70"
    PYTHONPATH=/tmp/gym-sokoban-site python -m hiergym.benchmarks.env_throughput --envs sokoban

Without it the baseline rows say why they were skipped.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

import hiergym  # noqa: F401  (registers the environments)

SOKOBAN_SIZES: tuple[tuple[tuple[int, int], int], ...] = (((6, 6), 1), ((7, 7), 2), ((10, 10), 3), ((12, 12), 4))
DIRECTIONS = ("up", "down", "left", "right")


@dataclass
class Row:
    family: str
    config: str
    implementation: str
    reset_ms_median: float | None
    reset_ms_p90: float | None
    steps_per_s: float | None
    resets: int = 0
    note: str = ""


# --------------------------------------------------------------------------------------------- sokoban
def bench_sokoban(args: argparse.Namespace) -> list[Row]:
    baseline, why_not = _import_gym_sokoban()
    rows = []
    for dim, boxes in SOKOBAN_SIZES:
        config = f"{dim[0]}x{dim[1]}, {boxes} box{'es' if boxes > 1 else ''}"
        rows.append(_bench_hiergym_sokoban(config, dim, boxes, args))
        if baseline is None:
            rows.append(Row("sokoban", config, "gym-sokoban", None, None, None, note=f"skipped: {why_not}"))
        else:
            rows.append(_bench_gym_sokoban(baseline, config, dim, boxes, args))
    return rows


def _bench_hiergym_sokoban(config: str, dim: tuple[int, int], boxes: int, args: argparse.Namespace) -> Row:
    env = gym.make("hiergym/Sokoban-v0", dim_room=dim, num_boxes=boxes)
    reset_times, lengths = [], []
    for seed in range(args.resets):
        start = time.perf_counter()
        _, info = env.reset(seed=seed)
        reset_times.append(time.perf_counter() - start)
        lengths.append(info["optimal_solution_length"])
    rng = np.random.default_rng(0)
    actions = [DIRECTIONS[i] for i in rng.integers(0, 4, size=args.steps)]
    env.reset(seed=0)
    elapsed = 0.0
    for action in actions:
        start = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        elapsed += time.perf_counter() - start
        if terminated or truncated:
            env.reset()
    note = f"optimal solution {statistics.mean(lengths):.1f} moves on average"
    return Row("sokoban", config, "hiergym", *_ms(reset_times), args.steps / elapsed, len(reset_times), note)


def _import_gym_sokoban():
    """(gym_sokoban.envs module, None) or (None, the reason it cannot be used)."""
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):  # old gym prints a notice
            import gym_sokoban.envs as gym_sokoban_envs
    except Exception as exc:  # noqa: BLE001 - any failure to import means "skip the baseline"
        return None, f"gym-sokoban not importable ({type(exc).__name__}: {exc}); see this script's docstring"
    return gym_sokoban_envs, None


def _bench_gym_sokoban(module, config: str, dim: tuple[int, int], boxes: int, args: argparse.Namespace) -> Row:
    import random

    from gym_sokoban.envs.room_utils import generate_room

    random.seed(0)
    np.random.seed(0)
    num_steps = int(1.7 * (dim[0] + dim[1]))  # gym-sokoban's default for its env
    reset_times: list[float] = []
    budget_end = time.perf_counter() + args.baseline_budget
    while len(reset_times) < args.baseline_resets and time.perf_counter() < budget_end:
        start = time.perf_counter()
        while True:  # gym-sokoban's reset retries a room that scored zero
            try:
                generate_room(dim=dim, num_steps=num_steps, num_boxes=boxes)
                break
            except (RuntimeError, RuntimeWarning):
                continue
        reset_times.append(time.perf_counter() - start)
    env = module.SokobanEnv(dim_room=dim, num_boxes=boxes, reset=False)
    env.reset(render_mode="tiny_rgb_array")
    actions = np.random.randint(1, 9, size=args.steps)
    elapsed = 0.0
    for action in actions:
        start = time.perf_counter()
        _, _, done, _ = env.step(int(action), observation_mode="tiny_rgb_array")
        elapsed += time.perf_counter() - start
        if done:
            env.reset(render_mode="tiny_rgb_array")
    note = "generate_room only (no render); steps with tiny_rgb_array observations"
    return Row("sokoban", config, "gym-sokoban", *_ms(reset_times), args.steps / elapsed, len(reset_times), note)


# --------------------------------------------------------------------------------------------- driver
#: Environment family -> benchmark function. Add a family by adding a function returning rows.
FAMILIES: dict[str, Callable[[argparse.Namespace], list[Row]]] = {"sokoban": bench_sokoban}


def _ms(times: Sequence[float]) -> tuple[float | None, float | None]:
    if not times:
        return None, None
    return statistics.median(times) * 1e3, float(np.percentile(times, 90)) * 1e3


def format_table(rows: list[Row]) -> str:
    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [
        f"{'env':<9} {'config':<17} {'implementation':<14} {'resets':>6} {'reset ms (median)':>17} "
        f"{'p90':>8} {'steps/s':>9} {'reset speed-up':>14}  note"
    ]
    ours: dict[tuple[str, str], Row] = {}
    for row in rows:
        if row.implementation == "hiergym":
            ours[(row.family, row.config)] = row
        mine = ours.get((row.family, row.config))
        ratio = None
        if row.implementation != "hiergym" and mine and row.reset_ms_median and mine.reset_ms_median:
            ratio = row.reset_ms_median / mine.reset_ms_median
        lines.append(
            f"{row.family:<9} {row.config:<17} {row.implementation:<14} {row.resets:>6} "
            f"{fmt(row.reset_ms_median, '.2f'):>17} {fmt(row.reset_ms_p90, '.2f'):>8} "
            f"{fmt(row.steps_per_s, ',.0f'):>9} {('-' if ratio is None else f'{ratio:,.0f}x'):>14}  {row.note}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(FAMILIES), choices=list(FAMILIES),
                        help="environment families to measure (default: all)")
    parser.add_argument("--resets", type=int, default=200, help="timed resets per configuration (default 200)")
    parser.add_argument("--steps", type=int, default=20_000, help="timed steps per configuration (default 20000)")
    parser.add_argument("--baseline-resets", type=int, default=30,
                        help="most resets timed for a reference implementation per configuration (default 30)")
    parser.add_argument("--baseline-budget", type=float, default=60.0,
                        help="seconds of reference resets per configuration at most (default 60)")
    args = parser.parse_args(argv)
    if args.resets < 1 or args.steps < 1 or args.baseline_resets < 1:
        parser.error("--resets, --steps and --baseline-resets must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows: list[Row] = []
    for family in args.envs:
        rows += FAMILIES[family](args)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
