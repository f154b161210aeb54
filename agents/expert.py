"""The ``expert`` agent: follows the environment's own ``expert_plan()`` (the ceiling of the suite)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hiergym.agents.base import BatchedAgent, Decision, episode_indices


class ExpertAgent(BatchedAgent):
    """Plays the plan returned by ``env.unwrapped.expert_plan()`` from the current state.

    It needs the environments themselves: the harness and the trainer call :meth:`attach_envs` with the batch's
    envs before ``reset`` (any agent may implement that hook). The plan is computed once and followed; it is
    recomputed whenever it runs out or the env rejected the last action (a stochastic env, or an expert plan
    that went stale). When the env has no plan from the current state (a Sokoban dead end) the agent sends an
    empty (invalid) action with the reason in ``Decision.info``.
    """

    def __init__(self) -> None:
        self.envs: list[Any] = []

    def attach_envs(self, envs: Sequence[Any]) -> None:
        self.envs = list(envs)

    def new_episode_state(self, task: str, info: dict[str, Any]) -> list[str]:
        return []

    def act(self, observations: list[str], infos: list[dict[str, Any]]) -> list[str | Decision]:
        if not self.envs:
            raise RuntimeError("the expert agent needs the environments: call attach_envs(envs) before reset")
        actions: list[str | Decision] = []
        for index, info in zip(episode_indices(infos), infos, strict=True):
            plan: list[str] = self.states[index]
            if not plan or not info.get("action_valid", True):
                env = self.envs[index]
                expert_plan = getattr(env.unwrapped, "expert_plan", None)
                if expert_plan is None:
                    raise RuntimeError(f"{type(env.unwrapped).__name__} has no expert_plan()")
                plan[:] = list(expert_plan() or [])
            if not plan:
                actions.append(Decision("", info={"no_action": "the env's expert has no plan from this state"}))
                continue
            actions.append(plan.pop(0))
        return actions
