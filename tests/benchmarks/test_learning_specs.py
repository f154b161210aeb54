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
    assert archer.reward_shaping == "none"


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
