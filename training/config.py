"""The trainer's configuration: one dataclass with documented defaults (TRL style), presets per environment,
and overrides from a YAML file and from ``key=value`` strings on the command line.

Precedence: dataclass defaults < preset < YAML file < command-line overrides.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hiergym.agents.constraint import ACTION_CONSTRAINTS
from hiergym.agents.generation import DEFAULT_PREFIX_CACHE_TOKENS, GENERATION_MODES
from hiergym.agents.hierarchical import HierarchicalAgentConfig
from hiergym.agents.prompts import STYLES
from hiergym.agents.spec import TINY_DEFAULTS
from hiergym.agents.tiny import TinyModelConfig
from hiergym.envs.core import SPLITS
from hiergym.envs.multiagent import GAMES
from hiergym.training.advantages import EstimatorOptions, estimator_options
from hiergym.training.allocation import ALLOCATIONS, COSTS, VALUES
from hiergym.training.loss import AGGREGATIONS, KL_ESTIMATORS, RATIO_LEVELS, LossConfig

#: Opponents of the learner in multi-agent training that are the learner itself (``training/selfplay.py``); any
#: other ``opponent_mix`` key is a scripted player of the game.
LEARNER_OPPONENTS = ("self", "frozen", "league")
#: What ``model_architecture`` may set: the fields of the tiny model's config.
ARCHITECTURE_FIELDS = frozenset(f.name for f in dataclasses.fields(TinyModelConfig))


#: The loss settings' defaults (declared once, in ``LossConfig``) and the agent's (``TINY_DEFAULTS``: the tiny
#: byte-level model's profile; ``HierarchicalAgentConfig`` for the planner's cadence).
_LOSS = LossConfig()
_REPLAN_EVERY = HierarchicalAgentConfig.replan_every


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING,
           low: float | None = None, high: float | None = None, choices: tuple[str, ...] | None = None) -> Any:
    """A TrainConfig field: its default, its help, and the range or choices ``validate`` enforces."""
    metadata = {"help": help, "low": low, "high": high, "choices": choices}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    # ------------------------------------------------------------------ environment and tasks
    env_id: str = option("hiergym/Sokoban-v0", "environment id (hiergym list)")
    env_kwargs: dict[str, Any] = option(factory=dict, help="environment arguments (an override updates the "
                                        "preset's key by key)")
    max_episode_steps: int = option(20, "steps per training/eval episode", low=1)
    num_tasks: int = option(8, "B: tasks per rollout batch", low=1)
    group_size: int = option(4, "G: rollouts of each task from the same seed", low=1)
    train_split: str = option("train", "split rollouts draw tasks from", choices=SPLITS)
    env_backend: str = option("sync", "where the rollout env copies run: sync (this process), process (worker "
                              "processes) or ray (Ray actors; RAY_ADDRESS joins a cluster; docs/scaling.md)",
                              choices=("sync", "process", "ray"))
    env_workers: int = option(0, "worker processes (process) or actors (ray) of env_backend; 0: automatic", low=0)

    # ------------------------------------------------------------------ agent and model
    model: str = option("tiny", "'tiny', 'tiny:DIR', or a local HF path / cached id")
    model_architecture: dict[str, Any] = option(
        factory=dict, help="fresh tiny model: TinyModelConfig overrides (hidden_size, num_hidden_layers, ...; an "
        "override updates the preset's key by key)")
    agent: str = option("flat", "'flat' or 'hierarchical' (planner/executor)", choices=("flat", "hierarchical"))
    prompt_style: str = option("auto", "prompt style: auto, compact or full", choices=("auto", *STYLES))
    replan_every: int = option(_REPLAN_EVERY, "hierarchical: planner rewrites the subgoal after this many "
                               "executor steps", low=1)
    history_window: int = option(TINY_DEFAULTS["history_window"], "recent steps shown in the prompt", low=0)
    temperature: float = option(1.0, "sampling temperature during rollouts", low=0.0)
    max_new_tokens: int = option(TINY_DEFAULTS["max_new_tokens"], "longest generation per decision", low=1)
    planner_max_new_tokens: int = option(TINY_DEFAULTS["planner_max_new_tokens"],
                                         "hierarchical: longest subgoal generation", low=1)
    action_constraint: str = option("none", "none (the benchmark's rules: any text), admissible (the executor's "
                                    "decoding restricted to the admissible actions; behaviour log-probs and the "
                                    "update under the same masks; agents/constraint.py), task_spans (the same, "
                                    "and a free-text slot such as WebShop's search query holds a run of the "
                                    "task's words) or observation_spans (the same with the family's free-text "
                                    "templates, an answer holding a run of words the episode has shown: ToolQA)",
                                    choices=ACTION_CONSTRAINTS)
    list_actions: bool = option(True, "the executor's prompt lists the admissible actions; false shortens prompts "
                                "whose decoding action_constraint=admissible restricts to them anyway")
    tokenizer: str = option("byte", "fresh tiny model: byte (one token per byte) or env (a byte-level BPE trained "
                            "offline on the env's expert prompts and answers, saved with the checkpoint; tiny:DIR "
                            "keeps the checkpoint's)",
                            choices=("byte", "env"))
    format_tokens: bool = option(False, "fresh tiny model: the output format's tags (<subgoal>, </subgoal>, "
                                 "<subgoal_done/>, <action>, ...) are one token each in its tokenizer, byte or env "
                                 "(agents/tiny.py FORMAT_TOKENS); tiny:DIR keeps the checkpoint's")
    tokenizer_vocab_size: int = option(2048, "tokenizer=env: vocabulary size", low=259, high=65536)
    tokenizer_episodes: int = option(200, "tokenizer=env: expert episodes whose text trains it", low=1)
    generation: str = option("cached", "rollout sampling: cached (prefix-shared KV cache kept between calls) or "
                             "plain (model.generate per call); the same samples for a seed", choices=GENERATION_MODES)
    prefix_cache_tokens: int = option(DEFAULT_PREFIX_CACHE_TOKENS, "generation=cached: tokens of KV states kept "
                                      "between calls (0: none)", low=0)
    device: str = option("auto", "'auto', 'cpu', 'cuda' or 'cuda:N'")
    bf16: bool = option(True, "bf16 weights on CUDA (ignored on CPU)")
    lora: bool = option(False, "train LoRA adapters through peft")
    lora_rank: int = option(16, "LoRA rank", low=1)
    gradient_checkpointing: bool = option(False, "trade compute for memory")

    # ------------------------------------------------------------------ several processes (torchrun, docs/scaling.md)
    fsdp: bool = option(False, "torchrun: shard parameters, gradients and optimizer state over the ranks (FSDP2 "
                        "fully_shard), for a model that does not fit one device; not with lora, kl_coef > 0 or a "
                        "value-head estimator")
    distributed_timeout: float = option(600.0, "torchrun: seconds a rank waits in a collective (gradient sum, "
                                        "gather, checkpoint barrier) before the job fails", low=1.0, high=86400.0)

    # ------------------------------------------------------------------ advantages
    estimator: str = option("gigpo", "grpo, rloo, gigpo, hgpo, hiper, gae, archer or turn_ppo")
    estimator_options: dict[str, Any] = option(
        factory=dict, help="options of the estimator, checked against its options class (hiergym train "
        "--help-config lists them), e.g. {gamma: 0.9}")
    center_advantages: bool = option(True, "subtract the mean over the batch's trained rows from their advantages "
                                     "before the loss (a failing trajectory has more steps than a winning one; "
                                     "uncentred, its many negative rows push the sampled tokens down on balance "
                                     "and flatten a small policy)")
    placebo_advantages: bool = option(False, "a control, not a method: permute the estimator's advantages over "
                                      "each level's rows of the batch, so the update keeps its sizes and loses its "
                                      "credit; RL that does no better than its placebo has learnt nothing")

    # ------------------------------------------------------------------ optimisation
    iterations: int = option(30, "RL iterations (rollout batch + update)", low=0)
    learning_rate: float = option(3e-4, "AdamW learning rate for RL", low=0.0)
    epochs: int = option(1, "passes over each rollout batch", low=1)
    mini_batches: int = option(4, "optimizer steps per epoch (the batch split evenly)", low=1)
    micro_batch_size: int = option(32, "distinct sequences per forward/backward (identical rollout rows share "
                                   "one)", low=1)
    clip_low: float = option(_LOSS.clip_low, "PPO clip range below 1", low=0.0)
    clip_high: float = option(_LOSS.clip_high, "clip range above 1 (clip-higher if > clip_low)", low=0.0)
    dual_clip: float | None = option(_LOSS.dual_clip, "dual-clip bound for A < 0 (e.g. 3.0)")
    kl_coef: float = option(_LOSS.kl_coef, "weight of KL to the frozen reference model", low=0.0)
    kl_estimator: str = option(_LOSS.kl_estimator, "k1 or k3", choices=KL_ESTIMATORS)
    entropy_coef: float = option(_LOSS.entropy_coef, "entropy bonus weight")
    aggregation: str = option(_LOSS.aggregation, "token-mean or seq-mean", choices=AGGREGATIONS)
    ratio_level: str = option(_LOSS.ratio_level, "token: PPO's ratio per token; turn: one ratio per generation (the "
                              "geometric mean of its token ratios) clipped as a whole, Turn-PPO's turn-level clip",
                              choices=RATIO_LEVELS)
    max_grad_norm: float = option(1.0, "gradient clipping", low=0.0)
    lr_warmup_steps: int = option(0, "RL optimizer steps over which the learning rate rises linearly to "
                                  "learning_rate (0: none; a fresh Adam's first step moves every weight by about "
                                  "the learning rate)", low=0)
    packed_update: bool = option(True, "score each micro-batch with its prompts' shared prefixes forwarded once "
                                 "(the same log-probs and gradients as unpacked, fewer forwarded tokens)")
    tis_cap: float = option(0.0, "truncated importance sampling against the training forward's log-probs, weights "
                            "capped here (0: off; for engines whose rollout log-probs differ, e.g. bf16 on GPU; "
                            "one process only)", low=0.0)
    schedule: str = option("joint", "joint (both levels every iteration), alternate (HiMAC co-evolution), or "
                           "one level's rows only: planner (AgentFlow trains only the planner) or executor (the "
                           "model is shared, so the other level still changes with it)",
                           choices=("joint", "alternate", "planner", "executor"))
    alternate_every: int = option(2, "alternate: iterations per level before switching", low=1)
    value_coef: float = option(_LOSS.value_coef, "value loss weight (value-based estimators)", low=0.0)
    invalid_action_penalty: float = option(0.1, "subtracted from the reward of an invalid action")

    # ------------------------------------------------------------------ reward shaping (SPA)
    reward_shaping: str = option("none", "none, or spa: step rewards from a progress estimator whose per-step "
                                 "contributions sum to each trajectory's outcome (SPA-RL), for any estimator",
                                 choices=("none", "spa"))
    spa_learning_rate: float = option(1e-3, "spa: AdamW learning rate of the progress estimator", low=0.0)
    spa_updates: int = option(8, "spa: estimator gradient steps per iteration", low=0)
    spa_batch_size: int = option(8, "spa: trajectories per estimator step", low=1)
    spa_replay: int = option(512, "spa: trajectories kept for training (the batch's and earlier ones)", low=1)
    spa_mix: float = option(1.0, "spa: step reward = mix * contribution + (1 - mix) * env reward", low=0.0,
                            high=1.0)
    spa_init: str = option("policy", "spa: the estimator's transformer starts as a copy of the policy's ('policy') "
                           "or new ('fresh')", choices=("policy", "fresh"))
    spa_hidden_size: int = option(64, "spa, spa_init=fresh: hidden size of the estimator transformer", low=8)
    spa_layers: int = option(2, "spa, spa_init=fresh: layers of the estimator transformer", low=1)

    # ------------------------------------------------------------------ budgets
    reward_mode: str = option("env", "env, or hbpo (token-budget-aware reward)", choices=("env", "hbpo"))
    token_budgets: list[int] = option(factory=list, help="HBPO: budgets, one subgroup each")

    # ------------------------------------------------------------------ rollout allocation (Knapsack RL)
    rollout_allocation: str = option("uniform", "uniform (G rollouts per task), or knapsack (Knapsack RL: the B x G "
                                     "rollouts split by value per cost; needs task_pool)", choices=ALLOCATIONS)
    task_pool: int = option(0, "0: every batch draws fresh tasks; N: tasks are task ids 0..N-1 of train_split, each "
                            "batch samples num_tasks distinct ones (so tasks recur)", low=0)
    allocation_value: str = option("nonzero", "knapsack value of n rollouts: nonzero (P(group has a success and a "
                                   "failure)) or infogain (that times p(1-p)^2, Knapsack RL's)", choices=VALUES)
    allocation_cost: str = option("steps", "knapsack cost of a rollout: steps (the task's expected env steps) or "
                                  "rollouts (1 each)", choices=COSTS)
    allocation_min_group: int = option(2, "knapsack: rollouts every task gets at least", low=1)
    allocation_max_group: int = option(0, "knapsack: most rollouts of one task (0: no cap)", low=0)
    allocation_prior: float = option(1.0, "knapsack: strength (pseudo-outcomes) of the Beta prior around the "
                                     "pool's success rate", low=1e-3)
    allocation_decay: float = option(0.8, "knapsack: weight a task's past outcomes keep when new ones arrive",
                                     low=0.0, high=1.0)

    # ------------------------------------------------------------------ behaviour cloning
    sft_episodes: int = option(200, "expert episodes for behaviour cloning (0: none)", low=0)
    sft_steps: int = option(300, "optimizer steps of behaviour cloning", low=0)
    sft_batch_size: int = option(32, "demonstrations per BC step", low=1)
    sft_learning_rate: float = option(1e-3, "AdamW learning rate for BC", low=0.0)

    # ------------------------------------------------------------------ evaluation, logging, checkpoints
    eval_every: int = option(10, "evaluate every N iterations (0: only start/end)", low=0)
    eval_episodes: int = option(32, "episodes per evaluation (task ids 0..N-1)", low=1)
    eval_split: str = option("eval_in", "split of the fixed evaluation tasks", choices=SPLITS)
    eval_out_episodes: int = option(0, "also evaluate before and after RL on this many eval_out (held-out) tasks, "
                                    "reported beside eval_split's (0: not)", low=0)
    eval_temperature: float = option(0.0, "0 = greedy evaluation", low=0.0)
    checkpoint_every: int = option(5, "save a resumable checkpoint every N iterations", low=1)
    out_dir: str = option("runs/default", "where metrics, checkpoints, plots go")
    seed: int = option(0, "seed of tasks, sampling and initialisation", low=0)
    progress: bool = option(True, "show a progress bar")

    # ------------------------------------------------------------------ multi-agent games (training/selfplay.py)
    game: str = option("", "a multi-agent game (tictactoe_v0, kuhn_poker_v0, negotiation_v0, household_coop_v0): "
                       "train by self-play on its AEC env; '' trains on env_id", choices=("", *GAMES))
    game_kwargs: dict[str, Any] = option(factory=dict, help="game: arguments of the game's raw_env (num_hands, "
                                         "max_turns, max_rounds, ...)")
    opponent_mix: dict[str, float] = option(factory=lambda: {"self": 1.0}, help="game: weights of each task's "
                                            "opponent: self (both seats the learner), frozen (latest snapshot), "
                                            "league (a past snapshot), or a scripted player (random, expert, ...)")
    league_sampling: str = option("uniform", "game: how league opponents are drawn: uniform, or prioritized (weight "
                                  "(1 - learner's smoothed score against it) ** 2)", choices=("uniform", "prioritized"))
    league_size: int = option(8, "game: the league is the last N snapshots", low=1)
    snapshot_every: int = option(5, "game: save a snapshot of the policy (OUT/snapshots) every N iterations", low=1)
    eval_opponents: list[str] = option(factory=lambda: ["expert", "random"], help="game: opponents of the "
                                       "evaluations (scripted names, or self); the first is the primary one")
    sft_teacher: str = option("expert", "game: the scripted player behaviour cloning imitates")
    sft_partners: list[str] = option(factory=lambda: ["random", "expert"], help="game: the teacher's opponents "
                                     "in the demonstration games (cycled)")

    def validate(self) -> None:
        """Every field's type, range and choices, the estimator and its options, and the cross-field rules."""
        for f in dataclasses.fields(self):
            _check_field(f, getattr(self, f.name))
        checks = [
            (self.reward_mode != "hbpo" or bool(self.token_budgets), "reward_mode=hbpo needs token_budgets"),
            (set(self.model_architecture) <= ARCHITECTURE_FIELDS,
             f"model_architecture {self.model_architecture!r}: keys must be among {sorted(ARCHITECTURE_FIELDS)} "
             "(YAML needs a space after each colon: {hidden_size: 64, num_hidden_layers: 2})"),
            (all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in self.token_budgets),
             f"token_budgets must be positive integers, got {self.token_budgets!r}"),
            (not self.fsdp or not (self.lora or self.kl_coef > 0),
             "fsdp=true does not support lora=true or kl_coef > 0 (the reference copy and the adapters are not "
             "sharded); use fsdp=false"),
            (self.tokenizer == "byte" or self.model.partition(":")[0] == "tiny",
             f"tokenizer=env builds a fresh tiny model's tokenizer; model={self.model!r} brings its own: drop "
             "tokenizer=env"),
            (not self.format_tokens or self.model.partition(":")[0] == "tiny",
             f"format_tokens=true builds a fresh tiny model's tokenizer; model={self.model!r} brings its own: drop "
             "format_tokens=true"),
            (self.task_pool == 0 or self.task_pool >= self.num_tasks,
             f"task_pool ({self.task_pool}) must be 0 or at least num_tasks ({self.num_tasks})"),
            (self.rollout_allocation != "knapsack" or self.task_pool > 0,
             "rollout_allocation=knapsack needs task_pool > 0: tasks must recur for their success to be estimated"),
            (self.rollout_allocation != "knapsack" or self.group_size >= self.allocation_min_group,
             f"rollout_allocation=knapsack needs group_size >= allocation_min_group ({self.allocation_min_group})"),
            (self.rollout_allocation != "knapsack" or self.reward_mode != "hbpo",
             "rollout_allocation=knapsack does not combine with reward_mode=hbpo (its budget subgroups need equal "
             "groups)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"bad training config: {message}")
        _check_device(self.device)
        if self.game:
            _check_game(self)
        try:
            estimator_options(self.estimator, self.estimator_options)
            self.loss_config()
        except ValueError as exc:
            raise ValueError(f"bad training config: {exc}") from None
        if self.fsdp and self.estimator_settings().needs_value_head:
            raise ValueError(f"bad training config: fsdp=true does not support estimator {self.estimator} (its value "
                             "head adds forwards a rank without rows cannot mirror); use fsdp=false or another "
                             "estimator")

    def estimator_settings(self) -> EstimatorOptions:
        """The estimator's checked options."""
        return estimator_options(self.estimator, self.estimator_options)

    def loss_config(self) -> LossConfig:
        """The loss settings of this config."""
        return LossConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(LossConfig)})


def _check_device(device: str) -> None:
    if re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device) is None:
        raise ValueError(f"bad training config: device {device!r}: use auto, cpu, cuda or cuda:N (e.g. cuda:0)")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"bad training config: device={device} but torch sees no CUDA GPU here; use device=cpu "
                             "or device=auto (or install a CUDA build of torch, see the README)")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"bad training config: device={device} but torch sees {torch.cuda.device_count()} GPU(s)")


def _check_game(config: TrainConfig) -> None:
    """The multi-agent options name players the game has."""
    from hiergym.envs.multiagent.players import PLAYERS, make_player

    make_player(config.game, "random")  # registers the household's players
    names = sorted(PLAYERS.get(config.game, {}))

    def player(name: str, what: str, learner: tuple[str, ...]) -> None:
        if name not in names and name not in learner:
            raise ValueError(f"bad training config: {what} {name!r} is no player of {config.game}; choose one of "
                             f"{', '.join([*learner, *names])}")

    mix = config.opponent_mix
    if not mix or any(isinstance(w, bool) or not isinstance(w, int | float) or w < 0 for w in mix.values()) \
            or sum(mix.values()) <= 0:
        raise ValueError(f"bad training config: opponent_mix {mix!r} must map opponents to weights >= 0 with a "
                         "positive sum, e.g. {self: 0.5, league: 0.3, random: 0.2}")
    for name in mix:
        player(name, "opponent_mix key", LEARNER_OPPONENTS)
    if not config.eval_opponents:
        raise ValueError("bad training config: eval_opponents needs at least one opponent")
    for name in config.eval_opponents:
        player(name, "eval_opponents entry", ("self",))
    player(config.sft_teacher, "sft_teacher", ())
    for name in config.sft_partners:
        player(name, "sft_partners entry", ())
    if config.agent != "flat":
        raise ValueError("bad training config: game (multi-agent self-play) trains the flat agent; use agent=flat")


_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _check_field(f: dataclasses.Field, value: Any) -> None:
    """One field's value against its annotation (``int``, ``float``, ``bool``, ``str``, ``dict``, ``list``,
    optionally ``| None``) and its metadata's range and choices."""
    annotation = str(f.type)
    if value is None and "None" in annotation:
        return
    base = annotation.split("|")[0].split("[")[0].strip()
    expected = _TYPES.get(base) or {"dict": dict, "list": list}.get(base)
    kinds = {int: "an integer", float: "a number", bool: "true or false", str: "text", dict: "a mapping",
             list: "a list"}
    ok = isinstance(value, expected) if expected is not None else True
    if expected in (int, float) and isinstance(value, bool):
        ok = False
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ValueError(f"bad training config: {f.name} expects {kinds[expected]}, got {value!r}")
    meta = f.metadata
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise ValueError(f"bad training config: {f.name} {value!r}: choose one of {', '.join(meta['choices'])}")
    if meta.get("low") is not None and value < meta["low"]:
        raise ValueError(f"bad training config: {f.name} must be >= {meta['low']}, got {value!r}")
    if meta.get("high") is not None and value > meta["high"]:
        raise ValueError(f"bad training config: {f.name} must be <= {meta['high']}, got {value!r}")


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
    # The household and the shop on a CPU (issue 16, README "Long-horizon presets"): the executor's decoding
    # restricted to the admissible actions (a byte-level tiny model wrote an invalid command in 91% of its
    # ALFWorld steps), a BPE tokenizer fitted to the env's text (a prompt of ~200 tokens instead of ~900
    # bytes), then RL on 16 tasks x 8 sampled at 0.6 (at 1.0 the cloned policy's rollouts succeed half as often
    # and RL did not fit even a fixed task set), learning rate 1e-3 with two optimizer steps per batch.
    # ALFWorld's demonstrations come from the expert that knows only what it has seen (expert_knowledge=observed:
    # it searches): the full-knowledge expert walks straight to objects the agent cannot see, which a clone can
    # only guess (13.6% after cloning, and RL did not help); 1,000 searching episodes and 3,000 cloning steps
    # give 25.7%, and RL lifts it (README). Evaluation on the whole fixed eval_in set (ALFWorld: 140 tasks, the
    # six types interleaved) and eval_out beside it, sampled at 0.4.
    "alfworld": {"env_id": "hiergym/ALFWorld-v0", "env_kwargs": {"expert_knowledge": "observed"},
                 "max_episode_steps": 30, "action_constraint": "admissible",
                 "tokenizer": "env", "tokenizer_episodes": 100,
                 "model_architecture": {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2},
                 "history_window": 3, "max_new_tokens": 24, "planner_max_new_tokens": 32, "sft_episodes": 1000,
                 "sft_steps": 3000, "sft_learning_rate": 3e-3, "num_tasks": 16, "group_size": 8, "iterations": 30,
                 "temperature": 0.6, "learning_rate": 1e-3, "mini_batches": 2,
                 "eval_every": 0, "eval_episodes": 140, "eval_out_episodes": 134, "eval_temperature": 0.4},
    "alfworld-hierarchical": {},  # the alfworld preset with the planner/executor agent and hiper (below)
    # WebShop's demonstrations come from the shopper that reads only the page (expert_knowledge=observed: search
    # the instruction, open the first result under the price bound, the named options, buy; 71.5% success): the
    # full-knowledge expert opens the product the hidden reward says wins, and its clone reached 1.5%. 1,500
    # shopper episodes and 2,500 cloning steps give 38.5%; prompts without the admissible list (the constraint
    # holds it). RL is cheap here (5 s an iteration) but gained only +3 to +4 points (README).
    "webshop": {"env_id": "hiergym/WebShop-v0", "env_kwargs": {"expert_knowledge": "observed"},
                "max_episode_steps": 15, "action_constraint": "admissible", "list_actions": False,
                "tokenizer": "env", "tokenizer_episodes": 100,
                "model_architecture": {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2},
                "history_window": 1, "max_new_tokens": 64, "planner_max_new_tokens": 64, "sft_episodes": 1500,
                "sft_steps": 2500, "sft_learning_rate": 3e-3, "num_tasks": 16, "group_size": 8, "iterations": 30,
                "eval_every": 0, "eval_episodes": 200, "eval_out_episodes": 100, "eval_temperature": 0.4},
    "webshop-hierarchical": {},
    # ToolQA's answers and expressions are free text the env cannot list (only lookup[...] is admissible), so
    # the household recipe needs a slot filled from what the episode has shown (observation_spans: answer[...]
    # holds a run of up to 4 words of the question or a result, calculate[...] a difference of two numbers
    # seen) and a teacher whose answers are such text (expert_answers=shown: the page's spelling, a difference
    # through the calculator). The last 4 steps in the prompt (which pages the chain has read), 1,000 episodes
    # and 2,000 cloning steps: 29.5% of eval_in (4.5% with 1 step, 300 and 600). RL does not improve it yet
    # (README): at 1e-3 it lost 7-13 points, at 3e-4 2.5 (not significant).
    "toolqa": {"env_id": "hiergym/ToolQA-v0", "env_kwargs": {"expert_answers": "shown"}, "max_episode_steps": 10,
               "action_constraint": "observation_spans", "list_actions": False, "tokenizer": "env",
               "tokenizer_episodes": 100,
               "model_architecture": {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2},
               "history_window": 4, "max_new_tokens": 64, "sft_episodes": 1000, "sft_steps": 2000,
               "sft_learning_rate": 3e-3, "num_tasks": 16, "group_size": 8, "iterations": 30, "temperature": 0.6,
               "learning_rate": 3e-4, "mini_batches": 2, "eval_every": 0, "eval_episodes": 200,
               "eval_out_episodes": 100, "eval_temperature": 0.4},
    "tictactoe": {"env_id": "hiergym/TicTacToe-v0", "max_episode_steps": 9},
}
# Multi-agent self-play (training/selfplay.py, docs/training.md "Self-play"): behaviour cloning from a scripted
# player, then RL with MARS's turn-level advantage normalised per seat over the batch. Sized for one CPU core.
_SELFPLAY = {"estimator": "mars", "estimator_options": {"normalize_by": "role"}, "history_window": 1,
             "model_architecture": {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2},
             "mini_batches": 2, "learning_rate": 3e-4, "sft_learning_rate": 3e-3, "eval_every": 0,
             "checkpoint_every": 5, "snapshot_every": 5, "invalid_action_penalty": 0.5}
# Both levers of the long-horizon presets for the games (tictactoe, negotiation, household): decoding restricted
# to the seat's legal moves (no move is forfeited), prompts without the admissible list the sampler holds, and a
# BPE fitted to the scripted teacher's games (training/selfplay.py, game_tokenizer_texts).
_CONSTRAINED = {"action_constraint": "admissible", "list_actions": False, "tokenizer": "env",
                "tokenizer_episodes": 100}
PRESETS.update({
    # Legal moves only (constrained decoding), a 99-token prompt (the game's BPE, no admissible list, no history:
    # the board is the state) instead of 283 bytes, a 470k-parameter model cloned on 1,000 games of the *ordered*
    # perfect player (the first optimal move in a fixed order: its moves are a function of the board) against
    # random and perfect opponents for 2,000 steps at 1e-3, then half self-play, half past selves at 1e-4 with a
    # KL pull to the clone. Measured (README): cloning on the random tie-break expert leaves the loss where
    # uniform play over the legal moves is (non-loss against perfect play 28-45%); the ordered teacher at 3e-3
    # gets 73%, at 1e-3 98.5%. RL at 3e-4 without the pull took that start to 50.5%.
    "tictactoe-selfplay": {**_SELFPLAY, **_CONSTRAINED, "env_id": "hiergym/TicTacToe-v0", "game": "tictactoe_v0",
                           "model_architecture": {"hidden_size": 128, "intermediate_size": 384,
                                                  "num_hidden_layers": 2},
                           "max_episode_steps": 9, "history_window": 0, "num_tasks": 8, "group_size": 4,
                           "iterations": 40, "sft_episodes": 1000, "sft_steps": 2000, "sft_teacher": "ordered",
                           "sft_learning_rate": 1e-3, "learning_rate": 1e-4, "kl_coef": 0.1,
                           "opponent_mix": {"self": 0.5, "league": 0.5}, "eval_opponents": ["expert", "random"],
                           "eval_episodes": 200},
    # One hand per game; cloned on the equilibrium player, then self-play and past selves with a KL pull to the
    # cloned policy and an entropy bonus: without them self-play collapses the mixed strategy into a
    # deterministic, more exploitable one (measured: 0.245 -> 0.833 chips/hand), with them the exact
    # exploitability falls (0.245 -> 0.126, README). Evaluated sampled (a greedy poker policy is a pure strategy,
    # which is always exploitable).
    "kuhn-selfplay": {**_SELFPLAY, "env_id": "hiergym/KuhnPoker-v0", "game": "kuhn_poker_v0",
                      "game_kwargs": {"num_hands": 1}, "max_episode_steps": 3, "num_tasks": 16, "group_size": 8,
                      "iterations": 300, "sft_teacher": "expert", "sft_partners": ["expert", "random"],
                      "sft_episodes": 300, "sft_steps": 200, "kl_coef": 0.1, "entropy_coef": 0.01,
                      "opponent_mix": {"self": 0.5, "league": 0.5}, "eval_opponents": ["expert", "random"],
                      "eval_episodes": 1000, "eval_temperature": 1.0},
    # Proposals, accept and walk away only (every move legal), 202-token prompts instead of 1.6 kB; cloned on 200
    # games of the time-dependent negotiator against itself, 60 iterations of 8 tasks x 4, half against the
    # scripted negotiator. Measured (README, 185 s): against the negotiator agreement 83% -> 95% and the mean
    # payoff unchanged (6.02 -> 6.11); in self-play agreement 44% -> 97% and the payoff +3.5 points.
    "negotiation-selfplay": {**_SELFPLAY, **_CONSTRAINED, "env_id": "hiergym/Negotiation-v0",
                             "game": "negotiation_v0", "game_kwargs": {"max_turns": 10}, "max_new_tokens": 40,
                             "max_episode_steps": 5, "history_window": 0, "num_tasks": 8, "group_size": 4,
                             "iterations": 60, "sft_episodes": 200, "sft_steps": 400, "sft_partners": ["expert"],
                             "opponent_mix": {"self": 0.5, "expert": 0.5}, "eval_opponents": ["expert", "self"],
                             "eval_episodes": 100},
    # The policy with itself and with the scripted teammate (cooperative: one reward for both seats). Possible
    # commands only (89% of the byte model's were impossible), 98-token prompts instead of 679 bytes. Measured
    # (README, 69 s): success with the teammate 95% -> 85% (it completes the goal alone), with itself 0% -> 0%;
    # cloned on the searcher (sft_teacher=searcher, which knows only what it sees) still 0% with itself.
    "household-selfplay": {**_SELFPLAY, **_CONSTRAINED, "env_id": "hiergym/HouseholdCoop-v0",
                           "game": "household_coop_v0",
                           "game_kwargs": {"max_rounds": 20}, "max_new_tokens": 40, "max_episode_steps": 20,
                           "num_tasks": 4, "group_size": 2, "iterations": 20, "sft_episodes": 60, "sft_steps": 200,
                           "sft_partners": ["expert"], "opponent_mix": {"self": 0.5, "expert": 0.5},
                           "eval_opponents": ["expert", "self"], "eval_episodes": 40},
})
# Subgoals are pushes (the env's expert_subgoals: "push box 2 left 2 times"), the walk to the box the executor's;
# the planner is asked again when the executor marks a push done, or after 8 steps (a walk and a push across the
# benchmark's 7x7 rooms; a longer subgoal continues, named again, in the next segment). The format's tags are
# tokens of their own (format_tokens): the byte tokenizer spelled them out, 10-15 decode steps each, and the
# planner's answer and the done marker were most of what the agent generated (README, "hierarchy cost").
PRESETS["sokoban-hierarchical"] = {**PRESETS["sokoban"], "agent": "hierarchical", "estimator": "hiper",
                                   "planner_max_new_tokens": 64, "replan_every": 8, "format_tokens": True}
# Subgoals as the env's expert decomposes them (ALFWorld: up to an interaction with an object); the planner is
# asked again when the executor marks one done, or after 6 steps.
PRESETS["alfworld-hierarchical"] = {**PRESETS["alfworld"], "agent": "hierarchical", "estimator": "hiper",
                                    "replan_every": 6}
PRESETS["webshop-hierarchical"] = {**PRESETS["webshop"], "agent": "hierarchical", "estimator": "hiper",
                                   "replan_every": 4}
DEFAULT_PRESET = "sokoban"


def _coerce(name: str, value: Any, current: Any) -> Any:
    import yaml

    if isinstance(value, str) and not isinstance(current, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = str(exc).splitlines()[0]
            raise ValueError(f"{name}={value!r} is not valid YAML ({problem}); write e.g. {name}=3, "
                             f"{name}=true or {name}='{{key: value}}'") from None
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


#: Mappings that an override updates key by key (Hydra's merge), so that ``env_kwargs={task_types: [...]}`` on
#: the alfworld preset keeps its ``expert_knowledge``; the other options are replaced whole.
MERGED_OPTIONS = ("env_kwargs", "model_architecture")


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown training option {key!r}{hint} (valid keys: {', '.join(sorted(names))}; "
                             "`hiergym train --help-config` says what each does)")
        value = _coerce(key, value, getattr(config, key))
        if key in MERGED_OPTIONS and isinstance(value, dict):
            value = {**getattr(config, key), **value}
        changes[key] = value
    return dataclasses.replace(config, **changes)


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["key=value", ...]`` (the CLI's form) as a dict of unparsed values (:func:`apply_overrides` reads them)."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not of the form key=value (e.g. iterations=10)")
        pairs[key.strip()] = value
    return pairs


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
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValueError(f"config file {str(path)!r} is not valid YAML{where}: {problem}") from None
        if not isinstance(data, dict):
            raise ValueError(f"config file {str(path)!r} must hold a mapping of option: value")
        config = apply_overrides(config, data)
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
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
    from hiergym.training.advantages import ESTIMATOR_OPTIONS

    lines.append("\nestimator_options, per estimator:")
    for name, options in sorted(ESTIMATOR_OPTIONS.items()):
        lines.append(f"  {name:<8} {options.describe() or '(no options)'}")
    return "\n".join(lines)
