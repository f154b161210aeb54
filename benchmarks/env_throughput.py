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
from collections.abc import Callable, Iterator, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

import hiergym  # noqa: F401  (registers the environments)
from hiergym.envs.sokoban import count_pushes, parse_board, solve

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
def bench_sokoban(args: argparse.Namespace) -> Iterator[Row]:
    baseline, why_not = _import_gym_sokoban()
    for dim, boxes in SOKOBAN_SIZES:
        config = f"{dim[0]}x{dim[1]}, {boxes} box{'es' if boxes > 1 else ''}"
        yield _bench_hiergym_sokoban(config, dim, boxes, args)
        if baseline is None:
            yield Row("sokoban", config, "gym-sokoban", None, None, None, note=f"skipped: {why_not}")
        else:
            yield _bench_gym_sokoban(baseline, config, dim, boxes, args)


def _bench_hiergym_sokoban(config: str, dim: tuple[int, int], boxes: int, args: argparse.Namespace) -> Row:
    env = gym.make("hiergym/Sokoban-v0", dim_room=dim, num_boxes=boxes)
    reset_times, pushes, moves = [], [], []
    for seed in range(args.resets):
        start = time.perf_counter()
        _, info = env.reset(seed=seed)
        reset_times.append(time.perf_counter() - start)
        pushes.append(info["optimal_solution_length"])
        moves.append(info["expert_plan_length"])
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
    note = f"optimal solution {statistics.mean(pushes):.1f} pushes ({statistics.mean(moves):.1f} moves) on average"
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
    pushes, moves = [], []
    budget_end = time.perf_counter() + args.baseline_budget
    while len(reset_times) < args.baseline_resets and time.perf_counter() < budget_end:
        start = time.perf_counter()
        while True:  # gym-sokoban's reset retries a room that scored zero
            try:
                room_fixed, room_state, _ = generate_room(dim=dim, num_steps=num_steps, num_boxes=boxes)
                break
            except (RuntimeError, RuntimeWarning):
                continue
        reset_times.append(time.perf_counter() - start)
        # Its rooms' difficulty, by hiergym's solver (not timed).
        level = parse_board(_gym_sokoban_board(room_fixed, room_state))
        plan = solve(level.room, level.player, level.boxes, "pushes")
        if plan is not None:
            pushes.append(count_pushes(level.room, level.player, level.boxes, plan))
            moves.append(len(plan))
    env = module.SokobanEnv(dim_room=dim, num_boxes=boxes, reset=False)
    with redirect_stdout(io.StringIO()):  # its reset prints every retry
        env.reset(render_mode="tiny_rgb_array")
    # Episodes restart from the same room (a new one would cost seconds on large rooms; resets are not timed).
    snapshot = (env.room_state.copy(), env.player_position.copy(), dict(env.box_mapping))

    def restart() -> None:
        env.room_state, env.player_position = snapshot[0].copy(), snapshot[1].copy()
        env.box_mapping = dict(snapshot[2])
        env.num_env_steps, env.boxes_on_target, env.reward_last = 0, 0, 0

    actions = np.random.randint(1, 9, size=args.steps)
    elapsed = 0.0
    for action in actions:
        start = time.perf_counter()
        _, _, done, _ = env.step(int(action), observation_mode="tiny_rgb_array")
        elapsed += time.perf_counter() - start
        if done:
            restart()
    note = "generate_room only; steps with tiny_rgb_array observations"
    if pushes:
        note = f"optimal solution {statistics.mean(pushes):.1f} pushes ({statistics.mean(moves):.1f} moves); " + note
    return Row("sokoban", config, "gym-sokoban", *_ms(reset_times), args.steps / elapsed, len(reset_times), note)


def _gym_sokoban_board(room_fixed: np.ndarray, room_state: np.ndarray) -> str:
    """A gym-sokoban room (fixed: 0 wall, 1 floor, 2 target; state: 3 box on target, 4 box, 5 player) as text."""
    rows = []
    for fixed_row, state_row in zip(room_fixed.tolist(), room_state.tolist(), strict=True):
        line = ""
        for fixed, state in zip(fixed_row, state_row, strict=True):
            on_target = fixed == 2
            if fixed == 0:
                line += "#"
            elif state in (3, 4):
                line += "V" if on_target else "X"
            elif state == 5:
                line += "S" if on_target else "P"
            else:
                line += "O" if on_target else "_"
        rows.append(line)
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------- driver
#: Environment family -> benchmark function. Add a family by adding a function that yields rows, its
#: hiergym row for a configuration before any reference rows for it.
FAMILIES: dict[str, Callable[[argparse.Namespace], Iterator[Row]]] = {"sokoban": bench_sokoban}


def _ms(times: Sequence[float]) -> tuple[float | None, float | None]:
    if not times:
        return None, None
    return statistics.median(times) * 1e3, float(np.percentile(times, 90)) * 1e3


HEADER = (
    f"{'env':<9} {'config':<17} {'implementation':<14} {'resets':>6} {'reset ms (median)':>17} "
    f"{'p90':>8} {'steps/s':>9} {'reset speed-up':>14}  note"
)


def format_row(row: Row, ours: Row | None = None) -> str:
    """One table line; ``ours`` is hiergym's row for the same configuration, for the reset-time ratio."""

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    ratio = None
    if ours is not None and ours is not row and row.reset_ms_median and ours.reset_ms_median:
        ratio = row.reset_ms_median / ours.reset_ms_median
    return (
        f"{row.family:<9} {row.config:<17} {row.implementation:<14} {row.resets:>6} "
        f"{fmt(row.reset_ms_median, '.2f'):>17} {fmt(row.reset_ms_p90, '.2f'):>8} "
        f"{fmt(row.steps_per_s, ',.0f'):>9} {('-' if ratio is None else f'{ratio:,.0f}x'):>14}  {row.note}"
    )


def format_table(rows: list[Row]) -> str:
    ours = {(r.family, r.config): r for r in rows if r.implementation == "hiergym"}
    return "\n".join([HEADER, *(format_row(r, ours.get((r.family, r.config))) for r in rows)])


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
    print(HEADER, flush=True)
    ours: dict[tuple[str, str], Row] = {}
    for family in args.envs:
        for row in FAMILIES[family](args):  # printed as measured: reference rows can take minutes
            if row.implementation == "hiergym":
                ours[(row.family, row.config)] = row
            print(format_row(row, ours.get((row.family, row.config))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
