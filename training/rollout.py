"""Group rollouts: B tasks x G same-seed copies played by an agent, recorded per the trajectory contract.

:func:`collect_rollouts` drives a :class:`hiergym.envs.vector.GroupVecEnv` in lock-step with a batched agent
(``reset`` / ``act``, see ``docs/agents.md``) and turns every generation behind every decision into a
:class:`hiergym.training.trajectory.StepRecord`: planner rows (reward 0) and executor rows (the env step's
reward), with token ids and behaviour log-probs, so any estimator can run on the finished batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hiergym.training.trajectory import StepRecord

#: ``reward_fn(reward, info, decision, copy_index) -> reward``: shaping applied to every env step.
RewardFn = Callable[[float, dict, Any, int], float]


@dataclass
class RolloutResult:
    records: list[StepRecord]
    #: One summary per trajectory: traj_id, group_id, return, steps, won, invalid actions, tokens.
    episodes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return float(np.mean([e["won"] for e in self.episodes])) if self.episodes else 0.0

    @property
    def mean_return(self) -> float:
        return float(np.mean([e["return"] for e in self.episodes])) if self.episodes else 0.0


def collect_rollouts(
    vec_env,
    agent,
    *,
    task_ids: list[int] | None = None,
    reward_fn: RewardFn | None = None,
    invalid_action_penalty: float = 0.0,
    copy_infos: list[dict[str, Any]] | None = None,
    observation_notes: list[str] | None = None,
) -> RolloutResult:
    """Play one batch to the end (every copy terminated or truncated) and record it.

    ``task_ids`` resets the groups to fixed tasks of the env's split (evaluation); otherwise new tasks are
    drawn. ``copy_infos`` (one dict per copy) is merged into the infos the agent sees at every step (e.g.
    an HBPO token budget) and ``observation_notes`` (one line per copy) is appended to every observation
    the agent sees (e.g. stating that budget). ``invalid_action_penalty`` is subtracted from the reward of
    invalid actions.
    """
    from hiergym.agents.base import EPISODE_INDEX, as_decision

    observations, infos = vec_env.reset(task_ids=task_ids)
    n = vec_env.num_envs
    extra = copy_infos or [{} for _ in range(n)]

    def agent_infos(indices) -> list[dict[str, Any]]:
        return [{**infos[i], **extra[i], EPISODE_INDEX: int(i)} for i in indices]

    def agent_observation(i: int) -> str:
        return observations[i] + ("\n" + observation_notes[i] if observation_notes else "")

    agent.reset([info.get("task", "") for info in infos], agent_infos(range(n)))
    records: list[StepRecord] = []
    episodes: dict[int, dict[str, Any]] = {}
    while vec_env.running.any():
        active = np.flatnonzero(vec_env.running)
        outputs = agent.act([agent_observation(i) for i in active], agent_infos(active))
        decisions = [as_decision(o) for o in outputs]
        actions: list[Any] = [None] * n
        for i, decision in zip(active, decisions, strict=True):
            actions[i] = decision.action
        out = vec_env.step(actions)
        by_copy = dict(zip(active.tolist(), decisions, strict=True))
        for r in np.flatnonzero(out.active):
            copy = int(out.indices[r])
            decision = by_copy[copy]
            reward = float(out.rewards[r])
            if reward_fn is not None:
                reward = float(reward_fn(reward, out.infos[r], decision, copy))
            if out.invalid[r]:
                reward -= invalid_action_penalty
            done = bool(out.terminated[r] or out.truncated[r])
            base = dict(group_id=int(out.group_id[r]), traj_id=int(out.traj_id[r]), step=int(out.step[r]),
                        anchor=str(out.anchor[r]), observation=out.prev_observations[r], done=done)
            # The last executor generation chose the env action; an earlier one in the same step (an executor that
            # declared its subgoal done or failed, honoured with a new plan) took no env action: no env reward.
            acting = max((k for k, g in enumerate(decision.generations) if g.level == "executor"), default=-1)
            for k, generation in enumerate(decision.generations):
                is_acting = k == acting
                records.append(StepRecord(
                    **base, level=generation.level, segment=int(generation.segment),
                    action=decision.action if is_acting else generation.response_text,
                    reward=reward if is_acting else 0.0,
                    invalid=(bool(out.invalid[r] or not generation.parse_ok) if is_acting
                             else generation.level == "planner" and not generation.parse_ok),
                    prompt_token_ids=list(generation.prompt_token_ids),
                    response_token_ids=list(generation.response_token_ids),
                    response_logprobs=list(generation.response_logprobs),
                ))
            if acting < 0:  # a non-LLM agent: the env step still is a row
                segment = decision.generations[-1].segment if decision.generations else 0
                records.append(StepRecord(**base, level="executor", segment=segment, action=decision.action,
                                          reward=reward, invalid=bool(out.invalid[r])))
            summary = episodes.setdefault(int(out.traj_id[r]), {
                "traj_id": int(out.traj_id[r]), "group_id": int(out.group_id[r]), "return": 0.0, "steps": 0,
                "won": False, "invalid_actions": 0, "tokens": 0, "error": None,
                "task_type": out.infos[r].get("task_type")})
            summary["return"] += reward
            summary["steps"] += 1
            summary["won"] = bool(out.won[r])
            summary["invalid_actions"] += int(out.invalid[r])
            summary["tokens"] += sum(len(g.response_token_ids) for g in decision.generations)
            if out.error[r]:
                summary["error"] = out.infos[r].get("error", "step failed")
        # Rows of masked copies repeat their last view; the env's attributes hold every copy's current one.
        observations, infos = list(vec_env.observations), list(vec_env.infos)
    return RolloutResult(records=records, episodes=sorted(episodes.values(), key=lambda e: e["traj_id"]))
