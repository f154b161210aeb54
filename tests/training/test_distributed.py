"""Data-parallel training (training/distributed.py) on CPU with gloo: 2 ranks launched by torchrun give the
update, the evaluation and the run that one process gives; a run resumes on another world size; a rank that
crashes or is killed ends the job with its error, not a hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
WORKER = Path(__file__).with_name("distributed_worker.py")
LAUNCH_TIMEOUT_S = 120

needs_gloo = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available in this torch build")
pytestmark = needs_gloo

#: Small Sokoban settings: multi-step episodes, planner-free flat agent, several micro- and mini-batches.
SOKOBAN = {"env_id": "hiergym/Sokoban-v0", "device": "cpu", "progress": False,
           "model_architecture": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1},
           "num_tasks": 4, "group_size": 2, "max_episode_steps": 3, "max_new_tokens": 8,
           "sft_episodes": 5, "sft_steps": 3, "sft_batch_size": 8, "mini_batches": 2, "micro_batch_size": 3,
           "epochs": 2, "eval_episodes": 5}
#: The worker's one-step Target env: behaviour cloning teaches the answer format, and evaluations have
#: successes and failures to compare. Evaluations sample (eval_temperature 1): every episode's stream is its
#: own, so sharding them over the ranks (4 + 3 episodes instead of 7 in one batch) changes no sample.
CHOICE = {"env_id": "hiergym_test/Target-v0", "device": "cpu", "progress": False, "max_episode_steps": 3,
          "eval_temperature": 1.0,
          "model_architecture": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1},
          "num_tasks": 4, "group_size": 4, "iterations": 2, "learning_rate": 2e-3, "max_new_tokens": 6,
          "sft_episodes": 20, "sft_steps": 40, "sft_batch_size": 16, "sft_learning_rate": 1e-2,
          "eval_episodes": 7, "eval_every": 1, "checkpoint_every": 1, "estimator": "grpo", "epochs": 2,
          "mini_batches": 2, "micro_batch_size": 8}


def torchrun(nproc: int, mode: str, config: dict, out: Path, timeout: float = LAUNCH_TIMEOUT_S,
             check: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "--max-restarts=0", str(WORKER), mode, json.dumps(config), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if check and done.returncode != 0:
        raise AssertionError(f"torchrun {mode} (x{nproc}) failed:\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}")
    return done


@pytest.fixture(scope="module")
def one_rank_update(tmp_path_factory) -> tuple[Path, dict]:
    """The reference: behaviour cloning and one RL iteration per estimator on one rank; its rollout batch
    (``one.pt.rollout``) is the one every world size updates on."""
    folder = tmp_path_factory.mktemp("one-rank-update")
    torchrun(1, "update", {**SOKOBAN, "out_dir": str(folder / "w1")}, folder / "one.pt")
    return folder / "one.pt", torch.load(folder / "one.pt", weights_only=False)


def two_rank_update(tmp_path: Path, reference: Path, **overrides) -> dict:
    (tmp_path / "two.pt.rollout").write_bytes(Path(str(reference) + ".rollout").read_bytes())
    torchrun(2, "update", {**SOKOBAN, "out_dir": str(tmp_path / "w2"), **overrides}, tmp_path / "two.pt")
    return torch.load(tmp_path / "two.pt", weights_only=False)


def assert_same_parameters(a: dict, b: dict, phases: tuple[str, ...]) -> None:
    for phase in phases:
        assert a[phase].keys() == b[phase].keys()
        worst = max((a[phase][k] - b[phase][k]).abs().max().item() for k in a[phase])
        assert worst < 1e-5, f"{phase}: parameters differ by {worst}"
        moved = max((a[phase][k] - a["init"][k]).abs().max().item() for k in a["init"])
        assert moved > 1e-4, f"{phase} did not change the parameters: the comparison would be empty"


def test_two_ranks_update_equals_one_process(tmp_path, one_rank_update) -> None:
    """From the same weights and the same rollout batch (each rank holding its half of the groups), behaviour
    cloning and one RL iteration (GiGPO; GAE with its value head) leave the parameters one process leaves."""
    a = one_rank_update[1]
    b = two_rank_update(tmp_path, one_rank_update[0])
    assert_same_parameters(a, b, ("bc", "gigpo", "gae"))
    assert any(k.startswith("value_head.") for k in a["gae"])
    for key in ("train_success", "train_return", "rows", "generated_tokens", "invalid_rate", "advantage_std",
                "update_sequences", "update_tokens"):
        assert a["gigpo_metrics"][key] == pytest.approx(b["gigpo_metrics"][key], rel=1e-9), key
    assert a["gigpo_metrics"]["update_grad_norm"] == pytest.approx(b["gigpo_metrics"]["update_grad_norm"], rel=1e-5)


def test_fsdp_update_equals_one_process(tmp_path, one_rank_update) -> None:
    """fsdp=true (FSDP2 fully_shard over 2 gloo ranks, parameters sharded): the same parameters again."""
    assert_same_parameters(one_rank_update[1], two_rank_update(tmp_path, one_rank_update[0], fsdp=True),
                           ("bc", "gigpo"))


@pytest.fixture(scope="module")
def one_rank_run(tmp_path_factory) -> dict:
    """The reference: the Target run on one rank (torchrun --nproc-per-node 1)."""
    folder = tmp_path_factory.mktemp("one-rank")
    torchrun(1, "run", {**CHOICE, "out_dir": str(folder / "run")}, folder / "one.json")
    return json.loads((folder / "one.json").read_text())


def test_two_ranks_run_and_evaluation_equal_one_process(tmp_path, one_rank_run) -> None:
    """A whole run (behaviour cloning, 2 iterations, 3 sampled evaluations of 7 episodes sharded 4 + 3) on 2
    ranks gives the evaluation summaries and per-episode results of 1 rank when the rollouts are the same.
    Only rank 0 writes files, with every rank's transcripts."""
    a = one_rank_run
    torchrun(2, "run", {**CHOICE, "out_dir": str(tmp_path / "w2")}, tmp_path / "two.json")
    b = json.loads((tmp_path / "two.json").read_text())
    assert [e["label"] for e in a["evaluations"]] == ["before_rl", "iteration_1", "after_rl"]
    assert a["evaluations"] == b["evaluations"] and a["results"] == b["results"]
    successes = [r["success"] for rows in a["results"].values() for r in rows]
    assert any(successes) and not all(successes), "a mixed policy makes the comparison meaningful"
    run = tmp_path / "w2"
    assert len(list((run / "eval" / "after_rl" / "episodes").iterdir())) == CHOICE["eval_episodes"]
    assert (run / "checkpoint" / "state.pt").is_file() and (run / "summary.json").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["sft", "eval", "rl", "eval", "rl", "eval"], "logged once, by rank 0"
    assert all(r["world_size"] == 2 for r in rows if r["phase"] == "rl")


def test_a_two_rank_run_resumes_on_one_rank(tmp_path, one_rank_run) -> None:
    """2 ranks stop after iteration 1 (checkpointed, as a killed job); 1 rank resumes and ends where the
    uninterrupted 1-rank run ends."""
    config = {**CHOICE, "out_dir": str(tmp_path / "stopped")}
    torchrun(2, "stop", config, tmp_path / "unused.json")
    assert not (tmp_path / "stopped" / "summary.json").exists()
    torchrun(1, "resume", config, tmp_path / "resumed.json")
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert resumed["evaluations"] == one_rank_run["evaluations"] and resumed["results"] == one_rank_run["results"]


# One direction keeps the suite short (each torchrun launch costs ~15 s on 2 cores); 1 -> FSDP 2 also passes.
@pytest.mark.parametrize(("stopped", "resumed"), [(2, 1)], ids=["fsdp-2-to-1"])
def test_fsdp_runs_and_resumes_across_world_sizes(tmp_path, one_rank_run, stopped: int, resumed: int) -> None:
    """Under FSDP the ranks generate (rollouts, sharded evaluations) with the gathered model, and the
    checkpoint holds plain weights and a plain optimizer state: a 2-rank FSDP run resumes on 1 plain rank,
    and a 1-rank run resumes on 2 FSDP ranks, each ending where the uninterrupted 1-rank run ends."""
    config = {**CHOICE, "out_dir": str(tmp_path / "run")}
    torchrun(stopped, "stop", {**config, "fsdp": stopped > 1}, tmp_path / "unused.json")
    torchrun(resumed, "resume", {**config, "fsdp": resumed > 1}, tmp_path / "resumed.json")
    result = json.loads((tmp_path / "resumed.json").read_text())
    assert result["evaluations"] == one_rank_run["evaluations"] and result["results"] == one_rank_run["results"]


# The worker can also SIGKILL rank 1 ("kill"); crash and hang cover the two ways a job could fail to end.
@pytest.mark.parametrize("mode", ["crash", "hang"])
def test_a_failing_rank_ends_the_job_with_its_error(tmp_path, mode: str) -> None:
    """Rank 1 raises or hangs in its first iteration while rank 0 waits in a collective: the
    job ends within a bounded time, nonzero, naming the rank and its error (a hang: rank 0's collective
    times out after ``distributed_timeout`` seconds)."""
    started = time.monotonic()
    done = torchrun(2, mode, {**CHOICE, "sft_episodes": 0, "out_dir": str(tmp_path / "run"),
                              "distributed_timeout": 5.0}, tmp_path / "out.json", check=False)
    elapsed = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode != 0 and elapsed < 90
    if mode == "crash":
        report = output[output.index("Root Cause"):]  # torchrun's summary names the rank and its error
        assert "rank      : 1" in report and "rank 1 exploded on purpose" in report, report
    else:
        report = output[output.index("Root Cause"):]
        assert "rank      : 0" in report and "timed out" in report.lower(), report


def test_shards_are_contiguous_and_cover_everything() -> None:
    from hiergym.training.distributed import Distributed

    for world in (1, 2, 3, 5):
        for count in (0, 1, 4, 7, 10):
            ranges = [Distributed(rank=r, world_size=world).bounds(count) for r in range(world)]
            assert ranges[0][0] == 0 and ranges[-1][1] == count
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
            sizes = [b - a for a, b in ranges]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert Distributed().shard(list(range(5))) == list(range(5)) and Distributed().all_gather(3) == [3]
