"""Multi-agent self-play (training/selfplay.py): per-seat estimators, exploitability, snapshots and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hiergym.envs.multiagent import kuhn_poker_v0
from hiergym.envs.multiagent.players import KuhnEquilibriumPlayer
from hiergym.training.advantages import compute_advantages, estimator_options
from hiergym.training.config import load_config
from hiergym.training.trajectory import StepBatch

torch.set_num_threads(1)


def zero_sum_batch() -> StepBatch:
    """Two copies of one task: seat 0 wins 1 and 1 (and its rows: the first mover's advantage), seat 1 loses."""
    # trajectories: 0 (copy 0, seat 0), 1 (copy 0, seat 1), 2 (copy 1, seat 0), 3 (copy 1, seat 1)
    return StepBatch.from_arrays(group_id=[0, 0, 1, 1, 0, 0, 1, 1], traj_id=[0, 0, 1, 1, 2, 2, 3, 3],
                                 step=[0, 1, 0, 1, 0, 1, 0, 1], reward=[0, 1, 0, -1, 0, 0.5, 0, -0.5],
                                 role=[0, 0, 1, 1, 0, 0, 1, 1])


def test_mars_normalises_per_role_so_zero_sum_signals_survive() -> None:
    batch = zero_sum_batch()
    by_role = compute_advantages("mars", batch, gamma=1.0)
    # Seat 0's copies: returns-to-go 1, 1 vs 0.5, 0.5: the better copy is positive. Seat 1 mirrors it: the copy
    # that lost less is positive. Neither seat's signal is cancelled by the other's opposite payoff.
    assert by_role[0] > 0 and by_role[4] < 0 and by_role[2] < 0 and by_role[6] > 0
    np.testing.assert_allclose(by_role[[0, 1]], -by_role[[2, 3]])
    # Pooling both seats in one set (role ignored: every row role 0) would rank all of seat 0 above seat 1.
    pooled = StepBatch.from_arrays(group_id=[0] * 8, traj_id=batch.traj_id, step=batch.step, reward=batch.reward)
    assert (compute_advantages("mars", pooled, gamma=1.0, normalize_by="group")[[2, 3, 6, 7]] < 0).all()


def test_group_estimators_take_normalize_by() -> None:
    batch = zero_sum_batch()
    grpo_group = compute_advantages("grpo", batch)
    grpo_role = compute_advantages("grpo", batch, normalize_by="role")
    assert grpo_group[0] > 0 and grpo_group[2] < 0  # groups are (task, seat): same signs
    np.testing.assert_allclose(grpo_group, grpo_role)  # one task: the role's rows are the (task, seat) group's
    assert compute_advantages("gigpo", batch, normalize_by="role").shape == (8,)
    with pytest.raises(ValueError, match="normalize_by must be one of group, role"):
        estimator_options("gigpo", {"normalize_by": "seats"})


def test_exploitability_of_known_strategies() -> None:
    for alpha in (0.0, 1 / 6, 1 / 3):
        assert kuhn_poker_v0.exploitability(KuhnEquilibriumPlayer(alpha).strategy) == pytest.approx(0.0, abs=1e-12)

    def always_bet(card: str, history: str, first: bool) -> dict[str, float]:
        return {"bet": 1.0, "check": 0.0} if history in ("", "c") else {"call": 1.0, "fold": 0.0}

    assert kuhn_poker_v0.exploitability(always_bet) > 0.1


def test_exploitability_of_a_policy_reads_every_information_set() -> None:
    from hiergym.agents.policy import CausalLMPolicy
    from hiergym.training.selfplay import kuhn_exploitability, kuhn_strategy

    config = load_config("kuhn-selfplay", overrides={"out_dir": "/tmp/unused"})
    policy = CausalLMPolicy.tiny(seed=0, architecture=config.model_architecture)
    strategy, mass = kuhn_strategy(policy, config)
    for first, histories in ((True, ("", "cb")), (False, ("b", "c"))):
        for history in histories:
            for card in "JQK":
                probs = strategy(card, history, first)
                assert set(probs) == set(kuhn_poker_v0.legal_in_history(history))
                assert sum(probs.values()) == pytest.approx(1.0)
    assert 0 < mass < 1
    assert kuhn_exploitability(policy, config)["exploitability"] > 0


SMALL = {"model_architecture": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1},
         "num_tasks": 2, "group_size": 2, "sft_episodes": 4, "sft_steps": 2, "sft_batch_size": 4,
         "eval_episodes": 4, "snapshot_every": 1, "checkpoint_every": 1, "max_new_tokens": 4, "progress": False,
         "opponent_mix": {"self": 1.0, "league": 1.0, "random": 1.0}, "mini_batches": 1}


def test_snapshots_are_saved_loaded_and_resumed(tmp_path) -> None:
    from hiergym.training.selfplay import SelfPlayTrainer

    out = tmp_path / "run"
    config = load_config("tictactoe-selfplay", overrides={**SMALL, "iterations": 2, "out_dir": str(out)})
    summary = SelfPlayTrainer(config).run()
    assert summary["iterations"] == 2 and summary["snapshots"] == 3  # after cloning, then every iteration
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["iter_000000", "iter_000001", "iter_000002"]
    # A snapshot is a checkpoint hiergym loads as tiny:DIR, with the weights of the policy at that iteration.
    from hiergym.agents.spec import make_agent

    agent = make_agent(f"tiny:{out}/snapshots/iter_000002", env_id=config.env_id)
    trained = SelfPlayTrainer(config, resume=True)
    for a, b in zip(agent.backend.model.parameters(), trained.policy.model.parameters(), strict=True):
        assert torch.equal(a, b)
    # Resume continues with the same league: two more iterations, two more snapshots, the games counted so far.
    league = {s["path"]: s["games"] for s in trained.state["snapshots"]}
    more = load_config("tictactoe-selfplay", overrides={**SMALL, "iterations": 4, "out_dir": str(out)})
    resumed = SelfPlayTrainer(more, resume=True)
    assert resumed.state["iteration"] == 2 and len(resumed.state["snapshots"]) == 3
    assert {s["path"]: s["games"] for s in resumed.state["snapshots"]} == league
    summary = resumed.run()
    assert summary["iterations"] == 4 and summary["snapshots"] == 5
    rl_rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
               if json.loads(line)["phase"] == "rl"]
    assert [r["iteration"] for r in rl_rows] == [1, 2, 3, 4]
    assert set(summary["rl_gain"]) == {"expert", "random"}


def test_league_sampling_rules(tmp_path) -> None:
    from hiergym.training.selfplay import SelfPlayTrainer

    config = load_config("tictactoe-selfplay", overrides={**SMALL, "iterations": 0, "out_dir": str(tmp_path),
                                                           "league_sampling": "prioritized", "league_size": 2})
    trainer = SelfPlayTrainer(config)
    trainer.state["snapshots"] = [{"iteration": i, "path": f"s{i}", "games": 100, "score": s}
                                  for i, s in enumerate([0.0, 100.0, 0.0])]
    assert [s["path"] for s in trainer.league()] == ["s1", "s2"]  # the last league_size
    drawn = [trainer.sample_snapshot("league", 0, b)["path"] for b in range(50)]
    assert drawn.count("s2") > 45  # the one the learner never beats
    assert trainer.sample_snapshot("frozen", 0, 0)["path"] == "s2"


def test_config_rejects_unknown_players() -> None:
    with pytest.raises(ValueError, match="opponent_mix key 'minimax' is no player of kuhn_poker_v0"):
        load_config("kuhn-selfplay", overrides={"opponent_mix": "{minimax: 1}"})
    with pytest.raises(ValueError, match="weights >= 0"):
        load_config("kuhn-selfplay", overrides={"opponent_mix": "{self: -1}"})
    with pytest.raises(ValueError, match="choose one of"):
        load_config("kuhn-selfplay", overrides={"game": "chess_v6"})


def test_arena_plays_a_trained_checkpoint(tmp_path, capsys) -> None:
    from hiergym.agents.policy import CausalLMPolicy
    from hiergym.cli import main

    CausalLMPolicy.tiny(seed=0, architecture=SMALL["model_architecture"]).save(
        tmp_path / "model", agent_config={"style": "compact", "max_new_tokens": 4})
    assert main(["arena", "tictactoe_v0", f"tiny:{tmp_path}/model", "random", "--games", "4"]) == 0
    assert "tiny" in capsys.readouterr().out
    assert main(["arena", "tictactoe_v0", f"tiny:{tmp_path}/missing", "random"]) == 2
    assert "no tiny checkpoint" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Unable to enable fault handler")  # torch's launcher record under capsys
def test_train_command_runs_self_play(tmp_path, capsys) -> None:
    from hiergym.cli import main

    overrides = [f"{k}={json.dumps(v)}" for k, v in {**SMALL, "iterations": 1, "eval_episodes": 6}.items()]
    assert main(["train", "--preset", "kuhn-selfplay", "--out", str(tmp_path), *overrides]) == 0
    out = capsys.readouterr().out
    assert "exploitability" in out and "RL gain vs expert" in out
    assert (tmp_path / "snapshots" / "iter_000001" / "config.json").is_file()
