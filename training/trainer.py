"""The hierarchical advantage trainer, top to bottom.

    config = load_config("sokoban", overrides={"iterations": 20})
    summary = Trainer(config).run()

One run: build the policy (``tiny``, ``tiny:DIR`` or a local Hugging Face model), behaviour-clone it on the
environment's expert (``sft_*``; skipped with ``sft_episodes=0``), evaluate it on the fixed evaluation tasks,
then for ``iterations`` iterations:

1. roll out B tasks x G same-seed copies with the (flat or hierarchical) agent at the sampling temperature;
2. turn the generations into a :class:`StepBatch` and compute advantages with the configured estimator;
3. update the policy with the clipped token loss (planner tokens with planner rows' advantages, executor
   tokens with executor rows'; ``schedule="alternate"`` trains one level at a time, HiMAC's co-evolution,
   ``"planner"`` or ``"executor"`` only that level's rows);

with periodic evaluation, metrics in ``OUT/metrics.jsonl`` (and TensorBoard when installed), a resumable
checkpoint in ``OUT/checkpoint`` every ``checkpoint_every`` iterations, and learning curves in
``OUT/curves.png`` (when matplotlib is installed). A run killed at any point and started again with
``resume=True`` continues from its last checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from hiergym.driver import play_evaluation
from hiergym.envs.core import stable_seed
from hiergym.records import append_results, load_results, results_path
from hiergym.stats import paired_success_difference, summarize
from hiergym.training import distributed
from hiergym.training.advantages import compute_advantages, placebo_advantages, value_targets
from hiergym.training.allocation import RolloutAllocator, group_signal, nonzero_advantage_groups
from hiergym.training.config import TrainConfig
from hiergym.training.credit import build_credit
from hiergym.training.optimize import TrainSequence, ValueHead, behaviour_cloning, policy_update
from hiergym.training.rollout import collect_rollouts
from hiergym.training.trajectory import LEVELS, StepBatch


def needs_value_head(config: TrainConfig) -> bool:
    """Whether the configured estimator (with its options) reads a value head's estimates."""
    return config.estimator_settings().needs_value_head


def resolve_prompt_style(config: TrainConfig) -> str:
    if config.prompt_style != "auto":
        return config.prompt_style
    return "compact" if config.model.split(":", 1)[0] == "tiny" else "full"


# ------------------------------------------------------------------------------------------ building
def build_policy(config: TrainConfig, checkpoint_model: Path | None = None):
    """The policy to train: a checkpoint's weights when resuming, else ``config.model``."""
    from hiergym.agents.policy import CausalLMPolicy, resolve_device
    from hiergym.agents.tiny import build_byte_tokenizer

    device = resolve_device(config.device)
    source = str(checkpoint_model) if checkpoint_model is not None else config.model
    kind, _, path = source.partition(":")
    options = {"generation": config.generation, "prefix_cache_tokens": config.prefix_cache_tokens}
    if checkpoint_model is None and kind == "tiny":
        if path:  # tiny:DIR keeps the checkpoint's tokenizer
            tokenizer = None
        elif config.tokenizer == "env":
            tokenizer = env_tokenizer(config)
        else:
            tokenizer = build_byte_tokenizer(config.format_tokens)
        policy = CausalLMPolicy.tiny(path or None, seed=config.seed, device=device,
                                     architecture=config.model_architecture or None, tokenizer=tokenizer, **options)
    else:
        dtype = torch.bfloat16 if (device.type == "cuda" and config.bf16) else torch.float32
        try:
            policy = CausalLMPolicy.from_pretrained(source, device=device, dtype=dtype, **options)
        except Exception as exc:
            if checkpoint_model is None:
                raise
            raise CheckpointError(f"the model files in {checkpoint_model} are damaged ({type(exc).__name__}: "
                                  f"{str(exc)[:120]}); restore an earlier copy of {checkpoint_model.parent}, or "
                                  "start over without --resume") from None
        if checkpoint_model is not None:  # the checkpoint stays relocatable: name the model, not this path
            policy.name = "tiny" if config.model.partition(":")[0] == "tiny" else config.model
    if config.gradient_checkpointing:
        policy.model.gradient_checkpointing_enable()
        policy.model.config.use_cache = False
    if config.lora and checkpoint_model is None:
        policy.model = _with_lora(policy.model, config.lora_rank)
    return policy


def env_tokenizer(config: TrainConfig):
    """``tokenizer=env``: a BPE tokenizer trained on the text of ``tokenizer_episodes`` expert episodes played
    through the agent (its prompts, answers and the admissible actions), on training seeds of their own; for a
    multi-agent ``game``, games of its scripted ``sft_teacher`` against ``sft_partners``."""
    from hiergym.agents.tiny import build_text_tokenizer
    from hiergym.training.demonstrations import expert_demonstrations

    if config.game:  # a multi-agent game: the scripted teacher's games through the agent (training/selfplay.py)
        from hiergym.training.selfplay import game_tokenizer_texts

        return build_text_tokenizer(game_tokenizer_texts(config), config.tokenizer_vocab_size, config.format_tokens)
    demos, _ = expert_demonstrations(
        config.env_id, build_agent(config, None, temperature=0.0), episodes=config.tokenizer_episodes,
        seed=config.seed + 20_000_000, split=config.train_split, env_kwargs=config.env_kwargs,
        max_steps=config.max_episode_steps)
    # Under task_spans a search step's choices are hundreds of runs of its task (a larger corpus, the same words).
    texts = [text for d in demos for text in (d.prompt, d.response, *(d.choices or ()))]
    return build_text_tokenizer(texts, config.tokenizer_vocab_size, config.format_tokens)


def _with_lora(model, rank: int):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ValueError("lora=true needs peft: pip install 'hiergym[lora]'") from None
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear",
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def saved_agent_settings(config: TrainConfig) -> dict[str, Any]:
    """The agent settings stored with a checkpoint, so ``hiergym eval --agent tiny:OUT/checkpoint/model`` (or
    ``hf:...``) plays exactly as the trainer's evaluation did."""
    settings = {"mode": config.agent, "style": resolve_prompt_style(config), "history_window": config.history_window,
                "max_new_tokens": config.max_new_tokens, "temperature": config.eval_temperature,
                "action_constraint": config.action_constraint, "list_actions": config.list_actions}
    if config.agent == "hierarchical":
        settings.update(replan_every=config.replan_every, planner_max_new_tokens=config.planner_max_new_tokens)
    return settings


def build_agent(config: TrainConfig, policy, temperature: float):
    from hiergym.agents.hierarchical import HierarchicalAgent, HierarchicalAgentConfig
    from hiergym.agents.llm import LLMAgent, LLMAgentConfig

    common = dict(style=resolve_prompt_style(config), history_window=config.history_window,
                  max_new_tokens=config.max_new_tokens, temperature=temperature, seed=config.seed,
                  action_constraint=config.action_constraint, list_actions=config.list_actions)
    if config.agent == "hierarchical":
        return HierarchicalAgent(policy, HierarchicalAgentConfig(replan_every=config.replan_every,
                                                                 planner_max_new_tokens=config.planner_max_new_tokens,
                                                                 **common),
                                 env_id=config.env_id)
    return LLMAgent(policy, LLMAgentConfig(**common), env_id=config.env_id)


def check_eval_set(config: TrainConfig) -> None:
    """Refuse, before any work, an env that cannot be made and more evaluation episodes than the env's fixed
    evaluation set has tasks."""
    try:
        env = gym.make(config.env_id, **config.env_kwargs)
    except gym.error.Error as exc:
        close = difflib.get_close_matches(config.env_id, list(gym.registry), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"bad training config: env_id {config.env_id!r}: {exc} ({hint}`hiergym list` shows the "
                         "registered ids)") from None
    except TypeError as exc:
        raise ValueError(f"bad training config: env_kwargs {config.env_kwargs!r} for {config.env_id}: {exc}") from None
    try:
        size = getattr(env.unwrapped, "eval_set_size", None)
        split = config.eval_split
        wanted = [("eval_episodes", config.eval_episodes, config.eval_split),
                  ("eval_out_episodes", config.eval_out_episodes, "eval_out")]
        for name, count, split in wanted if size is not None else ():
            if split != "train" and count > size(split):
                raise ValueError(f"bad training config: {name}={count} exceeds the {size(split)} tasks of "
                                 f"{config.env_id}'s {split} set; use {name} <= {size(split)}")
    finally:
        env.close()


def rollout_seed(seed: int, batch_index: int) -> int:
    """The sampling seed of the rollout agent of training batch ``batch_index`` (from this rank's seed)."""
    return stable_seed("hiergym.rollouts", int(seed), int(batch_index)) % (2**31)


def make_vec(config: TrainConfig, num_tasks: int, group_size: int, split: str, first_slot: int = 0):
    from hiergym.envs.vector import make_group_vec

    return make_group_vec(config.env_id, num_tasks=num_tasks, group_size=group_size, seed=config.seed,
                          split=split, max_episode_steps=config.max_episode_steps, first_slot=first_slot,
                          backend=config.env_backend, num_workers=config.env_workers or None, **config.env_kwargs)


# ------------------------------------------------------------------------------------------ the trainer
class Trainer:
    def __init__(self, config: TrainConfig, *, resume: bool = False):
        config.validate()
        check_eval_set(config)
        # torchrun's ranks (docs/scaling.md); a world of one without a launcher.
        self.dist = distributed.setup(config.distributed_timeout, fsdp=config.fsdp)
        distributed.check_world(config.num_tasks, self.dist)
        self.config = config
        self.out = Path(config.out_dir)
        self.checkpoint_dir = self.out / "checkpoint"
        self.resume = resume
        self.state: dict[str, Any] = {"iteration": 0, "sft_done": False, "evaluations": [], "train_batches": 0}
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        checkpoint_model, saved = None, None
        # Rank 0 alone repairs and reads the checkpoint; the others get its state (and, below, its weights).
        if resume and self.dist.broadcast(recover_checkpoint(self.out) if self.dist.is_main else None):
            saved = self.dist.broadcast(load_state(self.checkpoint_dir) if self.dist.is_main else None)
            checkpoint_model = self.checkpoint_dir / "model"
            if not (checkpoint_model / "config.json").is_file():  # not on this node's filesystem
                checkpoint_model = None
        elif resume and self.dist.is_main:
            print(f"no checkpoint in {self.checkpoint_dir}; starting a new run")
        self.policy = build_policy(config, checkpoint_model)
        self.dist.broadcast_parameters(self.policy.model)
        self.value_head = (ValueHead(self.policy.model.config.hidden_size).to(self.policy.device)
                           if needs_value_head(config) else None)
        if self.dist.fsdp and self.dist.enabled:
            self.dist.shard_model(self.policy.model)
        if self.dist.enabled and (config.rollout_allocation != "uniform" or config.task_pool):
            raise ValueError("rollout_allocation=knapsack and task_pool run in one process for now (the allocation "
                             "plans the whole batch); use torchrun with rollout_allocation=uniform")
        # This rank's contiguous share of the B group slots, drawing those slots' tasks.
        first, last = self.dist.bounds(config.num_tasks)
        self.train_vec = make_vec(config, last - first, config.group_size, config.train_split, first_slot=first)
        self.allocator = make_allocator(config)
        self.credit = build_credit(config, self.policy)  # SPA's progress estimator, turn critics (or None)
        if self.dist.enabled and self.credit is not None:
            raise ValueError("archer, turn_ppo, hiper with critic='separate' and reward_shaping=spa train their "
                             "critics in one process for now; run them without torchrun")
        self.reference = None
        self._saved_reference: dict[str, torch.Tensor] | None = None  # the KL reference a checkpoint held
        parameters = [p for p in self.policy.model.parameters() if p.requires_grad]
        if self.value_head is not None:
            parameters += list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.0)
        self.rng = random.Random(config.seed)
        self._tensorboard = None
        if saved is not None:
            self._load_checkpoint(saved)

    # ---------------------------------------------------------------------------------- public entry
    def run(self) -> dict[str, Any]:
        """Behaviour cloning (once), evaluation, RL iterations; returns the summary (also in OUT/summary.json)."""
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            (self.out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        cloned_now = not self.state["sft_done"]
        if cloned_now:
            if cfg.sft_episodes > 0 and cfg.sft_steps > 0:
                self.behaviour_clone()
            self.state["sft_done"] = True
            self.state["before_rl"] = self.evaluate("before_rl")
        # The cloned start on eval_out; also when a run resumed at its cloned start was evaluated without it.
        if cfg.eval_out_episodes and "before_rl_eval_out" not in self.state and self.state["iteration"] == 0:
            self.state["before_rl_eval_out"] = self.evaluate("before_rl_eval_out", split="eval_out",
                                                             episodes=cfg.eval_out_episodes)
        if cfg.kl_coef > 0:
            self.reference = self.kl_reference()
        if cloned_now:
            self.save_checkpoint()
        self.rl_iterations()
        summary = self.summary()
        if self.dist.is_main:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            self.plot_curves()
        self.train_vec.close()
        return summary

    # The RL loop's parts a trainer of another kind (self-play) sets differently.
    progress_label = "RL"

    def progress_postfix(self, metrics: dict[str, Any]) -> dict[str, str]:
        return {"success": f"{metrics['train_success']:.2f}", "ret": f"{metrics['train_return']:.2f}"}

    def after_iteration(self, iterations_done: int) -> None:
        """Called after each RL iteration, before its evaluation and checkpoint (self-play saves snapshots)."""

    def evaluate_after_rl(self) -> None:
        self.state["after_rl"] = self.evaluate("after_rl")
        if self.config.eval_out_episodes:
            self.state["after_rl_eval_out"] = self.evaluate("after_rl_eval_out", split="eval_out",
                                                            episodes=self.config.eval_out_episodes)

    def rl_iterations(self) -> None:
        """The RL iterations from ``state["iteration"]`` on (each followed by its hooks, an evaluation every
        ``eval_every``, the progress bar and checkpoints every ``checkpoint_every``), then the evaluation after
        RL: again when a finished run was resumed with more iterations (its earlier result becomes that
        iteration's point; a checkpoint written before ``after_rl_iteration`` existed is evaluated once more)."""
        cfg = self.config
        progress = _progress_bar(cfg.iterations, cfg.progress and self.dist.is_main, self.progress_label,
                                 initial=self.state["iteration"])
        for iteration in range(self.state["iteration"], cfg.iterations):
            metrics = self.train_iteration(iteration)
            self.state["iteration"] = iteration + 1
            self.after_iteration(iteration + 1)
            if cfg.eval_every and (iteration + 1) % cfg.eval_every == 0 and iteration + 1 < cfg.iterations:
                metrics["eval_success"] = self.evaluate(f"iteration_{iteration + 1}")["success_rate"]
            if progress is not None:
                progress.update(1)
                progress.set_postfix(**self.progress_postfix(metrics))
            if (iteration + 1) % max(cfg.checkpoint_every, 1) == 0:
                self.save_checkpoint()
        if progress is not None:
            progress.close()
        if self.state.get("after_rl_iteration") != self.state["iteration"]:
            self._retire_after_rl()
            self.evaluate_after_rl()
            self.state["after_rl_iteration"] = self.state["iteration"]
            self.save_checkpoint()

    # ---------------------------------------------------------------------------------- phases
    def behaviour_clone(self) -> list[float]:
        from hiergym.training.demonstrations import expert_demonstrations

        cfg = self.config
        first, last = self.dist.bounds(cfg.sft_episodes)  # this rank's expert episodes (seed + e for episode e)
        demos, expert_success = expert_demonstrations(
            cfg.env_id, build_agent(cfg, None, temperature=0.0), episodes=last - first,
            seed=cfg.seed + 10_000_000 + first, split=cfg.train_split, env_kwargs=cfg.env_kwargs,
            max_steps=cfg.max_episode_steps)
        demonstrations, wins = self.dist.sum([len(demos), expert_success * (last - first)])
        pairs = [self.demonstration_pair(d) for d in demos]
        bar = _progress_bar(cfg.sft_steps, cfg.progress and self.dist.is_main, "BC")

        def report(step: int, loss: float) -> None:
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")

        losses = behaviour_cloning(self.policy, pairs, steps=cfg.sft_steps, batch_size=cfg.sft_batch_size,
                                   learning_rate=cfg.sft_learning_rate, seed=cfg.seed, progress=report,
                                   sharding=self.dist.update_sharding())
        if bar is not None:
            bar.close()
        self.log({"phase": "sft", "demonstrations": int(demonstrations),
                  "expert_success": wins / max(cfg.sft_episodes, 1),
                  "sft_first_loss": losses[0], "sft_final_loss": float(np.mean(losses[-10:]))})
        return losses

    def demonstration_pair(self, demo) -> tuple[list[int], list[int], list[list[int]] | None]:
        """(prompt ids, response ids, constrained-decoding masks or None) of a demonstration: the response the
        agent would have sampled (its tokens, then EOS unless it ends at the stop string), and under
        ``action_constraint=admissible`` the masks it would have been sampled under."""
        from hiergym.agents.constraint import choice_sequences
        from hiergym.agents.llm import ACTION_STOP

        policy = self.policy
        eos = policy.tokenizer.eos_token_id
        prompt = policy.encode_prompt(demo.prompt)
        if demo.choices and demo.response in demo.choices:
            response = choice_sequences(policy.tokenizer, [demo.response], eos, ACTION_STOP)[0]
            return prompt, response, policy.allowed_along(demo.choices, response, ACTION_STOP)
        response = policy.tokenizer(demo.response, add_special_tokens=False)["input_ids"] + [policy.eos_token_ids[0]]
        return prompt, response, None

    def train_iteration(self, iteration: int) -> dict[str, Any]:
        cfg = self.config
        started = time.perf_counter()
        # Sampling streams are per episode (its number in the agent's life, its step): a fresh seed per batch,
        # or copy k would meet the same noise at the same step of every iteration.
        agent = build_agent(dataclasses.replace(cfg, seed=rollout_seed(self.dist.rank_seed(cfg.seed),
                                                                       self.state["train_batches"])),
                            self.policy, cfg.temperature)
        self.train_vec.batch_index = self.state["train_batches"]
        allocation = self.allocator.plan(self.state, self.state["train_batches"])  # uniform, no pool: no change
        with self.dist.generation(self.policy.model):
            rollout = collect_rollouts(self.train_vec, agent, invalid_action_penalty=cfg.invalid_action_penalty,
                                       **allocation.rollout_arguments(), **self._budget_arguments())
        self.allocator.update(self.state, allocation, rollout.episodes)
        self.state["train_batches"] += 1
        rollout_seconds = time.perf_counter() - started
        batch = StepBatch.from_records(rollout.records)
        if self.value_head is not None:
            batch.value = self._values([r.prompt_token_ids for r in batch.records])
        credit = self.credit.before_advantages(batch) if self.credit is not None else {}
        advantages = compute_advantages(cfg.estimator, batch, **cfg.estimator_options)
        if self.credit is not None:
            credit.update(self.credit.after_advantages(batch, advantages))
        if cfg.placebo_advantages:
            advantages = placebo_advantages(batch, advantages, seed=(cfg.seed, self.state["train_batches"]))
        warming_up = self.credit is not None and self.credit.warming_up()
        sequences = self._sequences(batch, advantages, [] if warming_up else self._trained_levels(iteration))
        update = policy_update(
            self.policy, self.optimizer, sequences, epochs=cfg.epochs, mini_batches=cfg.mini_batches,
            micro_batch_size=cfg.micro_batch_size, loss=cfg.loss_config(), reference=self.reference,
            max_grad_norm=cfg.max_grad_norm, value_head=self.value_head, rng=self.rng,
            sharding=self.dist.update_sharding(), packed=cfg.packed_update, tis_cap=cfg.tis_cap or None,
            lr_warmup_steps=cfg.lr_warmup_steps, learning_rate=cfg.learning_rate)
        tokens = sum(len(r.response_token_ids) for r in batch.records)
        prompt_tokens = sum(len(r.prompt_token_ids) for r in batch.records)
        metrics = {
            "phase": "rl", "iteration": iteration + 1, "train_success": rollout.success_rate,
            "train_return": rollout.mean_return, "rows": len(batch), "generated_tokens": tokens,
            "prompt_tokens": prompt_tokens, "env_steps": sum(e["steps"] for e in rollout.episodes), **credit,
            "invalid_rate": float(batch.invalid.mean()) if len(batch) else 0.0,
            "invalid_action_rate": float(np.mean([r.invalid for r in batch.records if r.level == "executor"] or [0.0])),
            "prompt_tokens_per_decision": {level: float(np.mean([len(r.prompt_token_ids) for r in batch.records
                                                                if r.level == level]))
                                           for level in LEVELS if any(r.level == level for r in batch.records)},
            "advantage_std": float(advantages.std()) if len(batch) else 0.0,
            "levels": self._trained_levels(iteration), "rollout_seconds": rollout_seconds,
            **group_signal(rollout.episodes), **allocation.metrics(),
            "nonzero_advantage_groups": nonzero_advantage_groups(batch.group_id, advantages),
            "update_seconds": time.perf_counter() - started - rollout_seconds,
            **{f"update_{k}": v for k, v in update.items()},
        }
        metrics = self.dist.iteration_metrics(metrics, rollout, advantages, batch.invalid)  # over every rank
        self.log(metrics)
        return metrics

    def evaluate(self, label: str, *, split: str | None = None, episodes: int | None = None) -> dict[str, Any]:
        """Success on the fixed evaluation tasks (task ids 0..eval_episodes-1 of ``eval_split``, or of ``split``),
        played by the episode driver exactly as ``hiergym eval`` plays them (``play_evaluation``); the episodes
        go to ``OUT/eval/LABEL`` (transcripts, ``results.jsonl``, ``summary.json``)."""
        cfg = self.config
        split = split or cfg.eval_split
        agent = build_agent(cfg, self.policy, cfg.eval_temperature)
        run_dir = self.out / "eval" / label
        if self.dist.is_main:
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
        episodes = self.dist.shard(range(episodes or cfg.eval_episodes))  # this rank's share; rank 0 gathers them
        local_dir = self.dist.local_eval_dir(run_dir)
        envs = [gym.make(cfg.env_id, **cfg.env_kwargs) for _ in episodes]
        started = time.perf_counter()
        try:
            with self.dist.generation(self.policy.model):
                results = play_evaluation(envs, agent, episodes, seed=cfg.seed, split=split,
                                          max_steps=cfg.max_episode_steps, out=local_dir) if episodes else []
        finally:
            for env in envs:
                env.close()
        results = self.dist.gather_evaluation(results, run_dir, local_dir)
        if self.dist.is_main:
            append_results(results_path(run_dir), results)
        record = {"env": cfg.env_id, "env_args": dict(cfg.env_kwargs), "agent": f"{cfg.agent} ({cfg.model})",
                  "agent_args": saved_agent_settings(cfg), "split": split, "seed": cfg.seed, "label": label}
        summary = summarize(results, config=record, wall_time_s=time.perf_counter() - started)
        if self.dist.is_main:
            (run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        keys = ("episodes", "success_rate", "success_ci95", "mean_return", "mean_steps", "invalid_action_rate",
                "parse_error_rate", "response_tokens_per_episode")
        result = {"label": label, "split": split, **{k: summary[k] for k in keys}}
        self.state["evaluations"].append(result)
        self.log({"phase": "eval", "iteration": self.state["iteration"], **result})
        return result

    def _retire_after_rl(self) -> None:
        """Before evaluating after RL again: the earlier after_rl result becomes the point of the iteration it
        was made at (in the state and its curves), its eval_out result and folder are dropped."""
        self.state.pop("after_rl_eval_out", None)
        earlier = self.state.get("after_rl_iteration")
        kept = []
        for entry in self.state["evaluations"]:
            if entry["label"] == "after_rl" and earlier is not None:
                kept.append({**entry, "label": f"iteration_{earlier}"})
            elif not entry["label"].startswith("after_rl"):
                kept.append(entry)
        self.state["evaluations"] = kept
        if self.dist.is_main:
            shutil.rmtree(self.out / "eval" / "after_rl_eval_out", ignore_errors=True)

    # ---------------------------------------------------------------------------------- pieces
    def _trained_levels(self, iteration: int) -> list[str]:
        if self.config.schedule == "joint" or self.config.agent == "flat":
            return ["planner", "executor"]
        if self.config.schedule in LEVELS:  # only that level's rows train the (shared) model
            return [self.config.schedule]
        phase = (iteration // max(self.config.alternate_every, 1)) % 2
        return ["planner"] if phase == 0 else ["executor"]

    def _sequences(self, batch: StepBatch, advantages: np.ndarray, levels: list[str]) -> list[TrainSequence]:
        targets = value_targets(batch, advantages) if self.value_head is not None else None
        if self.config.center_advantages:
            advantages = center_advantages(batch, advantages, levels, means=self.dist.center)
        sequences = []
        for i, record in enumerate(batch.records or []):
            if record.level not in levels or not record.response_token_ids:
                continue
            sequences.append(TrainSequence(
                prompt_ids=record.prompt_token_ids, response_ids=record.response_token_ids,
                old_logprobs=record.response_logprobs, advantage=float(advantages[i]), level=record.level,
                temperature=self.config.temperature if self.config.temperature > 0 else 1.0,
                value_target=float(targets[i]) if targets is not None else float("nan"),
                old_value=float(batch.value[i]) if targets is not None else float("nan"),
                allowed=record.response_allowed))
        return sequences

    @torch.no_grad()
    def _values(self, prompts: list[list[int]]) -> np.ndarray:
        # Packed: prompts sorted, so those that share a prefix (a group's copies, an episode's turns) share a
        # chunk and its prefix is forwarded once (ALFWorld: 3.8x faster than padded chunks in batch order).
        packed = self.config.packed_update
        order = sorted(range(len(prompts)), key=lambda i: prompts[i]) if packed else list(range(len(prompts)))
        value = self.value_head.packed if packed else self.value_head
        values = torch.zeros(len(prompts))
        for start in range(0, len(prompts), self.config.micro_batch_size):
            rows = order[start:start + self.config.micro_batch_size]
            values[rows] = value(self.policy.model, [prompts[i] for i in rows],
                                 self.policy.tokenizer.pad_token_id).cpu().float()
        return values.numpy().astype(np.float64)

    def _budget_arguments(self) -> dict[str, Any]:
        """HBPO: copy j of every group gets token budget ``token_budgets[j % len]``, stated in its observation,
        generation capped at it, and a reward that discounts tokens spent beyond the budget."""
        cfg = self.config
        if cfg.reward_mode != "hbpo":
            return {}
        budgets = [cfg.token_budgets[(i % cfg.group_size) % len(cfg.token_budgets)]
                   for i in range(self.train_vec.num_envs)]

        def reward_fn(reward: float, info: dict, decision, copy_index: int) -> float:
            return hbpo_reward(reward, decision.num_tokens, budgets[copy_index])

        return {"reward_fn": reward_fn, "copy_infos": [{"token_budget": b} for b in budgets],
                "observation_notes": [f"[budget] answer within {b} tokens" for b in budgets]}

    def kl_reference(self):
        """The frozen policy the KL term pulls towards: the policy RL started from. It is in the checkpoint, so a
        resumed run pulls towards the same weights, not towards the ones it resumed with."""
        reference = self._frozen_copy()
        if self._saved_reference is not None:
            reference.model.load_state_dict(self._saved_reference)
            self._saved_reference = None
        return reference

    def _frozen_copy(self):
        reference = copy.copy(self.policy)
        reference.model = copy.deepcopy(self.policy.model).eval()
        for p in reference.model.parameters():
            p.requires_grad_(False)
        return reference

    # ---------------------------------------------------------------------------------- records
    def log(self, metrics: dict[str, Any]) -> None:
        if not self.dist.is_main:  # rank 0 logs what every rank reduced
            return
        self.out.mkdir(parents=True, exist_ok=True)
        metrics = {"time": time.time(), **metrics}
        with open(self.out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(metrics, default=float) + "\n")
        writer = self._writer()
        if writer is not None:
            step = int(metrics.get("iteration", self.state["iteration"]))
            for key, value in metrics.items():
                if isinstance(value, int | float) and key != "time":
                    writer.add_scalar(f"{metrics.get('phase', 'run')}/{key}", value, step)

    def _writer(self):
        if self._tensorboard is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self._tensorboard = False
            else:
                self._tensorboard = SummaryWriter(str(self.out / "tensorboard"))
        return self._tensorboard or None

    def summary(self) -> dict[str, Any]:
        before, after = self.state.get("before_rl", {}), self.state.get("after_rl", {})
        return {
            "env_id": self.config.env_id, "estimator": self.config.estimator, "agent": self.config.agent,
            "iterations": self.state["iteration"], "eval_episodes": self.config.eval_episodes,
            "eval_temperature": self.config.eval_temperature,
            "success_before_rl": before.get("success_rate"), "success_after_rl": after.get("success_rate"),
            "return_before_rl": before.get("mean_return"), "return_after_rl": after.get("mean_return"),
            "rl_gain": self.rl_gain(), "by_task_type": self.success_by_task_type(),
            "eval_out": self.held_out_gain(),
            "decoding": {"action_constraint": self.config.action_constraint, "tokenizer": self.config.tokenizer,
                         "format_tokens": self.config.format_tokens,
                         "eval_temperature": self.config.eval_temperature},
            "evaluations": self.state["evaluations"], "out_dir": str(self.out),
        }

    def _evaluations(self, before: str, after: str) -> tuple[list, list] | None:
        """The results of two finished evaluations (``OUT/eval/LABEL``), or None while one is missing."""
        runs = [self.out / "eval" / label for label in (before, after)]
        if not all((run / "results.jsonl").is_file() for run in runs):
            return None
        return load_results(runs[0]), load_results(runs[1])

    def held_out_gain(self) -> dict[str, Any] | None:
        """With ``eval_out_episodes``: success on the held-out split before and after RL, paired."""
        pair = self._evaluations("before_rl_eval_out", "after_rl_eval_out")
        return _before_after(*pair) if pair else None

    def success_by_task_type(self) -> dict[str, dict[str, Any]] | None:
        """Per task type (ALFWorld's six), success before and after RL with the paired difference."""
        pair = self._evaluations("before_rl", "after_rl")
        types = sorted({r.task_type for r in pair[0] if r.task_type}) if pair else []
        if not types:
            return None
        return {task_type: _before_after(*([r for r in results if r.task_type == task_type] for results in pair))
                for task_type in types}

    def rl_gain(self) -> dict[str, Any] | None:
        """Success after RL minus before, paired on the same evaluation tasks (``paired_success_difference``)."""
        pair = self._evaluations("before_rl", "after_rl")
        return paired_success_difference(*pair) if pair else None

    def plot_curves(self) -> Path | None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        rows = [json.loads(line) for line in (self.out / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in rows if r.get("phase") == "rl"]
        evals = [r for r in rows if r.get("phase") == "eval" and not r["label"].endswith("_eval_out")]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([r["iteration"] for r in train], [r["train_success"] for r in train], label="train (sampled)")
        xs = [r.get("iteration", evaluation_iteration(r["label"], self.state["iteration"])) for r in evals]
        decoding = "greedy" if self.config.eval_temperature == 0 else f"sampled at T={self.config.eval_temperature:g}"
        ax.plot(xs, [r["success_rate"] for r in evals], "o-", label=f"eval ({decoding})")
        ax.set_xlabel("RL iteration")
        ax.set_ylabel("success rate")
        ax.set_title(f"{self.config.env_id} · {self.config.estimator}")
        ax.legend()
        fig.tight_layout()
        path = self.out / "curves.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    # ---------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """Write the checkpoint next to the old one, then swap: a kill mid-write leaves the old one whole.
        Rank 0 writes it (the ranks' weights are identical); the others wait."""
        optimizer_state = self.dist.optimizer_state(self.policy.model, self.optimizer)  # gathered under FSDP
        policy = self.dist.full_policy(self.policy)
        if not self.dist.is_main:
            self.dist.barrier()
            return self.checkpoint_dir
        tmp = self.out / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        policy.save(tmp / "model", agent_config=saved_agent_settings(self.config))
        self.state["metrics_rows"] = _count_lines(self.out / "metrics.jsonl")
        torch.save({
            "state": self.state,
            "optimizer": optimizer_state,
            "value_head": self.value_head.state_dict() if self.value_head is not None else None,
            "credit": self.credit.state_dict() if self.credit is not None else None,
            # The KL's reference (one process's copy: under FSDP each rank holds only its shard of it).
            "reference": (self.reference.model.state_dict()
                          if self.reference is not None and not (self.dist.fsdp and self.dist.enabled) else None),
            "rng": self.rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            "config": dataclasses.asdict(self.config),
        }, tmp / "state.pt")
        old = self.out / "checkpoint.old"
        shutil.rmtree(old, ignore_errors=True)
        if self.checkpoint_dir.exists():
            os.replace(self.checkpoint_dir, old)
        os.replace(tmp, self.checkpoint_dir)
        shutil.rmtree(old, ignore_errors=True)
        self.dist.barrier()
        return self.checkpoint_dir

    def _load_checkpoint(self, saved: dict[str, Any]) -> None:
        self.state = saved["state"]
        # Rows logged after this checkpoint (a kill before the next one) are played again: drop them.
        rows = self.state.get("metrics_rows")
        metrics = self.out / "metrics.jsonl"
        if rows is not None and metrics.is_file() and self.dist.is_main:
            lines = metrics.read_text().splitlines(keepends=True)
            if len(lines) > rows:
                metrics.write_text("".join(lines[:rows]))
        try:
            self.dist.load_optimizer_state(self.policy.model, self.optimizer, saved["optimizer"])
        except ValueError:
            print("optimizer state does not match the model; starting the optimizer afresh")
        if self.value_head is not None and saved.get("value_head"):
            self.value_head.load_state_dict(saved["value_head"])
        if self.credit is not None:
            self.credit.load_state_dict(saved.get("credit"))
        self._saved_reference = saved.get("reference")
        if self._saved_reference is None and self.config.kl_coef > 0 and self.state["iteration"] > 0:
            print("this checkpoint holds no KL reference (an older run): the KL now pulls towards the resumed weights")
        self.rng.setstate(saved["rng"])
        torch.set_rng_state(saved["torch_rng"])
        if self.dist.is_main:
            print(f"resumed from {self.checkpoint_dir} at iteration {self.state['iteration']}")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed; the message names the file and what to do."""


def recover_checkpoint(out: Path) -> bool:
    """Make ``out/checkpoint`` the last complete checkpoint, if there is one. A kill during
    :meth:`Trainer.save_checkpoint` can leave the previous one as ``checkpoint.old`` (between its two renames)
    and a half-written ``checkpoint.tmp``; the latter is never used."""
    current, old = out / "checkpoint", out / "checkpoint.old"
    shutil.rmtree(out / "checkpoint.tmp", ignore_errors=True)
    if not (current / "state.pt").is_file() and (old / "state.pt").is_file():
        shutil.rmtree(current, ignore_errors=True)
        os.replace(old, current)
    return (current / "state.pt").is_file()


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint, or a :class:`CheckpointError` that says which file is damaged."""
    path = checkpoint / "state.pt"
    try:
        saved = torch.load(path, weights_only=False)
        if not isinstance(saved, dict) or "state" not in saved:
            raise ValueError("not a hiergym trainer state")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same problem for the user
        raise CheckpointError(f"checkpoint file {path} is damaged ({type(exc).__name__}: {str(exc)[:120]}); "
                              f"restore an earlier copy of {checkpoint}, or start over without --resume "
                              f"(delete {checkpoint} or use another --out)") from None
    return saved


def _before_after(before: list, after: list) -> dict[str, Any]:
    """Episodes, success before and after, and their paired difference (the same tasks in both)."""
    return {"episodes": len(before), "success_before_rl": sum(r.success for r in before) / max(len(before), 1),
            "success_after_rl": sum(r.success for r in after) / max(len(after), 1),
            "paired": paired_success_difference(before, after)}


def _count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def evaluation_iteration(label: str, final_iteration: int) -> int:
    """The RL iteration an evaluation label stands for: ``before_rl`` 0, ``iteration_N`` N, ``after_rl`` the last."""
    if label == "before_rl":
        return 0
    if label == "after_rl":
        return final_iteration
    return int(label.split("_")[1])


def center_advantages(batch: StepBatch, advantages: np.ndarray, levels: list[str], means=None) -> np.ndarray:
    """Advantages minus their mean over the rows of each trained level (per level, so planner and executor
    credit stay separate); the value targets are computed before, from the raw advantages. ``means`` turns
    per-level (sums, counts) into the means subtracted (data-parallel ranks: over every rank's rows)."""
    centred = advantages.astype(np.float64, copy=True)
    masks = [batch.level == LEVELS.index(level) for level in levels]
    if means is None:
        mean = [centred[rows].mean() if rows.any() else 0.0 for rows in masks]
    else:
        mean = means([centred[rows].sum() for rows in masks], [float(rows.sum()) for rows in masks])
    for rows, m in zip(masks, mean, strict=True):
        if rows.any():
            centred[rows] -= m
    return centred


def make_allocator(config: TrainConfig) -> RolloutAllocator:
    """The rollout allocation of a run (``training/allocation.py``); uniform without a pool changes nothing."""
    return RolloutAllocator(mode=config.rollout_allocation, task_pool=config.task_pool, num_tasks=config.num_tasks,
                            group_size=config.group_size, seed=config.seed, value=config.allocation_value,
                            cost=config.allocation_cost, min_group=config.allocation_min_group,
                            max_group=config.allocation_max_group, prior=config.allocation_prior,
                            decay=config.allocation_decay)


def hbpo_reward(reward: float, tokens: int, budget: int, penalty: float = 0.5) -> float:
    """HBPO-style budget-aware reward: the step's reward, minus ``penalty`` times the fraction of the budget
    overspent (0 within budget), so efficiency pressure differs between the budget subgroups."""
    overspend = max(0, tokens - budget) / max(budget, 1)
    return reward - penalty * min(overspend, 1.0)


def _progress_bar(total: int, enabled: bool, label: str, initial: int = 0):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=label, dynamic_ncols=True, leave=False)
