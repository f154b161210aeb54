"""Critic-based credit (issue 20): ArCHer's TD targets and critic, the replay buffer across a resume, Turn-PPO's
turn-level GAE, SPA's exact stepwise contributions."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hiergym.training.advantages import compute_advantages, estimator_options, gae, turn_ppo
from hiergym.training.critic import ArcherCritic, archer_td_targets
from hiergym.training.progress import ProgressEstimator, exact_contributions
from hiergym.training.replay import (
    Trajectory,
    TrajectoryReplay,
    Turn,
    TurnReplay,
    acting_rows,
    turns_from_batch,
)
from hiergym.training.trajectory import StepBatch, StepRecord

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import choice_config  # noqa: E402  (registers the trivial Choice env)

torch.set_num_threads(1)
CPU = torch.device("cpu")


def record(traj: int, step: int, reward: float, prompt: list[int], response: list[int], level: str = "executor",
           group: int = 0, done: bool = False, segment: int = 0) -> StepRecord:
    return StepRecord(group_id=group, traj_id=traj, step=step, level=level, segment=segment, anchor=str(prompt),
                      reward=reward, done=done, prompt_token_ids=prompt, response_token_ids=response,
                      response_logprobs=[-1.0] * len(response))


def small_critic(**options) -> ArcherCritic:
    settings = estimator_options("archer", {"critic_hidden_size": 16, "critic_layers": 1, **options})
    return ArcherCritic(settings, vocab_size=32, pad_id=0, device=CPU, seed=0)


# ------------------------------------------------------------------------------------------ ArCHer
def test_td_targets_on_a_hand_built_two_turn_mdp() -> None:
    # One trajectory: a planner turn and the executor turn of step 0, then the executor turn of step 1 (reward 1,
    # the end). gamma = 0.5: no discount from the planner turn to its executor turn, gamma per environment step.
    batch = StepBatch.from_records([
        record(0, 0, 0.0, [1, 2], [3], level="planner"), record(0, 0, 0.0, [1, 4], [5]),
        record(0, 1, 1.0, [1, 6], [7], done=True)])
    turns = turns_from_batch(batch)
    assert [t.delta_steps for t in turns] == [0, 1, 0]
    assert [t.terminal for t in turns] == [False, False, True]
    assert [t.next_prompt.tolist() for t in turns] == [[1, 4], [1, 6], []]
    q_target, v_target = archer_td_targets(np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.5, 1.0]),
                                           np.array([False, False, True]), np.array([0.3, 0.8, 99.0]),
                                           np.array([0.1, 0.2, 0.4]))
    np.testing.assert_allclose(q_target, [0.3, 0.4, 1.0])  # r + gamma^k V_target(s'); the last turn: r
    np.testing.assert_allclose(v_target, [0.1, 0.2, 0.4])  # V(s) <- Q_target(s, a)
    # ArCHer's double critic: each Q twin bootstraps on its own V twin, both V twins regress on the smaller Q.
    q_twin, v_twin = archer_td_targets(np.array([0.0, 1.0]), np.array([0.5, 1.0]), np.array([False, True]),
                                       np.array([[0.2, 0.6], [5.0, 5.0]]), np.array([[0.3, 0.1], [0.7, 0.9]]))
    np.testing.assert_allclose(q_twin, [[0.1, 0.3], [1.0, 1.0]])
    np.testing.assert_allclose(v_twin, [0.1, 0.7])
    # The critic's own targets are these, from its target network's V(s') and Q(s, a).
    critic = small_critic(gamma=0.5)
    q_t, v_t = critic.td_targets(turns)
    with torch.no_grad():
        v_next = critic._scorer.values(critic.target, [[1, 4], [1, 6]]).numpy()
        q_sa, _ = critic._scorer.q_and_v(critic.target, [t.prompt for t in turns], [t.response for t in turns])
    assert q_t.shape == (3, 2) and not np.allclose(v_next[:, 0], v_next[:, 1])  # two twins, apart
    np.testing.assert_allclose(q_t, [v_next[0], 0.5 * v_next[1], [1.0, 1.0]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v_t, q_sa.numpy().min(axis=1), rtol=1e-5, atol=1e-6)


def test_critic_converges_to_the_true_values_on_a_deterministic_chain() -> None:
    # s0 -a-> s1 -a-> s2 -a-> end (reward 1 on the last step); at s0, action b ends at once with reward 0. The
    # buffer holds both actions at s0 equally often, so V(s0) = mean of Q(s0, .) over the buffer's actions.
    s0, s1, s2, a, b = [1, 10], [1, 11], [1, 12], [20], [21]
    gamma = 0.9
    chain = [Turn(np.array(s0), np.array(a), 0.0, np.array(s1), False, 1),
             Turn(np.array(s1), np.array(a), 0.0, np.array(s2), False, 1),
             Turn(np.array(s2), np.array(a), 1.0, np.zeros(0, np.int64), True, 0),
             Turn(np.array(s0), np.array(b), 0.0, np.zeros(0, np.int64), True, 0)]
    critic = small_critic(gamma=gamma, tau=0.2, critic_learning_rate=3e-3)
    for _ in range(300):  # full-batch TD steps (a drawn minibatch adds the noise of which actions it holds)
        critic.td_step(chain)
    q, v = critic.score([t.prompt for t in chain], [t.response for t in chain])
    np.testing.assert_allclose(q, [gamma**2, gamma, 1.0, 0.0], atol=0.02)
    np.testing.assert_allclose(v, [gamma**2 / 2, gamma, 1.0, gamma**2 / 2], atol=0.02)
    advantage = q - v  # what the policy trains against: a at s0 is better than the buffer's average action
    assert advantage[0] > 0.3 and advantage[3] < -0.3 and abs(advantage[1]) < 0.05


def test_archer_estimator_reads_the_critic() -> None:
    batch = StepBatch.from_arrays(group_id=[0, 0], traj_id=[0, 0], step=[0, 1], reward=[0, 1])
    with pytest.raises(ValueError, match="ArcherCritic"):
        compute_advantages("archer", batch)
    batch.q_value, batch.value = np.array([1.0, 0.5]), np.array([0.25, 0.5])
    np.testing.assert_allclose(compute_advantages("archer", batch, normalize="none"), [0.75, 0.0])
    np.testing.assert_allclose(compute_advantages("archer", batch), [0.75 / (0.375 + 1e-6), 0.0])  # std of (0.75, 0)


def test_replay_buffer_round_trip_keeps_turns_and_draws() -> None:
    rng = np.random.default_rng(3)
    replay = TurnReplay(capacity=5, seed=1)
    replay.add([Turn(rng.integers(1, 9, rng.integers(1, 5)), rng.integers(1, 9, 2), float(k), rng.integers(1, 9, 3),
                     k % 2 == 0, k % 3) for k in range(7)])
    assert len(replay) == 5 and replay.added == 7 and replay.turns[0].reward == 2.0  # oldest two dropped
    replay.sample(3)
    copy = TurnReplay(capacity=1)
    copy.load_state_dict(replay.state_dict())
    assert _turns(copy.turns) == _turns(replay.turns)
    assert _turns(copy.sample(4)) == _turns(replay.sample(4))
    trajectories = TrajectoryReplay(capacity=3, seed=2)
    trajectories.add([Trajectory([np.arange(k + 1), np.arange(2)], float(k)) for k in range(4)])
    restored = TrajectoryReplay(capacity=1)
    restored.load_state_dict(trajectories.state_dict())
    assert [(t.outcome, [s.tolist() for s in t.steps]) for t in restored.trajectories] == \
        [(t.outcome, [s.tolist() for s in t.steps]) for t in trajectories.trajectories]


def _turns(turns: list[Turn]) -> list[tuple]:
    return [(t.prompt.tolist(), t.response.tolist(), t.reward, t.next_prompt.tolist(), t.terminal, t.delta_steps)
            for t in turns]


def _critic_state(trainer) -> tuple[list[tuple], list[np.ndarray]]:
    critic = trainer.credit.models["critic"]
    return _turns(critic.replay.turns), [p.detach().numpy().copy() for p in critic.online.parameters()]


def test_a_resumed_archer_run_continues_with_the_identical_buffer(tmp_path, monkeypatch) -> None:
    from hiergym.training.trainer import Trainer

    def config(out):
        return choice_config(out, estimator="archer", iterations=3, sft_episodes=8, sft_steps=10, num_tasks=2,
                             group_size=2, eval_episodes=2, estimator_options={
                                 "critic_init": "fresh", "critic_hidden_size": 16, "critic_layers": 1, "critic_updates": 4,
                                 "critic_batch_size": 8, "buffer_size": 10})

    straight = Trainer(config(tmp_path / "straight"))
    straight.run()
    turns, weights = _critic_state(straight)
    assert len(turns) == 10  # the buffer filled up and dropped its oldest turns

    killed = Trainer(config(tmp_path / "killed"))
    step = Trainer.train_iteration

    def killed_at_iteration_3(self, iteration):
        if iteration == 2:
            raise KeyboardInterrupt  # after the checkpoint of iteration 2
        return step(self, iteration)

    monkeypatch.setattr(Trainer, "train_iteration", killed_at_iteration_3)
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    monkeypatch.setattr(Trainer, "train_iteration", step)
    resumed = Trainer(config(tmp_path / "killed"), resume=True)
    assert resumed.state["iteration"] == 2
    assert _critic_state(resumed)[0] == _critic_state(killed)[0]  # the buffer came back as it was
    resumed.run()
    resumed_turns, resumed_weights = _critic_state(resumed)
    assert resumed_turns == turns
    for a, b in zip(resumed_weights, weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ Turn-PPO
def test_turn_ppo_hand_computed() -> None:
    # One trajectory of a hierarchical agent: planner turn (V 0.2) and executor turn (V 0.4) at step 0 (reward
    # 0), executor turn at step 1 (V 0.5, reward 1, the end). gamma 0.5 per environment step, lambda 0.5 per turn.
    batch = StepBatch.from_arrays(group_id=[0, 0, 0], traj_id=[0, 0, 0], step=[0, 0, 1], reward=[0, 0, 1],
                                  level=[1, 0, 0], value=[0.2, 0.4, 0.5])
    d0 = 0 + 1.0 * 0.4 - 0.2  # planner -> executor of the same step: no discount
    d1 = 0 + 0.5 * 0.5 - 0.4
    d2 = 1 - 0.5
    a2 = d2
    a1 = d1 + 0.5 * 0.5 * a2
    a0 = d0 + 1.0 * 0.5 * a1
    np.testing.assert_allclose(turn_ppo(batch, gamma=0.5, lam=0.5), [a0, a1, a2])
    # gae gives the planner row the executor's advantage of its step instead, and ignores the planner's value.
    np.testing.assert_allclose(gae(batch, gamma=0.5, lam=0.5)[0], gae(batch, gamma=0.5, lam=0.5)[1])


def test_turn_ppo_is_gae_for_a_flat_agent() -> None:
    rng = np.random.default_rng(0)
    steps = [4, 2, 5]
    traj = np.repeat(np.arange(3), steps)
    step = np.concatenate([np.arange(n) for n in steps])
    batch = StepBatch.from_arrays(group_id=traj // 2, traj_id=traj, step=step, reward=rng.normal(size=traj.size),
                                  value=rng.normal(size=traj.size))
    np.testing.assert_allclose(turn_ppo(batch, gamma=0.9, lam=0.8), gae(batch, gamma=0.9, lam=0.8))
    assert estimator_options("turn_ppo", {"critic": "policy"}).needs_value_head
    assert estimator_options("turn_ppo").turn_critic == "value" and not estimator_options("turn_ppo").needs_value_head


def test_critic_options_are_checked() -> None:
    with pytest.raises(ValueError, match="tau must be <= 1"):
        estimator_options("archer", {"tau": 2})
    with pytest.raises(ValueError, match="valid keys"):
        estimator_options("archer", {"lr": 1e-3})
    with pytest.raises(ValueError, match="critic must be one of"):
        estimator_options("turn_ppo", {"critic": "shared"})
    with pytest.raises(ValueError, match="needs critic='separate'"):
        estimator_options("turn_ppo", {"critic": "policy", "normalize": "std"})
    with pytest.raises(ValueError, match="needs form='value'"):
        estimator_options("hiper", {"critic": "separate"})
    separate = estimator_options("hiper", {"form": "value", "critic": "separate"})
    assert separate.turn_critic == "value" and not separate.needs_value_head
    assert estimator_options("hiper", {"form": "value"}).needs_value_head
    assert estimator_options("hiper", {"form": "value"}).turn_critic is None
    assert estimator_options("archer").gamma == estimator_options("gae").gamma
    # The critic options of a run without a separate critic would do nothing: refused, by name.
    with pytest.raises(ValueError, match="critic_learning_rate, critic_warmup_iterations set a separate critic.*"
                       "form=value,critic=separate"):
        estimator_options("hiper", {"form": "value", "critic_learning_rate": 0.1, "critic_warmup_iterations": 2})
    with pytest.raises(ValueError, match="critic_updates set a separate critic"):
        estimator_options("hiper", {"critic_updates": 2})
    with pytest.raises(ValueError, match="critic_layers set a separate critic.*add critic=separate"):
        estimator_options("turn_ppo", {"critic": "policy", "critic_layers": 3})
    assert estimator_options("hiper", {"form": "value", "critic": "separate",
                                       "critic_warmup_iterations": 2}).critic_warmup_iterations == 2
    with pytest.raises(ValueError, match="spa_mix must be <= 1"):
        choice_config(Path("/tmp/unused"), reward_shaping="spa", spa_mix=2.0)
    with pytest.raises(ValueError, match="reward_shaping"):
        choice_config(Path("/tmp/unused"), reward_shaping="rudder")


# ------------------------------------------------------------------------------------------ SPA
def spa_batch(seed: int = 0) -> StepBatch:
    """Trajectories of a hierarchical agent with planner rows and give-up executor rows (no env reward)."""
    rng = np.random.default_rng(seed)
    records = []
    for traj in range(6):
        for step in range(int(rng.integers(1, 6))):
            if step % 2 == 0:
                records.append(record(traj, step, 0.0, [1, 3, step], [4], level="planner", group=traj // 3))
            if step == 1:
                records.append(record(traj, step, 0.0, [1, 5, step], [6], group=traj // 3))  # gave its subgoal up
            records.append(record(traj, step, float(rng.normal()), [1, 2, int(rng.integers(7, 30))],
                                  [int(rng.integers(7, 30))], group=traj // 3))
    return StepBatch.from_records(records)


def test_exact_contributions_sum_to_the_outcome() -> None:
    rng = np.random.default_rng(1)
    owner = rng.integers(0, 5, 40)
    outcomes = rng.normal(size=5) * 10
    c = exact_contributions(rng.normal(size=40), owner, outcomes)
    np.testing.assert_allclose(np.bincount(owner, weights=c, minlength=5), outcomes, atol=1e-9)


@pytest.mark.parametrize("mix", [1.0, 0.5])
def test_spa_contributions_sum_to_the_outcome_on_every_trajectory(mix: float) -> None:
    batch = spa_batch()
    outcomes = np.bincount(batch.traj_id, weights=batch.reward)
    raw = batch.reward.copy()
    acting = acting_rows(batch)
    assert acting.sum() == len({(t, s) for t, s in zip(batch.traj_id, batch.step, strict=True)})
    assert np.all(raw[~acting] == 0.0)  # planner and give-up rows carry no env reward
    spa = ProgressEstimator(vocab_size=32, pad_id=0, device=CPU, updates=5, batch_size=4, mix=mix,
                            hidden_size=16, layers=1)
    metrics = spa.before_advantages(batch)
    assert np.isfinite(metrics["spa_loss"]) and metrics["spa_replay"] == 6
    np.testing.assert_allclose(np.bincount(batch.traj_id, weights=batch.reward), outcomes, atol=1e-6)
    assert np.all(batch.reward[~acting] == 0.0) and not np.allclose(batch.reward, raw)
    _, c, _ = spa.contributions(batch)
    np.testing.assert_allclose(np.bincount(batch.traj_id[acting], weights=c), outcomes, atol=1e-6)


def test_spa_learns_which_step_made_the_progress() -> None:
    # Two-step trajectories: the second action is 8 (outcome 1) or 9 (outcome 0); the first is always 7. Trained
    # on them, the estimator gives the credit to the deciding step, not to the shared first one.
    records = []
    for traj in range(8):
        good = traj % 2 == 0
        records += [record(traj, 0, 0.0, [1, 2], [7]), record(traj, 1, float(good), [1, 3], [8 if good else 9])]
    batch = StepBatch.from_records(records)
    spa = ProgressEstimator(vocab_size=32, pad_id=0, device=CPU, updates=150, batch_size=8, learning_rate=1e-2,
                            hidden_size=16, layers=1)
    spa.before_advantages(batch)
    first, second = batch.reward[batch.step == 0], batch.reward[batch.step == 1]
    assert np.all(np.abs(first) < 0.15)
    np.testing.assert_allclose(second, [1.0, 0.0] * 4, atol=0.15)


@pytest.mark.parametrize(("estimator", "extra", "keys"), [
    ("archer", {}, ("critic_loss", "critic_replay", "critic_advantage_std")),
    ("turn_ppo", {}, ("critic_loss", "critic_v_mean")),
    ("hiper", {}, ("critic_loss", "critic_v_mean")),
    ("gigpo", {"reward_shaping": "spa"}, ("spa_loss", "spa_residual")),
])
def test_the_trainer_runs_each_credit_model(tmp_path, estimator, extra, keys) -> None:
    from hiergym.training.trainer import Trainer

    small = {"critic_updates": 2} if estimator != "gigpo" else {}
    if estimator == "hiper":
        small |= {"form": "value", "critic": "separate"}
    config = choice_config(tmp_path, estimator=estimator, iterations=1, sft_episodes=0, sft_steps=0, num_tasks=2,
                           group_size=2, agent="hierarchical", estimator_options=small, spa_updates=2, **extra)
    trainer = Trainer(config)
    assert trainer.value_head is None and trainer.credit is not None
    model = next(iter(trainer.credit.models.values()))
    net = getattr(model, "online", None) or model.net  # started as a copy of the policy's transformer, apart from it
    own = dict(net.trunk.named_parameters())
    for name, p in trainer.policy.model.model.named_parameters():
        assert torch.equal(own[name], p) and own[name].data_ptr() != p.data_ptr()
    metrics = trainer.train_iteration(0)
    assert all(np.isfinite(metrics[k]) for k in keys) and metrics["env_steps"] > 0
    assert set(trainer.credit.state_dict()) == {"critic" if estimator != "gigpo" else "spa"}
    assert any(not torch.equal(own[name], p) for name, p in trainer.policy.model.model.named_parameters())


def test_hipers_separate_critic_regresses_on_hipers_own_lambda_returns(monkeypatch) -> None:
    """With ``hiper(form='value', critic='separate')`` the turn critic's targets are the advantages hiper
    returned plus V (the value head's targets), not Turn-PPO's turn-level returns."""
    from hiergym.training.critic import TurnValueCritic

    options = estimator_options("hiper", {"form": "value", "critic": "separate", "critic_hidden_size": 16,
                                          "critic_layers": 1, "critic_updates": 1})
    critic = TurnValueCritic(options, vocab_size=32, pad_id=0, device=CPU, seed=0, trunk=None)
    batch = StepBatch.from_records([
        record(0, 0, 0.0, [1, 2], [3], level="planner"), record(0, 0, 0.0, [1, 4], [5]),
        record(0, 1, 1.0, [1, 6], [7], done=True, segment=0)])
    critic.before_advantages(batch)
    advantages = compute_advantages("hiper", batch, form="value")
    seen = {}

    def fit(prompts, targets, updates=None):
        seen["t"] = targets
        return []

    monkeypatch.setattr(critic, "fit", fit)
    critic.after_advantages(batch, advantages)
    np.testing.assert_allclose(seen["t"], advantages + batch.value)


def test_a_warming_critic_is_fitted_while_the_policy_stays(tmp_path) -> None:
    """``critic_warmup_iterations=1``: the first batch fits the critic and updates no policy level (the policy's
    weights are bit-identical after it), the second updates both; the count survives a checkpoint."""
    from hiergym.training.trainer import Trainer

    options = {"form": "value", "critic": "separate", "critic_updates": 2, "critic_warmup_iterations": 1}
    config = choice_config(tmp_path, estimator="hiper", iterations=2, sft_episodes=0, sft_steps=0, num_tasks=2,
                           group_size=2, agent="hierarchical", estimator_options=options)
    trainer = Trainer(config)
    critic = trainer.credit.models["critic"]
    policy_before = {k: v.clone() for k, v in trainer.policy.model.state_dict().items()}
    critic_before = {k: v.clone() for k, v in critic.net.state_dict().items()}
    first = trainer.train_iteration(0)
    assert first["critic_warmup"] == 1.0 and first["update_sequences"] == 0
    assert all(torch.equal(v, policy_before[k]) for k, v in trainer.policy.model.state_dict().items())
    assert any(not torch.equal(v, critic_before[k]) for k, v in critic.net.state_dict().items())
    second = trainer.train_iteration(1)
    assert second["critic_warmup"] == 0.0 and second["update_sequences"] > 0
    assert any(not torch.equal(v, policy_before[k]) for k, v in trainer.policy.model.state_dict().items())
    state = critic.state_dict()
    critic.iterations = 0
    critic.load_state_dict(state)
    assert critic.iterations == 2
