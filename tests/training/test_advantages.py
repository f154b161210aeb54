"""Advantage estimators against hand-computed values and against the loop references."""

from __future__ import annotations

import numpy as np
import pytest

from hiergym.benchmarks.estimator_loops import gigpo_loop, grpo_loop, hgpo_loop
from hiergym.training.advantages import (
    ESTIMATORS,
    compute_advantages,
    gae,
    gigpo,
    grpo,
    hgpo,
    hiper,
    placebo_advantages,
    rloo,
)
from hiergym.training.trajectory import StepBatch, StepRecord


def batch(rows: list[tuple]) -> StepBatch:
    """rows: (group, traj, step, anchor, reward[, level, segment, value])."""
    records = []
    for row in rows:
        group, traj, step, anchor, reward, *rest = row
        level = rest[0] if len(rest) > 0 else "executor"
        segment = rest[1] if len(rest) > 1 else 0
        value = rest[2] if len(rest) > 2 else float("nan")
        records.append(StepRecord(group_id=group, traj_id=traj, step=step, anchor=anchor, reward=reward,
                                  level=level, segment=segment, value=value))
    return StepBatch.from_records(records)


def test_registry_names() -> None:
    assert {"grpo", "rloo", "gigpo", "hgpo", "hiper", "gae"} <= set(ESTIMATORS)
    with pytest.raises(ValueError, match="gigpo"):
        compute_advantages("gipgo", batch([(0, 0, 0, "s", 1.0)]))


def test_grpo_hand_computed() -> None:
    b = batch([(0, 0, 0, "a", 1.0), (0, 1, 0, "a", 0.0), (0, 2, 0, "a", 0.0), (1, 3, 0, "z", 5.0)])
    np.testing.assert_allclose(grpo(b, normalize="mean"), [2 / 3, -1 / 3, -1 / 3, 0.0])
    std = np.sqrt(1 / 3)  # unbiased std of (1, 0, 0)
    np.testing.assert_allclose(grpo(b), [(2 / 3) / (std + 1e-6), (-1 / 3) / (std + 1e-6), (-1 / 3) / (std + 1e-6), 0],
                               rtol=1e-6)


def test_grpo_broadcasts_return_to_every_step_and_all_equal_is_zero() -> None:
    b = batch([(0, 0, 0, "a", 0.0), (0, 0, 1, "b", 1.0), (0, 1, 0, "a", 0.0), (0, 1, 1, "c", 0.0),
               (1, 2, 0, "a", 1.0), (1, 3, 0, "a", 1.0)])
    adv = grpo(b, normalize="mean")
    np.testing.assert_allclose(adv, [0.5, 0.5, -0.5, -0.5, 0.0, 0.0])


def test_rloo() -> None:
    b = batch([(0, 0, 0, "a", 3.0), (0, 1, 0, "a", 0.0), (0, 2, 0, "a", 0.0), (1, 3, 0, "a", 1.0)])
    np.testing.assert_allclose(rloo(b), [3.0, -1.5, -1.5, 0.0])


def test_gigpo_hand_computed() -> None:
    # Trajectory 0 visits s0 -> s1 and wins; trajectory 1 visits s0 -> s2 and fails. gamma = 0.5.
    b = batch([(0, 0, 0, "s0", 0.0), (0, 0, 1, "s1", 1.0), (0, 1, 0, "s0", 0.0), (0, 1, 1, "s2", 0.0)])
    # A_E = +-0.5; G = (0.5, 1 | 0, 0); anchor s0 holds rows 0 and 2 (mean 0.25); s1, s2 are singletons.
    np.testing.assert_allclose(gigpo(b, gamma=0.5), [0.75, 0.5, -0.75, -0.5])
    np.testing.assert_allclose(gigpo(b, gamma=0.5, step_weight=0.0), [0.5, 0.5, -0.5, -0.5])


def test_gigpo_repeated_state_within_one_trajectory() -> None:
    # Trajectory 0 stays in s0 twice before winning; its two s0 steps join trajectory 1's s0 step.
    b = batch([(0, 0, 0, "s0", 0.0), (0, 0, 1, "s0", 0.0), (0, 0, 2, "s1", 1.0),
               (0, 1, 0, "s0", 0.0), (0, 1, 1, "s2", 0.0)])
    adv = gigpo(b, gamma=1.0, step_weight=1.0)
    # A_E = +-0.5; G = (1, 1, 1 | 0, 0); s0 group mean = 2/3.
    np.testing.assert_allclose(adv, [0.5 + 1 / 3, 0.5 + 1 / 3, 0.5, -0.5 - 2 / 3, -0.5])


def test_gigpo_anchor_groups_do_not_cross_groups_or_levels() -> None:
    b = batch([(0, 0, 0, "s", 1.0), (1, 1, 0, "s", 0.0)])
    np.testing.assert_allclose(gigpo(b), [0.0, 0.0])  # same state, different tasks: no comparison


def test_gigpo_std_and_step_statistics_options() -> None:
    b = batch([(0, 0, 0, "s0", 0.0), (0, 0, 1, "s1", 1.0), (0, 1, 0, "s0", 0.0), (0, 1, 1, "s2", 0.0),
               (0, 1, 2, "s3", 0.0)])
    with_step_stats = gigpo(b, step_weight=0.0, episode_stats="step")
    # Rows: R = (1, 1, 0, 0, 0); mean over the 5 step rows is 0.4.
    np.testing.assert_allclose(with_step_stats, [0.6, 0.6, -0.4, -0.4, -0.4])
    np.testing.assert_allclose(gigpo(b, normalize="std", step_weight=0.0)[:2], 0.5 / np.sqrt(0.5), rtol=1e-4)  # (1 - 0.5) / std(1, 0)


def test_hgpo_prefers_history_consistent_groups() -> None:
    # Three trajectories reach s1; two of them came from s0, one from sX. depth=1.
    b = batch([(0, 0, 0, "s0", 0.0), (0, 0, 1, "s1", 1.0),
               (0, 1, 0, "s0", 0.0), (0, 1, 1, "s1", 0.0),
               (0, 2, 0, "sX", 0.0), (0, 2, 1, "s1", 0.0)])
    adv = hgpo(b, depth=1, gamma=1.0, step_weight=1.0)
    # Row 1 (traj 0 at s1): level 0 group {1, 3, 5} G=(1, 0, 0) -> 2/3, weight 1;
    # level 1 group {1, 3} (history s0, s1) -> 0.5, weight 2. Step term = (2/3 + 2 * 0.5) / 3.
    episode = 1 - 1 / 3
    assert adv[1] == pytest.approx(episode + (2 / 3 + 1.0) / 3)
    # Row 5 (traj 2 at s1, history sX): level 1 is a singleton -> only level 0 counts.
    assert adv[5] == pytest.approx(-1 / 3 + (-1 / 3))


def test_planner_rows_get_return_of_the_step_they_precede() -> None:
    b = batch([(0, 0, 0, "s0", 0.0, "planner", 0), (0, 0, 0, "s0", 0.0, "executor", 0),
               (0, 0, 1, "s1", 1.0, "executor", 0),
               (0, 1, 0, "s0", 0.0, "planner", 0), (0, 1, 0, "s0", 0.0, "executor", 0),
               (0, 1, 1, "s2", 0.0, "executor", 0)])
    adv = gigpo(b, gamma=1.0)
    # Planner rows compare with planner rows only (same anchor s0): G = 1 vs 0.
    assert adv[0] == pytest.approx(0.5 + 0.5) and adv[3] == pytest.approx(-0.5 - 0.5)


def test_hiper_relative_form() -> None:
    # Two trajectories, two segments each. Traj 0: segment 0 earns 0, segment 1 earns 1. Traj 1: both 0.
    rows = []
    for traj, final in ((0, 1.0), (1, 0.0)):
        rows += [(0, traj, 0, "s0", 0.0, "planner", 0), (0, traj, 0, "s0", 0.0, "executor", 0),
                 (0, traj, 1, f"a{traj}", 0.0, "executor", 0),
                 (0, traj, 2, "s2", 0.0, "planner", 1), (0, traj, 2, "s2", final, "executor", 1)]
    b = batch(rows)
    adv = hiper(b, form="relative", gamma=1.0, planner_gamma=1.0)
    # A_E = +-0.5. Planner at s0: G^plan = 1 vs 0 -> +-0.5. Planner at s2: 1 vs 0 -> +-0.5.
    # Executor at s0 (segment 0): in-segment return 0 for both -> 0. Executor at s2: 1 vs 0 -> +-0.5.
    np.testing.assert_allclose(adv[:5], [1.0, 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(adv[5:], [-1.0, -0.5, -0.5, -1.0, -1.0])


def test_hiper_value_form_hand_computed() -> None:
    # One trajectory: planner V=0.2 opens segment 0 (two steps, V 0.3, 0.4, rewards 0, 0); planner V=0.6
    # opens segment 1 (one step, V 0.7, reward 1).
    b = batch([(0, 0, 0, "p0", 0.0, "planner", 0, 0.2), (0, 0, 0, "s0", 0.0, "executor", 0, 0.3),
               (0, 0, 1, "s1", 0.0, "executor", 0, 0.4),
               (0, 0, 2, "p1", 0.0, "planner", 1, 0.6), (0, 0, 2, "s2", 1.0, "executor", 1, 0.7)])
    adv = hiper(b, form="value", gamma=1.0, planner_gamma=1.0, lam=1.0)
    # Planner: delta_0 = 0 + 0.6 - 0.2 = 0.4, delta_1 = 1 - 0.6 = 0.4 -> A = 0.8, 0.4.
    # Executor seg 0: delta = 0 + 0.4 - 0.3 = 0.1; 0 + 0.6 (next planner) - 0.4 = 0.2 -> A = 0.3, 0.2.
    # Executor seg 1: delta = 1 - 0.7 = 0.3.
    np.testing.assert_allclose(adv, [0.8, 0.3, 0.2, 0.4, 0.3])
    with pytest.raises(ValueError, match="value"):
        hiper(batch([(0, 0, 0, "s", 1.0)]), form="value")


def test_gae_hand_computed() -> None:
    b = batch([(0, 0, 0, "s0", 0.0, "executor", 0, 0.5), (0, 0, 1, "s1", 1.0, "executor", 0, 0.8)])
    np.testing.assert_allclose(gae(b, gamma=1.0, lam=1.0), [0.5, 0.2])
    np.testing.assert_allclose(gae(b, gamma=0.9, lam=0.5), [(0.9 * 0.8 - 0.5) + 0.45 * 0.2, 0.2])


def random_batch(rng: np.random.Generator, groups: int, group_size: int, states: int) -> StepBatch:
    group, traj, step, anchor, reward = [], [], [], [], []
    t = 0
    for g in range(groups):
        for _ in range(group_size):
            length = int(rng.integers(1, 9))
            for s in range(length):
                group.append(g)
                traj.append(t)
                step.append(s)
                anchor.append(f"g{g}s{rng.integers(states)}")
                reward.append(float(rng.integers(0, 3)) * (s == length - 1) - 0.1)
            t += 1
    return StepBatch.from_arrays(group_id=group, traj_id=traj, step=step, anchor=anchor, reward=reward)


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_matches_loop_reference(seed: int) -> None:
    b = random_batch(np.random.default_rng(seed), groups=6, group_size=4, states=4)
    np.testing.assert_allclose(grpo(b), grpo_loop(b), atol=1e-9)
    np.testing.assert_allclose(grpo(b, normalize="mean"), grpo_loop(b, normalize="mean"), atol=1e-9)
    np.testing.assert_allclose(gigpo(b, gamma=0.9), gigpo_loop(b, gamma=0.9), atol=1e-9)
    np.testing.assert_allclose(gigpo(b, normalize="std"), gigpo_loop(b, normalize="std"), atol=1e-9)
    np.testing.assert_allclose(hgpo(b, depth=3), hgpo_loop(b, depth=3), atol=1e-9)


def test_bad_options_are_named() -> None:
    b = batch([(0, 0, 0, "s", 1.0)])
    with pytest.raises(ValueError, match="normalize"):
        gigpo(b, normalize="median")
    with pytest.raises(ValueError, match="form"):
        hiper(b, form="critic")


def test_placebo_advantages_permute_each_levels_rows_reproducibly() -> None:
    """The placebo control keeps every level's advantages (as a multiset) and takes away which row has which;
    the same run seed and batch draw the same permutation (a resumed run replays it)."""
    level = np.array([0, 1, 1, 1, 0, 1, 1, 1, 1, 0] * 5, dtype=np.int8)
    batch = StepBatch.from_arrays(group_id=np.zeros(50, int), traj_id=np.repeat(np.arange(5), 10),
                                  step=np.tile(np.arange(10), 5), reward=np.zeros(50), level=level)
    advantages = np.arange(50, dtype=np.float64)
    permuted = placebo_advantages(batch, advantages, seed=(0, 3))
    for lv in (0, 1):
        rows = batch.level == lv
        assert sorted(permuted[rows]) == sorted(advantages[rows])  # each level keeps its own values
    assert not np.array_equal(permuted, advantages)
    assert np.array_equal(permuted, placebo_advantages(batch, advantages, seed=(0, 3)))
    assert not np.array_equal(permuted, placebo_advantages(batch, advantages, seed=(0, 4)))
