"""Time the vectorised advantage estimators on large batches, against the loop references in the same run.

    python -m hiergym.benchmarks.estimators_speed [--rows 1000000] [--loop-rows 100000]

Prints seconds per estimator for a synthetic batch of ``--rows`` executor rows (groups of 8 trajectories of
up to 50 steps over a small state space, so anchor groups are shared), plus planner rows for ``hiper``; and
for grpo / gigpo / hgpo the loop implementation's time on ``--loop-rows`` rows with the speed-up per row.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hiergym.benchmarks.estimator_loops import gigpo_loop, grpo_loop, hgpo_loop
from hiergym.training.advantages import ESTIMATORS
from hiergym.training.trajectory import PLANNER, StepBatch


def synthetic_batch(rows: int, seed: int = 0, group_size: int = 8, max_len: int = 50, states: int = 30,
                    planner_every: int = 0) -> StepBatch:
    """A batch of about ``rows`` executor rows (plus planner rows every ``planner_every`` steps)."""
    rng = np.random.default_rng(seed)
    lengths = []
    while sum(lengths) < rows:
        lengths.append(int(rng.integers(5, max_len + 1)))
    lengths[-1] -= sum(lengths) - rows
    lengths = np.array([length for length in lengths if length > 0])
    traj = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    step = np.arange(traj.size) - starts
    group = traj // group_size
    anchor = group * 1000 + rng.integers(0, states, traj.size)
    reward = np.where(step == np.repeat(lengths - 1, lengths), rng.integers(0, 2, traj.size), 0) - 0.01
    level = np.zeros(traj.size, np.int8)
    segment = step // max(planner_every, 1) if planner_every else np.zeros(traj.size, np.int64)
    value = rng.normal(size=traj.size)
    if planner_every:
        planner = np.flatnonzero(step % planner_every == 0)
        order = np.argsort(np.r_[np.arange(traj.size) * 2 + 1, planner * 2], kind="stable")
        cat = lambda a, b: np.r_[a, b][order]  # noqa: E731
        traj, step, group, anchor = cat(traj, traj[planner]), cat(step, step[planner]), cat(group, group[planner]), \
            cat(anchor, anchor[planner] + 500)
        reward, segment, value = cat(reward, 0 * reward[planner]), cat(segment, segment[planner]), \
            cat(value, value[planner])
        level = cat(level, np.full(planner.size, PLANNER, np.int8))
    return StepBatch.from_arrays(group_id=group, traj_id=traj, step=step, anchor=anchor, reward=reward,
                                 level=level, segment=segment, value=value)


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--loop-rows", type=int, default=100_000)
    args = parser.parse_args()

    flat = synthetic_batch(args.rows)
    hierarchical = synthetic_batch(args.rows, planner_every=5)
    print(f"vectorised estimators on {len(flat):,} rows ({len(hierarchical):,} with planner rows for hiper)")
    print(f"{'estimator':<16}{'seconds':>10}{'rows/s':>16}")
    runs = [(name, name, flat, {}) for name in ESTIMATORS if name != "hiper"]
    runs += [("hiper", "hiper", hierarchical, {}), ("hiper[value]", "hiper", hierarchical, {"form": "value"})]
    for label, name, batch, options in runs:
        seconds, _ = timed(ESTIMATORS[name], batch, **options)
        print(f"{label:<16}{seconds:>10.3f}{len(batch) / seconds:>16,.0f}")

    small = synthetic_batch(args.loop_rows, seed=1)
    print(f"\nloop references on {len(small):,} rows vs the vectorised versions on the same rows")
    print(f"{'estimator':<10}{'loop s':>10}{'vector s':>10}{'speed-up':>10}")
    for name, loop in (("grpo", grpo_loop), ("gigpo", gigpo_loop), ("hgpo", hgpo_loop)):
        loop_seconds, expected = timed(loop, small)
        vector_seconds, got = timed(ESTIMATORS[name], small)
        assert np.allclose(expected, got), f"{name}: vectorised and loop results differ"
        print(f"{name:<10}{loop_seconds:>10.3f}{vector_seconds:>10.3f}{loop_seconds / vector_seconds:>9.0f}x")


if __name__ == "__main__":
    main()
