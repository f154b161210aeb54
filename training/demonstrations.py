"""Behaviour-cloning demonstrations from the environments' experts, in the agent's own prompt/output format.

An expert episode is played with ``expert_plan()``; at every step the prompt the agent *would* see (same
prompt builder, same history window, same style) is paired with the response the agent should write
(``<action>...</action>``). For the hierarchical agent the expert's plan is cut into chunks of
``replan_every`` actions: each chunk becomes a planner demonstration (the subgoal names the chunk's actions,
the way a planner would phrase a short instruction) and executor demonstrations conditioned on it, the last
action of a chunk marked ``<subgoal_done/>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym

from hiergym.agents.prompts import (
    Step,
    SubgoalRecord,
    executor_prompt,
    family_for_env,
    format_action_response,
    format_subgoal_response,
    planner_prompt,
)


@dataclass
class Demonstration:
    prompt: str
    response: str
    level: str = "executor"


def describe_chunk(actions: list[str]) -> str:
    """A subgoal text for a chunk of expert actions ("up, up, then left")."""
    if len(actions) == 1:
        return actions[0]
    return ", ".join(actions[:-1]) + ", then " + actions[-1]


def expert_demonstrations(
    env_id: str,
    *,
    episodes: int,
    seed: int = 0,
    split: str = "train",
    env_kwargs: dict | None = None,
    agent: str = "flat",
    style: str = "compact",
    history_window: int = 2,
    replan_every: int = 4,
    max_steps: int = 100,
) -> tuple[list[Demonstration], float]:
    """Demonstrations from ``episodes`` expert episodes; also returns the expert's success rate on them."""
    if agent not in ("flat", "hierarchical"):
        raise ValueError(f"agent must be 'flat' or 'hierarchical', got {agent!r}")
    env = gym.make(env_id, **(env_kwargs or {}))
    family = family_for_env(env_id)
    demos: list[Demonstration] = []
    wins = 0
    for episode in range(episodes):
        obs, info = env.reset(seed=seed + episode, options={"split": split})
        task = info.get("task", "")
        plan = list(env.unwrapped.expert_plan() or [])
        history: list[Step] = []
        subgoals: list[SubgoalRecord] = []
        steps = 0
        while plan and steps < max_steps:
            chunk = plan[:replan_every] if agent == "hierarchical" else plan[:1]
            subgoal = None
            if agent == "hierarchical":
                subgoal = describe_chunk(chunk)
                demos.append(Demonstration(
                    planner_prompt(family=family, style=style, task=task, observation=obs,
                                   admissible=info.get("admissible_actions"), history=history,
                                   history_window=history_window, subgoals=subgoals),
                    format_subgoal_response(subgoal, style=style), level="planner"))
            for k, action in enumerate(chunk):
                prompt = executor_prompt(family=family, style=style, task=task, observation=obs,
                                         admissible=info.get("admissible_actions"), history=history,
                                         history_window=history_window, subgoal=subgoal)
                done_marker = subgoal is not None and k == len(chunk) - 1
                demos.append(Demonstration(prompt, format_action_response(action, style=style,
                                                                          subgoal_done=done_marker)))
                obs, _, terminated, truncated, info = env.step(action)
                history.append(Step(action, obs, bool(info.get("action_valid", True))))
                steps += 1
                if terminated or truncated:
                    break
            if subgoal is not None:
                subgoals.append(SubgoalRecord(subgoal, "done", len(chunk)))
            if terminated or truncated:
                break
            plan = plan[len(chunk):] or list(env.unwrapped.expert_plan() or [])
        wins += bool(info.get("won"))
    env.close()
    return demos, wins / max(episodes, 1)
