"""The reliability fuzz benchmark runs end to end on every env and game, and finds nothing to report."""

from __future__ import annotations

import numpy as np

from hiergym.benchmarks import reliability_envs
from hiergym.envs.core import normalize_action


def test_benchmark_runs_with_a_tiny_budget(capsys) -> None:
    assert reliability_envs.main(["--actions", "12"]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert "junk actions tried" in table[0] and "contract violations" in table[0]
    rows = table[1:]
    assert len(rows) == len(reliability_envs.targets())
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert int(cells[2]) >= 12 and cells[6] == "0" and cells[7] == "0", row


def test_contaminated_junk_is_always_refused_by_the_rule() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        action, kind = reliability_envs.junk_action(rng, ["go to desk 1", "up", "click[buy now]"])
        if kind in reliability_envs.MUST_BE_INVALID:
            assert normalize_action(action) is None, repr(action)
