"""The ``random`` agent: a uniformly random admissible action each step (the floor every agent must beat)."""

from __future__ import annotations

from typing import Any

import numpy as np

from hiergym.agents.base import EPISODE_SEED, BatchedAgent, Decision, episode_indices
from hiergym.envs.core import stable_seed


class RandomAgent(BatchedAgent):
    """Picks uniformly among ``info["admissible_actions"]``.

    Each episode has its own generator, seeded from ``seed`` and the episode's seed (``info["episode_seed"]``,
    set by the harness), so a run is reproducible whatever the batching or the number of workers. When an env
    cannot enumerate its actions (``admissible_actions`` is None or empty) the agent sends ``fallback_actions``
    if given, else an empty (invalid) action.
    """

    def __init__(self, seed: int = 0, fallback_actions: list[str] | None = None):
        self.seed = seed
        self.fallback_actions = list(fallback_actions or [])
        self._counter = 0

    def new_episode_state(self, task: str, info: dict[str, Any]) -> np.random.Generator:
        episode_seed = info.get(EPISODE_SEED)
        if episode_seed is None:  # no harness: still distinct generators for successive episodes
            self._counter += 1
            episode_seed = f"episode{self._counter}"
        return np.random.default_rng(stable_seed("random-agent", self.seed, episode_seed))

    def act(self, observations: list[str], infos: list[dict[str, Any]]) -> list[str | Decision]:
        actions: list[str | Decision] = []
        for index, info in zip(episode_indices(infos), infos, strict=True):
            choices = info.get("admissible_actions") or self.fallback_actions
            if not choices:
                actions.append(Decision("", info={"no_action": "no admissible actions to choose from"}))
                continue
            actions.append(str(choices[int(self.states[index].integers(len(choices)))]))
        return actions
