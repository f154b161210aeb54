"""hiergym environments in TRL 1.x's ``GRPOTrainer`` (``pip install 'hiergym[trl]'``; ``docs/integrations.md``).

TRL's ``GRPOTrainer`` (1.16) has two ways to play multi-turn environments, and this module serves both:

- ``environment_factory=``: TRL creates one environment per rollout with ``factory()``, calls
  ``env.reset(**row)`` with the dataset row (the string it returns is appended to the prompt), exposes every
  public method of the class except ``reset`` / ``get_reward`` as a tool, runs its own tool-calling loop and
  scores each rollout with ``env.get_reward()``. :class:`HiergymToolEnv` is that class: its one tool is
  ``step(action)``. It needs a model whose chat template supports tool calls.
- ``rollout_func=``: TRL calls ``rollout_func(prompts, trainer)`` with the prompts of the batch (each repeated
  ``num_generations`` times) and expects ``prompt_ids``, ``completion_ids`` and ``logprobs`` per rollout; an
  ``env_mask`` (1 for model tokens, 0 for environment tokens) masks the environment's text out of the loss,
  and every other field reaches the reward functions as a keyword. :class:`MultiTurnRollout` plays the
  episodes turn by turn with the trainer's model (``transformers`` ``generate`` on the trainer's model, or
  TRL's vLLM generation when ``use_vllm``) and works with any tokenizer, with or without a chat template
  (the built-in ``tiny`` model has none).

:func:`task_dataset` builds the training data for both: one row per task of a split, with the env id, the
split and the task id (the same tasks as ``hiergym.make_group_vec(...).reset(task_ids=...)``).
:func:`episode_return_reward` and :func:`success_reward` are reward functions for either path.
"""

from __future__ import annotations

try:
    import datasets
    import trl
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "hiergym.integrations.trl needs TRL (with its `datasets` dependency), which is not installed: "
        "pip install 'hiergym[trl]'"
    ) from exc

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from packaging.version import Version

from hiergym.integrations import (
    instructions_for,
    project_action,
    reset_options,
    task_seed,
    tool_action,
    turn_text,
)

if Version(trl.__version__) < Version("1.0"):  # pragma: no cover
    raise ImportError(f"hiergym.integrations.trl needs trl>=1.0 (found {trl.__version__}): pip install 'hiergym[trl]'")

#: Key of the prompt message that carries the task (a JSON object: env_id, split, task_id, env_kwargs).
#: TRL hands ``rollout_func`` the prompts only, with their message dicts intact; chat templates ignore it.
TASK_KEY = "hiergym_task"

#: Generation hook of :class:`MultiTurnRollout`: (trainer, token-id sequences, max new tokens, stop strings)
#: -> one (response token ids, their log-probs) per sequence.
GenerateFn = Callable[[Any, list[list[int]], int, Sequence[str]], list[tuple[list[int], list[float]]]]


# ------------------------------------------------------------------------------------------- dataset
def task_dataset(
    env_id: str,
    split: str = "train",
    num_tasks: int = 64,
    *,
    start: int = 0,
    task_ids: Sequence[int] | None = None,
    instructions: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
) -> datasets.Dataset:
    """A ``datasets.Dataset`` with one row per task: ``prompt``, ``env_id``, ``split``, ``task_id``,
    ``env_kwargs``.

    Tasks are ``task_ids`` or ``start .. start + num_tasks - 1`` of ``split``; task ``t`` is the env reset with
    ``options={"split": split, "task_id": t}`` (and the seed ``make_group_vec`` uses for it), the same episode
    in every process. ``prompt`` is conversational, one user message whose content is ``instructions``
    (default: the env family's role and rules; ``""`` for none) and which also carries the task under
    :data:`TASK_KEY` for :class:`MultiTurnRollout`. ``env_kwargs`` (``gymnasium.make`` arguments, e.g.
    ``{"dim_room": [6, 6]}``) is stored as JSON text.
    """
    from hiergym.registration import resolve_env_id

    env_id = resolve_env_id(env_id)
    ids = [int(t) for t in task_ids] if task_ids is not None else list(range(int(start), int(start) + int(num_tasks)))
    if not ids:
        raise ValueError("task_dataset needs at least one task (num_tasks >= 1 or a non-empty task_ids)")
    if any(t < 0 for t in ids):
        raise ValueError(f"task ids must be non-negative, got {min(ids)}")
    kwargs_text = json.dumps(dict(env_kwargs or {}), sort_keys=True)
    text = instructions_for(env_id) if instructions is None else instructions
    rows: dict[str, list[Any]] = {"prompt": [], "env_id": [], "split": [], "task_id": [], "env_kwargs": []}
    for t in ids:
        task = json.dumps({"env_id": env_id, "split": split, "task_id": t, "env_kwargs": json.loads(kwargs_text)},
                          sort_keys=True)
        rows["prompt"].append([{"role": "user", "content": text, TASK_KEY: task}])
        rows["env_id"].append(env_id)
        rows["split"].append(split)
        rows["task_id"].append(t)
        rows["env_kwargs"].append(kwargs_text)
    return datasets.Dataset.from_dict(rows)


@dataclass(frozen=True)
class TaskSpec:
    """Which episode a rollout plays."""

    env_id: str
    split: str
    task_id: int
    env_kwargs: str = "{}"  # JSON text (hashable: rollouts of one env and arguments share a vector env)

    @classmethod
    def from_prompt(cls, prompt: Any) -> TaskSpec:
        """The task a :func:`task_dataset` prompt carries (in a message's :data:`TASK_KEY`)."""
        messages = prompt if isinstance(prompt, list) else []
        for message in reversed(messages):
            raw = message.get(TASK_KEY) if isinstance(message, Mapping) else None
            if raw:
                task = json.loads(raw) if isinstance(raw, str) else dict(raw)
                return cls(str(task["env_id"]), str(task.get("split", "train")), int(task["task_id"]),
                           json.dumps(task.get("env_kwargs") or {}, sort_keys=True))
        raise ValueError(
            "this prompt carries no hiergym task: MultiTurnRollout needs the prompts of "
            f"hiergym.integrations.trl.task_dataset (a message with a {TASK_KEY!r} key), got {prompt!r:.200}"
        )


def _prompt_messages(prompt: Any) -> list[dict[str, Any]]:
    """Plain role/content messages (the task key dropped); a string prompt becomes one user message."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m.get("content") or ""} for m in prompt]


# ------------------------------------------------------------------------------- environment_factory
class HiergymToolEnv:
    """A hiergym env for TRL's ``environment_factory``: reset from a dataset row, the env's actions as one
    tool, the episode's return as the reward.

    ``GRPOTrainer(..., environment_factory=HiergymToolEnv, train_dataset=task_dataset(...))``; for settings
    pass a factory, e.g. ``functools.partial(HiergymToolEnv, style="compact")``. TRL reads the class: ``reset``
    (called with the row), ``get_reward`` (the reward source) and every other public method as a tool, so
    this class has exactly one, :meth:`step`; the rest of its state is in properties (``won``, ``done``,
    ``episode_return``, ``num_steps``, ``num_invalid``, ``anchors``, ``state_key``).

    Args:
        env_id: default env id for rows without one.
        split: default split for rows without one.
        env_kwargs: ``gymnasium.make`` arguments for rows without ``env_kwargs``.
        style: how observations are shown, ``"full"`` or ``"compact"`` (see
            :func:`hiergym.integrations.turn_text`).
    """

    def __init__(self, env_id: str | None = None, *, split: str = "train",
                 env_kwargs: Mapping[str, Any] | None = None, style: str = "full") -> None:
        self._default_env_id = env_id
        self._default_split = split
        self._default_kwargs = dict(env_kwargs or {})
        self._style = style
        self._env: Any = None
        self._env_key: tuple[str, str] | None = None
        self._family = "generic"
        self._reset_state()

    def _reset_state(self) -> None:
        self._info: dict[str, Any] = {}
        self._done = True
        self._won = False
        self._return = 0.0
        self._steps = 0
        self._invalid = 0
        self._anchors: list[str] = []
        self._rewards: list[float] = []

    # -- TRL calls these -------------------------------------------------------------------------------
    def reset(self, env_id: str | None = None, split: str | None = None, task_id: int | None = None,
              env_kwargs: str | Mapping[str, Any] | None = None, **row: Any) -> str:
        """Start the row's task (TRL passes the whole dataset row); returns the first observation text,
        which TRL appends to the row's prompt."""
        import gymnasium as gym

        from hiergym.agents.prompts import family_for_env
        from hiergym.registration import resolve_env_id

        if task_id is None:
            raise ValueError("HiergymToolEnv.reset needs a task_id (use hiergym.integrations.trl.task_dataset): "
                             "the rollouts of a GRPO group must play the same task")
        env_id = env_id or self._default_env_id
        if not env_id:
            raise ValueError("HiergymToolEnv.reset needs an env_id (a dataset column or HiergymToolEnv(env_id=...))")
        split = split or self._default_split
        if isinstance(env_kwargs, str):
            kwargs = json.loads(env_kwargs) if env_kwargs else {}
        else:
            kwargs = dict(env_kwargs) if env_kwargs is not None else dict(self._default_kwargs)
        name = resolve_env_id(env_id)
        key = (name, json.dumps(kwargs, sort_keys=True))
        if self._env is None or self._env_key != key:
            self._close_env()
            self._env = gym.make(name, **kwargs)
            self._env_key = key
            self._family = family_for_env(name)
        observation, info = self._env.reset(seed=task_seed(split, int(task_id)),
                                            options=reset_options(split, int(task_id)))
        self._reset_state()
        self._info, self._done = dict(info), False
        self._observation = observation
        text = turn_text(observation, info, family=self._family, style=self._style, first=True,
                         answer_format="Call the `step` tool with exactly one admissible action.")
        return "\n\n" + text

    def step(self, action: str) -> str:
        """Take one action in the environment.

        Args:
            action: The action to take, one of the admissible actions listed in the last observation.

        Returns:
            The observation after the action with the admissible actions, or how the episode ended.
        """
        if self._env is None:
            raise RuntimeError("the environment has not been reset")
        if self._done:
            raise RuntimeError("the episode is over; no more actions are accepted")
        admissible = self._info.get("admissible_actions")
        self._anchors.append(str(self._info.get("state_key") or self._observation))
        observation, reward, terminated, truncated, info = self._env.step(tool_action(action, admissible))
        self._steps += 1
        self._return += float(reward)
        self._rewards.append(float(reward))
        self._invalid += int(info.get("action_valid", True) is False)
        self._won = bool(info.get("won", False))
        self._info, self._observation = dict(info), observation
        self._done = bool(terminated or truncated)
        text = turn_text(observation, info, family=self._family, style=self._style, answer_format=None)
        if self._done:
            outcome = "solved" if self._won else ("out of steps" if truncated and not terminated else "over")
            text += f"\nThe episode is {outcome}; your return is {self._return:g}. Stop calling tools."
        return text

    def get_reward(self) -> float:
        """The episode's return (sum of the env's rewards): TRL's reward for the rollout."""
        return float(self._return)

    # -- state (properties, so that TRL does not take them for tools) --------------------------------
    @property
    def won(self) -> bool:
        return self._won

    @property
    def done(self) -> bool:
        return self._done

    @property
    def episode_return(self) -> float:
        return self._return

    @property
    def num_steps(self) -> int:
        return self._steps

    @property
    def num_invalid(self) -> int:
        return self._invalid

    @property
    def anchors(self) -> list[str]:
        """The env's ``state_key`` before each action taken (GiGPO's anchor states)."""
        return list(self._anchors)

    @property
    def step_rewards(self) -> list[float]:
        return list(self._rewards)

    @property
    def state_key(self) -> str:
        return str(self._info.get("state_key", ""))

    def _close_env(self) -> None:
        if self._env is not None:
            try:
                self._env.close()
            except Exception:
                pass
            self._env = None

    def __del__(self) -> None:
        self._close_env()


# ------------------------------------------------------------------------------------- rollout_func
def _tokenizer_of(trainer: Any) -> Any:
    processing = trainer.processing_class
    return getattr(processing, "tokenizer", processing)


def _eos_ids(trainer: Any, tokenizer: Any) -> list[int]:
    ids = getattr(trainer, "eos_token_ids", None)
    if ids:
        return [int(i) for i in ids]
    return [int(tokenizer.eos_token_id)] if tokenizer.eos_token_id is not None else []


def _cut_at_stop(tokenizer: Any, ids: list[int], logprobs: list[float], eos: Sequence[int],
                 stop: Sequence[str]) -> tuple[list[int], list[float]]:
    """The response up to and including its first EOS or the token that completes a stop string."""
    end = next((t + 1 for t, tok in enumerate(ids) if tok in eos), len(ids))
    if stop:
        for t in range(1, end + 1):
            tail = tokenizer.decode(ids[max(0, t - 16 - max(map(len, stop))):t], skip_special_tokens=True)
            if any(s in tail for s in stop):
                end = t
                break
    return ids[:end], logprobs[:end]


class _StopOnStrings:
    """A per-row stopping criterion for ``generate``: a row stops once its response contains a stop string."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], width: int, rows: int) -> None:
        self.tokenizer, self.stops, self.width = tokenizer, list(stops), width
        self.window = max(len(s) for s in self.stops) + 8  # tokens: at least one character each for ASCII stops
        #: Per row, the response length at which a stop string was completed (None: not stopped).
        self.stopped_at: list[int | None] = [None] * rows

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        for row in range(input_ids.shape[0]):
            if self.stopped_at[row] is None:
                tail = self.tokenizer.decode(input_ids[row, self.width:][-self.window:], skip_special_tokens=True)
                if any(s in tail for s in self.stops):
                    self.stopped_at[row] = input_ids.shape[1] - self.width
        return torch.tensor([s is not None for s in self.stopped_at], dtype=torch.bool, device=input_ids.device)


def hf_generate(trainer: Any, sequences: list[list[int]], max_new_tokens: int,
                stop: Sequence[str] = ()) -> list[tuple[list[int], list[float]]]:
    """One response per token sequence with the trainer's own model (``transformers`` ``generate``), as TRL's
    regular generation path does: TRL's ``unwrap_model_for_generation``, its sampling settings
    (``trainer.generation_kwargs``: temperature, top-p/k, min-p, repetition penalty), and behaviour
    log-probs ``log softmax(logits / temperature)`` of the sampled tokens, the quantity TRL's loss computes.
    """
    import torch
    from transformers import GenerationConfig, StoppingCriteriaList
    from trl.models import unwrap_model_for_generation

    tokenizer = _tokenizer_of(trainer)
    eos = _eos_ids(trainer, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):  # left padding, as TRL's generation
        input_ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        attention[row, width - len(seq):] = 1
    device = trainer.accelerator.device
    settings = dict(getattr(trainer, "generation_kwargs", None) or {})
    temperature = float(trainer.temperature)
    sample = temperature > 0
    settings.update(max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos, do_sample=sample,
                    temperature=temperature if sample else None, output_logits=True, return_dict_in_generate=True)
    if not sample:
        settings.update(top_p=None, top_k=None, min_p=None)
    scale = temperature if sample else 1.0
    config = GenerationConfig(**settings, disable_compile=True)
    criterion = _StopOnStrings(tokenizer, stop, width, len(sequences)) if stop else None
    args = trainer.args
    with (
        unwrap_model_for_generation(
            trainer.model_wrapped, trainer.accelerator,
            gather_deepspeed3_params=getattr(args, "ds3_gather_for_generation", True),
            gradient_checkpointing_kwargs=getattr(args, "gradient_checkpointing_kwargs", None),
        ) as model,
        torch.no_grad(),
    ):
        out = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention.to(device), generation_config=config,
            stopping_criteria=StoppingCriteriaList([criterion]) if criterion else None,
        )
    new_tokens = out.sequences[:, width:]
    if out.logits:
        step_logprobs = torch.stack([
            torch.log_softmax(logits.float() / scale, dim=-1).gather(1, new_tokens[:, t:t + 1].to(logits.device)).squeeze(1)
            for t, logits in enumerate(out.logits)
        ], dim=1).tolist()
    else:
        step_logprobs = [[] for _ in sequences]
    results = []
    for row, ids in enumerate(new_tokens.tolist()):
        end = next((t + 1 for t, tok in enumerate(ids) if tok in eos), len(ids))
        if criterion is not None and criterion.stopped_at[row] is not None:
            end = min(end, criterion.stopped_at[row])
        results.append((ids[:end], step_logprobs[row][:end]))
    return results


def vllm_generate(trainer: Any, sequences: list[list[int]], max_new_tokens: int,
                  stop: Sequence[str] = ()) -> list[tuple[list[int], list[float]]]:
    """One response per token sequence from TRL's vLLM generation (``trainer.vllm_generation.generate``, server
    or colocate mode); responses are cut at the first EOS or stop string and at ``max_new_tokens`` here (vLLM
    samples up to ``max_completion_length`` tokens per call). Not exercised by hiergym's tests (no vLLM)."""
    _, completion_ids, logprobs, _ = trainer.vllm_generation.generate(prompts=sequences, images=None,
                                                                      num_generations=1)
    tokenizer = _tokenizer_of(trainer)
    eos = _eos_ids(trainer, tokenizer)
    results = []
    for ids, lps in zip(completion_ids, logprobs, strict=True):
        flat = [float(lp[0]) if isinstance(lp, list | tuple) else float(lp) for lp in (lps or [0.0] * len(ids))]
        results.append(_cut_at_stop(tokenizer, list(ids)[:max_new_tokens], flat[:max_new_tokens], eos, stop))
    return results


class _Renderer:
    """Token ids of the conversation: the first prompt, and the environment's turns between model turns.

    With a chat template each environment turn is a user message, rendered as the template does (the ids
    after the end of the assistant turn, found with a two-message probe like TRL's own tool loop); without
    one (the built-in ``tiny`` model) the text is appended as is.
    """

    def __init__(self, tokenizer: Any, eos: Sequence[int], template_kwargs: Mapping[str, Any] | None) -> None:
        self.tokenizer = tokenizer
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        self.kwargs = dict(template_kwargs or {})
        self.eos = list(eos)
        self._probe: list[int] | None = None

    def _apply(self, messages: list[dict[str, Any]], generation_prompt: bool) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True,
                                                 return_dict=False, **self.kwargs)
        return list(ids)

    def prompt_ids(self, messages: list[dict[str, Any]], first_turn: str) -> list[int]:
        messages = [dict(m) for m in messages]
        if messages and messages[-1]["role"] == "user":
            separator = "\n\n" if messages[-1]["content"] else ""
            messages[-1]["content"] = messages[-1]["content"] + separator + first_turn
        else:
            messages.append({"role": "user", "content": first_turn})
        if self.chat:
            return self._apply(messages, True)
        text = "\n\n".join(m["content"] for m in messages if m["content"])
        return list(self.tokenizer(text)["input_ids"])

    def turn_ids(self, text: str) -> list[int]:
        if not self.chat:
            return list(self.tokenizer("\n" + text + "\n", add_special_tokens=False)["input_ids"])
        base = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
        if self._probe is None:
            prefix = self._apply(base, False)
            ends = [i for i, t in enumerate(prefix) if t in self.eos]
            self._probe = prefix[:ends[-1] + 1] if ends else prefix
        full = self._apply([*base, {"role": "user", "content": text}], True)
        if full[:len(self._probe)] != self._probe:
            raise ValueError("the chat template renders earlier messages differently once a user turn follows "
                             "(not prefix-preserving); multi-turn rollouts need a prefix-preserving template")
        return full[len(self._probe):]

    def ends_turn(self, ids: Sequence[int]) -> bool:
        return bool(ids) and ids[-1] in self.eos


@dataclass
class _Episode:
    spec: TaskSpec
    prompt_ids: list[int]
    budget: int
    completion_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    anchors: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    invalid: int = 0
    won: bool = False
    finished: bool = False  # the env ended the episode (terminated or truncated)
    cut: bool = False  # the token budget (max_completion_length / the context) ended it first

    @property
    def running(self) -> bool:
        return not (self.finished or self.cut)

    def add(self, ids: Sequence[int], logprobs: Sequence[float] | None, model: bool) -> None:
        self.completion_ids += list(ids)
        self.logprobs += list(logprobs) if logprobs is not None else [0.0] * len(ids)
        self.env_mask += [int(model)] * len(ids)


class MultiTurnRollout:
    """TRL ``rollout_func`` that plays hiergym episodes turn by turn with the trainer's model.

    ``GRPOTrainer(..., rollout_func=MultiTurnRollout(), reward_funcs=[episode_return_reward],
    train_dataset=task_dataset("hiergym/Sokoban-v0", num_tasks=256))``.

    For the prompts of a batch (each a :func:`task_dataset` prompt, repeated ``num_generations`` times by
    TRL), it resets one env copy per rollout to the prompt's task (``hiergym.make_group_vec`` with
    ``reset(task_ids=...)``, so copies of a task start identical), then alternates: one generated turn per
    running episode (batched), hiergym's action parser on the text, one env step, the next observation
    appended as the environment's turn. Everything stays in one token sequence per rollout, never
    re-tokenised: ``prompt_ids`` (the dataset prompt plus the first observation), ``completion_ids`` (model
    turns and environment turns), ``logprobs`` (0 on environment tokens) and ``env_mask`` (1 model, 0
    environment), which TRL turns into its loss mask. An episode ends when the env ends it (an end-of-turn
    EOS is then appended, masked out, unless the model wrote one) or when the next turn would not fit in
    ``max_completion_length`` (or the model's context): the rollout is then cut and TRL sees it as clipped.

    Extra fields, one per rollout, reach the reward functions as keywords: ``episode_return`` (sum of
    the env's rewards), ``won``, ``num_turns``, ``num_invalid``, ``step_rewards``, ``anchors`` (the env's
    ``state_key`` before each action: GiGPO's anchor states), ``actions`` and ``budget_exhausted``.

    Args:
        style: how the env's turns are written (``"full"``: observation, admissible actions and the
            ``<action>`` answer format; ``"compact"``: the ``tiny`` model's format).
        family: the prompt family (default: from the env id).
        max_turns: the most actions per episode (default: the env's own time limit).
        max_new_tokens: the longest model turn.
        stop: strings that end a model turn (kept), besides EOS; default ``("</action>",)`` for the full
            style, none for compact.
        generate: the generation hook (default :func:`vllm_generate` when the trainer uses vLLM, else
            :func:`hf_generate`).
        micro_batch_size: the most sequences per generation call (default: all running episodes at once);
            ``hf_generate`` keeps every step's logits of a call, so this bounds its memory.
        backend, num_workers: ``make_group_vec``'s (``"process"`` for envs with expensive steps).
    """

    def __init__(
        self,
        *,
        style: str = "full",
        family: str | None = None,
        max_turns: int | None = None,
        max_new_tokens: int = 128,
        stop: Sequence[str] | None = None,
        generate: GenerateFn | None = None,
        micro_batch_size: int | None = None,
        backend: str = "sync",
        num_workers: int | None = None,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if max_turns is not None and max_turns < 1:
            raise ValueError(f"max_turns must be >= 1 or None, got {max_turns}")
        self.style, self.family, self.max_turns = style, family, max_turns
        self.max_new_tokens = int(max_new_tokens)
        self.stop = tuple(stop) if stop is not None else (("</action>",) if style == "full" else ())
        if micro_batch_size is not None and micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1 or None, got {micro_batch_size}")
        self.generate = generate
        self.micro_batch_size = micro_batch_size
        self.backend, self.num_workers = backend, num_workers
        self._vec_envs: dict[tuple[str, str, str, int], Any] = {}
        #: The rollouts (indices into the prompts) whose sequences the current generation call continues.
        self.live_rollouts: list[int] = []

    def close(self) -> None:
        for env in self._vec_envs.values():
            env.close()
        self._vec_envs.clear()

    def _vec_env(self, spec: TaskSpec, size: int) -> Any:
        from hiergym.envs.vector import make_group_vec

        key = (spec.env_id, spec.split, spec.env_kwargs, size)
        if key not in self._vec_envs:
            self._vec_envs[key] = make_group_vec(spec.env_id, num_tasks=size, group_size=1, split=spec.split,
                                                 backend=self.backend, num_workers=self.num_workers,
                                                 **json.loads(spec.env_kwargs))
        return self._vec_envs[key]

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        from hiergym.agents.prompts import family_for_env

        tokenizer = _tokenizer_of(trainer)
        eos = _eos_ids(trainer, tokenizer)
        renderer = _Renderer(tokenizer, eos, getattr(trainer, "chat_template_kwargs", None))
        generate = self.generate or (vllm_generate if getattr(trainer, "use_vllm", False) else hf_generate)
        specs = [TaskSpec.from_prompt(p) for p in prompts]
        completion_limit = int(trainer.max_completion_length)
        model_config = getattr(getattr(trainer, "model", None), "config", None)
        context = int(getattr(model_config, "max_position_embeddings", 0) or 0)

        # One vector env per (env, split, arguments); one copy per rollout, reset to its task.
        groups: dict[tuple[str, str, str], list[int]] = {}
        for i, spec in enumerate(specs):
            groups.setdefault((spec.env_id, spec.split, spec.env_kwargs), []).append(i)
        episodes: list[_Episode | None] = [None] * len(prompts)
        copies: dict[int, tuple[Any, int, str]] = {}  # rollout -> (vector env, copy index, family)
        for rows in groups.values():
            env = self._vec_env(specs[rows[0]], len(rows))
            observations, infos = env.reset(task_ids=[specs[i].task_id for i in rows])
            family = self.family or family_for_env(specs[rows[0]].env_id)
            for copy, i in enumerate(rows):
                first = turn_text(observations[copy], infos[copy], family=family, style=self.style, first=True)
                ids = renderer.prompt_ids(_prompt_messages(prompts[i]), first)
                budget = completion_limit if not context else min(completion_limit, context - len(ids))
                episodes[i] = _Episode(specs[i], ids, budget)
                copies[i] = (env, copy, family)
        ready = [e for e in episodes if e is not None]

        turn = 0
        while any(e.running for e in ready):
            if self.max_turns is not None and turn >= self.max_turns:
                break
            live = [i for i, e in enumerate(episodes) if e is not None and e.running]
            for i in live:  # no room left for a single token: the rollout is cut here
                if episodes[i].budget - len(episodes[i].completion_ids) < 1:
                    episodes[i].cut = True
            live = [i for i in live if episodes[i].running]
            if not live:
                break
            rooms = {i: episodes[i].budget - len(episodes[i].completion_ids) for i in live}
            responses = []
            chunk = self.micro_batch_size or len(live)
            for start in range(0, len(live), chunk):
                self.live_rollouts = live[start:start + chunk]
                sequences = [episodes[i].prompt_ids + episodes[i].completion_ids for i in self.live_rollouts]
                room = min(self.max_new_tokens, max(rooms[i] for i in self.live_rollouts))
                responses += generate(trainer, sequences, room, self.stop)
            stepping = []
            for i, (ids, logprobs) in zip(live, responses, strict=True):
                if len(ids) > rooms[i]:  # the turn ran past the token budget: keep what fits, end here
                    episodes[i].add(ids[:rooms[i]], logprobs[:rooms[i]], model=True)
                    episodes[i].cut = True
                else:
                    stepping.append((i, ids, logprobs))
            by_env: dict[int, tuple[Any, list[int], list[str], list[int]]] = {}
            for i, ids, logprobs in stepping:
                episode = episodes[i]
                episode.add(ids, logprobs, model=True)
                env, copy, _ = copies[i]
                action, _ = project_action(tokenizer.decode(ids, skip_special_tokens=True),
                                           env.infos[copy].get("admissible_actions"))
                episode.anchors.append(str(env.state_keys[copy]))
                episode.actions.append(action)
                entry = by_env.setdefault(id(env), (env, [], [], []))
                entry[1].append(copy)
                entry[2].append(action)
                entry[3].append(i)
            for env, indices, actions, rollouts in by_env.values():
                env.step_async(actions, indices=indices)
                out = env.step_wait(indices=indices)
                row_of = {int(c): r for r, c in enumerate(out.indices)}
                for copy, i in zip(indices, rollouts, strict=True):
                    r = row_of[copy]
                    episode = episodes[i]
                    episode.rewards.append(float(out.rewards[r]))
                    episode.invalid += int(out.invalid[r])
                    episode.won = bool(out.won[r])
                    if out.done[r]:
                        episode.finished = True
                        if not renderer.ends_turn(episode.completion_ids) and eos:
                            episode.add([eos[0]], None, model=False)
                        continue
                    family = copies[i][2]
                    text = turn_text(out.observations[r], out.infos[r], family=family, style=self.style)
                    feedback = renderer.turn_ids(text)
                    if not renderer.ends_turn(episode.completion_ids) and renderer.chat and eos:
                        feedback = [eos[0], *feedback]  # close the assistant turn the model did not close
                    if len(episode.completion_ids) + len(feedback) + 1 > episode.budget:
                        episode.cut = True  # the next observation and a turn would not fit
                        continue
                    episode.add(feedback, None, model=False)
            turn += 1
        for e in ready:
            if e.running:  # max_turns reached
                e.cut = True

        return {
            "prompt_ids": [e.prompt_ids for e in ready],
            "completion_ids": [e.completion_ids for e in ready],
            "logprobs": [e.logprobs for e in ready],
            "env_mask": [e.env_mask for e in ready],
            "episode_return": [float(sum(e.rewards)) for e in ready],
            "won": [bool(e.won) for e in ready],
            "num_turns": [len(e.actions) for e in ready],
            "num_invalid": [int(e.invalid) for e in ready],
            "step_rewards": [list(e.rewards) for e in ready],
            "anchors": [list(e.anchors) for e in ready],
            "actions": [list(e.actions) for e in ready],
            "budget_exhausted": [bool(e.cut and not e.finished) for e in ready],
        }


def make_rollout_func(**options: Any) -> MultiTurnRollout:
    """``MultiTurnRollout(**options)``: a TRL ``rollout_func`` (see :class:`MultiTurnRollout`)."""
    return MultiTurnRollout(**options)


# ---------------------------------------------------------------------------------- reward functions
def episode_return_reward(completions: list[Any], episode_return: list[float] | None = None,
                          environments: list[Any] | None = None, **kwargs: Any) -> list[float]:
    """The episode's return: the ``episode_return`` field of :class:`MultiTurnRollout`, or each
    :class:`HiergymToolEnv`'s ``get_reward()`` (with ``environment_factory`` TRL already adds that one)."""
    if episode_return is not None:
        return [float(r) for r in episode_return]
    if environments is not None:
        return [float(e.get_reward()) for e in environments]
    raise ValueError("episode_return_reward needs MultiTurnRollout's `episode_return` field or environments")


def success_reward(completions: list[Any], won: list[bool] | None = None,
                   environments: list[Any] | None = None, **kwargs: Any) -> list[float]:
    """1.0 for an episode whose task was accomplished (``info["won"]``), else 0.0."""
    if won is not None:
        return [float(bool(w)) for w in won]
    if environments is not None:
        return [float(bool(getattr(e, "won", False))) for e in environments]
    raise ValueError("success_reward needs MultiTurnRollout's `won` field or environments")


__all__ = [
    "TASK_KEY",
    "GenerateFn",
    "HiergymToolEnv",
    "MultiTurnRollout",
    "TaskSpec",
    "episode_return_reward",
    "hf_generate",
    "make_rollout_func",
    "success_reward",
    "task_dataset",
    "vllm_generate",
]
