"""Reliability of runs (issue 21): nothing lost or duplicated on a kill, no traceback for a user's mistake, no
secrets in run files, errored episodes counted apart. Each test reproduces a defect found by fault injection."""

from __future__ import annotations

import fcntl
import json
import socket
import subprocess
import sys

import pytest
import torch

from hiergym.benchmarks.harness import HarnessError, evaluate
from hiergym.cli import main
from hiergym.records import EpisodeResult
from hiergym.stats import aggregate_results

torch.set_num_threads(1)
SOKOBAN = "hiergym/Sokoban-v0"


def result_lines(out) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------ evaluation
def test_a_kill_mid_line_neither_loses_nor_duplicates_an_episode(tmp_path) -> None:
    out = tmp_path / "run"
    evaluate(SOKOBAN, "random", episodes=4, out=str(out), progress=False, max_steps=5)
    # A kill while writing the 5th line leaves half a line without its newline.
    path = out / "results.jsonl"
    fifth = json.dumps({**result_lines(out)[0], "episode": 4})
    path.write_text(path.read_text() + fifth[: len(fifth) // 2])
    summary = evaluate(SOKOBAN, "random", episodes=6, out=str(out), progress=False, max_steps=5)
    lines = result_lines(out)  # every line parses: the partial tail was cut, not appended to
    assert sorted(r["episode"] for r in lines) == [0, 1, 2, 3, 4, 5]
    assert summary["episodes"] == 6
    again = evaluate(SOKOBAN, "random", episodes=6, out=str(out), progress=False, max_steps=5)
    assert len(result_lines(out)) == 6 and again["episodes"] == 6  # nothing played twice


def test_wall_time_accumulates_over_a_resume(tmp_path) -> None:
    out = tmp_path / "run"
    first = evaluate(SOKOBAN, "random", episodes=2, out=str(out), progress=False, max_steps=5)
    (out / "summary.json").unlink()  # a killed process writes no summary: progress.json still has its time
    assert json.loads((out / "progress.json").read_text())["wall_time_s"] > 0
    second = evaluate(SOKOBAN, "random", episodes=3, out=str(out), progress=False, max_steps=5)
    assert second["wall_time_s"] >= first["wall_time_s"] * 0.99


def test_two_evaluations_cannot_write_one_run_directory(tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(HarnessError, match="in use by another evaluation"):
            evaluate(SOKOBAN, "random", episodes=2, out=str(out), progress=False)
    evaluate(SOKOBAN, "random", episodes=2, out=str(out), progress=False)  # free again


def test_a_failed_start_does_not_block_a_retry_with_another_agent(tmp_path) -> None:
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError):
        evaluate(SOKOBAN, f"tiny:{tmp_path / 'no-such-checkpoint'}", episodes=2, out=str(out), progress=False)
    summary = evaluate(SOKOBAN, "random", episodes=2, out=str(out), progress=False, max_steps=5)
    assert summary["episodes"] == 2


def test_secrets_are_never_written(tmp_path) -> None:
    out = tmp_path / "run"
    port = free_port()  # nothing listens: every request fails fast
    evaluate(SOKOBAN, f"openai:m@http://127.0.0.1:{port}/v1", episodes=1, out=str(out), progress=False,
             agent_args={"api_key": "sk-very-secret", "max_retries": 0})
    for name in ("run.json", "summary.json"):
        text = (out / name).read_text()
        assert "sk-very-secret" not in text and "<redacted>" in text


def test_errored_episodes_are_counted_apart() -> None:
    results = [EpisodeResult(episode=0, seed=0, task_id=0, success=True, steps=2),
               EpisodeResult(episode=1, seed=1, task_id=1, success=False, steps=3),
               EpisodeResult(episode=2, seed=2, task_id=2, error="HTTP 500")]
    summary = aggregate_results(results)
    assert summary["episodes"] == 3 and summary["episodes_ran"] == 2 and summary["errors"] == 1
    assert summary["success_rate"] == 0.5 and summary["mean_steps"] == 2.5


def test_a_run_whose_every_episode_errored_exits_non_zero(tmp_path, capsys) -> None:
    port = free_port()
    code = main(["eval", "--env", SOKOBAN, "--agent", f"openai:m@http://127.0.0.1:{port}/v1", "--agent-arg",
                 "max_retries=0", "--episodes", "2", "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "every episode failed" in err and "127.0.0.1" in err


# ------------------------------------------------------------------------------------------ command line
@pytest.mark.parametrize(("argv", "expected"), [
    (["train", "iterations=abc"], "iterations expects an integer"),
    (["train", "iterations=-1"], "iterations must be >= 0"),
    (["train", "device=gpu0"], "device 'gpu0'"),
    (["train", "estimator_options={gama: 0.9}"], "valid keys: gamma"),
    (["train", "model_architecture={a: "], "not valid YAML"),
    (["serve", "webshop", "--port", "99999"], "out of range"),
    (["serve", "webshop", "--host", "256.1.1.1"], "not an address"),
    (["eval", "--env", SOKOBAN, "--agent", "random", "--agent-arg", "seed"], "agent argument 'seed'"),
])
def test_a_users_mistake_is_one_line(tmp_path, capsys, argv, expected) -> None:
    if argv[0] == "train":
        argv = [*argv, f"out_dir={tmp_path}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_yaml_mistakes_are_one_line(tmp_path, capsys) -> None:
    for text, expected in (("iterations: many\n", "iterations expects an integer"),
                           ("iterations: [1\n", "not valid YAML at line 2")):
        path = tmp_path / "c.yaml"
        path.write_text(text)
        assert main(["train", "--config", str(path), f"out_dir={tmp_path}"]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1


def test_device_cuda_without_a_gpu_is_one_line(tmp_path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: device=cuda is valid here")
    assert main(["train", "device=cuda", f"out_dir={tmp_path}"]) == 2
    assert "sees no CUDA GPU" in capsys.readouterr().err


def test_serve_on_a_port_in_use_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "hiergym", "serve", "webshop", "--port", str(port)],
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "already in use" in run.stderr and "Traceback" not in run.stderr
