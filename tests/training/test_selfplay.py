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
    # The finished run resumed with more iterations is evaluated again after them (not the old result); the
    # earlier after-RL evaluation becomes iteration 2's point.
    eval_rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                 if json.loads(line)["phase"] == "eval"]
    assert [r["label"] for r in eval_rows].count("after_rl") == 2
    assert [e["label"] for e in summary["evaluations"]] == ["initial", "before_rl", "iteration_2", "after_rl"]
    assert resumed.state["after_rl_iteration"] == 4


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


@pytest.mark.parametrize("game", ["tictactoe_v0", "kuhn_poker_v0", "negotiation_v0", "household_coop_v0"])
def test_every_game_lists_the_mover_s_admissible_actions(game) -> None:
    """``action_constraint=admissible`` needs each seat's legal moves in its info when it is to move."""
    from hiergym.envs.multiagent.evaluate import game_module

    env = game_module(game).raw_env()
    env.reset(seed=0)
    for _ in range(4):
        seat = env.agent_selection
        legal = env.infos[seat]["admissible_actions"]
        assert legal and all(isinstance(a, str) and a for a in legal)
        env.step(legal[0])
        if not env.agents or all(env.terminations[a] or env.truncations[a] for a in env.agents):
            break


CONSTRAINED = {**SMALL, "action_constraint": "admissible", "list_actions": False, "tokenizer": "env",
               "tokenizer_episodes": 6, "tokenizer_vocab_size": 400, "opponent_mix": {"self": 1.0}}


def test_constrained_self_play_plays_no_illegal_move_and_clones_under_the_masks(tmp_path) -> None:
    """Both levers in the self-play path: the tokenizer is fitted on the game's text, cloning pairs carry the
    constraint's masks, and a constrained rollout (both seats the learner, sampled) never plays an illegal
    move; the behaviour log-probs it records are under the masks, so the update's first ratio is 1."""
    from hiergym.training.selfplay import SelfPlayTrainer

    config = load_config("tictactoe-selfplay", overrides={**CONSTRAINED, "iterations": 1, "out_dir": str(tmp_path)})
    trainer = SelfPlayTrainer(config)
    assert trainer.policy.tokenizer.vocab_size > 259  # the game's BPE, not the byte tokenizer
    assert len(trainer.policy.tokenizer("   a b c\n1  . . .")["input_ids"]) < len("   a b c\n1  . . .")
    summary = trainer.run()
    rl = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
          if json.loads(line)["phase"] == "rl"]
    assert rl and rl[0]["invalid_rate"] == 0.0 and rl[0]["rows"] > 0
    for label in ("before_rl", "after_rl"):
        for opponent in ("expert", "random"):
            assert summary[label]["opponents"][opponent]["invalid_move_rate"] == 0.0
    # A batch played by the untrained (near-uniform) learner with itself, at temperature 1: no illegal move, and
    # every row's response is one of its admissible answers, with the masks it was sampled under.
    from hiergym.training.trainer import build_agent

    learner = build_agent(config, trainer.policy, 1.0)
    from hiergym.multiagent_driver import play_games

    played = play_games("tictactoe_v0", [{"player_0": learner, "player_1": learner}] * 8,
                        [{"seed": s} for s in range(8)])
    assert sum(sum(g.invalid.values()) for g in played.games) == 0
    assert all(r.response_allowed for r in played.records)
    # Cloning pairs carry masks: the teacher's answers are among the admissible choices.
    from hiergym.training.demonstrations import Demonstration
    from hiergym.training.selfplay import teacher_games

    _, generations = teacher_games(config, 4, 0)
    assert generations and all(g.choices and g.response_text in g.choices for g in generations)
    assert "\nactions: " not in generations[0].prompt_text  # list_actions=false: the sampler holds the list
    pair = trainer.demonstration_pair(Demonstration(generations[0].prompt_text, generations[0].response_text,
                                                    choices=generations[0].choices))
    assert pair[2] is not None and len(pair[2]) == len(pair[1])


@pytest.mark.parametrize("preset", ["tictactoe-selfplay", "negotiation-selfplay", "household-selfplay"])
def test_the_game_presets_turn_both_levers_on(preset) -> None:
    config = load_config(preset, overrides={"out_dir": "/tmp/unused"})
    assert config.action_constraint == "admissible" and config.tokenizer == "env" and not config.list_actions
    assert load_config("kuhn-selfplay", overrides={"out_dir": "/tmp/unused"}).action_constraint == "none"
