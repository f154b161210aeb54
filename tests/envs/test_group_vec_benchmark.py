"""benchmarks/vector_throughput.py runs end to end on a tiny batch (its figures are not checked here)."""

from __future__ import annotations

import pytest

from hiergym.benchmarks.vector_throughput import main


def test_vector_throughput_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--envs", "sokoban", "--num-tasks", "2", "--group-size", "2", "--steps", "2", "--rounds", "1",
                 "--workers", "2", "--overlap-gen-ms", "4", "--step-cost-ms", "0.1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "hiergym/Sokoban-v0" in out
    for runner in ("loop", "sync", "process", "overlap:"):
        assert runner in out, f"no {runner} line in:\n{out}"


def test_vector_throughput_rejects_unknown_env() -> None:
    with pytest.raises(SystemExit):
        main(["--envs", "no-such-env"])


def test_env_patterns_carry_env_arguments() -> None:
    from hiergym.benchmarks.vector_throughput import parse_pattern, selected_envs

    assert parse_pattern("alfworld:engine=alfworld,max_steps=30") == ("alfworld", {"engine": "alfworld",
                                                                                   "max_steps": 30})
    chosen = selected_envs(["sokoban", "alfworld:engine=alfworld"])
    assert chosen == [("hiergym/Sokoban-v0", {}), ("hiergym/ALFWorld-v0", {"engine": "alfworld"})]
    with pytest.raises(ValueError, match="key=value"):
        parse_pattern("alfworld:engine")
