"""The group vector env itself: :class:`GroupVecEnv` (B tasks x G same-seed copies) and :func:`make_group_vec`."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from hiergym.envs.core import stable_seed
from hiergym.envs.vector.backends import (
    _EnvFactory,
    _ProcessBackend,
    _SyncBackend,
    default_num_workers,
)
from hiergym.envs.vector.outputs import StepOutput, _Row, _stack_rows

Backend = Literal["sync", "process", "ray"]
BACKENDS = ("sync", "process", "ray")

#: Namespace of the task seeds drawn by :meth:`GroupVecEnv.reset` (part of every derived seed).
SEED_NAMESPACE = "hiergym.group_vec"

#: Default seconds one copy's step or reset may take in a worker before the worker is declared hung.
DEFAULT_STEP_TIMEOUT = 300.0


def group_task_seed(seed: int, batch_index: int, slot: int, episode: int = 0) -> int:
    """The task seed of group ``slot`` in the ``batch_index``-th drawing reset from ``seed`` (and of its
    ``episode``-th autoreset): a pure function, identical in every process and on every backend."""
    if episode == 0:
        return stable_seed(SEED_NAMESPACE, int(seed), int(batch_index), int(slot))
    return stable_seed(SEED_NAMESPACE, int(seed), int(batch_index), int(slot), "autoreset", int(episode))


def fixed_task_seed(split: str | None, task_id: int) -> int:
    """The seed of the group that ``reset(task_ids=[..., task_id, ...])`` resets to the fixed task ``task_id`` of
    ``split``: the same in every process, on every backend and for every batch."""
    return stable_seed(SEED_NAMESPACE, "task_id", split, int(task_id))



# ------------------------------------------------------------------------------------ the vector env
class GroupVecEnv:
    """``num_tasks`` x ``group_size`` copies of one environment; build it with :func:`make_group_vec`.

    Copy ``i`` plays group slot ``i // group_size``; all copies of a slot reset with the same seed and options.

    Lock-step use: :meth:`reset`, then :meth:`step` with one action per copy until ``running`` is all False.
    Copies that finished stay finished (masked) until the next :meth:`reset`. With ``autoreset=True`` a group
    whose copies have all finished is reset at once to a new task (Gymnasium's SAME_STEP semantics, per
    group: with ``group_size=1`` it is per copy), so the batch streams without ever being reset as a whole.

    Asynchronous use: :meth:`step_async` submits actions for any copies, :meth:`poll` returns the steps that
    finished, :meth:`step_wait` waits for given copies. With the process backend the env steps run while the
    caller does other work (generation).

    Attributes describing each copy *now* (after the last call): :attr:`observations`, :attr:`infos`,
    :attr:`running` (will take an action), :attr:`pending` (a step is in flight), :attr:`group_ids`,
    :attr:`traj_ids`, :attr:`step_indices` (index of the next step), :attr:`state_keys`, :attr:`task_seeds`.
    """

    def __init__(
        self,
        make_env: Callable[[], gym.Env],
        *,
        num_tasks: int,
        group_size: int,
        seed: int = 0,
        split: str | None = "train",
        backend: Backend = "sync",
        num_workers: int | None = None,
        autoreset: bool = False,
        step_timeout: float | None = DEFAULT_STEP_TIMEOUT,
        context: str | None = None,
        reset_options: Mapping[str, Any] | None = None,
        env_id: str | None = None,
        first_slot: int = 0,
        ray_options: Any = None,
    ) -> None:
        for name, value in (("num_tasks", num_tasks), ("group_size", group_size)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if step_timeout is not None and step_timeout <= 0:
            raise ValueError(f"step_timeout must be positive seconds or None, got {step_timeout!r}")
        if isinstance(first_slot, bool) or not isinstance(first_slot, int | np.integer) or first_slot < 0:
            raise ValueError(f"first_slot must be a non-negative integer, got {first_slot!r}")
        #: Global slot of this env's slot 0 (a shard of a larger batch: see :func:`make_group_vec`).
        self.first_slot = int(first_slot)
        self.num_tasks, self.group_size = int(num_tasks), int(group_size)
        self.num_envs = n = self.num_tasks * self.group_size
        self.seed, self.split, self.backend, self.autoreset = int(seed), split, backend, bool(autoreset)
        self.env_id = env_id
        self.reset_options = dict(reset_options or {})

        # One env made here validates the arguments with a clear error and gives the spaces; the sync
        # backend keeps it as copy 0.
        try:
            probe = make_env()
        except TypeError as exc:
            raise TypeError(f"bad arguments for {env_id or 'the environment'}: {exc}") from None
        self.single_observation_space = probe.observation_space
        self.single_action_space = probe.action_space
        self.metadata = dict(getattr(probe, "metadata", {}) or {})
        self.spec = getattr(probe, "spec", None)
        if backend == "sync":
            self._backend: _SyncBackend | _ProcessBackend | Any = _SyncBackend(make_env, n, probe)
            self.num_workers = 0
        elif backend == "ray":
            from hiergym.envs.vector.ray_backend import RayOptions, _RayBackend

            probe.close()
            if num_workers is not None and (isinstance(num_workers, bool) or not isinstance(num_workers, int | np.integer)
                                            or num_workers < 1):
                raise ValueError(f"num_workers must be a positive integer or None, got {num_workers!r}")
            options = ray_options if isinstance(ray_options, RayOptions) else RayOptions(**dict(ray_options or {}))
            self._backend = _RayBackend(make_env, n, num_workers, step_timeout, options)
            self.num_workers = self._backend.num_workers
        else:
            probe.close()
            workers = num_workers if num_workers is not None else default_num_workers(n)
            if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
                raise ValueError(f"num_workers must be a positive integer or None, got {num_workers!r}")
            self.num_workers = min(int(workers), n)
            self._backend = _ProcessBackend(make_env, n, self.num_workers, step_timeout, context)
        self.step_timeout = step_timeout

        self.observations: list[str] = [""] * n
        self.infos: list[dict[str, Any]] = [{} for _ in range(n)]
        self.state_keys: list[str] = [""] * n
        self.running = np.zeros(n, dtype=bool)
        self.pending = np.zeros(n, dtype=bool)
        self.group_ids = np.full(n, -1, dtype=np.int64)
        self.traj_ids = np.full(n, -1, dtype=np.int64)
        self.step_indices = np.zeros(n, dtype=np.int64)
        self.task_seeds: list[int | None] = [None] * n
        #: How each copy's current (or last) episode ended; sticky until its next reset.
        self._terminated = np.zeros(n, dtype=bool)
        self._truncated = np.zeros(n, dtype=bool)
        self._failed = np.zeros(n, dtype=bool)
        #: The copy's env is gone with a crashed worker: its next step fails at once; a reset restores it.
        self._lost = np.zeros(n, dtype=bool)
        self._pending_action: dict[int, tuple[str, str]] = {}  # copy -> (action text, prompt observation)
        self._ready: dict[int, _Row] = {}
        self._reset_results: dict[int, tuple[bool, Any]] = {}
        self._call_results: dict[int, tuple[bool, Any]] = {}
        self._needs_reset = True
        self._fixed_tasks = False
        self._base_options: dict[str, Any] = {}
        self.batch_index = 0  # task-drawing resets done so far
        self._stream_batch = 0  # batch index whose seed stream the autoreset groups follow
        self._group_episodes = np.zeros(self.num_tasks, dtype=np.int64)
        self._next_group_id = 0
        self._next_traj_id = 0
        #: The group slot of each copy (-1: idle this batch); ``i // group_size`` unless ``group_sizes`` was given.
        self._default_slots = np.arange(n, dtype=np.int64) // self.group_size
        self._slot_of = self._default_slots
        self._closed = False

    # ------------------------------------------------------------------------------------ public API
    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers (empty for the sync backend)."""
        return self._backend.worker_pids()

    @property
    def worker_restarts(self) -> int:
        """How many times a crashed or hung worker was restarted."""
        return self._backend.restarts

    def group_of(self, index: int) -> int:
        """The group slot of copy ``index`` (``index // group_size`` unless the last reset gave ``group_sizes``)."""
        return int(self._slot_of[int(index)])

    def task_seed_for(self, batch_index: int, slot: int, episode: int = 0) -> int:
        """The seed the copies of group ``slot`` reset with in batch ``batch_index`` (``episode``-th autoreset)."""
        return group_task_seed(self.seed, batch_index, self.first_slot + slot, episode)

    def reset(
        self,
        *,
        seed: int | None = None,
        task_ids: Sequence[int] | None = None,
        options: Mapping[str, Any] | None = None,
        group_sizes: Sequence[int] | None = None,
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """Reset every copy; returns ``(observations, infos)``.

        - Without ``task_ids``: draws ``num_tasks`` new task seeds, a pure function of (``seed``, the number of
          such resets done so far, the slot), and resets the G copies of each slot with the same
          ``reset(seed=task_seed, options={"split": split, ...})``. ``seed`` restarts the sequence from a new
          seed (batch counter back to 0).
        - With ``task_ids`` (one per group slot): the fixed tasks ``options={"split": split, "task_id": id}``,
          seeded by a pure function of (split, task id): the same evaluation batch in every run. The batch
          counter does not move, and in autoreset mode these groups are played once (no autoreset).
        - ``group_sizes`` (with ``task_ids``, one size >= 1 per task id, summing to at most ``num_envs``):
          unequal groups, e.g. a knapsack allocation of the rollouts. Task ``k`` gets the next
          ``group_sizes[k]`` copies in order; copies past the sum stay idle for this batch (not running, group
          and trajectory id -1). ``len(task_ids)`` may then differ from ``num_tasks``.

        Steps still in flight are waited for and discarded.
        """
        self._check_open()
        self._drain()
        if seed is not None:
            self.seed, self.batch_index = int(seed), 0
        base_options = {**({"split": self.split} if self.split is not None else {}), **self.reset_options,
                        **dict(options or {})}
        slot_of = self._default_slots
        if group_sizes is not None:
            if task_ids is None:
                raise ValueError("group_sizes needs task_ids (one size per task id)")
            slot_of = _slots_of_sizes(group_sizes, len(task_ids), self.num_envs)
        if task_ids is not None:
            task_ids = [int(t) for t in task_ids]
            if group_sizes is None and len(task_ids) != self.num_tasks:
                raise ValueError(f"task_ids has {len(task_ids)} entries; give one per group slot ({self.num_tasks})")
            slot_seeds = [fixed_task_seed(base_options.get("split"), t) for t in task_ids]
            slot_options = [{**base_options, "task_id": t} for t in task_ids]
            self._fixed_tasks = True
        else:
            slot_seeds = [self.task_seed_for(self.batch_index, slot) for slot in range(self.num_tasks)]
            slot_options = [dict(base_options) for _ in range(self.num_tasks)]
            self._fixed_tasks = False
            self._stream_batch = self.batch_index
            self.batch_index += 1
        self._base_options = base_options
        self._group_episodes[:] = 0
        self._slot_of = slot_of
        commands = {i: (slot_seeds[slot_of[i]], slot_options[slot_of[i]])
                    for i in range(self.num_envs) if slot_of[i] >= 0}
        self._idle(np.flatnonzero(slot_of < 0))
        self._reset_copies(commands)
        self._needs_reset = False
        return list(self.observations), list(self.infos)

    def step(self, actions: Sequence[Any]) -> StepOutput:
        """Step every running copy with its action; one row per copy (masked copies: ``active`` False).

        ``actions`` has one entry per copy; entries of copies that are not running are ignored (may be None).
        """
        self._check_started()
        if len(actions) != self.num_envs:
            raise ValueError(f"got {len(actions)} actions for {self.num_envs} copies (num_tasks x group_size)")
        if self.pending.any():
            raise RuntimeError("steps are in flight from step_async(); collect them with step_wait() or poll()")
        indices = np.flatnonzero(self.running)
        self.step_async([actions[i] for i in indices], indices=indices)
        return self.step_wait()

    def step_async(self, actions: Sequence[Any], indices: Sequence[int] | np.ndarray | None = None) -> None:
        """Submit ``actions[k]`` for copy ``indices[k]`` and return at once.

        ``indices`` defaults to every running copy without a step in flight. Copies that are not running are
        ignored (their action is dropped, as in :meth:`step`); a copy with a step already in flight raises.
        """
        self._check_started()
        if indices is None:
            indices = np.flatnonzero(self.running & ~self.pending)
        indices = [int(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
        if len(actions) != len(indices):
            raise ValueError(f"got {len(actions)} actions for {len(indices)} indices")
        items: list[tuple[int, Any]] = []
        for i, action in zip(indices, actions, strict=True):
            if not 0 <= i < self.num_envs:
                raise IndexError(f"copy index {i} out of range 0..{self.num_envs - 1}")
            if self.pending[i]:
                raise RuntimeError(f"copy {i} already has a step in flight; poll() or step_wait() first")
            if i in self._ready:
                raise RuntimeError(f"copy {i} has a finished step not collected yet; poll() or step_wait() first")
            if not self.running[i]:
                continue
            self.pending[i] = True
            self._pending_action[i] = (action if isinstance(action, str) else _action_text(action), self.observations[i])
            if self._lost[i]:
                self._apply_step_failure(i, self._lost_message(i), "")
                continue
            items.append((i, action))
        self._backend.send("step", items)

    def step_wait(
        self, indices: Sequence[int] | np.ndarray | None = None, timeout: float | None = None
    ) -> StepOutput:
        """Wait until the given copies (default: all) have no step in flight; one row per given copy.

        Rows of copies whose groups were autoreset in this call are added. ``timeout`` (seconds) raises
        ``TimeoutError`` if the steps are not done by then (they stay in flight; call again).
        """
        self._check_started()
        wanted = (list(range(self.num_envs)) if indices is None
                  else [int(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)])
        deadline = None if timeout is None else time.monotonic() + timeout
        while any(self.pending[i] for i in wanted):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"steps of {int(self.pending[wanted].sum())} copies still in flight after {timeout} s")
            self._pump(remaining)
        autoreset = self._autoreset_finished_groups()
        rows = [self._take_row(i) for i in dict.fromkeys([*wanted, *autoreset])]
        return _stack_rows(rows)

    def poll(self, timeout: float | None = 0.0) -> StepOutput:
        """The steps that have finished since the last call (rows only for them), without waiting for the rest.

        If none has finished yet, waits up to ``timeout`` seconds for the first (None: until one finishes;
        returns an empty output when nothing is in flight).
        """
        self._check_started()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._pump(0.0)
        while not self._ready and self.pending.any():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            self._pump(remaining)
        autoreset = self._autoreset_finished_groups()
        done = [i for i in self._ready if not self.pending[i]]
        return _stack_rows([self._take_row(i) for i in dict.fromkeys([*done, *autoreset])])

    def call(self, name: str, *args: Any, indices: Sequence[int] | None = None, **kwargs: Any) -> list[Any]:
        """Call method ``name`` (or read attribute ``name``) of each copy's env, in its process; one result per
        copy (default: all), e.g. ``env.call("expert_plan")`` or ``env.call("render")``.

        The name is looked up through the wrappers down to the unwrapped env (``get_wrapper_attr``); results
        must be picklable for the process backend. Copies whose env was lost with a crashed worker give None.
        An exception in an env is raised here.
        """
        self._check_open()
        wanted = (list(range(self.num_envs)) if indices is None
                  else [int(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)])
        live = [i for i in wanted if not self._lost[i]]
        for i in live:
            self._call_results.pop(i, None)
        self._backend.send("call", [(i, (name, args, kwargs)) for i in live])
        while any(i not in self._call_results for i in live):
            self._pump(None)
        results = {i: self._call_results.pop(i) for i in live}
        for ok, payload in results.values():
            if not ok:
                exc, _, trace = payload
                if getattr(self._backend, "remote", False) and trace:
                    raise exc from _RemoteTraceback(trace)
                raise exc
        return [results[i][1] if i in results else None for i in wanted]

    def render(self) -> list[Any]:
        """Each copy's ``render()`` (with ``render_mode="ansi"``, the text view)."""
        return self.call("render")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._backend.close()

    def __enter__(self) -> GroupVecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (f"GroupVecEnv({self.env_id or 'env'!s}, num_tasks={self.num_tasks}, group_size={self.group_size}, "
                f"backend={self.backend!r}, autoreset={self.autoreset})")

    # ------------------------------------------------------------------------------------- internals
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this GroupVecEnv is closed")

    def _check_started(self) -> None:
        self._check_open()
        if self._needs_reset:
            raise RuntimeError("call reset() before stepping")

    def _lost_message(self, i: int) -> str:
        return f"copy {i} lost its environment when its worker crashed; it is restored at the next reset"

    def _drain(self) -> None:
        """Wait for every command in flight and forget the results (before a reset)."""
        while self._backend.busy:
            self._pump(None)
        self.pending[:] = False
        self._pending_action.clear()
        self._ready.clear()

    def _pump(self, timeout: float | None) -> None:
        """Receive what the backend has (waiting up to ``timeout`` for something) and apply it."""
        replies, failures = self._backend.receive(timeout)
        for kind, results in replies:
            for index, ok, payload in results:
                if kind == "reset":
                    self._reset_results[index] = (ok, payload)
                elif kind == "call":
                    self._call_results[index] = (ok, payload)
                elif kind == "step" and self.pending[index]:
                    if ok:
                        self._apply_step_result(index, payload)
                    else:
                        exc, text, trace = payload
                        self._apply_step_failure(index, f"the environment raised {text}", trace)
        for failure in failures:
            for kind, indices in failure.unanswered:
                for index in indices:
                    if kind == "reset":
                        self._reset_results[index] = (False, None)
                    elif kind == "call":
                        self._call_results[index] = (False, (RuntimeError(failure.message), failure.message, ""))
                    elif kind == "step" and self.pending[index]:
                        self._apply_step_failure(index, failure.message, "")
            self._lost[failure.copies] = True

    def _apply_step_result(self, i: int, payload: tuple[str, float, bool, bool, dict[str, Any]]) -> None:
        obs, reward, terminated, truncated, info = payload
        action, prompt = self._pending_action.pop(i)
        key = _state_key(info, obs)
        self._ready[i] = _Row(
            index=i, observation=obs, reward=reward, terminated=terminated, truncated=truncated, info=info,
            active=True, group_id=self.group_ids.item(i), traj_id=self.traj_ids.item(i),
            step=self.step_indices.item(i), anchor=self.state_keys[i], next_state_key=key,
            invalid=not bool(info.get("action_valid", True)), won=bool(info.get("won", False)),
            prev_observation=prompt, action=action,
        )
        self.observations[i], self.infos[i], self.state_keys[i] = obs, info, key
        self._finish_step(i, terminated, truncated)

    def _apply_step_failure(self, i: int, message: str, trace: str) -> None:
        action, prompt = self._pending_action.pop(i)
        info = {**self.infos[i], "action_valid": False, "admissible_actions": [], "won": False, "error": message}
        if trace:
            info["traceback"] = trace
        self._ready[i] = _Row(
            index=i, observation=prompt, reward=0.0, terminated=True, truncated=False, info=info, active=True,
            group_id=self.group_ids.item(i), traj_id=self.traj_ids.item(i), step=self.step_indices.item(i),
            anchor=self.state_keys[i], next_state_key=self.state_keys[i], error=True,
            prev_observation=prompt, action=action,
        )
        self.infos[i] = info
        self._failed[i] = True
        self._finish_step(i, True, False)

    def _finish_step(self, i: int, terminated: bool, truncated: bool) -> None:
        self.pending[i] = False
        self.step_indices[i] += 1
        if terminated or truncated:
            self.running[i] = False
            self._terminated[i], self._truncated[i] = terminated, truncated

    def _masked_row(self, i: int) -> _Row:
        return _Row(
            index=i, observation=self.observations[i], reward=0.0, terminated=bool(self._terminated[i]),
            truncated=bool(self._truncated[i]), info=self.infos[i], active=False,
            group_id=self.group_ids.item(i), traj_id=self.traj_ids.item(i), step=self.step_indices.item(i),
            anchor=self.state_keys[i], next_state_key=self.state_keys[i],
            won=bool(self.infos[i].get("won", False)), error=bool(self._failed[i]),
            prev_observation=self.observations[i],
        )

    def _take_row(self, i: int) -> _Row:
        return self._ready.pop(i) if (i in self._ready and not self.pending[i]) else self._masked_row(i)

    def _reset_copies(self, commands: Mapping[int, tuple[int, dict[str, Any]]]) -> None:
        """Reset the given copies (blocking), retry once those whose worker crashed, then apply in order."""
        todo = dict(commands)
        for attempt in range(2):
            for i in todo:
                self._reset_results.pop(i, None)
            self._backend.send("reset", [(i, (seed, opts)) for i, (seed, opts) in todo.items()])
            while any(i not in self._reset_results for i in todo):
                self._pump(None)
            crashed = {i: todo[i] for i in todo if self._reset_results[i] == (False, None)}
            if not crashed:
                break
            if attempt == 1:
                raise RuntimeError(f"resetting copies {sorted(crashed)} failed twice: their worker crashed "
                                   f"({self._backend.restarts} restarts so far)")
            todo = crashed
        errors = [self._reset_results[i][1] for i in commands if not self._reset_results[i][0]]
        if errors:
            exc, text, trace = errors[0]
            for i in commands:
                self._reset_results.pop(i, None)
            self._needs_reset = True
            if getattr(self._backend, "remote", False) and trace:
                raise exc from _RemoteTraceback(trace)
            raise exc
        group_of_slot: dict[int, int] = {}
        for i in sorted(commands):
            obs, info = self._reset_results.pop(i)[1]
            slot = int(self._slot_of[i])
            if slot not in group_of_slot:
                group_of_slot[slot] = self._next_group_id
                self._next_group_id += 1
            self.group_ids[i] = group_of_slot[slot]
            self.traj_ids[i] = self._next_traj_id
            self._next_traj_id += 1
            self.task_seeds[i] = commands[i][0]
            self.observations[i], self.infos[i], self.state_keys[i] = obs, info, _state_key(info, obs)
            self.running[i], self.pending[i], self.step_indices[i] = True, False, 0
            self._terminated[i] = self._truncated[i] = self._failed[i] = self._lost[i] = False

    def _idle(self, indices: np.ndarray) -> None:
        """Copies left out of this batch (``group_sizes`` summing to less than ``num_envs``)."""
        for i in indices:
            self.observations[i], self.infos[i], self.state_keys[i] = "", {}, ""
            self.group_ids[i] = self.traj_ids[i] = -1
            self.running[i], self.pending[i], self.step_indices[i] = False, False, 0
            self.task_seeds[i] = None
            self._terminated[i] = self._truncated[i] = self._failed[i] = False

    def _autoreset_finished_groups(self) -> list[int]:
        """Reset (as one call, in slot order) every group whose copies have all finished; their copy indices."""
        if not self.autoreset or self._fixed_tasks:
            return []
        slots = [s for s in range(self.num_tasks)
                 if not self.running[s * self.group_size:(s + 1) * self.group_size].any()
                 and not self.pending[s * self.group_size:(s + 1) * self.group_size].any()]
        if not slots:
            return []
        commands: dict[int, tuple[int, dict[str, Any]]] = {}
        for slot in slots:
            self._group_episodes[slot] += 1
            seed = self.task_seed_for(self._stream_batch, slot, int(self._group_episodes[slot]))
            for i in range(slot * self.group_size, (slot + 1) * self.group_size):
                commands[i] = (seed, dict(self._base_options))
        final = {i: (self.observations[i], self.infos[i]) for i in commands}
        self._reset_copies(commands)
        for i in commands:
            row = self._ready.get(i) or self._masked_row_of_final(i, *final[i])
            row.observation = self.observations[i]
            row.info = {**self.infos[i], "final_obs": final[i][0], "final_info": final[i][1]}
            row.autoreset = True
            self._ready[i] = row
        return list(commands)

    def _masked_row_of_final(self, i: int, obs: str, info: dict[str, Any]) -> _Row:
        """The masked row of a copy that had finished before its group reset (ids of its new trajectory)."""
        row = self._masked_row(i)
        row.prev_observation = obs
        row.won = bool(info.get("won", False))
        return row


class _RemoteTraceback(Exception):
    """The traceback of an exception raised by an environment (in a worker process or here)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)

    def __str__(self) -> str:
        return "\n" + str(self.args[0])


def _action_text(action: Any) -> str:
    """A non-text action as text for the records, never raising (``repr`` of a 5,000-digit int does)."""
    try:
        return repr(action)[:200]
    except Exception:  # noqa: BLE001 - a record of junk must not crash the batch
        return f"<unprintable {type(action).__name__}>"


def _slots_of_sizes(group_sizes: Sequence[int], num_task_ids: int, num_envs: int) -> np.ndarray:
    """Copy -> group slot for consecutive groups of the given sizes (-1 for the idle copies past their sum)."""
    sizes = list(group_sizes)
    if len(sizes) != num_task_ids:
        raise ValueError(f"group_sizes has {len(sizes)} entries for {num_task_ids} task ids; give one per task id")
    if any(isinstance(g, bool) or not isinstance(g, int | np.integer) or g < 1 for g in sizes):
        raise ValueError(f"group_sizes must be positive integers, got {sizes!r}")
    if sum(sizes) > num_envs:
        raise ValueError(f"group_sizes sum to {sum(sizes)}, more than the {num_envs} copies of this vector env")
    slots = np.full(num_envs, -1, dtype=np.int64)
    slots[: sum(sizes)] = np.repeat(np.arange(len(sizes)), sizes)
    return slots


def _state_key(info: Mapping[str, Any], obs: str) -> str:
    """The env's ``state_key``; envs outside the contract fall back to the observation text."""
    key = info.get("state_key") if isinstance(info, Mapping) else None
    return key if isinstance(key, str) and key else str(obs)


# ------------------------------------------------------------------------------------------- factory
def make_group_vec(
    env_id: str | Callable[[], gym.Env],
    num_tasks: int = 1,
    group_size: int = 1,
    *,
    seed: int = 0,
    split: str | None = "train",
    backend: Backend = "sync",
    num_workers: int | None = None,
    autoreset: bool = False,
    step_timeout: float | None = DEFAULT_STEP_TIMEOUT,
    context: str | None = None,
    reset_options: Mapping[str, Any] | None = None,
    first_slot: int = 0,
    ray_options: Any = None,
    **env_kwargs: Any,
) -> GroupVecEnv:
    """``num_tasks`` (B) tasks x ``group_size`` (G) same-seed copies of ``env_id``, as a :class:`GroupVecEnv`.

    Args:
        env_id: a registered id (``"hiergym/Sokoban-v0"``, or ``"Sokoban-v0"``, any case), or a zero-argument
            callable that returns a new env (it must be picklable for ``context="spawn"``).
        num_tasks: B, the group slots; each :meth:`GroupVecEnv.reset` gives every slot a new task.
        group_size: G, the copies per task; they reset with the same seed and options.
        seed: the seed the task seeds are drawn from (``reset(seed=...)`` changes it).
        split: the task split passed in every reset's options (None: pass none, for envs outside the contract).
        backend: ``"sync"`` (in-process), ``"process"`` (worker processes) or ``"ray"`` (Ray actors, on this
            machine or a Ray cluster; ``pip install 'hiergym[ray]'``).
        num_workers: worker processes of the process backend (default: the usable CPUs less one, at least
            1, at most B*G), or actors of the ray backend (default: from ``ray_options``); copy ``i`` lives in
            worker ``i % num_workers``.
        autoreset: reset each group to a new task as soon as all its copies finished (streaming).
        step_timeout: seconds one copy's step (or reset) may take in a worker: a worker that has not answered
            a command for k of its copies within k * step_timeout is killed and restarted, and the copies it
            was stepping fail (process and ray backends; None: wait forever).
        context: multiprocessing start method (``"fork"``, ``"spawn"``, ``"forkserver"``; default: Python's).
        reset_options: extra options passed to every reset.
        first_slot: the global slot of this env's slot 0: its groups draw the tasks of slots ``first_slot`` ..
            ``first_slot + num_tasks - 1`` of a larger batch (a data-parallel rank plays its shard of the B
            groups with ``num_tasks=B/N, first_slot=rank*B/N``; together the ranks play what one env of B
            slots plays).
        ray_options: the ray backend's placement, a :class:`hiergym.envs.vector.ray_backend.RayOptions` or a
            dict of its fields (``copies_per_actor``, ``num_cpus``, ``strategy``, ``address``, ``resources``).
        **env_kwargs: arguments for ``gymnasium.make`` (e.g. ``dim_room=(7, 7)``, ``max_episode_steps=50``).
    """
    if callable(env_id) and not isinstance(env_id, str):
        make_env: Callable[[], gym.Env] = partial(env_id, **env_kwargs) if env_kwargs else env_id
        name = getattr(env_id, "__name__", type(env_id).__name__)
    else:
        from hiergym.registration import resolve_env_id

        name = resolve_env_id(str(env_id))
        make_env = _EnvFactory(name, env_kwargs)
    return GroupVecEnv(
        make_env, num_tasks=num_tasks, group_size=group_size, seed=seed, split=split, backend=backend,
        num_workers=num_workers, autoreset=autoreset, step_timeout=step_timeout, context=context,
        reset_options=reset_options, env_id=name, first_slot=first_slot, ray_options=ray_options,
    )



