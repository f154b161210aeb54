"""The trainer's configuration: one dataclass with documented defaults (TRL style), presets per environment,
and overrides from a YAML file and from ``key=value`` strings on the command line.

Precedence: dataclass defaults < preset < YAML file < command-line overrides.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hiergym.agents.tiny import TinyModelConfig

#: What ``model_architecture`` may set: the fields of the tiny model's config.
ARCHITECTURE_FIELDS = frozenset(f.name for f in dataclasses.fields(TinyModelConfig))


@dataclass
class TrainConfig:
    # ------------------------------------------------------------------ environment and tasks
    env_id: str = field(default="hiergym/Sokoban-v0", metadata={"help": "environment id (hiergym list)"})
    env_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "environment arguments"})
    max_episode_steps: int = field(default=20, metadata={"help": "steps per training/eval episode"})
    num_tasks: int = field(default=8, metadata={"help": "B: tasks per rollout batch"})
    group_size: int = field(default=4, metadata={"help": "G: rollouts of each task from the same seed"})
    train_split: str = field(default="train", metadata={"help": "split rollouts draw tasks from"})

    # ------------------------------------------------------------------ agent and model
    model: str = field(default="tiny", metadata={"help": "'tiny', 'tiny:DIR', or a local HF path / cached id"})
    model_architecture: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "fresh tiny model: TinyModelConfig overrides (hidden_size, num_hidden_layers, ...)"})
    agent: str = field(default="flat", metadata={"help": "'flat' or 'hierarchical' (planner/executor)"})
    prompt_style: str = field(default="auto", metadata={"help": "prompt style: auto, compact or full"})
    replan_every: int = field(default=4, metadata={"help": "hierarchical: planner rewrites the subgoal "
                                                             "after this many executor steps"})
    history_window: int = field(default=2, metadata={"help": "recent steps shown in the prompt"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature during rollouts"})
    max_new_tokens: int = field(default=24, metadata={"help": "longest generation per decision"})
    planner_max_new_tokens: int = field(default=48, metadata={"help": "hierarchical: longest subgoal generation"})
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu' or 'cuda'"})
    bf16: bool = field(default=True, metadata={"help": "bf16 weights on CUDA (ignored on CPU)"})
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters through peft"})
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory"})

    # ------------------------------------------------------------------ advantages
    estimator: str = field(default="gigpo", metadata={"help": "grpo, rloo, gigpo, hgpo, hiper or gae"})
    estimator_options: dict[str, Any] = field(default_factory=dict,
                                              metadata={"help": "options of the estimator (gamma, ...)"})
    center_advantages: bool = field(default=True, metadata={
        "help": "subtract the mean over the batch's trained rows from their advantages before the loss (a "
                "failing trajectory has more steps than a winning one; uncentred, its many negative rows "
                "push the sampled tokens down on balance and flatten a small policy)"})

    # ------------------------------------------------------------------ optimisation
    iterations: int = field(default=30, metadata={"help": "RL iterations (rollout batch + update)"})
    learning_rate: float = field(default=3e-4, metadata={"help": "AdamW learning rate for RL"})
    epochs: int = field(default=1, metadata={"help": "passes over each rollout batch"})
    mini_batches: int = field(default=4, metadata={"help": "optimizer steps per epoch (the batch split evenly)"})
    micro_batch_size: int = field(default=32, metadata={
        "help": "distinct sequences per forward/backward (identical rollout rows share one)"})
    clip_low: float = field(default=0.2, metadata={"help": "PPO clip range below 1"})
    clip_high: float = field(default=0.28, metadata={"help": "clip range above 1 (clip-higher if > clip_low)"})
    dual_clip: float | None = field(default=None, metadata={"help": "dual-clip bound for A < 0 (e.g. 3.0)"})
    kl_coef: float = field(default=0.0, metadata={"help": "weight of KL to the frozen reference model"})
    kl_estimator: str = field(default="k3", metadata={"help": "k1 or k3"})
    entropy_coef: float = field(default=0.0, metadata={"help": "entropy bonus weight"})
    aggregation: str = field(default="token-mean", metadata={"help": "token-mean or seq-mean"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping"})
    schedule: str = field(default="joint", metadata={"help": "joint, or alternate (HiMAC co-evolution)"})
    alternate_every: int = field(default=2, metadata={"help": "alternate: iterations per level before switching"})
    value_coef: float = field(default=0.5, metadata={"help": "value loss weight (value-based estimators)"})
    invalid_action_penalty: float = field(default=0.1, metadata={"help": "subtracted from the reward of an "
                                                                          "invalid action"})

    # ------------------------------------------------------------------ budgets
    reward_mode: str = field(default="env", metadata={"help": "env, or hbpo (token-budget-aware reward)"})
    token_budgets: list[int] = field(default_factory=list, metadata={"help": "HBPO: budgets, one subgroup each"})

    # ------------------------------------------------------------------ behaviour cloning
    sft_episodes: int = field(default=200, metadata={"help": "expert episodes for behaviour cloning (0: none)"})
    sft_steps: int = field(default=300, metadata={"help": "optimizer steps of behaviour cloning"})
    sft_batch_size: int = field(default=32, metadata={"help": "demonstrations per BC step"})
    sft_learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate for BC"})

    # ------------------------------------------------------------------ evaluation, logging, checkpoints
    eval_every: int = field(default=10, metadata={"help": "evaluate every N iterations (0: only start/end)"})
    eval_episodes: int = field(default=32, metadata={"help": "episodes per evaluation (task ids 0..N-1)"})
    eval_split: str = field(default="eval_in", metadata={"help": "split of the fixed evaluation tasks"})
    eval_temperature: float = field(default=0.0, metadata={"help": "0 = greedy evaluation"})
    checkpoint_every: int = field(default=5, metadata={"help": "save a resumable checkpoint every N iterations"})
    out_dir: str = field(default="runs/default", metadata={"help": "where metrics, checkpoints, plots go"})
    seed: int = field(default=0, metadata={"help": "seed of tasks, sampling and initialisation"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def validate(self) -> None:
        from hiergym.training.advantages import ESTIMATORS

        checks = [
            (self.estimator in ESTIMATORS, f"estimator {self.estimator!r}: choose one of {sorted(ESTIMATORS)}"),
            (self.agent in ("flat", "hierarchical"), f"agent {self.agent!r}: choose 'flat' or 'hierarchical'"),
            (self.schedule in ("joint", "alternate"), f"schedule {self.schedule!r}: choose joint or alternate"),
            (self.aggregation in ("token-mean", "seq-mean"), f"aggregation {self.aggregation!r}"),
            (self.kl_estimator in ("k1", "k3"), f"kl_estimator {self.kl_estimator!r}: choose k1 or k3"),
            (self.reward_mode in ("env", "hbpo"), f"reward_mode {self.reward_mode!r}: choose env or hbpo"),
            (self.num_tasks >= 1 and self.group_size >= 1, "num_tasks and group_size must be >= 1"),
            (self.reward_mode != "hbpo" or bool(self.token_budgets), "reward_mode=hbpo needs token_budgets"),
            (isinstance(self.model_architecture, dict) and set(self.model_architecture) <= ARCHITECTURE_FIELDS,
             f"model_architecture {self.model_architecture!r}: keys must be among {sorted(ARCHITECTURE_FIELDS)} "
             "(YAML needs a space after each colon: {hidden_size: 64, num_hidden_layers: 2})"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"bad training config: {message}")


#: Presets: overrides of the defaults for each environment (``hiergym train --preset NAME``).
PRESETS: dict[str, dict[str, Any]] = {
    # The default (README main job): 6x6 rooms with one box, a 120k-parameter tiny model, short prompts with the
    # last step (greedy decoding of a memoryless policy repeats any loop to the step limit; cloning reaches 29%
    # with it, 19% without), episodes ended at a provable dead end (the steps after it carry no signal). 32
    # different rooms per batch: with 8 the model fits each batch's rooms and drifts on unseen ones. Evaluation
    # on 1,024 rooms (to resolve the paired before/after difference), sampled at 0.4 as verl-agent validates:
    # greedy decoding of the small RL-trained policy is fragile (docs/training.md).
    "sokoban": {"env_kwargs": {"end_on_dead_end": True},
                "model_architecture": {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2},
                "history_window": 1, "sft_steps": 600, "sft_learning_rate": 3e-3, "num_tasks": 32, "group_size": 4,
                "mini_batches": 2, "learning_rate": 5e-4, "iterations": 80, "eval_every": 40, "eval_episodes": 1024,
                "eval_temperature": 0.4},
    "sokoban-hierarchical": {},  # the sokoban preset with the planner/executor agent and hiper (below)
    "alfworld": {"env_id": "hiergym/ALFWorld-v0", "max_episode_steps": 30, "max_new_tokens": 48,
                 "planner_max_new_tokens": 128},
    "webshop": {"env_id": "hiergym/WebShop-v0", "max_episode_steps": 15, "max_new_tokens": 64},
    "toolqa": {"env_id": "hiergym/ToolQA-v0", "max_episode_steps": 10, "max_new_tokens": 48},
    "tictactoe": {"env_id": "hiergym/TicTacToe-v0", "max_episode_steps": 9},
}
PRESETS["sokoban-hierarchical"] = {**PRESETS["sokoban"], "agent": "hierarchical", "estimator": "hiper",
                                   "planner_max_new_tokens": 64}
DEFAULT_PRESET = "sokoban"


def _coerce(name: str, value: Any, current: Any) -> Any:
    import yaml

    if isinstance(value, str) and not isinstance(current, str):
        value = yaml.safe_load(value)
    if isinstance(current, float) and isinstance(value, str):
        try:
            value = float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
        except ValueError:
            raise ValueError(f"{name} expects a number, got {value!r}") from None
    if isinstance(current, bool) and not isinstance(value, bool):
        raise ValueError(f"{name} expects true or false, got {value!r}")
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return value


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown training option {key!r}{hint} (`hiergym train --help-config` lists all)")
        changes[key] = _coerce(key, value, getattr(config, key))
    return dataclasses.replace(config, **changes)


def load_config(preset: str | None = None, yaml_file: str | Path | None = None,
                overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """Defaults < preset < YAML < overrides (``["key=value", ...]`` or a dict); validated."""
    import yaml

    config = TrainConfig()
    if preset is not None:
        if preset not in PRESETS:
            close = difflib.get_close_matches(preset, list(PRESETS), n=3)
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}"
                             + (f" (did you mean {close[0]}?)" if close else ""))
        config = apply_overrides(config, PRESETS[preset])
    if yaml_file is not None:
        path = Path(yaml_file)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {str(path)!r} must hold a mapping of option: value")
        config = apply_overrides(config, data)
    if isinstance(overrides, list):
        pairs = {}
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"override {item!r} is not of the form key=value (e.g. iterations=10)")
            pairs[key.strip()] = value
        overrides = pairs
    if overrides:
        config = apply_overrides(config, overrides)
    config.validate()
    return config


def describe_config() -> str:
    """Every option with its default and help, for ``hiergym train --help-config``."""
    lines = []
    for f in dataclasses.fields(TrainConfig):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        lines.append(f"  {f.name:<24} {default!r:<22} {f.metadata.get('help', '')}")
    return "\n".join(lines)
