"""The learning benchmark's estimator specs (NAME+spa, NAME:key=value) and its environment-step bookkeeping."""

from __future__ import annotations

import argparse
import json

from hiergym.benchmarks.learning import env_steps_by_iteration, parse_estimator, run_config


def test_estimator_specs_become_config(tmp_path) -> None:
    assert parse_estimator("archer:warmup_iterations=3,tau=0.05") == ("archer", {"warmup_iterations": 3, "tau": 0.05})
    args = argparse.Namespace(agent="flat", iterations=2, eval_every=1, eval_episodes=4, num_tasks=2, group_size=2)
    spa = run_config("sokoban", 0, "gigpo+spa", args, "start", tmp_path)
    assert (spa.estimator, spa.reward_shaping, spa.num_tasks, spa.group_size) == ("gigpo", "spa", 2, 2)
    archer = run_config("sokoban", 0, "archer:warmup_iterations=3", args, "start", tmp_path)
    assert archer.estimator == "archer" and archer.estimator_options == {"warmup_iterations": 3}
    assert archer.reward_shaping == "none" and not archer.placebo_advantages
    placebo = run_config("sokoban", 0, "grpo+placebo", args, "start", tmp_path)
    assert (placebo.estimator, placebo.reward_shaping, placebo.placebo_advantages) == ("grpo", "none", True)


def test_environment_steps_are_cumulative(tmp_path) -> None:
    rows = [{"phase": "sft"}, {"phase": "rl", "iteration": 1, "env_steps": 10}, {"phase": "eval"},
            {"phase": "rl", "iteration": 2, "env_steps": 7}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert env_steps_by_iteration(tmp_path) == {0: 0, 1: 10, 2: 17}


def test_the_curve_is_eval_in_s_even_when_eval_out_was_evaluated_beside_it() -> None:
    from hiergym.benchmarks.learning import curve

    summary = {"iterations": 30, "evaluations": [
        {"label": "before_rl", "success_rate": 0.2}, {"label": "before_rl_eval_out", "success_rate": 0.1},
        {"label": "iteration_10", "success_rate": 0.3}, {"label": "after_rl", "success_rate": 0.4},
        {"label": "after_rl_eval_out", "success_rate": 0.25}]}
    assert curve(summary) == [(0, 0.2), (10, 0.3), (30, 0.4)]


def test_allocation_runs_share_the_pool_and_get_their_own_folders(tmp_path) -> None:
    from hiergym.benchmarks.learning import run_dir, run_label

    args = argparse.Namespace(agent="flat", iterations=2, eval_every=1, eval_episodes=4, num_tasks=2, group_size=2,
                              task_pool=16)
    knapsack = run_config("sokoban", 0, "grpo", args, "start", tmp_path, "knapsack")
    uniform = run_config("sokoban", 0, "grpo", args, "start", tmp_path, "uniform")
    assert (knapsack.rollout_allocation, knapsack.task_pool) == ("knapsack", 16)
    assert (uniform.rollout_allocation, uniform.task_pool) == ("uniform", 16)
    assert run_dir(tmp_path, "grpo", "knapsack", args) == tmp_path / "grpo-pool16-knapsack"
    assert run_label("grpo", "knapsack", args) == "grpo @ knapsack (pool 16)"
    fresh = argparse.Namespace(**{**vars(args), "task_pool": 0})  # the plain benchmark: names as before
    assert run_dir(tmp_path, "hiper:form=value", "uniform", fresh) == tmp_path / "hiper-form=value"
    assert run_config("sokoban", 0, "grpo", fresh, "start", tmp_path).task_pool == 0


def test_knapsack_without_a_pool_is_a_one_line_error(capsys) -> None:
    import pytest

    from hiergym.benchmarks.learning import main

    with pytest.raises(SystemExit):
        main(["--allocations", "uniform", "knapsack", "--envs", "sokoban"])
    assert "add --task-pool N" in capsys.readouterr().err


def test_aggregate_reports_the_gradient_signal_and_the_rollouts_consumed(tmp_path) -> None:
    from hiergym.benchmarks.learning import aggregate

    runs = []
    for k, adv in enumerate(([0.5, 0.7], [0.3, 0.1])):
        out = tmp_path / f"run{k}"
        out.mkdir()
        rows = [{"phase": "rl", "iteration": i + 1, "env_steps": 10, "rollouts": 8 + k,
                 "nonzero_advantage_groups": a, "mixed_success_rollouts": a / 2, "mixed_success_groups": a,
                 "train_success": 0.5, "rollout_seconds": 1.0, "update_seconds": 1.0} for i, a in enumerate(adv)]
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        runs.append({"out_dir": str(out), "iterations": 2, "success_before_rl": 0.2, "success_after_rl": 0.4,
                     "evaluations": [{"label": "before_rl", "success_rate": 0.2},
                                     {"label": "after_rl", "success_rate": 0.4}]})
    row = aggregate(runs)
    assert row["nonzero_advantage_groups"] == 0.4  # mean over iterations, then over seeds
    assert abs(row["mixed_success_rollouts"] - 0.2) < 1e-12
    assert row["curve_iterations"] == [0, 2] and row["curve_rollouts"] == [0.0, 17.0]


def test_a_pool_smaller_than_a_batch_is_refused_before_any_training(capsys, tmp_path) -> None:
    import pytest

    from hiergym.benchmarks.learning import main

    with pytest.raises(SystemExit):
        main(["--envs", "sokoban", "--agents", "flat", "--estimators", "grpo", "--allocations", "knapsack",
              "--task-pool", "16", "--out", str(tmp_path)])
    assert "task_pool (16)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was trained
