"""The ``expert`` agent: follows the environment's own ``expert_plan()`` (the ceiling of the suite); with
``epsilon > 0`` a noisy expert, a controlled imperfect policy (e.g. for test-time search benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hiergym.agents.base import EPISODE_SEED, BatchedAgent, Decision, episode_indices
from hiergym.envs.core import stable_seed


class ExpertAgent(BatchedAgent):
    """Plays the plan returned by ``env.unwrapped.expert_plan()`` from the current state.

    It needs the environments themselves: the harness and the trainer call :meth:`attach_envs` with the batch's
    envs before ``reset`` (any agent may implement that hook). The plan is computed once and followed; it is
    recomputed whenever it runs out or the env rejected the last action (a stochastic env, or an expert plan
    that went stale). When the env has no plan from the current state (a Sokoban dead end) the agent sends an
    empty (invalid) action with the reason in ``Decision.info``.

    ``epsilon``: with this probability per step the agent sends a uniformly random admissible action instead
    (and replans at its next step); each episode draws from its own generator, seeded by ``seed`` and the
    episode's seed (``info["episode_seed"]``), so runs are reproducible. ``epsilon=0`` (default) is the expert.
    """

    def __init__(self, epsilon: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= float(epsilon) <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon!r}")
        self.envs: list[Any] = []
        self.epsilon = float(epsilon)
        self.seed = seed
        self.rngs: list[np.random.Generator] = []
        self._counter = 0

    def attach_envs(self, envs: Sequence[Any]) -> None:
        self.envs = list(envs)

    def reset(self, tasks: list[str], infos: list[dict[str, Any]]) -> None:
        super().reset(tasks, infos)
        self.rngs = []
        for info in infos:
            episode_seed = info.get(EPISODE_SEED)
            if episode_seed is None:
                self._counter += 1
                episode_seed = f"episode{self._counter}"
            self.rngs.append(np.random.default_rng(stable_seed("noisy-expert", self.seed, episode_seed)))

    def new_episode_state(self, task: str, info: dict[str, Any]) -> list[str]:
        return []

    def act(self, observations: list[str], infos: list[dict[str, Any]]) -> list[str | Decision]:
        if not self.envs:
            raise RuntimeError("the expert agent needs the environments: call attach_envs(envs) before reset")
        actions: list[str | Decision] = []
        for index, info in zip(episode_indices(infos), infos, strict=True):
            plan: list[str] = self.states[index]
            if self.epsilon > 0:
                choices = info.get("admissible_actions") or []
                if choices and self.rngs[index].random() < self.epsilon:
                    plan.clear()  # the state moves off the plan: replan next step
                    actions.append(str(choices[int(self.rngs[index].integers(len(choices)))]))
                    continue
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
