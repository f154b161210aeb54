"""A killed training run resumes from what is really on disk (issue 21): no metrics row twice, the previous
checkpoint kept until the new one is whole, a damaged checkpoint named with what to do, checkpoints that stay
relocatable."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import choice_config  # noqa: E402  (registers the trivial Choice env)

from hiergym.training.trainer import CheckpointError, Trainer  # noqa: E402

torch.set_num_threads(1)


def quick(tmp_path, **overrides):
    return choice_config(tmp_path, **{"iterations": 2, "sft_steps": 10, "sft_episodes": 8, "num_tasks": 2,
                                      "group_size": 2, **overrides})


def rl_iterations(out: Path) -> list[int]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["iteration"] for r in rows if r["phase"] == "rl"]


def test_a_kill_between_a_metrics_row_and_the_checkpoint_logs_nothing_twice(tmp_path, monkeypatch) -> None:
    config = quick(tmp_path, iterations=3)
    trainer = Trainer(config)
    save = Trainer.save_checkpoint

    def killed_at_iteration_2(self):
        if self.state["iteration"] == 2:
            raise KeyboardInterrupt  # the row of iteration 2 is written, its checkpoint is not
        return save(self)

    monkeypatch.setattr(Trainer, "save_checkpoint", killed_at_iteration_2)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert rl_iterations(Path(config.out_dir)) == [1, 2]
    monkeypatch.setattr(Trainer, "save_checkpoint", save)
    Trainer(config, resume=True).run()
    assert rl_iterations(Path(config.out_dir)) == [1, 2, 3]


def test_a_kill_between_the_two_renames_keeps_the_previous_checkpoint(tmp_path) -> None:
    config = quick(tmp_path)
    Trainer(config).run()
    out = Path(config.out_dir)
    (out / "checkpoint").rename(out / "checkpoint.old")  # the kill came after the first rename
    (out / "checkpoint.tmp").mkdir()  # and a half-written new one lies beside it
    resumed = Trainer(config, resume=True)
    assert resumed.state["iteration"] == 2
    assert (out / "checkpoint" / "state.pt").is_file() and not (out / "checkpoint.tmp").exists()


def test_a_damaged_checkpoint_is_named_with_what_to_do(tmp_path) -> None:
    config = quick(tmp_path)
    Trainer(config).run()
    checkpoint = Path(config.out_dir) / "checkpoint"
    backup = Path(tmp_path) / "backup"
    shutil.copytree(checkpoint, backup)
    (checkpoint / "state.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"state\.pt is damaged.*start over without --resume"):
        Trainer(config, resume=True)
    shutil.rmtree(checkpoint)
    shutil.copytree(backup, checkpoint)
    weights = checkpoint / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model files .* are damaged"):
        Trainer(config, resume=True)


def test_the_checkpoint_stays_relocatable_after_a_resume(tmp_path) -> None:
    config = quick(tmp_path)
    Trainer(config).run()
    resumed = Trainer(quick(tmp_path, iterations=3), resume=True)
    resumed.save_checkpoint()
    note = json.loads((Path(config.out_dir) / "checkpoint" / "model" / "hiergym_policy.json").read_text())
    assert note["name"] == "tiny"


def test_a_finished_run_resumed_with_more_iterations_is_evaluated_again_after_them(tmp_path) -> None:
    """Extending a finished run (iterations=0 after cloning, say) must not report the old after-RL evaluation."""
    config = quick(tmp_path, iterations=0)
    first = Trainer(config).run()
    assert first["success_after_rl"] == first["success_before_rl"]
    resumed = Trainer(quick(tmp_path, iterations=2, eval_out_episodes=2), resume=True)
    summary = resumed.run()
    assert resumed.state["after_rl_iteration"] == 2
    labels = [e["label"] for e in resumed.state["evaluations"]]
    assert labels.count("after_rl") == 1 and labels[-1] == "after_rl_eval_out"
    assert "before_rl_eval_out" in resumed.state  # the cloned start, evaluated on resume before any RL
    assert summary["eval_out"] is not None
    assert rl_iterations(Path(config.out_dir)) == [1, 2]
    # Extended once more, without eval_out: the earlier after-RL result is the point of its iteration, and no
    # eval_out result of an earlier policy is reported as after RL.
    again = Trainer(quick(tmp_path, iterations=3), resume=True)
    summary = again.run()
    labels = [e["label"] for e in again.state["evaluations"]]
    assert labels == ["before_rl", "iteration_0", "before_rl_eval_out", "iteration_2", "after_rl"]
    assert summary["eval_out"] is None and not (Path(config.out_dir) / "eval" / "after_rl_eval_out").exists()
    rows = [json.loads(line) for line in (Path(config.out_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows if r["phase"] == "eval" and r["label"] == "after_rl"][-1] == 3


def test_a_resumed_run_pulls_towards_the_policy_rl_started_from(tmp_path, monkeypatch) -> None:
    """With a KL term, the reference is the policy at the start of RL: a killed run resumed from a later
    checkpoint must pull towards that policy, not towards the weights it resumed with, and end where the
    uninterrupted run ends."""
    settings = dict(iterations=3, kl_coef=0.5, num_tasks=2, group_size=4)
    config = choice_config(tmp_path / "whole", **settings)
    whole = Trainer(config)
    whole.run()
    start = {k: v.clone() for k, v in whole.reference.model.state_dict().items()}

    killed = choice_config(tmp_path / "killed", **settings)
    trainer = Trainer(killed)
    save = Trainer.save_checkpoint

    def killed_after_iteration_2(self):
        result = save(self)
        if self.state["iteration"] == 2:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(Trainer, "save_checkpoint", killed_after_iteration_2)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    monkeypatch.setattr(Trainer, "save_checkpoint", save)
    resumed = Trainer(killed, resume=True)
    resumed_weights = {k: v.clone() for k, v in resumed.policy.model.state_dict().items()}
    resumed.run()
    reference = resumed.reference.model.state_dict()
    assert all(torch.equal(reference[k], start[k]) for k in start)
    assert any(not torch.equal(resumed_weights[k], start[k]) for k in start)  # RL had moved the policy
    final, uninterrupted = resumed.policy.model.state_dict(), whole.policy.model.state_dict()
    assert all(torch.allclose(final[k], uninterrupted[k], atol=1e-6) for k in final)
