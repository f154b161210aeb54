"""The trainer end to end on a trivial env: rollouts follow the trajectory contract, RL improves a tiny agent,
a killed run resumes, and the config rejects mistakes with clear messages."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from hiergym.envs.core import (
    make_info,
    normalize_action,
    select_task,
    text_action_space,
    text_observation_space,
)
from hiergym.training.cli import print_summary
from hiergym.training.config import TrainConfig, load_config
from hiergym.training.trainer import Trainer, build_agent, build_policy, make_vec

torch.set_num_threads(1)
CHOICE_ID = "hiergym_test/Choice-v0"


class ChoiceEnv(gym.Env):
    """One step: answer 'a' (reward 1, won) or 'b' (reward 0). Its 'expert' is a seeded coin flip, so behaviour
    cloning teaches the output format and a 50/50 preference; only RL can learn that 'a' is right."""

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, render_mode: str | None = None):
        self.observation_space = text_observation_space()
        self.action_space = text_action_space()
        self.render_mode = render_mode
        self._coin = 0
        self._state = "start"

    def _info(self, valid: bool = True) -> dict:
        return make_info(task="choose", admissible_actions=["a", "b"], won=self._state == "a",
                         action_valid=valid, state_key=self._state)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        _, _, rng = select_task("choice", self.np_random, options)
        self._coin = int(rng.integers(2))
        self._state = "start"
        return "choose a or b", self._info()

    def step(self, action):
        choice = normalize_action(action)
        if choice not in ("a", "b"):
            return "Nothing happens.", 0.0, False, False, self._info(valid=False)
        self._state = choice
        return f"you chose {choice}", float(choice == "a"), True, False, self._info()

    def expert_plan(self):
        return ["ab"[self._coin]] if self._state == "start" else []


if CHOICE_ID not in gym.registry:
    gym.register(CHOICE_ID, entry_point=ChoiceEnv, max_episode_steps=3)


def choice_config(tmp_path, **overrides) -> TrainConfig:
    base = dict(env_id=CHOICE_ID, max_episode_steps=3, num_tasks=4, group_size=8, iterations=6,
                learning_rate=2e-3, max_new_tokens=16, sft_episodes=40, sft_steps=60, sft_batch_size=16,
                sft_learning_rate=3e-3,
                eval_episodes=4, eval_every=0, checkpoint_every=1, estimator="grpo", progress=False,
                out_dir=str(tmp_path / "run"), epochs=2, micro_batch_size=32)
    base.update(overrides)
    return load_config(None, None, base)


def probability_of_a(policy, agent_prompt: str) -> float:
    """P(response 'a') / (P(a) + P(b)) under the policy (compact style: the bare action): the preference RL
    must change."""
    prompt = policy.encode_prompt(agent_prompt)
    scores = []
    for answer in ("a", "b"):
        response = policy.tokenizer(answer, add_special_tokens=False)["input_ids"] + [policy.eos_token_ids[0]]
        with torch.no_grad():
            scores.append(float(policy.sequence_logprobs([prompt], [response])[0].sum()))
    return 1 / (1 + math.exp(scores[1] - scores[0]))


def test_rollout_records_follow_the_trajectory_contract(tmp_path) -> None:
    from hiergym.training.rollout import collect_rollouts

    config = choice_config(tmp_path, agent="hierarchical", replan_every=1, max_new_tokens=8)
    policy = build_policy(config)
    vec = make_vec(config, num_tasks=2, group_size=3, split="train")
    result = collect_rollouts(vec, build_agent(config, policy, temperature=1.0))
    executor = [r for r in result.records if r.level == "executor"]
    planner = [r for r in result.records if r.level == "planner"]
    assert len(executor) >= 6 and len(planner) >= 6  # a fresh model writes junk: invalid steps, re-plans
    for r in result.records:
        assert r.response_token_ids and len(r.response_logprobs) == len(r.response_token_ids)
        assert r.prompt_token_ids and r.anchor
        if r.level == "planner":
            assert r.reward == 0.0
    groups = {r.group_id for r in result.records}
    assert len(groups) == 2 and len({r.traj_id for r in result.records}) == 6
    # Copies of one group start from the same state.
    first_anchor = {(r.group_id, r.traj_id): r.anchor for r in executor if r.step == 0}
    assert len(set(first_anchor.values())) == 1
    vec.close()


def test_rl_improves_the_tiny_agent_and_resumes(tmp_path, capsys) -> None:
    config = choice_config(tmp_path, iterations=3)
    trainer = Trainer(config)
    trainer.run()
    prompt = "choose a or b"
    from hiergym.agents.prompts import executor_prompt

    agent_prompt = executor_prompt(family="generic", style="compact", task="choose", observation=prompt,
                                   admissible=["a", "b"], history=[], history_window=2)
    p_after_bc = _p_after_bc(tmp_path, agent_prompt)
    p_mid = probability_of_a(trainer.policy, agent_prompt)

    # "Kill" after 3 iterations, then resume to 10: the run continues from its checkpoint, not from scratch.
    resumed = Trainer(choice_config(tmp_path, iterations=10), resume=True)
    assert resumed.state["iteration"] == 3 and resumed.state["sft_done"]
    assert probability_of_a(resumed.policy, agent_prompt) == pytest.approx(p_mid, abs=1e-5)
    summary = resumed.run()
    p_final = probability_of_a(resumed.policy, agent_prompt)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows if r["phase"] == "rl"] == list(range(1, 11))
    assert [r["phase"] for r in rows].count("sft") == 1
    assert summary["iterations"] == 10
    assert 0.15 < p_after_bc < 0.85, f"BC on a coin-flip expert should leave a mixed policy, got {p_after_bc}"
    assert p_final > max(0.9, p_after_bc + 0.2), f"RL did not learn that 'a' wins: {p_after_bc} -> {p_final}"
    assert summary["success_after_rl"] >= summary["success_before_rl"]
    gain = summary["rl_gain"]  # paired on the same evaluation tasks
    assert gain["pairs"] == config.eval_episodes and gain["lost"] == 0
    assert gain["difference"] == pytest.approx(summary["success_after_rl"] - summary["success_before_rl"])
    capsys.readouterr()
    print_summary(summary)
    header = capsys.readouterr().out.splitlines()[1]
    assert header.endswith(f"{config.eval_episodes} fixed eval tasks (greedy)")
    print_summary({**summary, "eval_temperature": 0.4})
    assert "(sampled at temperature 0.4)" in capsys.readouterr().out


def _p_after_bc(tmp_path, agent_prompt: str) -> float:
    """P(a) right after behaviour cloning: the before-RL model, rebuilt from the same seed and demos."""
    config = choice_config(tmp_path / "bc", iterations=0)
    trainer = Trainer(config)
    trainer.behaviour_clone()
    return probability_of_a(trainer.policy, agent_prompt)


def test_config_layers_and_errors(tmp_path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("iterations: 7\nestimator: hgpo\nestimator_options: {depth: 3}\n")
    config = load_config("sokoban", yaml_file, ["iterations=9", "learning_rate=2e-4"])
    assert config.iterations == 9 and config.estimator == "hgpo" and config.estimator_options == {"depth": 3}
    assert config.learning_rate == pytest.approx(2e-4)
    with pytest.raises(ValueError, match="did you mean iterations"):
        load_config(None, None, ["iteratons=3"])
    with pytest.raises(ValueError, match="estimator"):
        load_config(None, None, ["estimator=ppo2"])
    with pytest.raises(ValueError, match="preset"):
        load_config("sokobn")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(None, tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="key=value"):
        load_config(None, None, ["iterations"])
    with pytest.raises(ValueError, match="true or false"):
        load_config(None, None, ["lora=maybe"])


def test_value_estimators_get_a_value_head(tmp_path) -> None:
    config = choice_config(tmp_path, estimator="gae", iterations=1, sft_episodes=0, sft_steps=0)
    trainer = Trainer(config)
    assert trainer.value_head is not None
    metrics = trainer.train_iteration(0)
    assert "update_value_loss" in metrics and np.isfinite(metrics["update_value_loss"])
    # The rollout's values (sorted into packed chunks) come back in the rows' order, equal to a plain forward.
    prompts = [trainer.policy.encode_prompt(text) for text in ("b\nchoose", "a\nchoose", "b\nchoose", "a", "b")]
    trainer.config.micro_batch_size = 2  # several chunks, each scattered back
    with torch.no_grad():
        plain = trainer.value_head(trainer.policy.model, prompts, trainer.policy.tokenizer.pad_token_id)
    np.testing.assert_allclose(trainer._values(prompts), plain.numpy(), atol=1e-5)
    assert len(set(np.round(trainer._values(prompts), 6))) > 1  # the head has learnt something to compare


class GiveUpThenActAgent:
    """Batched stub: every step, an executor generation that gives its subgoal up, a new plan, then the action."""

    def reset(self, tasks, infos) -> None:
        pass

    def act(self, observations, infos):
        from hiergym.agents.base import Decision, Generation

        def generation(level: str, segment: int, text: str, ok: bool) -> Generation:
            return Generation(level=level, segment=segment, prompt_text="p", response_text=text,
                              prompt_token_ids=[1], response_token_ids=[5], response_logprobs=[-0.1], parse_ok=ok)

        return [Decision("a", [generation("executor", 0, "<subgoal done>", False), generation("planner", 1, "x", True),
                               generation("executor", 1, "<action>a</action>", True)]) for _ in observations]


def test_only_the_acting_executor_generation_gets_the_env_reward(tmp_path) -> None:
    from hiergym.training.rollout import collect_rollouts

    vec = make_vec(choice_config(tmp_path), num_tasks=1, group_size=2, split="train")
    records = collect_rollouts(vec, GiveUpThenActAgent(), invalid_action_penalty=0.5).records
    vec.close()
    assert [(r.level, r.segment, r.reward, r.invalid) for r in records[:3]] == [
        ("executor", 0, 0.0, False), ("planner", 1, 0.0, False), ("executor", 1, 1.0, False)]


def test_centred_advantages_have_zero_mean_per_level() -> None:
    from hiergym.training.trainer import center_advantages
    from hiergym.training.trajectory import StepBatch

    batch = StepBatch.from_arrays(group_id=[0, 0, 0, 0], traj_id=[0, 0, 1, 1], step=[0, 0, 0, 1],
                                  reward=[0, 1, 0, 0], level=[1, 0, 1, 0])
    raw = np.array([3.0, 1.0, 1.0, -1.0])
    centred = center_advantages(batch, raw, ["planner", "executor"])
    assert centred.tolist() == [1.0, 1.0, -1.0, -1.0]
    assert center_advantages(batch, raw, ["executor"]).tolist() == [3.0, 1.0, 1.0, -1.0]


def test_checkpoint_replays_in_the_harness_as_the_trainer_evaluated(tmp_path) -> None:
    from hiergym.agents.spec import saved_agent_config
    from hiergym.benchmarks.harness import evaluate

    config = choice_config(tmp_path, iterations=1, sft_steps=20, eval_episodes=6)
    summary = Trainer(config).run()
    model = tmp_path / "run" / "checkpoint" / "model"
    assert saved_agent_config(f"tiny:{model}")["mode"] == "flat"
    replay = evaluate(CHOICE_ID, f"tiny:{model}", episodes=6, split=config.eval_split, seed=config.seed,
                      progress=False)
    assert replay["success_rate"] == summary["success_after_rl"]
    assert (tmp_path / "run" / "eval" / "after_rl" / "results.jsonl").is_file()


def test_model_architecture_is_checked() -> None:
    assert load_config(None, None, ["model_architecture={hidden_size: 32, num_hidden_layers: 1}"]
                       ).model_architecture == {"hidden_size": 32, "num_hidden_layers": 1}
    with pytest.raises(ValueError, match="space after each colon"):
        load_config(None, None, ["model_architecture={hidden_size:32}"])


def test_a_short_hierarchical_run_with_constrained_decoding_and_env_tokenizer_learns(tmp_path) -> None:
    """The hierarchical agent, its executor restricted to the admissible actions, on a BPE tokenizer fitted to
    the env's text: every rollout step is valid, and RL (hiper) moves the sampled success from the coin-flip
    start toward always 'a'."""
    config = choice_config(tmp_path, agent="hierarchical", estimator="hiper", action_constraint="admissible",
                           tokenizer="env", tokenizer_episodes=8, tokenizer_vocab_size=300, replan_every=1,
                           iterations=8, planner_max_new_tokens=8)
    trainer = Trainer(config)
    assert trainer.policy.model.config.vocab_size == len(trainer.policy.tokenizer) <= 300
    summary = trainer.run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rows if r["phase"] == "rl"]
    assert all(r["invalid_action_rate"] == 0.0 for r in rl)
    assert set(rl[0]["prompt_tokens_per_decision"]) == {"planner", "executor"}
    first, last = np.mean([r["train_success"] for r in rl[:2]]), np.mean([r["train_success"] for r in rl[-2:]])
    assert last >= first + 0.2 and last >= 0.8, f"hierarchical RL did not learn: {first:.2f} -> {last:.2f}"
    assert summary["decoding"]["action_constraint"] == "admissible"
    # The checkpoint carries the fitted tokenizer and the constraint for `hiergym eval --agent tiny:DIR`.
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(tmp_path / "run" / "checkpoint" / "model")
    assert saved("go a")["input_ids"] == trainer.policy.tokenizer("go a")["input_ids"]
    note = json.loads((tmp_path / "run" / "checkpoint" / "model" / "hiergym_policy.json").read_text())
    assert note["agent"]["action_constraint"] == "admissible"


def test_format_tokens_reach_the_policy_and_its_demonstrations(tmp_path) -> None:
    from hiergym.agents.tiny import FORMAT_TOKENS, VOCAB_SIZE
    from hiergym.training.demonstrations import expert_demonstrations

    config = choice_config(tmp_path, agent="hierarchical", estimator="hiper", format_tokens=True, replan_every=1)
    trainer = Trainer(config)
    tokenizer = trainer.policy.tokenizer
    assert trainer.policy.model.config.vocab_size == len(tokenizer) == VOCAB_SIZE + len(FORMAT_TOKENS)
    demos, _ = expert_demonstrations(config.env_id, build_agent(config, None, temperature=0.0), episodes=2, seed=0,
                                     max_steps=config.max_episode_steps)
    plan = next(d for d in demos if d.level == "planner")
    _, response, _ = trainer.demonstration_pair(plan)
    opened, closed = tokenizer.convert_tokens_to_ids(["<subgoal>", "</subgoal>"])
    assert plan.response.startswith("<subgoal>") and response[0] == opened and response[-2:] == [closed,
                                                                                              tokenizer.eos_token_id]


def test_toolqa_demonstrations_are_choices_of_the_observation_spans_constraint(tmp_path) -> None:
    """The toolqa preset's teacher (expert_answers=shown) through the constrained agent: every demonstrated
    response is one of the step's choices, so cloning trains under the masks the policy samples with."""
    from hiergym.training.demonstrations import expert_demonstrations

    config = load_config("toolqa", None, {"out_dir": str(tmp_path)})
    demos, success = expert_demonstrations(config.env_id, build_agent(config, None, temperature=0.0), episodes=40,
                                           seed=0, env_kwargs=config.env_kwargs, max_steps=config.max_episode_steps)
    assert success == 1.0
    assert demos and all(d.choices and d.response in d.choices for d in demos)
    assert any(d.response.startswith("answer[") and "," in d.response for d in demos)  # a number as shown


@pytest.mark.parametrize("name", sorted(__import__("hiergym.training.config", fromlist=["PRESETS"]).PRESETS))
def test_every_preset_loads(name, tmp_path) -> None:
    config = load_config(name, None, {"out_dir": str(tmp_path)})
    config.validate()
    if name.startswith(("alfworld", "webshop")):
        assert config.action_constraint == "admissible" and config.tokenizer == "env"
        assert config.agent == ("hierarchical" if name.endswith("hierarchical") else "flat")


def test_mapping_overrides_update_the_preset_s_key_by_key(tmp_path) -> None:
    config = load_config("alfworld", None, ["env_kwargs={task_types: [pick_and_place_simple]}",
                                            "model_architecture={hidden_size: 32}"])
    assert config.env_kwargs == {"expert_knowledge": "observed", "task_types": ["pick_and_place_simple"]}
    assert config.model_architecture == {"hidden_size": 32, "intermediate_size": 192, "num_hidden_layers": 2}
    assert load_config("alfworld", None, {"estimator_options": {}}).estimator_options == {}  # others: replaced


def test_constrained_demonstrations_carry_their_masks(tmp_path) -> None:
    from hiergym.training.demonstrations import expert_demonstrations

    config = load_config("alfworld", None, {"out_dir": str(tmp_path), "tokenizer_episodes": 4})
    trainer = Trainer(config)
    demos, _ = expert_demonstrations(config.env_id, build_agent(config, None, temperature=0.0), episodes=2,
                                     seed=0, max_steps=config.max_episode_steps)
    assert demos and all(d.choices and d.response in d.choices for d in demos)
    prompt, response, masks = trainer.demonstration_pair(demos[0])
    assert masks is not None and len(masks) == len(response) and response[-1] == trainer.policy.tokenizer.eos_token_id
    assert all(token in allowed for token, allowed in zip(response, masks, strict=True))
    # The same masks the policy records when it samples under the constraint.
    out = trainer.policy.generate([demos[0].prompt], choices=[demos[0].choices], temperature=1.0, seed=0)[0]
    assert out.response_allowed == trainer.policy.allowed_along(demos[0].choices, out.response_token_ids)


def test_a_bad_env_or_eval_size_is_one_line_before_any_work(tmp_path) -> None:
    with pytest.raises(ValueError, match="did you mean 'hiergym/Sokoban-v0'"):
        Trainer(load_config(None, None, {"env_id": "hiergym/Sokoban-v1", "out_dir": str(tmp_path)}))
    with pytest.raises(ValueError, match="env_kwargs"):
        Trainer(load_config(None, None, {"env_kwargs": {"bogus": 1}, "out_dir": str(tmp_path)}))
    with pytest.raises(ValueError, match="eval_episodes <= 140"):
        Trainer(load_config("alfworld", None, {"eval_episodes": 141, "out_dir": str(tmp_path)}))
    with pytest.raises(ValueError, match="eval_out_episodes <= 134"):
        Trainer(load_config("alfworld", None, {"eval_out_episodes": 135, "out_dir": str(tmp_path)}))


def test_the_schedule_names_the_levels_whose_rows_train(tmp_path) -> None:
    """joint: both levels every iteration; alternate: HiMAC's co-evolution, alternate_every iterations per level
    (planner first); planner / executor: that level's rows only (AgentFlow trains only the planner)."""
    def levels(schedule: str, agent: str = "hierarchical") -> list[list[str]]:
        trainer = Trainer.__new__(Trainer)  # _trained_levels reads only the config
        trainer.config = choice_config(tmp_path, agent=agent, schedule=schedule, alternate_every=2)
        return [trainer._trained_levels(i) for i in range(4)]

    assert levels("joint") == [["planner", "executor"]] * 4
    assert levels("alternate") == [["planner"], ["planner"], ["executor"], ["executor"]]
    assert levels("planner") == [["planner"]] * 4
    assert levels("executor") == [["executor"]] * 4
    assert levels("planner", agent="flat") == [["planner", "executor"]] * 4  # a flat agent has executor rows only
