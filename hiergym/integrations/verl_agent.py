"""A verl-agent-style environment manager over :func:`hiergym.make_group_vec` (``docs/vector.md``).

verl-agent (the GiGPO code base) drives environments through an *environment manager* with one interface,
which its multi-turn rollout loop calls::

    observations, infos = manager.reset(kwargs=env_kwargs)   # observations: {"text", "image", "anchor"}
    while ...:
        next_obs, rewards, dones, infos = manager.step(text_actions)   # one LLM output per copy
    success = manager.success_evaluator(total_infos=..., total_batch_list=...)

:class:`HiergymEnvironmentManager` provides it for every hiergym environment:

- ``text``: the prompt for the LLM, hiergym's executor prompt (task, a window of recent steps, the current
  observation, the admissible actions, the ``<think>``/``<action>`` format); ``image`` is None;
- ``anchor``: hiergym's exact ``state_key`` of each copy's current state -- equal states give equal keys,
  whatever the history or the wording of the observation -- which is what GiGPO groups steps by;
- ``text_actions`` go through a projection function, by default :func:`hiergym.integrations.project_actions`
  (hiergym's own action parser: the last ``<action>...</action>`` wins, a bare admissible action is accepted,
  anything else is the empty, invalid action);
- ``infos[i]`` is the env's info plus ``is_action_valid`` (the output parsed *and* the env accepted the
  action), ``projected_action``, ``anchor`` (the state key the action was taken in) and ``active``; ``won``
  is the env's own.

The batch is ``num_tasks`` tasks x ``group_size`` same-seed copies (verl-agent's ``env.rollout.n``), copies
``g*G .. g*G+G-1`` playing task ``g``; finished copies stay done (reward 0) until the next reset.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hiergym.agents.prompts import Step, executor_prompt, family_for_env
from hiergym.integrations import project_actions

#: ``projection_f(text_actions, admissible_actions) -> (env actions, validity 1/0)``, one per copy.
ProjectionFn = Callable[[Sequence[str], Sequence[Sequence[str] | None]], tuple[list[str], list[int]]]


class HiergymEnvironmentManager:
    """verl-agent's ``EnvironmentManagerBase`` interface over a :class:`hiergym.envs.vector.GroupVecEnv`.

    Build it with :meth:`make` (``HiergymEnvironmentManager.make("hiergym/Sokoban-v0", num_tasks=16,
    group_size=8)``) or from a vector env (``HiergymEnvironmentManager(make_group_vec(...))``; the positional
    arguments ``(envs, projection_f, config)`` are verl-agent's).

    Args:
        envs: the group vector env (``autoreset`` must be off: verl-agent resets whole batches).
        projection_f: text -> env action projection (default :func:`hiergym.integrations.project_actions`).
        config: kept as ``self.config`` (verl-agent passes its OmegaConf config; unused here).
        style: ``"full"`` (instructions, ``<think>``/``<action>``) or ``"compact"`` (the ``tiny`` model's).
        family: prompt family (default: from the env id).
        history_window: recent steps shown in the prompt (verl-agent's ``env.history_length``).
        task_ids: fixed tasks, one per group slot, for every :meth:`reset` without ``task_ids`` (validation
            managers: the same evaluation batch every time).
    """

    def __init__(
        self,
        envs: Any,
        projection_f: ProjectionFn | None = None,
        config: Any = None,
        *,
        style: str = "full",
        family: str | None = None,
        history_window: int = 3,
        task_ids: Sequence[int] | None = None,
    ) -> None:
        if getattr(envs, "autoreset", False):
            raise ValueError("HiergymEnvironmentManager needs a group vector env without autoreset "
                             "(verl-agent resets the whole batch between rollouts)")
        self.envs = envs
        self.projection_f = projection_f or project_actions
        self.config = config
        self.style = style
        self.family = family or family_for_env(getattr(envs, "env_id", None))
        self.history_window = int(history_window)
        self.task_ids = [int(t) for t in task_ids] if task_ids is not None else None
        if self.task_ids is not None and len(self.task_ids) != envs.num_tasks:
            raise ValueError(f"task_ids has {len(self.task_ids)} entries; give one per group slot ({envs.num_tasks})")
        self.memory: list[list[Step]] = [[] for _ in range(envs.num_envs)]
        self.tasks: list[str] = [""] * envs.num_envs
        #: Per copy, whether its current (or last) episode was won, and whether it has ended.
        self.won = np.zeros(envs.num_envs, dtype=bool)
        self.done = np.zeros(envs.num_envs, dtype=bool)

    @classmethod
    def make(
        cls,
        env_id: str,
        num_tasks: int,
        group_size: int,
        *,
        seed: int = 0,
        split: str = "train",
        backend: str = "sync",
        num_workers: int | None = None,
        projection_f: ProjectionFn | None = None,
        config: Any = None,
        style: str = "full",
        family: str | None = None,
        history_window: int = 3,
        task_ids: Sequence[int] | None = None,
        **env_kwargs: Any,
    ) -> HiergymEnvironmentManager:
        """``make_group_vec(env_id, num_tasks, group_size, ...)`` wrapped in a manager."""
        from hiergym.envs.vector import make_group_vec

        envs = make_group_vec(env_id, num_tasks=num_tasks, group_size=group_size, seed=seed, split=split,
                              backend=backend, num_workers=num_workers, **env_kwargs)
        return cls(envs, projection_f, config, style=style, family=family, history_window=history_window,
                   task_ids=task_ids)

    @property
    def num_envs(self) -> int:
        return int(self.envs.num_envs)

    # ------------------------------------------------------------------------------------ interface
    def reset(self, kwargs: Any = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Reset every copy; returns ``({"text", "image", "anchor"}, infos)``.

        ``kwargs`` (verl-agent's ``env_kwargs``) may be None, a mapping with any of ``seed``, ``task_ids``
        (one per group slot) and ``options``, or one mapping per copy (or per slot) each with a ``task_id``.
        Without task ids, the next tasks are drawn from the seed (``make_group_vec``'s task stream), or the
        manager's fixed ``task_ids``.
        """
        seed, task_ids, options = self._reset_arguments(kwargs)
        if task_ids is None:
            task_ids = self.task_ids
        observations, infos = self.envs.reset(seed=seed, task_ids=task_ids, options=options)
        self.memory = [[] for _ in range(self.num_envs)]
        self.tasks = [str(info.get("task", "")) for info in infos]
        self.won[:] = False
        self.done[:] = False
        return self._observations(), [dict(info) for info in infos]

    def step(self, text_actions: Sequence[str]) -> tuple[dict[str, Any], np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """One LLM output per copy (entries of finished copies are ignored); returns
        ``(next observations, rewards, dones, infos)`` with NumPy ``rewards`` (float32) and ``dones`` (bool)."""
        if len(text_actions) != self.num_envs:
            raise ValueError(f"got {len(text_actions)} text actions for {self.num_envs} copies")
        admissible = [info.get("admissible_actions") for info in self.envs.infos]
        actions, valids = self.projection_f(list(text_actions), admissible)
        running = self.envs.running.copy()
        out = self.envs.step([a if run else None for a, run in zip(actions, running, strict=True)])
        infos: list[dict[str, Any]] = []
        for r, i in enumerate(out.indices):
            i = int(i)
            info = dict(out.infos[r])
            active = bool(out.active[r])
            valid = bool(valids[i]) and not bool(out.invalid[r]) if active else True
            info["is_action_valid"] = np.array(int(valid))
            info["projected_action"] = actions[i] if active else ""
            info["anchor"] = str(out.anchor[r])
            info["active"] = active
            info["won"] = bool(out.won[r])
            if active:
                self.memory[i].append(Step(actions[i], out.observations[r], valid))
                self.won[i] = bool(out.won[r])
            infos.append(info)
        self.done |= out.done
        rewards = np.asarray(out.rewards, dtype=np.float32)
        dones = np.asarray(out.done, dtype=bool)
        return self._observations(), rewards, dones, infos

    def build_text_obs(self) -> list[str]:
        """The LLM prompt of every copy now: hiergym's executor prompt with the last ``history_window`` steps."""
        return [
            executor_prompt(family=self.family, style=self.style, task=self.tasks[i],
                            observation=self.envs.observations[i],
                            admissible=self.envs.infos[i].get("admissible_actions"),
                            history=self.memory[i], history_window=self.history_window)
            for i in range(self.num_envs)
        ]

    def success_evaluator(self, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        """``{"success_rate": 1.0/0.0 per copy}``.

        With verl-agent's keywords (``total_infos``, ``total_batch_list``: per copy, the step infos and the
        step records with ``active_masks``), the ``won`` of each copy's last active step, as verl-agent's own
        managers compute it; without them, the manager's record of the current batch.
        """
        total_infos = kwargs.get("total_infos")
        total_batch_list = kwargs.get("total_batch_list")
        if total_infos is None or total_batch_list is None:
            return {"success_rate": self.won.astype(np.float64)}
        success: dict[str, list[float]] = defaultdict(list)
        for b, steps in enumerate(total_batch_list):
            value = 0.0
            for k in reversed(range(len(steps))):
                if _truthy(steps[k].get("active_masks", True)):
                    value = float(bool(total_infos[b][k].get("won", False)))
                    break
            success["success_rate"].append(value)
        return {key: np.array(values) for key, values in success.items()}

    def close(self) -> None:
        self.envs.close()

    # ------------------------------------------------------------------------------------ internals
    def _observations(self) -> dict[str, Any]:
        return {"text": self.build_text_obs(), "image": None, "anchor": list(self.envs.state_keys)}

    def _reset_arguments(self, kwargs: Any) -> tuple[int | None, list[int] | None, dict[str, Any] | None]:
        if kwargs is None:
            return None, None, None
        if isinstance(kwargs, Mapping):
            task_ids = kwargs.get("task_ids")
            return (kwargs.get("seed"), [int(t) for t in task_ids] if task_ids is not None else None,
                    dict(kwargs["options"]) if kwargs.get("options") else None)
        samples = list(kwargs)  # one mapping per copy (verl-agent's per-sample env_kwargs) or per slot
        if not samples or all(not s for s in samples):
            return None, None, None
        group = self.envs.group_size
        if len(samples) == self.num_envs:
            per_slot = [samples[s * group:(s + 1) * group] for s in range(self.envs.num_tasks)]
        elif len(samples) == self.envs.num_tasks:
            per_slot = [[s] for s in samples]
        else:
            raise ValueError(f"got {len(samples)} env_kwargs; give one per copy ({self.num_envs}) or per group "
                             f"slot ({self.envs.num_tasks})")
        task_ids = []
        for slot, entries in enumerate(per_slot):
            ids = {int(e["task_id"]) for e in entries}
            if len(ids) != 1:
                raise ValueError(f"the copies of group slot {slot} ask for different tasks {sorted(ids)}")
            task_ids.append(ids.pop())
        return None, task_ids, None


def _truthy(value: Any) -> bool:
    return bool(np.asarray(value).any())


def make_envs(
    env_id: str,
    *,
    train_batch_size: int,
    group_n: int,
    val_batch_size: int,
    seed: int = 0,
    history_window: int = 3,
    val_split: str = "eval_in",
    style: str = "full",
    backend: str = "sync",
    **env_kwargs: Any,
) -> tuple[HiergymEnvironmentManager, HiergymEnvironmentManager]:
    """The (train, validation) pair verl-agent's ``make_envs`` returns: ``train_batch_size`` tasks x
    ``group_n`` copies drawn from ``seed``'s task stream, and ``val_batch_size`` fixed ``val_split`` tasks
    (task ids 0..val_batch_size-1, one copy each: the same validation set at every evaluation)."""
    train = HiergymEnvironmentManager.make(env_id, train_batch_size, group_n, seed=seed, split="train",
                                           backend=backend, style=style, history_window=history_window,
                                           **env_kwargs)
    val = HiergymEnvironmentManager.make(env_id, val_batch_size, 1, seed=seed + 1000, split=val_split,
                                         backend=backend, style=style, history_window=history_window,
                                         task_ids=range(val_batch_size), **env_kwargs)
    return train, val


__all__ = ["HiergymEnvironmentManager", "ProjectionFn", "make_envs"]
