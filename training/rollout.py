"""Group rollouts: B tasks x G same-seed copies played by an agent, recorded per the trajectory contract.

:func:`collect_rollouts` plays the copies of a :class:`hiergym.envs.vector.GroupVecEnv` with the episode driver
(:func:`hiergym.driver.play_episodes`, the loop evaluation and demonstrations use too) and turns every
generation behind every decision into a :class:`hiergym.training.trajectory.StepRecord`: planner rows (reward
0) and executor rows (the env step's reward), with token ids and behaviour log-probs, so any estimator can run
on the finished batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hiergym.driver import GroupEpisodes, RewardFn, play_episodes, step_records
from hiergym.training.trajectory import StepRecord


@dataclass
class RolloutResult:
    records: list[StepRecord]
    #: One summary per trajectory: copy, traj_id, group_id, return, steps, won, invalid actions, tokens.
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
    group_sizes: list[int] | None = None,
    reward_fn: RewardFn | None = None,
    invalid_action_penalty: float = 0.0,
    copy_infos: list[dict[str, Any]] | None = None,
    observation_notes: list[str] | None = None,
) -> RolloutResult:
    """Play one batch to the end (every copy terminated or truncated) and record it.

    ``task_ids`` resets the groups to fixed tasks of the env's split (evaluation); otherwise new tasks are
    drawn; ``group_sizes`` (with ``task_ids``) gives task ``k`` that many copies (an unequal allocation, e.g.
    ``training/allocation.py``'s knapsack), the copies past their sum playing nothing. ``copy_infos`` (one dict per copy) is merged into the infos the agent sees at every step (e.g.
    an HBPO token budget) and ``observation_notes`` (one line per copy) is appended to every observation
    the agent sees (e.g. stating that budget). ``invalid_action_penalty`` is subtracted from the reward of
    invalid actions.
    """
    played = play_episodes(GroupEpisodes(vec_env, task_ids, group_sizes), agent, extra_infos=copy_infos,
                           observation_notes=observation_notes, reward_fn=reward_fn,
                           invalid_action_penalty=invalid_action_penalty)
    last_step = {}
    for step in played.steps:
        last_step[step.episode] = step
    episodes = []
    for copy, result in enumerate(played.results):
        if copy not in last_step:
            continue
        transition = last_step[copy].transition
        episodes.append({"copy": copy, "traj_id": transition.traj_id, "group_id": transition.group_id,
                         "return": result.total_reward, "steps": result.steps, "won": result.success,
                         "invalid_actions": result.invalid_actions, "tokens": result.response_tokens,
                         "error": result.error, "task_type": result.task_type})
    return RolloutResult(records=step_records(played.steps), episodes=sorted(episodes, key=lambda e: e["traj_id"]))
