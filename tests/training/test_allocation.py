"""Knapsack RL's rollout allocation: the Beta values, the greedy knapsack against brute force, the task pool,
the estimators and the group vector env on unequal groups (sizes 2, 3, 5), and the trainer end to end."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from hiergym.benchmarks.estimator_loops import gigpo_loop, grpo_loop, hgpo_loop
from hiergym.training.advantages import ESTIMATORS, compute_advantages
from hiergym.training.allocation import (
    Allocation,
    RolloutAllocator,
    beta_moment,
    group_signal,
    group_value,
    knapsack_sizes,
    nonzero_advantage_groups,
)
from hiergym.training.trajectory import StepBatch

torch.set_num_threads(1)
SIZES = (2, 3, 5)


# ------------------------------------------------------------------------------------------ values
def test_beta_moments_against_the_product_forms() -> None:
    for alpha, beta in [(1.0, 1.0), (2.5, 0.7), (0.4, 3.0)]:
        for n in range(6):
            assert beta_moment(alpha, beta, n, 0) == pytest.approx(
                np.prod([(alpha + k) / (alpha + beta + k) for k in range(n)]))
            assert beta_moment(alpha, beta, 0, n) == pytest.approx(
                np.prod([(beta + k) / (alpha + beta + k) for k in range(n)]))
        s = alpha + beta
        assert beta_moment(alpha, beta, 1, 1) == pytest.approx(alpha * beta / (s * (s + 1)))
        assert beta_moment(alpha, beta, 1, 2) == pytest.approx(alpha * beta * (beta + 1) / (s * (s + 1) * (s + 2)))


def test_group_value_forms() -> None:
    # Uniform prior: E[p^n] = 1 / (n + 1), so P(both outcomes) = (n - 1) / (n + 1).
    for n in range(1, 9):
        assert group_value(1.0, 1.0, n) == pytest.approx((n - 1) / (n + 1))
    # A confident posterior tends to the point value 1 - p^n - (1-p)^n, and InfoGain weighs it by p(1-p)^2.
    alpha, beta = 3e5, 7e5
    for n in (2, 4, 8):
        point = 1 - 0.3**n - 0.7**n
        assert group_value(alpha, beta, n) == pytest.approx(point, rel=1e-4)
        assert group_value(alpha, beta, n, "infogain") == pytest.approx(point * 0.3 * 0.7**2, rel=1e-3)
    # Concave in n: the marginal gains shrink (what makes greedy optimal).
    for alpha, beta, value in [(1, 1, "nonzero"), (0.3, 4, "nonzero"), (6, 1, "infogain"), (2, 2, "infogain")]:
        gains = np.diff([group_value(alpha, beta, n, value) for n in range(1, 30)])
        assert np.all(gains >= 0) and np.all(np.diff(gains) <= 1e-12)
    assert group_value(1, 1, 1) == group_value(1, 1, 0) == 0.0


# ------------------------------------------------------------------------------------------ the knapsack
def _brute_force(alphas, betas, total, min_group, value="nonzero"):
    best, best_sizes = -1.0, None
    n = len(alphas)
    for sizes in itertools.product(range(min_group, total + 1), repeat=n):
        if sum(sizes) != total:
            continue
        v = sum(group_value(a, b, k, value) for a, b, k in zip(alphas, betas, sizes, strict=True))
        if v > best + 1e-12:
            best, best_sizes = v, sizes
    return best, best_sizes


@pytest.mark.parametrize("seed", range(6))
def test_greedy_with_unit_costs_is_optimal(seed: int) -> None:
    rng = np.random.default_rng(seed)
    alphas, betas = rng.uniform(0.2, 6, 4), rng.uniform(0.2, 6, 4)
    value = ("nonzero", "infogain")[seed % 2]
    sizes = knapsack_sizes(alphas, betas, [1.0] * 4, total=14, min_group=2, value=value)
    assert sum(sizes) == 14 and min(sizes) >= 2
    got = sum(group_value(a, b, k, value) for a, b, k in zip(alphas, betas, sizes, strict=True))
    assert got == pytest.approx(_brute_force(alphas, betas, 14, 2, value)[0], rel=1e-12)


def test_knapsack_moves_rollouts_from_settled_tasks_to_uncertain_ones() -> None:
    # Always solved (20 of 20), never solved (0 of 20), and two unseen tasks (uniform prior).
    alphas, betas = [21.0, 1.0, 1.0, 1.0], [1.0, 21.0, 1.0, 1.0]
    sizes = knapsack_sizes(alphas, betas, [1.0] * 4, total=16, min_group=2)
    assert sizes[0] == sizes[1] == 2 and sizes[2] == sizes[3] == 6


def test_step_costs_respect_both_budgets_and_prefer_cheap_rollouts() -> None:
    alphas, betas, costs = [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [10.0, 2.0, 2.0]
    sizes = knapsack_sizes(alphas, betas, costs, total=12, cost_budget=4 * sum(costs), min_group=2)
    assert sum(sizes) <= 12 and sum(s * c for s, c in zip(sizes, costs, strict=True)) <= 4 * sum(costs) + 1e-9
    assert sizes[0] == 2 and sizes[1] > 2 and sizes[2] > 2  # the same value is cheaper on the short tasks
    # A tight cost budget leaves rollouts unspent (idle copies) rather than overspend.
    sizes = knapsack_sizes([1.0] * 3, [1.0] * 3, [10.0] * 3, total=12, cost_budget=70.0, min_group=2)
    assert sum(sizes) == 7 and max(sizes) - min(sizes) <= 1
    assert knapsack_sizes([1.0] * 3, [1.0] * 3, [1.0] * 3, total=12, min_group=2, max_group=3) == [3, 3, 3]
    with pytest.raises(ValueError, match="min_group"):
        knapsack_sizes([1.0] * 4, [1.0] * 4, [1.0] * 4, total=6, min_group=2)


# ------------------------------------------------------------------------------------------ the allocator
def test_task_pool_recurs_and_the_estimates_follow_outcomes() -> None:
    allocator = RolloutAllocator(mode="knapsack", task_pool=6, num_tasks=3, group_size=4, seed=1, cost="rollouts")
    batches = [allocator.sample_tasks(t) for t in range(8)]
    assert all(len(set(b)) == 3 and set(b) <= set(range(6)) for b in batches)
    assert batches == [allocator.sample_tasks(t) for t in range(8)]  # a pure function of (seed, batch)
    assert len({t for b in batches for t in b}) == 6 and len({tuple(b) for b in batches}) > 1  # tasks recur

    state: dict = {}
    plan = allocator.plan(state, 0)
    assert plan.group_sizes == [4, 4, 4]  # nothing known yet: every task has the prior
    # Task a always wins, b always fails, c is mixed.
    a, b, c = plan.task_ids
    episodes = [{"copy": i, "won": i < 4 or i in (8, 10), "steps": 3, "group_id": i // 4, "return": 0.0}
                for i in range(12)]
    allocator.update(state, plan, episodes)
    json.dumps(state)  # checkpointable as it is
    means = {t: allocator.posterior(state, t)[0] / sum(allocator.posterior(state, t)) for t in (a, b, c)}
    assert means[a] > means[c] > means[b]
    allocator.decay = 1.0
    again = Allocation([a, b, c], [4, 4, 4])
    for _ in range(3):
        allocator.update(state, again, episodes)
    sizes = knapsack_sizes(*zip(*[allocator.posterior(state, t) for t in (a, b, c)], strict=True), [1.0] * 3,
                           total=12, min_group=2)
    assert sizes[2] > max(sizes[0], sizes[1]) and sum(sizes) == 12


def test_uniform_without_a_pool_changes_nothing() -> None:
    allocator = RolloutAllocator(mode="uniform", task_pool=0, num_tasks=4, group_size=3, seed=0)
    plan = allocator.plan({}, 5)
    assert plan.rollout_arguments() == {} and plan.metrics() == {}
    state: dict = {}
    allocator.update(state, plan, [{"copy": 0, "won": True, "steps": 1}])
    assert state == {}
    with pytest.raises(ValueError, match="task pool"):
        RolloutAllocator(mode="knapsack", task_pool=2, num_tasks=4, group_size=3, seed=0)


def test_group_signal_metrics() -> None:
    episodes = [{"group_id": g, "won": w, "return": r, "steps": 2}
                for g, w, r in [(0, True, 1.0), (0, False, 0.0), (1, True, 1.0), (1, True, 1.0), (2, False, 0.0),
                                (2, False, -0.1)]]
    signal = group_signal(episodes)
    assert signal["mixed_success_groups"] == pytest.approx(1 / 3)
    assert signal["nonzero_return_groups"] == pytest.approx(2 / 3)
    assert signal["rollouts"] == 6 and signal["env_steps"] == 12
    assert nonzero_advantage_groups(np.array([0, 0, 1, 1, 2]), np.array([0.5, -0.5, 0.0, 0.0, 1e-3])) == \
        pytest.approx(2 / 3)


# ------------------------------------------------------------------------------------------ unequal groups
def unequal_batch(seed: int, sizes=SIZES, values: bool = False, hierarchical: bool = False) -> StepBatch:
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("group_id", "traj_id", "step", "anchor", "reward", "level", "segment",
                                             "value")}
    traj = 0
    for group, size in enumerate(sizes):
        for _ in range(size):
            length = int(rng.integers(1, 6))
            for step in range(length):
                segment = step // 2 if hierarchical else 0
                if hierarchical and step % 2 == 0:  # a planner row before the step that opens a segment
                    for key, v in zip(cols, (group, traj, step, f"s{rng.integers(3)}", 0.0, 1, segment,
                                             float(rng.normal())), strict=True):
                        cols[key].append(v)
                    cols["anchor"][-1] = f"s{rng.integers(3)}"
                reward = float(rng.integers(0, 2)) * (step == length - 1) - 0.05
                for key, v in zip(cols, (group, traj, step, f"s{rng.integers(3)}", reward, 0, segment,
                                         float(rng.normal())), strict=True):
                    cols[key].append(v)
            traj += 1
    if not values:
        cols.pop("value")
    return StepBatch.from_arrays(**cols)


def _subset(batch: StepBatch, rows: np.ndarray) -> StepBatch:
    return StepBatch(**{f: getattr(batch, f)[rows] for f in ("group_id", "traj_id", "step", "level", "segment",
                                                              "anchor", "reward", "done", "invalid", "value")})


ESTIMATOR_CASES = [("grpo", {}), ("grpo", {"normalize": "mean"}), ("rloo", {}), ("gigpo", {}),
                   ("gigpo", {"normalize": "std"}), ("hgpo", {"depth": 2}), ("hiper", {}),
                   ("hiper", {"form": "value"}), ("gae", {}), ("turn_ppo", {}),
                   # mars's default normalize_by="role" pools a seat's rows over the batch; per group it is local
                   ("mars", {"normalize_by": "group"})]
#: archer's advantage is Q - V of each row's own turn (no group statistic), so group sizes cannot change it; its
#: Q and V come from the trainer's critic (tests/training/test_critic*.py).
ROW_WISE = {"archer"}


def test_every_estimator_is_covered() -> None:
    assert {name for name, _ in ESTIMATOR_CASES} == set(ESTIMATORS) - ROW_WISE


@pytest.mark.parametrize(("name", "options"), ESTIMATOR_CASES)
@pytest.mark.parametrize("seed", range(3))
def test_estimators_on_groups_of_sizes_2_3_5_match_a_per_group_loop(name: str, options: dict, seed: int) -> None:
    batch = unequal_batch(seed, values=True, hierarchical=name == "hiper")
    whole = compute_advantages(name, batch, **options)
    for group in np.unique(batch.group_id):
        rows = np.flatnonzero(batch.group_id == group)
        np.testing.assert_allclose(whole[rows], compute_advantages(name, _subset(batch, rows), **options), atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_unequal_groups_against_the_loop_references(seed: int) -> None:
    batch = unequal_batch(seed)
    np.testing.assert_allclose(compute_advantages("grpo", batch), grpo_loop(batch), atol=1e-9)
    np.testing.assert_allclose(compute_advantages("gigpo", batch), gigpo_loop(batch), atol=1e-9)
    np.testing.assert_allclose(compute_advantages("hgpo", batch), hgpo_loop(batch), atol=1e-9)


def test_grpo_and_rloo_on_groups_of_sizes_2_3_5_by_hand() -> None:
    returns = [[1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]]
    group, traj = [], []
    for g, rs in enumerate(returns):
        for _ in rs:
            group.append(g)
            traj.append(len(traj))
    batch = StepBatch.from_arrays(group_id=group, traj_id=traj, step=[0] * len(traj),
                                  reward=[r for rs in returns for r in rs])
    expected_mean = [0.5, -0.5, 1 / 3, 1 / 3, -2 / 3, -0.2, -0.2, -0.2, -0.2, 0.8]
    np.testing.assert_allclose(compute_advantages("grpo", batch, normalize="mean"), expected_mean, atol=1e-12)
    stds = [np.std([1, 0], ddof=1)] * 2 + [np.std([1, 1, 0], ddof=1)] * 3 + [np.std([0, 0, 0, 0, 1], ddof=1)] * 5
    np.testing.assert_allclose(compute_advantages("grpo", batch), np.array(expected_mean) / (np.array(stds) + 1e-6))
    # RLOO: R_i minus the mean of the other members of its group.
    np.testing.assert_allclose(compute_advantages("rloo", batch),
                               [1, -1, 0.5, 0.5, -1, -0.25, -0.25, -0.25, -0.25, 1.0], atol=1e-12)


def test_group_vector_env_with_unequal_groups() -> None:
    from hiergym.agents.random_agent import RandomAgent
    from hiergym.envs.vector import make_group_vec
    from hiergym.training.rollout import collect_rollouts

    vec = make_group_vec("hiergym/Sokoban-v0", num_tasks=3, group_size=4, seed=0)  # 12 copies
    vec.reset(task_ids=[5, 7, 9], group_sizes=list(SIZES))
    assert vec.group_ids.tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 2, 2, -1, -1]
    assert vec.running.tolist() == [True] * 10 + [False] * 2
    assert [vec.group_of(i) for i in (0, 2, 9, 11)] == [0, 1, 2, -1]
    seeds = vec.task_seeds
    assert len({seeds[0], seeds[1]}) == 1 and len(set(seeds[5:10])) == 1 and len(set(seeds[:10])) == 3
    assert seeds[10] is None
    result = collect_rollouts(vec, RandomAgent(), task_ids=[5, 7, 9], group_sizes=list(SIZES))
    sizes = np.bincount([e["group_id"] for e in result.episodes]).tolist()
    assert sorted(s for s in sizes if s) == list(SIZES) and len(result.episodes) == 10
    assert {r.traj_id for r in result.records} == {e["traj_id"] for e in result.episodes}
    # Four tasks in 12 copies, then back to equal groups of fresh tasks.
    vec.reset(task_ids=[1, 2, 3, 4], group_sizes=[2, 2, 3, 5])
    assert vec.running.all()
    vec.reset()
    assert [vec.group_of(i) for i in range(12)] == [i // 4 for i in range(12)] and vec.running.all()
    for bad, message in [([2, 3], "one per task id"), ([2, 3, 8], "more than the 12"), ([2, 0, 3], "positive")]:
        with pytest.raises(ValueError, match=message):
            vec.reset(task_ids=[5, 7, 9], group_sizes=bad)
    with pytest.raises(ValueError, match="needs task_ids"):
        vec.reset(group_sizes=[4, 4, 4])
    vec.close()


# ------------------------------------------------------------------------------------------ the trainer
def _choice_config():
    """``test_trainer.choice_config`` (its one-step Choice env), loaded by path (pytest's importlib mode)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("test_trainer.py")
    spec = importlib.util.spec_from_file_location("hiergym_test_trainer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.choice_config


def test_trainer_with_knapsack_allocation(tmp_path) -> None:
    from hiergym.training.trainer import Trainer

    choice_config = _choice_config()

    config = choice_config(tmp_path, iterations=2, group_size=4, sft_episodes=8, sft_steps=4,
                           rollout_allocation="knapsack", task_pool=8)
    trainer = Trainer(config)
    trainer.run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rows if r["phase"] == "rl"]
    assert len(rl) == 2
    for row in rl:
        assert row["allocation_tasks"] == 4 and row["group_size_min"] >= 2
        assert row["rollouts"] == row["allocated_rollouts"] <= 16
        assert 0.0 <= row["mixed_success_groups"] <= 1.0
    assert trainer.state["allocation"]["tasks"]  # kept in the checkpointed state


def test_config_checks_the_allocation_options(tmp_path) -> None:
    choice_config = _choice_config()

    with pytest.raises(ValueError, match="needs task_pool"):
        choice_config(tmp_path, rollout_allocation="knapsack")
    with pytest.raises(ValueError, match="at least num_tasks"):
        choice_config(tmp_path, task_pool=2)
    with pytest.raises(ValueError, match="rollout_allocation"):
        choice_config(tmp_path, rollout_allocation="greedy")
    with pytest.raises(ValueError, match="hbpo"):
        choice_config(tmp_path, rollout_allocation="knapsack", task_pool=8, reward_mode="hbpo", token_budgets=[8])


def test_uniform_default_calls_the_rollouts_exactly_as_before(tmp_path, monkeypatch) -> None:
    import hiergym.training.trainer as trainer_module
    from hiergym.training.rollout import collect_rollouts

    calls = []

    def spy(vec, agent, **kwargs):
        calls.append(sorted(kwargs))
        return collect_rollouts(vec, agent, **kwargs)

    monkeypatch.setattr(trainer_module, "collect_rollouts", spy)
    config = _choice_config()(tmp_path, iterations=1, sft_episodes=0, group_size=2)
    trainer = trainer_module.Trainer(config)
    trainer.train_iteration(0)
    assert calls == [["invalid_action_penalty"]]  # no task ids, no group sizes: today's fresh-task stream
    assert "allocation" not in trainer.state
