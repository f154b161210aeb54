"""The allocation benchmark's fixed-policy part runs both allocations on the same pool and budget."""

from __future__ import annotations

from hiergym.benchmarks.allocation import main


def test_policy_part_reports_both_allocations(tmp_path, capsys) -> None:
    assert main(["--envs", "sokoban", "--seeds", "0", "--batches", "3", "--warmup", "1",
                 "--num-tasks", "3", "--pool", "6", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| sokoban | uniform |" in out and "| sokoban | knapsack |" in out
    assert (tmp_path / "allocation.md").is_file() and (tmp_path / "allocation.json").is_file()
