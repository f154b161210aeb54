"""hiergym.integrations.trl: TRL 1.x's GRPOTrainer on hiergym envs (environment_factory and rollout_func).

Every test that needs TRL skips without it (``pip install -e ".[trl]"``); the GRPO runs use the built-in tiny
model on a CPU, offline.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest

import hiergym

ROOT = Path(__file__).resolve().parents[2]
ENV = "hiergym/Sokoban-v0"
NEEDS_TRL = "TRL is not installed (pip install -e '.[trl]')"


@pytest.fixture(scope="module")
def trl_modules():
    pytest.importorskip("trl", reason=NEEDS_TRL)
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from hiergym.integrations import trl as integration

    return integration


def test_import_without_trl_says_how_to_install() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'trl' or name.startswith('trl.'):\n"
        "            raise ImportError('No module named trl')\n"
        "sys.meta_path.insert(0, Block())\n"
        "try:\n"
        "    import hiergym.integrations.trl\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert "pip install 'hiergym[trl]'" in out.stdout


def _tiny():
    from hiergym.agents.policy import CausalLMPolicy

    policy = CausalLMPolicy.tiny(seed=0, device="cpu")
    return policy.model, policy.tokenizer


def _config(output_dir: str, **overrides):
    from trl import GRPOConfig

    settings = dict(output_dir=output_dir, max_steps=1, per_device_train_batch_size=4, num_generations=2,
                    max_completion_length=400, beta=0.0, logging_steps=1, save_strategy="no", report_to=[],
                    bf16=False, gradient_checkpointing=False, use_cpu=True, disable_tqdm=True, seed=0)
    settings.update(overrides)
    return GRPOConfig(**settings)


# ------------------------------------------------------------------------------------------ dataset
def test_task_dataset_rows_are_the_group_vec_tasks(trl_modules) -> None:
    ds = trl_modules.task_dataset("sokoban-v0", "eval_in", num_tasks=3, start=4, env_kwargs={"num_boxes": 1})
    assert ds.column_names == ["prompt", "env_id", "split", "task_id", "env_kwargs"]
    assert ds["task_id"] == [4, 5, 6] and set(ds["env_id"]) == {ENV} and set(ds["split"]) == {"eval_in"}
    assert json.loads(ds[0]["env_kwargs"]) == {"num_boxes": 1}
    message = ds[0]["prompt"][0]
    assert message["role"] == "user" and "Sokoban" in message["content"]
    spec = trl_modules.TaskSpec.from_prompt(ds[1]["prompt"])
    assert (spec.env_id, spec.split, spec.task_id) == (ENV, "eval_in", 5)
    # The row's task is the one make_group_vec resets to for the same task id.
    env = trl_modules.HiergymToolEnv()
    env.reset(**ds[1])
    vec = hiergym.make_group_vec(ENV, num_tasks=1, split="eval_in", num_boxes=1)
    _, infos = vec.reset(task_ids=[5])
    vec.close()
    assert env.state_key == infos[0]["state_key"]
    assert trl_modules.task_dataset(ENV, task_ids=[9, 2])["task_id"] == [9, 2]
    with pytest.raises(ValueError):
        trl_modules.TaskSpec.from_prompt([{"role": "user", "content": "no task"}])


# ------------------------------------------------------------------------------- environment_factory
def test_tool_env_resets_from_a_row_steps_and_scores(trl_modules) -> None:
    from transformers.utils import get_json_schema

    row = trl_modules.task_dataset(ENV, num_tasks=1)[0]
    env = trl_modules.HiergymToolEnv()
    text = env.reset(**row)
    assert text.startswith("\n\n") and "Admissible actions" in text and "`step` tool" in text
    anchor = env.state_key
    plan = env._env.unwrapped.expert_plan()
    for k, action in enumerate(plan):
        result = env.step(action.upper() if k == 0 else action)  # the env's own spelling is restored
        assert isinstance(result, str)
    assert env.done and env.won and env.num_steps == len(plan) and env.num_invalid == 0
    assert env.anchors[0] == anchor and len(env.anchors) == len(plan)
    assert env.get_reward() == pytest.approx(sum(env.step_rewards)) and env.get_reward() > 0
    assert "solved" in result
    with pytest.raises(RuntimeError, match="over"):
        env.step("up")
    env.reset(**row)  # the same instance serves the next rollout (TRL pools instances)
    assert env.state_key == anchor and env.num_steps == 0 and not env.done
    env.step("jump")
    assert env.num_invalid == 1
    # TRL turns each public method into a tool from its signature and docstring.
    schema = get_json_schema(env.step)
    assert schema["function"]["name"] == "step"
    assert schema["function"]["parameters"]["required"] == ["action"]
    with pytest.raises(ValueError, match="task_id"):
        env.reset(env_id=ENV)


def test_grpo_trainer_runs_its_tool_loop_on_the_tool_env(trl_modules) -> None:
    """TRL's own environment_factory path: it resets each instance with the row, parses the model's tool
    call, calls HiergymToolEnv.step, feeds the result back and regenerates, and scores with get_reward."""
    import torch
    from trl import GRPOTrainer
    from trl.chat_template_utils import qwen2_5_chat_template

    model, tokenizer = _tiny()
    tokenizer.chat_template = qwen2_5_chat_template  # a tool-calling template (text only for the byte tokenizer)
    script = ['<tool_call>\n{"name": "step", "arguments": {"action": "left"}}\n</tool_call><|im_end|>',
              "Done.<|im_end|>"]
    calls: list[int] = []

    def scripted_generate(self, input_ids=None, attention_mask=None, generation_config=None, **kwargs):
        text = script[min(len(calls), len(script) - 1)]
        calls.append(input_ids.shape[0])
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        return torch.cat([input_ids, torch.tensor([ids] * input_ids.shape[0])], dim=1)

    model.generate = types.MethodType(scripted_generate, model)
    instances: list = []

    def factory():
        instances.append(trl_modules.HiergymToolEnv(style="compact"))
        return instances[-1]

    dataset = trl_modules.task_dataset(ENV, num_tasks=2, instructions="")
    with tempfile.TemporaryDirectory() as out:
        trainer = GRPOTrainer(model=model, reward_funcs=[trl_modules.success_reward], args=_config(out),
                              train_dataset=dataset, processing_class=tokenizer, environment_factory=factory)
        assert [tool.__name__ for tool in trainer.tools] == ["step"]
        trainer.train()
    logs = trainer.state.log_history[0]
    assert calls == [4, 4]  # the first turn, then the turn after the tool result
    assert logs["tools/call_frequency"] == 1.0 and logs["tools/failure_frequency"] == 0.0
    played = [e for e in instances if e.num_steps]
    assert len(played) == 4 and all(e.num_steps == 1 for e in played)
    assert logs["rewards/HiergymToolEnv/mean"] == pytest.approx(sum(e.get_reward() for e in played) / 4)


# ------------------------------------------------------------------------------------- rollout_func
def _scripted(tokenizer, texts):
    """A generation hook that answers with the given texts in turn (and records what it was asked)."""
    cycle = itertools.cycle(texts)
    asked: list[tuple[int, int]] = []

    def generate(trainer, sequences, max_new_tokens, stop):
        asked.append((len(sequences), max_new_tokens))
        out = []
        for _ in sequences:
            ids = tokenizer(next(cycle), add_special_tokens=False)["input_ids"][:max_new_tokens]
            out.append((ids, [-0.5] * len(ids)))
        return out

    return generate, asked


def _fake_trainer(tokenizer, max_completion_length=4000):
    config = types.SimpleNamespace(max_position_embeddings=1 << 16)
    return types.SimpleNamespace(processing_class=tokenizer, eos_token_ids=[tokenizer.eos_token_id],
                                 max_completion_length=max_completion_length, chat_template_kwargs={},
                                 model=types.SimpleNamespace(config=config))


def test_rollout_masks_environment_tokens_and_reports_episodes(trl_modules) -> None:
    from hiergym.agents.tiny import build_byte_tokenizer

    tokenizer = build_byte_tokenizer()
    dataset = trl_modules.task_dataset(ENV, num_tasks=2)
    prompts = [dataset[0]["prompt"]] * 2 + [dataset[1]["prompt"]] * 2
    vec = hiergym.make_group_vec(ENV, num_tasks=2, group_size=1)
    _, infos = vec.reset(task_ids=[0, 1])
    plans = vec.call("expert_plan")
    vec.close()
    # Rollout 0 (the first live sequence while it plays) follows task 0's expert plan; the others answer
    # nonsense every turn.
    plan_left = list(plans[0])

    def generate(trainer, sequences, max_new_tokens, stop):
        out = []
        for k, _ in enumerate(sequences):
            text = f"<think>push</think><action>{plan_left.pop(0)}</action>" if k == 0 and plan_left \
                else "<action>??</action>"
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            out.append((ids, [-0.25] * len(ids)))
        return out

    rollout = trl_modules.MultiTurnRollout(generate=generate, max_turns=len(plans[0]) + 3)
    out = rollout(prompts, _fake_trainer(tokenizer))
    rollout.close()
    renderer = trl_modules._Renderer(tokenizer, [tokenizer.eos_token_id], None)
    first = trl_modules.turn_text(*_first_observation(0), family="sokoban", first=True)
    first_prompt = renderer.prompt_ids(trl_modules._prompt_messages(prompts[0]), first)

    n = len(prompts)
    for key in ("prompt_ids", "completion_ids", "logprobs", "env_mask", "episode_return", "won", "anchors"):
        assert len(out[key]) == n, key
    assert out["prompt_ids"][0] == first_prompt == out["prompt_ids"][1]
    assert out["prompt_ids"][0] != out["prompt_ids"][2]
    for ids, logprobs, mask in zip(out["completion_ids"], out["logprobs"], out["env_mask"], strict=True):
        assert len(ids) == len(logprobs) == len(mask) and set(mask) <= {0, 1}
        assert all(lp == -0.25 for lp, m in zip(logprobs, mask, strict=True) if m == 1)
        assert all(lp == 0.0 for lp, m in zip(logprobs, mask, strict=True) if m == 0)
    # The model's tokens decode to exactly its turns; the masked-out tokens are the env's turns.
    ids, mask = out["completion_ids"][0], out["env_mask"][0]
    model_text = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert model_text == "".join(f"<think>push</think><action>{a}</action>" for a in plans[0])
    env_text = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m], skip_special_tokens=True)
    assert "Current observation" in env_text and ids[-1] == tokenizer.eos_token_id and mask[-1] == 0
    assert out["won"] == [True, False, False, False]
    assert out["episode_return"][0] == pytest.approx(sum(out["step_rewards"][0])) and out["episode_return"][0] > 0
    assert out["num_turns"][0] == len(plans[0]) and out["actions"][0] == plans[0]
    assert out["anchors"][0][0] == infos[0]["state_key"] == out["anchors"][1][0]
    assert out["anchors"][2][0] == infos[1]["state_key"]
    assert out["num_invalid"][1:] == [out["num_turns"][1]] * 3  # every nonsense answer is an invalid action
    assert out["budget_exhausted"] == [False, True, True, True]  # the others ran out of turns


def _first_observation(task_id: int):
    vec = hiergym.make_group_vec(ENV, num_tasks=1)
    observations, infos = vec.reset(task_ids=[task_id])
    vec.close()
    return observations[0], infos[0]


def test_rollout_stops_at_the_completion_budget(trl_modules) -> None:
    from hiergym.agents.tiny import build_byte_tokenizer

    tokenizer = build_byte_tokenizer()
    generate, asked = _scripted(tokenizer, ["<action>up</action>"])
    rollout = trl_modules.MultiTurnRollout(generate=generate, max_new_tokens=64)
    prompts = [trl_modules.task_dataset(ENV, num_tasks=1)[0]["prompt"]] * 2
    out = rollout(prompts, _fake_trainer(tokenizer, max_completion_length=300))
    rollout.close()
    assert all(len(ids) <= 300 for ids in out["completion_ids"])
    assert out["budget_exhausted"] == [True, True] and out["won"] == [False, False]
    assert all(m <= 64 for _, m in asked) and asked[0][0] == 2
    generate, asked = _scripted(tokenizer, ["<action>up</action>"])
    chunked = trl_modules.MultiTurnRollout(generate=generate, max_new_tokens=64, micro_batch_size=1)
    again = chunked(prompts, _fake_trainer(tokenizer, max_completion_length=300))
    chunked.close()
    assert again == out and {n for n, _ in asked} == {1}


def test_rollout_with_a_chat_template_renders_user_turns(trl_modules) -> None:
    from trl.chat_template_utils import qwen2_5_chat_template

    from hiergym.agents.tiny import build_byte_tokenizer

    tokenizer = build_byte_tokenizer()
    tokenizer.chat_template = qwen2_5_chat_template
    generate, _ = _scripted(tokenizer, ["<action>up</action><|im_end|>"])
    rollout = trl_modules.MultiTurnRollout(generate=generate, max_turns=2)
    out = rollout([trl_modules.task_dataset(ENV, num_tasks=1)[0]["prompt"]], _fake_trainer(tokenizer))
    rollout.close()
    prompt = tokenizer.decode(out["prompt_ids"][0])
    assert prompt.endswith("<|im_start|>assistant\n") and "Current observation" in prompt
    ids, mask = out["completion_ids"][0], out["env_mask"][0]
    env_text = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m], skip_special_tokens=True)
    assert "<|im_start|>user\nCurrent observation" in env_text and env_text.rstrip().endswith("assistant")


def test_grpo_trainer_learns_from_rollout_rewards(trl_modules) -> None:
    """rollout_func through TRL's GRPOTrainer: the two rollouts of a task get different returns, hence nonzero
    advantages, and the loss over the model's tokens (env tokens masked out) has a gradient."""
    from trl import GRPOTrainer

    model, tokenizer = _tiny()
    rollout = trl_modules.MultiTurnRollout(style="compact", max_turns=12)
    asked: list[int] = []

    def generate(trainer, sequences, max_new_tokens, stop):
        # Copy i plays rollout i (one vector env, one copy per rollout): even copies follow the expert, odd
        # copies write nonsense, so the two rollouts of each task get different returns.
        (env,) = rollout._vec_envs.values()
        asked.append(len(sequences))
        out = []
        for copy in rollout.live_rollouts:
            plan = env.call("expert_plan", indices=[int(copy)])[0] if copy % 2 == 0 else None
            ids = tokenizer(plan[0] if plan else "??", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            out.append((ids, [0.0] * len(ids)))
        return out

    rollout.generate = generate
    dataset = trl_modules.task_dataset(ENV, num_tasks=4, instructions="")
    with tempfile.TemporaryDirectory() as out:
        trainer = GRPOTrainer(model=model, reward_funcs=[trl_modules.episode_return_reward, trl_modules.success_reward],
                              args=_config(out, max_completion_length=1500), train_dataset=dataset,
                              processing_class=tokenizer, rollout_func=rollout)
        trainer.train()
    rollout.close()
    logs = trainer.state.log_history[0]
    assert asked[0] == 4
    assert logs["rewards/success_reward/mean"] == 0.5 and logs["reward_std"] > 0
    assert logs["grad_norm"] > 0


def test_example_script_runs_grpo_steps_with_the_tiny_model(trl_modules) -> None:
    """examples/trl_grpo_sokoban.py in-process: TRL generates with the tiny model through hf_generate."""
    spec = importlib.util.spec_from_file_location("trl_grpo_sokoban", ROOT / "examples" / "trl_grpo_sokoban.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main(["--steps", "2", "--tasks", "4", "--batch-size", "4", "--group-size", "2",
                           "--max-turns", "2", "--max-new-tokens", "6"])
    assert result["steps"] == 2 and result["rollouts"] == 8
    assert 0 < result["metrics"]["completions/mean_length"] <= 12  # model tokens only: 2 turns x 6


def test_hf_generate_logprobs_are_the_models_own(trl_modules) -> None:
    """The behaviour log-probs of hf_generate's tokens equal what the model assigns them in the full
    sequence (the quantity TRL's loss recomputes), model turns only; env tokens carry 0."""
    import torch
    from trl import GRPOTrainer

    from hiergym.agents.policy import CausalLMPolicy

    policy = CausalLMPolicy.tiny(seed=3, device="cpu")
    dataset = trl_modules.task_dataset(ENV, num_tasks=2, instructions="")
    rollout = trl_modules.MultiTurnRollout(style="compact", max_turns=2, max_new_tokens=5)
    with tempfile.TemporaryDirectory() as out:
        trainer = GRPOTrainer(model=policy.model, reward_funcs=[trl_modules.episode_return_reward],
                              args=_config(out, temperature=0.7), train_dataset=dataset,
                              processing_class=policy.tokenizer, rollout_func=rollout)
        torch.manual_seed(0)
        result = rollout([dataset[0]["prompt"], dataset[1]["prompt"]], trainer)
    rollout.close()
    with torch.no_grad():
        recomputed = policy.sequence_logprobs(result["prompt_ids"], result["completion_ids"], temperature=0.7)
    for logprobs, mask, expected in zip(result["logprobs"], result["env_mask"], recomputed, strict=True):
        assert sum(mask) == 10  # two turns of 5 tokens (a fresh model never writes EOS this early)
        model = torch.tensor(mask, dtype=torch.bool)
        assert torch.allclose(torch.tensor(logprobs)[model], expected[model], atol=1e-4)
        assert all(lp == 0.0 for lp, m in zip(logprobs, mask, strict=True) if not m)
