"""The single-env throughput benchmark runs end to end and reports a skipped reference with its reason."""

from __future__ import annotations

import numpy as np
import pytest

from hiergym.benchmarks import env_throughput
from hiergym.envs.sokoban import parse_board


def test_main_prints_a_row_per_size_and_says_why_a_reference_was_skipped(capsys, monkeypatch) -> None:
    # A reference generator can take seconds per room; this test checks the driver, not gym-sokoban.
    monkeypatch.setattr(env_throughput, "_import_gym_sokoban", lambda: (None, "disabled in this test"))
    assert env_throughput.main(["--envs", "sokoban", "--resets", "2", "--steps", "30"]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert lines[0].startswith("env") and "steps/s" in lines[0]
    ours = [line for line in lines if " hiergym " in line]
    assert [line.split()[1] for line in ours] == ["6x6,", "7x7,", "10x10,", "12x12,"]
    assert all("pushes" in line for line in ours)
    assert sum("skipped: disabled in this test" in line for line in lines) == 4


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SystemExit):
        env_throughput.parse_args(["--envs", "nethack"])
    with pytest.raises(SystemExit):
        env_throughput.parse_args(["--resets", "0"])


def test_gym_sokoban_rooms_convert_to_boards() -> None:
    fixed = np.array([[0, 0, 0, 0, 0], [0, 1, 2, 2, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 0]])
    state = np.array([[0, 0, 0, 0, 0], [0, 5, 3, 2, 0], [0, 4, 1, 1, 0], [0, 0, 0, 0, 0]])
    board = env_throughput._gym_sokoban_board(fixed, state)
    assert board == "#####\n#PVO#\n#X__#\n#####"
    level = parse_board(board)
    assert level.boxes.bit_count() == 2
