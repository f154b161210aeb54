"""Behaviour-cloning demonstrations from the environments' experts, in the agent's own prompt/output format.

The expert's episodes are played by the episode driver through the very agent that will be trained
(:class:`~hiergym.agents.demonstrator.ExpertDemonstrator`): every prompt is built by the agent's own prompt and
memory code, and paired with the response the agent should have written (the expert's move in the agent's
output format; for the hierarchical agent, planner subgoals naming chunks of ``replan_every`` expert actions
and executor actions with ``<subgoal_done/>`` on a chunk's last one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from hiergym.agents.demonstrator import ExpertDemonstrator
from hiergym.driver import EnvEpisodes, play_episodes

#: Expert episodes played together (one env each).
DEMONSTRATION_BATCH = 64


@dataclass
class Demonstration:
    prompt: str
    response: str
    level: str = "executor"
    #: Constrained decoding: the responses the agent could choose from at this prompt (None: unconstrained).
    choices: list[str] | None = None


def expert_demonstrations(
    env_id: str,
    agent: Any,
    *,
    episodes: int,
    seed: int = 0,
    split: str = "train",
    env_kwargs: dict | None = None,
    max_steps: int = 100,
) -> tuple[list[Demonstration], float]:
    """Demonstrations from ``episodes`` expert episodes (episode ``e`` resets with seed ``seed + e``), played
    through ``agent`` (an :class:`~hiergym.agents.llm.LLMAgent` or
    :class:`~hiergym.agents.hierarchical.HierarchicalAgent`, whose backend is replaced by the expert's script);
    also returns the expert's success rate on them. Episode by episode, step by step, planner before executor."""
    demonstrator = ExpertDemonstrator(agent)
    envs = [gym.make(env_id, **(env_kwargs or {})) for _ in range(min(episodes, DEMONSTRATION_BATCH))]
    demos: list[Demonstration] = []
    wins = 0
    try:
        for start in range(0, episodes, DEMONSTRATION_BATCH):
            count = min(DEMONSTRATION_BATCH, episodes - start)
            resets = [{"seed": seed + start + k, "options": {"split": split}} for k in range(count)]
            played = play_episodes(EnvEpisodes(envs[:count], resets), demonstrator, max_steps=max_steps)
            wins += sum(r.success for r in played.results)
            for step in sorted(played.steps, key=lambda s: s.episode):  # stable: each episode's steps in order
                demos += [Demonstration(g.prompt_text, g.response_text, level=g.level, choices=g.choices)
                          for g in step.decision.generations]
    finally:
        for env in envs:
            env.close()
    return demos, wins / max(episodes, 1)
