"""The hierarchy-cost benchmark's options: a wrong override is a one-line error before anything runs, and the
overrides reach both agents' timed runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_a_wrong_override_is_named_before_anything_runs(capsys) -> None:
    from hiergym.benchmarks.hierarchy_cost import main

    with pytest.raises(SystemExit):
        main(["--envs", "sokoban", "--set", "tokenzier=env"])
    err = capsys.readouterr().err
    assert "unknown training option 'tokenzier'; did you mean tokenizer?" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["--envs", "sokoban", "--set", "tokenizer"])
    assert "is not of the form key=value" in capsys.readouterr().err


def test_overrides_reach_both_agents_runs(monkeypatch) -> None:
    from hiergym.benchmarks import hierarchy_cost
    from hiergym.training import trainer

    seen = []

    class Recorder:
        def __init__(self, config):
            seen.append(config)
            self.config = config

        def run(self):
            out = Path(self.config.out_dir)
            out.mkdir(parents=True)
            row = {"phase": "rl", "rollout_seconds": 1.0, "update_seconds": 2.0, "env_steps": 3,
                   "generated_tokens": 4, "prompt_tokens": 5}
            (out / "metrics.jsonl").write_text(json.dumps(row) + "\n")

    monkeypatch.setattr(trainer, "Trainer", Recorder)
    figures = hierarchy_cost.iteration_seconds("sokoban", 1, 0, overrides={"max_new_tokens": "7"})
    assert [c.agent for c in seen] == ["flat", "hierarchical"]
    assert all(c.max_new_tokens == 7 for c in seen)
    assert figures["hierarchical"]["seconds"] == 3.0
