"""The flat LLM agent: one generation per step, prompt -> ``<think>..</think><action>..</action>`` -> action.

Works with any :class:`~hiergym.agents.base.TextBackend` (a local Hugging Face model or ``tiny`` through
:class:`~hiergym.agents.policy.CausalLMPolicy`, an OpenAI-compatible endpoint). All running episodes of a
batch are prompted in one ``generate`` call. Each step returns a :class:`~hiergym.agents.base.Decision` whose
one ``executor`` :class:`~hiergym.agents.base.Generation` (segment 0) carries the token ids and behaviour
log-probs for the trainer.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from hiergym.agents.base import (
    AGENT_ERROR,
    EPISODE_SEED,
    BatchedAgent,
    Decision,
    Generation,
    TextBackend,
    episode_indices,
)
from hiergym.agents.constraint import ACTION_CONSTRAINTS, admissible_choices
from hiergym.agents.parsing import ParsedAction, parse_action
from hiergym.agents.prompts import STYLES, Step, env_prompt, executor_prompt, family_for_env
from hiergym.envs.core import stable_seed

#: Generation stops at the end of the action; what a model writes after it would be wasted tokens.
ACTION_STOP = ("</action>",)


@dataclass
class LLMAgentConfig:
    """Settings of the LLM agents (the flat one and the executor of the hierarchical one).

    Args:
        family: prompt family (``sokoban``, ``alfworld``, ``webshop``, ``toolqa``, ``generic``); default: from
            the env id the agent was made for, else ``generic``.
        style: ``"full"`` (instructions and ``<think>``) or ``"compact"`` (a few lines; for ``tiny``).
        history_window: how many past steps the prompt shows.
        max_new_tokens: longest response per generation.
        temperature: sampling temperature; 0 is greedy decoding.
        top_p: nucleus sampling threshold.
        seed: seeds sampling, for reproducible runs; None: unseeded. Each episode samples from its own random
            streams, keyed by this seed, the episode's seed (``info["episode_seed"]``; without one, the
            episode's number in this agent's life), its step and the generation's role: an episode plays the
            same alone, in any batch and on any rank (with :class:`~hiergym.agents.policy.CausalLMPolicy`, or
            any backend whose ``generate`` takes ``seeds``, one per prompt).
        action_constraint: ``"none"`` (the benchmark's own rules: any text, invalid commands are the env's to
            flag) or ``"admissible"`` (decoding restricted to the admissible actions in the output format, see
            :mod:`hiergym.agents.constraint`; the backend must accept ``choices``: the local models do, an
            OpenAI-compatible server through its guided-choice field) or ``"task_spans"`` (the same, and a
            template's free-text slot, WebShop's ``search[<query>]``, holds a run of the task's words) or
            ``"observation_spans"`` (the same, with the family's free-text templates, and an answer slot holds
            a run of words the episode has shown; :func:`~hiergym.agents.constraint.slot_values`).
        list_actions: whether the executor's prompt lists the admissible actions (``False`` shortens the
            prompts where decoding is restricted to them anyway: a negotiation lists 30 proposals).
    """

    family: str | None = None
    style: str = "full"
    history_window: int = 3
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0
    action_constraint: str = "none"
    list_actions: bool = True

    def __post_init__(self) -> None:
        if self.action_constraint not in ACTION_CONSTRAINTS:
            raise ValueError(f"unknown action_constraint {self.action_constraint!r}; choose one of "
                             f"{', '.join(ACTION_CONSTRAINTS)}")
        if self.style not in STYLES:
            raise ValueError(f"unknown prompt style {self.style!r}; choose one of {', '.join(STYLES)}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class EpisodeMemory:
    """What an LLM agent remembers of one episode."""

    task: str
    history: list[Step]
    pending_action: str | None = None
    episode_seed: Any = None  # what keys the episode's sampling streams (see ``LLMAgentConfig.seed``)
    steps: int = 0


def update_history(memory: EpisodeMemory, observation: str, info: dict[str, Any]) -> None:
    """Record the previous action with the observation it led to (called at the start of each ``act``)."""
    if memory.pending_action is not None:
        memory.history.append(Step(memory.pending_action, observation, bool(info.get("action_valid", True))))
        memory.pending_action = None


def decision_from_parse(parsed: ParsedAction, generations: list[Generation], **info: Any) -> Decision:
    """The action of a parsed executor output; an unparseable one becomes an empty (invalid) action."""
    details = {k: v for k, v in info.items() if v is not None}
    if parsed.think:
        details["think"] = parsed.think
    if not parsed.ok:
        details["parse_error"] = parsed.error
        return Decision("", generations, details)
    return Decision(parsed.action or "", generations, details)


def error_decision(completion: Any, generations: list[Generation], memory: EpisodeMemory) -> Decision:
    """The Decision of an episode whose completion failed (``completion.error``): no action, the error."""
    memory.pending_action = None  # nothing was sent to the env on purpose: keep it out of the history
    memory.steps += 1
    return Decision("", generations, {AGENT_ERROR: completion.error})


class LLMAgent(BatchedAgent):
    """A flat LLM agent (see the module docstring)."""

    def __init__(self, backend: TextBackend, config: LLMAgentConfig | None = None, *, env_id: str | None = None):
        self.backend = backend
        self.config = config or LLMAgentConfig()
        self.family = self.config.family or family_for_env(env_id)
        self._episodes = 0

    def new_episode_state(self, task: str, info: dict[str, Any]) -> EpisodeMemory:
        episode_seed = info.get(EPISODE_SEED)
        if episode_seed is None:  # no harness: still a distinct stream for every episode of this agent
            episode_seed = f"episode{self._episodes}"
        self._episodes += 1
        return EpisodeMemory(task=task or str(info.get("task", "")), history=[], episode_seed=episode_seed)

    def sampling_seeds(self, memories: list[EpisodeMemory], role: str = "executor", attempt: int = 0,
                       temperature: float | None = None) -> list[int] | None:
        """One row seed per episode of a generate call: the agent's seed, the episode's seed, its step, the
        role (``planner``/``executor``) and the attempt within the step; None when unseeded or greedy."""
        temperature = self.config.temperature if temperature is None else temperature
        if self.config.seed is None or temperature == 0:
            return None
        return [stable_seed("llm-agent", self.config.seed, m.episode_seed, m.steps, role, attempt) for m in memories]

    @staticmethod
    def seed_arguments(backend: TextBackend, seeds: list[int] | None) -> dict[str, Any]:
        """``generate``'s seed keywords: ``seeds`` (one per prompt) for a backend that takes them, else one
        ``seed`` for the call (derived from the rows', so it depends on which episodes share the call)."""
        if seeds is None:
            return {}
        if _takes_seeds(backend):
            return {"seeds": seeds}
        return {"seed": stable_seed("llm-agent-call", seeds) % (2**31)}

    def build_prompt(self, memory: EpisodeMemory, observation: str, info: dict[str, Any]) -> str:
        return executor_prompt(
            family=self.family, style=self.config.style, task=memory.task, observation=observation,
            admissible=info.get("admissible_actions"), history=memory.history,
            history_window=self.config.history_window, list_actions=self.config.list_actions,
        )

    def readable_actions(self, info: dict[str, Any]) -> list[str]:
        """What a bare compact answer may be (:func:`parse_action`): the env's admissible actions, and under
        ``action_constraint="observation_spans"`` also the family's free-text templates (ToolQA's
        ``answer[<answer>]``, which the env cannot list; the other modes keep such answers in tags)."""
        admissible = list(info.get("admissible_actions") or [])
        if self.config.action_constraint == "observation_spans":
            admissible += env_prompt(self.family).action_templates
        return admissible

    def choice_arguments(self, infos: list[dict[str, Any]], memories: list[EpisodeMemory] | None = None, *,
                         subgoal_done: bool = False) -> dict[str, Any]:
        """``generate``'s ``choices`` under ``action_constraint="admissible"``, ``"task_spans"`` or
        ``"observation_spans"`` (nothing otherwise, so a backend that knows no constraint is called as before).
        ``observation_spans`` adds the family's free-text templates (ToolQA's ``answer[<answer>]``, which the
        env cannot list) and fills their slots from the task and the observations in ``memories``' histories
        (without ``memories``, from the task alone)."""
        mode = self.config.action_constraint
        if mode == "none":
            return {}
        choices = []
        for k, info in enumerate(infos):
            task = str(info.get("task") or "") if mode != "admissible" else None
            actions, seen = info.get("admissible_actions"), None
            if mode == "observation_spans":
                actions = self.readable_actions(info)
                seen = [step.observation for step in memories[k].history] if memories is not None else []
            choices.append(admissible_choices(actions, self.config.style, subgoal_done=subgoal_done, task=task,
                                              seen=seen))
        return {"choices": choices}

    def act(self, observations: list[str], infos: list[dict[str, Any]]) -> list[str | Decision]:
        memories = [self.states[i] for i in episode_indices(infos)]
        for memory, observation, info in zip(memories, observations, infos, strict=True):
            update_history(memory, observation, info)
        prompts = [self.build_prompt(m, o, i) for m, o, i in zip(memories, observations, infos, strict=True)]
        cfg = self.config
        completions = self.backend.generate(
            prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
            stop=list(ACTION_STOP), **self.seed_arguments(self.backend, self.sampling_seeds(memories)),
            **self.choice_arguments(infos, memories),
        )
        decisions: list[str | Decision] = []
        for memory, info, completion in zip(memories, infos, completions, strict=True):
            if completion.error:
                generation = Generation.from_completion(completion, level="executor", segment=0, parse_ok=False,
                                                        temperature=cfg.temperature)
                decisions.append(error_decision(completion, [generation], memory))
                continue
            parsed = parse_action(completion.response_text, self.readable_actions(info))
            generation = Generation.from_completion(completion, level="executor", segment=0, parse_ok=parsed.ok,
                                                    temperature=cfg.temperature)
            decision = decision_from_parse(parsed, [generation], finish_reason=completion.finish_reason)
            memory.pending_action = decision.action
            memory.steps += 1
            decisions.append(decision)
        return decisions


def _takes_seeds(backend: Any) -> bool:
    """Whether ``backend.generate`` accepts ``seeds`` (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(backend.generate).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "seeds" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
