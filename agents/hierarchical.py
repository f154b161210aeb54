"""The hierarchical planner/executor LLM agent.

- The **planner** writes a subgoal (``<think>..</think><subgoal>..</subgoal>``) at the start of an episode and
  whenever the current subgoal ends: the executor reported it done (``<subgoal_done/>`` before its action: the
  action finishes it) or failed (``<subgoal_failed/>`` instead of an action), or it has lasted
  ``replan_every`` steps (``None``: no limit).
- The **executor** chooses each action toward the current subgoal, seeing the subgoal, the steps taken for it
  so far (up to the history window), the observation and the admissible actions (the compact style leaves the
  task to the planner; the full style shows it too).

Each planner decision opens a new *segment* (0, 1, 2, ...). Every generation is recorded in the step's
:class:`~hiergym.agents.base.Decision` with its level and segment (a re-plan's planner generation first, then
the executor's), so a trainer can give planner tokens segment-level credit and executor tokens step-level
credit (HiPER, HiMAC). When the executor fails a subgoal without acting, the planner is asked again and the
executor re-queried within the same step (once; a second refusal is an invalid action), so every ``act``
still returns one action per episode.

Planner and executor share one backend (different prompts) unless ``executor_backend`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hiergym.agents.base import Decision, Generation, TextBackend, episode_indices
from hiergym.agents.llm import (
    ACTION_STOP,
    AGENT_ERROR,
    EpisodeMemory,
    LLMAgent,
    LLMAgentConfig,
    error_decision,
    update_history,
)
from hiergym.agents.parsing import parse_action, parse_subgoal
from hiergym.agents.prompts import SubgoalRecord, executor_prompt, planner_prompt

SUBGOAL_STOP = ("</subgoal>",)


@dataclass
class HierarchicalAgentConfig(LLMAgentConfig):
    """Settings of the hierarchical agent: the executor's (see :class:`LLMAgentConfig`) plus the planner's.

    Args:
        replan_every: the planner is asked again after this many steps of one subgoal (None: only when the
            executor reports the subgoal done or failed).
        planner_max_new_tokens: longest planner response (default: ``max_new_tokens``).
        planner_temperature: the planner's sampling temperature (default: ``temperature``).
    """

    replan_every: int | None = 4
    planner_max_new_tokens: int | None = None
    planner_temperature: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.replan_every is not None and self.replan_every < 1:
            raise ValueError(f"replan_every must be >= 1 or None, got {self.replan_every}")


@dataclass
class HierarchicalMemory(EpisodeMemory):
    subgoals: list[SubgoalRecord] = field(default_factory=list)
    subgoal: str | None = None
    segment: int = -1
    steps_in_segment: int = 0
    need_plan: bool = True

    def segment_history(self) -> list:
        """The steps of the current subgoal: what the executor sees (earlier subgoals are the planner's)."""
        return self.history[len(self.history) - self.steps_in_segment:] if self.steps_in_segment else []

    def close_segment(self, outcome: str) -> None:
        if self.subgoal is not None:
            self.subgoals.append(SubgoalRecord(self.subgoal, outcome, self.steps_in_segment))
        self.need_plan = True


class HierarchicalAgent(LLMAgent):
    """Planner/executor agent (see the module docstring)."""

    def __init__(
        self,
        backend: TextBackend,
        config: HierarchicalAgentConfig | None = None,
        *,
        executor_backend: TextBackend | None = None,
        env_id: str | None = None,
    ):
        super().__init__(backend, config or HierarchicalAgentConfig(), env_id=env_id)
        self.planner_backend = backend
        self.executor_backend = executor_backend or backend
        self.config: HierarchicalAgentConfig

    def new_episode_state(self, task: str, info: dict[str, Any]) -> HierarchicalMemory:
        base = super().new_episode_state(task, info)
        return HierarchicalMemory(task=base.task, history=[], episode_seed=base.episode_seed)

    # ------------------------------------------------------------------------------------------- planner
    def _plan(self, memories: list[HierarchicalMemory], observations: list[str], infos: list[dict[str, Any]],
              generations: list[list[Generation]], details: list[dict[str, Any]], rows: list[int],
              attempt: int = 0) -> None:
        cfg = self.config
        temperature = cfg.temperature if cfg.planner_temperature is None else cfg.planner_temperature
        prompts = [
            planner_prompt(family=self.family, style=cfg.style, task=memories[r].task, observation=observations[r],
                           admissible=infos[r].get("admissible_actions"), history=memories[r].history,
                           history_window=cfg.history_window, subgoals=memories[r].subgoals)
            for r in rows
        ]
        completions = self.planner_backend.generate(
            prompts, max_new_tokens=cfg.planner_max_new_tokens or cfg.max_new_tokens, temperature=temperature,
            top_p=cfg.top_p, stop=list(SUBGOAL_STOP),
            **self.seed_arguments(self.planner_backend, self.sampling_seeds(
                [memories[r] for r in rows], "planner", attempt, temperature)),
        )
        for r, completion in zip(rows, completions, strict=True):
            memory = memories[r]
            if completion.error:  # the episode fails with it (act); no subgoal, no new segment
                details[r][AGENT_ERROR] = completion.error
                generations[r].append(Generation.from_completion(
                    completion, level="planner", segment=memory.segment + 1, parse_ok=False,
                    temperature=temperature))
                continue
            parsed = parse_subgoal(completion.response_text)
            if parsed.ok:
                subgoal = parsed.action or ""
            else:
                # Keep going with the task itself as the subgoal; the planner's failure is recorded for credit.
                subgoal = memory.task or "make progress on the task"
                details[r]["planner_parse_error"] = parsed.error
            memory.segment += 1
            memory.subgoal = subgoal
            memory.steps_in_segment = 0
            memory.need_plan = False
            details[r]["replanned"] = True
            generations[r].append(Generation.from_completion(
                completion, level="planner", segment=memory.segment, parse_ok=parsed.ok, temperature=temperature))

    # ------------------------------------------------------------------------------------------ executor
    def act(self, observations: list[str], infos: list[dict[str, Any]]) -> list[str | Decision]:
        cfg = self.config
        memories: list[HierarchicalMemory] = [self.states[i] for i in episode_indices(infos)]
        for memory, observation, info in zip(memories, observations, infos, strict=True):
            update_history(memory, observation, info)
        generations: list[list[Generation]] = [[] for _ in memories]
        details: list[dict[str, Any]] = [{} for _ in memories]
        decisions: list[Decision | None] = [None] * len(memories)
        pending = list(range(len(memories)))
        for attempt in range(2):
            to_plan = [r for r in pending if memories[r].need_plan]
            if to_plan:
                self._plan(memories, observations, infos, generations, details, to_plan, attempt)
                for r in to_plan:
                    if AGENT_ERROR in details[r]:
                        decisions[r] = Decision("", generations[r], {AGENT_ERROR: details[r][AGENT_ERROR]})
                pending = [r for r in pending if decisions[r] is None]
                if not pending:
                    break
            prompts = [
                executor_prompt(family=self.family, style=cfg.style, task=memories[r].task,
                                observation=observations[r], admissible=infos[r].get("admissible_actions"),
                                history=memories[r].segment_history(), history_window=cfg.history_window,
                                subgoal=memories[r].subgoal, list_actions=cfg.list_actions)
                for r in pending
            ]
            completions = self.executor_backend.generate(
                prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                stop=list(ACTION_STOP),
                **self.seed_arguments(self.executor_backend, self.sampling_seeds(
                    [memories[r] for r in pending], "executor", attempt)),
                **self.choice_arguments([infos[r] for r in pending], [memories[r] for r in pending],
                                        subgoal_done=True),
            )
            retry = []
            for r, completion in zip(pending, completions, strict=True):
                memory = memories[r]
                if completion.error:
                    generations[r].append(Generation.from_completion(
                        completion, level="executor", segment=memory.segment, parse_ok=False,
                        temperature=cfg.temperature))
                    decisions[r] = error_decision(completion, generations[r], memory)
                    continue
                parsed = parse_action(completion.response_text, self.readable_actions(infos[r]))
                generations[r].append(Generation.from_completion(
                    completion, level="executor", segment=memory.segment, parse_ok=parsed.ok,
                    temperature=cfg.temperature))
                if not parsed.ok and (parsed.subgoal_failed or parsed.subgoal_done) and attempt == 0:
                    # The executor gave the subgoal up without acting: re-plan now and ask it again.
                    memory.close_segment("failed" if parsed.subgoal_failed else "done")
                    retry.append(r)
                    continue
                if parsed.ok:
                    details[r]["think"] = parsed.think
                else:
                    details[r]["parse_error"] = parsed.error
                details[r]["finish_reason"] = completion.finish_reason
                details[r]["subgoal"] = memory.subgoal
                details[r]["segment"] = memory.segment
                decisions[r] = Decision(parsed.action if parsed.ok and parsed.action else "", generations[r],
                                        {k: v for k, v in details[r].items() if v is not None})
                memory.pending_action = decisions[r].action
                memory.steps += 1
                memory.steps_in_segment += 1
                if parsed.ok and (parsed.subgoal_done or parsed.subgoal_failed):
                    memory.close_segment("done" if parsed.subgoal_done else "failed")
                elif cfg.replan_every is not None and memory.steps_in_segment >= cfg.replan_every:
                    memory.close_segment("timeout")
            pending = retry
            if not pending:
                break
        return [d for d in decisions if d is not None]
