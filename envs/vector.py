"""Group vector environments: B tasks x G same-seed copies, stepped in lock-step or asynchronously.

Every group-based trainer (GRPO, GiGPO, HGPO, HiPER, and TRL / verl / OpenRLHF outside hiergym) needs the same
thing from its environments: ``num_tasks`` (B) tasks, each played ``group_size`` (G) times from the identical
start, with per-copy done masks. :func:`make_group_vec` builds that for any single-agent hiergym environment
(or any Gymnasium env with string observations and actions)::

    env = make_group_vec("hiergym/Sokoban-v0", num_tasks=16, group_size=8, seed=0)
    observations, infos = env.reset()             # 128 copies; copies g*G .. g*G+G-1 play task g
    while env.running.any():
        out = env.step(actions)                   # one action per copy; finished copies are masked
        records = out.to_records()                # the trainer's StepRecord rows of this step

Copy ``i`` belongs to group slot ``i // group_size``. Everything about a step comes back in a
:class:`StepOutput` (which also unpacks like Gymnasium's ``obs, rewards, terminated, truncated, infos``):
group and trajectory ids, the step index, the ``state_key`` before (``anchor``) and after the action, the
invalid-action and error flags, so that building the trainer's ``StepBatch`` is a direct copy.

Backends: ``"sync"`` steps the copies in this process (fast envs); ``"process"`` shards them over worker
processes connected by pipes (envs with expensive steps). Both run the very same per-copy code, so the same
seeds give the same results. A worker that dies or hangs (``step_timeout``) is reported in the info of each of
its copies (``info["error"]``), restarted, and its copies end cleanly with ``error=True`` instead of hanging.

Overlap: :meth:`GroupVecEnv.step_async` submits actions for any subset of copies and :meth:`GroupVecEnv.poll`
returns the steps that have finished, so a trainer can step the copies whose actions are ready while the LLM
still generates for the others. See ``docs/vector.md``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import wait as wait_for_connections
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from hiergym.envs.core import stable_seed
from hiergym.records import StepRecord

Backend = Literal["sync", "process"]
BACKENDS = ("sync", "process")

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


def default_num_workers(num_copies: int) -> int:
    """Worker processes when none are asked for: the CPUs this process may use, less one left to the caller
    (it generates, and it pickles every action and result), at least 1 and at most one per copy."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus - 1, num_copies))


# ------------------------------------------------------------------------------------------- step output
@dataclass
class StepOutput:
    """The rows of one :meth:`GroupVecEnv.step` (all copies) or :meth:`GroupVecEnv.poll` (the finished ones).

    Row ``r`` describes copy ``indices[r]``. An *active* row is a step the copy really took: its action was
    executed (or failed with ``error``), and every field describes that step; ``group_id``, ``traj_id`` and
    ``step`` are those of the trajectory the action belonged to. An inactive row is a masked copy (finished,
    waiting for the batch or group reset): reward 0, its last observation and info, ``terminated`` /
    ``truncated`` / ``error`` repeating how its episode ended, and the ids of its current trajectory.

    ``observations`` are what each copy shows *now*, i.e. the next prompt. When ``autoreset`` is set the
    copy's group was reset in this call: the observation and info are the new episode's (Gymnasium's
    SAME_STEP), the step's own final observation and info are in ``info["final_obs"]`` / ``info["final_info"]``,
    and the copy's new ids are in :attr:`GroupVecEnv.traj_ids` etc.

    Unpacks like Gymnasium: ``obs, rewards, terminated, truncated, infos = env.step(actions)``.
    """

    indices: np.ndarray
    observations: list[str]
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    infos: list[dict[str, Any]]
    #: The copy executed an action in this call (its row is a real step to record).
    active: np.ndarray
    group_id: np.ndarray
    traj_id: np.ndarray
    #: Index of the step within its trajectory: 0 for the first action after reset.
    step: np.ndarray
    #: ``state_key`` before the action (the GiGPO anchor state).
    anchor: np.ndarray
    #: ``state_key`` after the action (the final state when the episode ended; before any autoreset).
    next_state_key: np.ndarray
    #: The env flagged the action invalid (``info["action_valid"] is False``).
    invalid: np.ndarray
    won: np.ndarray
    #: The step failed: the env raised or its worker died or hung; the episode is over (``terminated``).
    error: np.ndarray
    #: The copy's group was reset in this call; ``observations`` already show the new episode.
    autoreset: np.ndarray
    #: The observation the action answered (the prompt of this step).
    prev_observations: list[str]
    #: The action text as submitted ("" for masked copies).
    actions: list[str]

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __iter__(self) -> Iterator[Any]:
        """Gymnasium's step tuple: observations, rewards, terminated, truncated, infos."""
        return iter((self.observations, self.rewards, self.terminated, self.truncated, self.infos))

    @property
    def done(self) -> np.ndarray:
        return self.terminated | self.truncated

    def to_records(self) -> list[StepRecord]:
        """One :class:`hiergym.records.StepRecord` (the trainer's rows) per active row (level ``executor``).

        Token ids and log-probs are the agent's to fill in; error rows are included (``done=True``, reward 0):
        drop their groups with ``self.error`` if the trainer should not learn from them.
        """
        return [
            StepRecord(
                group_id=int(self.group_id[r]),
                traj_id=int(self.traj_id[r]),
                step=int(self.step[r]),
                anchor=str(self.anchor[r]),
                observation=self.prev_observations[r],
                action=self.actions[r],
                reward=float(self.rewards[r]),
                done=bool(self.terminated[r] or self.truncated[r]),
                invalid=bool(self.invalid[r]),
            )
            for r in np.flatnonzero(self.active)
        ]


@dataclass(slots=True)
class _Row:
    """One copy's row of a :class:`StepOutput`, built as results arrive."""

    index: int
    observation: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    active: bool
    group_id: int
    traj_id: int
    step: int
    anchor: str
    next_state_key: str
    invalid: bool = False
    won: bool = False
    error: bool = False
    autoreset: bool = False
    prev_observation: str = ""
    action: str = ""


def _stack_rows(rows: Sequence[_Row]) -> StepOutput:
    rows = sorted(rows, key=lambda r: r.index)
    return StepOutput(
        indices=np.array([r.index for r in rows], dtype=np.int64),
        observations=[r.observation for r in rows],
        rewards=np.array([r.reward for r in rows], dtype=np.float64),
        terminated=np.array([r.terminated for r in rows], dtype=bool),
        truncated=np.array([r.truncated for r in rows], dtype=bool),
        infos=[r.info for r in rows],
        active=np.array([r.active for r in rows], dtype=bool),
        group_id=np.array([r.group_id for r in rows], dtype=np.int64),
        traj_id=np.array([r.traj_id for r in rows], dtype=np.int64),
        step=np.array([r.step for r in rows], dtype=np.int64),
        anchor=np.array([r.anchor for r in rows], dtype=object),
        next_state_key=np.array([r.next_state_key for r in rows], dtype=object),
        invalid=np.array([r.invalid for r in rows], dtype=bool),
        won=np.array([r.won for r in rows], dtype=bool),
        error=np.array([r.error for r in rows], dtype=bool),
        autoreset=np.array([r.autoreset for r in rows], dtype=bool),
        prev_observations=[r.prev_observation for r in rows],
        actions=[r.action for r in rows],
    )


# ------------------------------------------------------------------------------- per-copy commands
# The one function that touches environments, run in-process by the sync backend and inside every worker
# by the process backend: that is what makes both backends give the same results.
_Result = tuple[int, bool, Any]  # (copy index, ok, payload); payload of a failure: (exception, text, traceback)


def _run_commands(
    envs: dict[int, gym.Env], make_env: Callable[[], gym.Env], kind: str, items: Sequence[tuple[int, Any]]
) -> list[_Result]:
    results: list[_Result] = []
    for index, payload in items:
        try:
            if kind == "make":
                if index not in envs:
                    envs[index] = make_env()
                results.append((index, True, None))
            elif kind == "reset":
                seed, options = payload
                env = envs.get(index)
                if env is None:
                    env = envs[index] = make_env()
                obs, info = env.reset(seed=seed, options=options)
                results.append((index, True, (obs, info)))
            elif kind == "call":
                name, args, kwargs = payload
                env = envs.get(index)
                if env is None:
                    raise RuntimeError(f"copy {index} has no environment (not reset since it failed)")
                attribute = env.get_wrapper_attr(name)
                results.append((index, True, attribute(*args, **kwargs) if callable(attribute) else attribute))
            else:
                env = envs.get(index)
                if env is None:
                    raise RuntimeError(f"copy {index} has no environment (not reset since it failed)")
                obs, reward, terminated, truncated, info = env.step(payload)
                results.append((index, True, (obs, float(reward), bool(terminated), bool(truncated), info)))
        except Exception as exc:  # an env that raises fails its copy, never the batch
            broken = envs.pop(index, None) if kind != "call" else None
            if broken is not None:  # its state is unknown after a failed step: a fresh env comes at reset
                try:
                    broken.close()
                except Exception:
                    pass
            results.append((index, False, (exc, f"{type(exc).__name__}: {exc}", traceback.format_exc())))
    return results


class _EnvFactory:
    """``gym.make(env_id, **kwargs)`` as a picklable callable (workers started with spawn need one)."""

    def __init__(self, env_id: str, kwargs: Mapping[str, Any]) -> None:
        self.env_id = env_id
        self.kwargs = dict(kwargs)

    def __call__(self) -> gym.Env:
        import hiergym  # noqa: F401  (registers the hiergym ids in a spawned worker)

        return gym.make(self.env_id, **self.kwargs)


# ------------------------------------------------------------------------------------------ backends
@dataclass
class _WorkerFailure:
    """A worker that died or hung: the commands it never answered and every copy it held."""

    message: str
    unanswered: list[tuple[str, list[int]]]
    copies: list[int]


class _SyncBackend:
    """Runs every command at once in this process; results wait in an outbox until received."""

    def __init__(self, make_env: Callable[[], gym.Env], num_copies: int, first_env: gym.Env) -> None:
        self._make_env = make_env
        self._envs: dict[int, gym.Env] = {0: first_env}
        for i in range(1, num_copies):  # eagerly, as Gymnasium's SyncVectorEnv: no first-reset surprise
            self._envs[i] = make_env()
        self._outbox: deque[tuple[str, list[_Result]]] = deque()
        self.num_copies = num_copies
        self.restarts = 0

    @property
    def busy(self) -> bool:
        return bool(self._outbox)

    def send(self, kind: str, items: Sequence[tuple[int, Any]]) -> None:
        if items:
            self._outbox.append((kind, _run_commands(self._envs, self._make_env, kind, items)))

    def receive(self, timeout: float | None) -> tuple[list[tuple[str, list[_Result]]], list[_WorkerFailure]]:
        replies = list(self._outbox)
        self._outbox.clear()
        return replies, []

    def worker_pids(self) -> list[int]:
        return []

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


def _worker_main(conn: Any, make_env: Callable[[], gym.Env]) -> None:
    """A worker process: holds the envs of its copies and answers each command message with one reply."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes us
    envs: dict[int, gym.Env] = {}
    try:
        while True:
            try:
                kind, items = conn.recv()
            except (EOFError, OSError):
                break
            if kind == "close":
                break
            results = [_picklable_result(r) for r in _run_commands(envs, make_env, kind, items)]
            try:
                conn.send((kind, results))
            except Exception:  # a value that cannot be pickled (a lambda in info) fails its copy, not us
                conn.send((kind, [_sendable_result(r) for r in results]))
    finally:
        for env in envs.values():
            try:
                env.close()
            except Exception:
                pass


def _sendable_result(result: _Result) -> _Result:
    """The result itself if it pickles, else a failure of its copy that says why."""
    try:
        pickle.dumps(result)
        return result
    except Exception as exc:
        text = f"the result could not be sent back from the worker: {type(exc).__name__}: {exc}"
        return result[0], False, (RuntimeError(text), text, "")


def _picklable_result(result: _Result) -> _Result:
    index, ok, payload = result
    if ok:
        return result
    exc, text, trace = payload
    try:
        pickle.dumps(exc)
    except Exception:
        exc = RuntimeError(text)
    return index, ok, (exc, text, trace)


class _ProcessBackend:
    """Copies sharded over worker processes, one pipe each; crashed or hung workers are restarted."""

    def __init__(
        self,
        make_env: Callable[[], gym.Env],
        num_copies: int,
        num_workers: int,
        step_timeout: float | None,
        context: str | None,
    ) -> None:
        self._make_env = make_env
        self._ctx = mp.get_context(context)
        self.num_copies = num_copies
        # Round-robin, not contiguous blocks: the copies a trainer submits together (a group, the first half
        # of the batch) are then spread over every worker instead of queueing on one.
        self.worker_of = np.arange(num_copies, dtype=np.int64) % num_workers
        self.shards = [list(range(w, num_copies, num_workers)) for w in range(num_workers)]
        self.step_timeout = step_timeout
        self.restarts = 0
        self._procs: list[Any] = [None] * num_workers
        self._conns: list[Any] = [None] * num_workers
        #: Per worker, the commands sent and not yet answered: (kind, copy indices).
        self._inflight: list[deque[tuple[str, list[int]]]] = [deque() for _ in range(num_workers)]
        #: Per worker, since when its oldest unanswered command has been its to work on (for step_timeout).
        self._head_since = [0.0] * num_workers
        self._broken: set[int] = set()
        for w in range(num_workers):
            self._start(w)

    def _start(self, w: int) -> None:
        parent_end, child_end = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker_main, args=(child_end, self._make_env), name=f"hiergym-group-vec-{w}", daemon=True
        )
        proc.start()
        # Close our copy of the child's end at once (before the next fork inherits it), so that the
        # worker's death reads as EOF on our end.
        child_end.close()
        self._procs[w], self._conns[w] = proc, parent_end
        self._inflight[w].clear()
        self._broken.discard(w)
        # The worker builds its envs while we go on; a failure there shows again (and is raised) at reset.
        self.send("make", [(i, None) for i in self.shards[w]])

    @property
    def busy(self) -> bool:
        return any(self._inflight)

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def send(self, kind: str, items: Sequence[tuple[int, Any]]) -> None:
        per_worker: dict[int, list[tuple[int, Any]]] = {}
        for item in items:
            per_worker.setdefault(int(self.worker_of[item[0]]), []).append(item)
        now = time.monotonic()
        for w, shard_items in per_worker.items():
            if not self._inflight[w]:
                self._head_since[w] = now
            self._inflight[w].append((kind, [i for i, _ in shard_items]))
            if w in self._broken:
                continue
            try:
                self._conns[w].send((kind, shard_items))
            except (BrokenPipeError, EOFError, OSError):
                self._broken.add(w)  # handled as a crash by the next receive

    def receive(self, timeout: float | None) -> tuple[list[tuple[str, list[_Result]]], list[_WorkerFailure]]:
        """Replies available now, waiting up to ``timeout`` seconds for the first one (None: no limit)."""
        replies: list[tuple[str, list[_Result]]] = []
        failures: list[_WorkerFailure] = []
        for w in sorted(self._broken):
            proc = self._procs[w]
            proc.join(timeout=1.0)  # a broken pipe almost always means the worker died: say so
            reason = (f"worker {w} (pid {proc.pid}) died (exit code {proc.exitcode})" if not proc.is_alive()
                      else f"worker {w} (pid {proc.pid}) could not be written to")
            failures.append(self._fail(w, reason))
        if failures or not self.busy:
            return replies, failures
        busy = [w for w in range(len(self._procs)) if self._inflight[w]]
        wait_s = timeout
        if self.step_timeout is not None:
            until_deadline = max(0.0, min(self._deadline(w) for w in busy) - time.monotonic())
            wait_s = until_deadline if wait_s is None else min(wait_s, until_deadline)
        handles = {self._conns[w]: w for w in busy}
        handles.update({self._procs[w].sentinel: w for w in busy})
        ready_workers = sorted({handles[h] for h in wait_for_connections(list(handles), timeout=wait_s)})
        for w in ready_workers:
            dead = False
            try:
                while self._inflight[w] and self._conns[w].poll():
                    replies.append(self._conns[w].recv())
                    self._inflight[w].popleft()
                    self._head_since[w] = time.monotonic()  # the next command's turn starts now
            except (EOFError, OSError):
                dead = True
            if dead or (self._inflight[w] and not self._procs[w].is_alive()):
                code = self._procs[w].exitcode
                failures.append(self._fail(w, f"worker {w} (pid {self._procs[w].pid}) died (exit code {code})"))
        if self.step_timeout is not None:
            now = time.monotonic()
            for w in busy:
                if self._inflight[w] and now > self._deadline(w):
                    failures.append(self._fail(w, f"worker {w} (pid {self._procs[w].pid}) did not answer within "
                                                  f"{self.step_timeout:g} s per copy"))
        return replies, failures

    def _deadline(self, w: int) -> float:
        """When worker ``w`` is declared hung: ``step_timeout`` per copy of the command it works on."""
        return self._head_since[w] + self.step_timeout * max(1, len(self._inflight[w][0][1]))

    def _fail(self, w: int, reason: str) -> _WorkerFailure:
        proc = self._procs[w]
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=5)
        self._conns[w].close()
        unanswered = list(self._inflight[w])
        self._start(w)
        self.restarts += 1
        return _WorkerFailure(f"{reason}; restarted it as pid {self._procs[w].pid}", unanswered, self.shards[w])

    def close(self) -> None:
        for w, proc in enumerate(self._procs):
            if proc is None:
                continue
            try:
                if proc.is_alive():
                    self._conns[w].send(("close", None))
            except (BrokenPipeError, EOFError, OSError):
                pass
        for w, proc in enumerate(self._procs):
            if proc is None:
                continue
            proc.join(timeout=2)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2)
            self._conns[w].close()
        self._procs = [None] * len(self._procs)


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
    ) -> None:
        for name, value in (("num_tasks", num_tasks), ("group_size", group_size)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if step_timeout is not None and step_timeout <= 0:
            raise ValueError(f"step_timeout must be positive seconds or None, got {step_timeout!r}")
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
            self._backend: _SyncBackend | _ProcessBackend = _SyncBackend(make_env, n, probe)
            self.num_workers = 0
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
        """The group slot of copy ``index``."""
        return int(index) // self.group_size

    def task_seed_for(self, batch_index: int, slot: int, episode: int = 0) -> int:
        """The seed the copies of group ``slot`` reset with in batch ``batch_index`` (``episode``-th autoreset)."""
        return group_task_seed(self.seed, batch_index, slot, episode)

    def reset(
        self,
        *,
        seed: int | None = None,
        task_ids: Sequence[int] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """Reset every copy; returns ``(observations, infos)``.

        - Without ``task_ids``: draws ``num_tasks`` new task seeds, a pure function of (``seed``, the number of
          such resets done so far, the slot), and resets the G copies of each slot with the same
          ``reset(seed=task_seed, options={"split": split, ...})``. ``seed`` restarts the sequence from a new
          seed (batch counter back to 0).
        - With ``task_ids`` (one per group slot): the fixed tasks ``options={"split": split, "task_id": id}``,
          seeded by a pure function of (split, task id): the same evaluation batch in every run. The batch
          counter does not move, and in autoreset mode these groups are played once (no autoreset).

        Steps still in flight are waited for and discarded.
        """
        self._check_open()
        self._drain()
        if seed is not None:
            self.seed, self.batch_index = int(seed), 0
        base_options = {**({"split": self.split} if self.split is not None else {}), **self.reset_options,
                        **dict(options or {})}
        if task_ids is not None:
            task_ids = [int(t) for t in task_ids]
            if len(task_ids) != self.num_tasks:
                raise ValueError(f"task_ids has {len(task_ids)} entries; give one per group slot ({self.num_tasks})")
            slot_seeds = [stable_seed(SEED_NAMESPACE, "task_id", base_options.get("split"), t) for t in task_ids]
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
        commands = {i: (slot_seeds[i // self.group_size], slot_options[i // self.group_size])
                    for i in range(self.num_envs)}
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
            self._pending_action[i] = (action if isinstance(action, str) else repr(action), self.observations[i])
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
                if isinstance(self._backend, _ProcessBackend) and trace:
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
            if isinstance(self._backend, _ProcessBackend) and trace:
                raise exc from _RemoteTraceback(trace)
            raise exc
        group_of_slot: dict[int, int] = {}
        for i in sorted(commands):
            obs, info = self._reset_results.pop(i)[1]
            slot = i // self.group_size
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
        backend: ``"sync"`` (in-process) or ``"process"`` (worker processes).
        num_workers: worker processes of the process backend (default: the usable CPUs less one, at least
            1, at most B*G); copy ``i`` lives in worker ``i % num_workers``.
        autoreset: reset each group to a new task as soon as all its copies finished (streaming).
        step_timeout: seconds one copy's step (or reset) may take in a worker: a worker that has not answered
            a command for k of its copies within k * step_timeout is killed and restarted, and the copies it
            was stepping fail (process backend only; None: wait forever).
        context: multiprocessing start method (``"fork"``, ``"spawn"``, ``"forkserver"``; default: Python's).
        reset_options: extra options passed to every reset.
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
        reset_options=reset_options, env_id=name,
    )


__all__ = ["BACKENDS", "GroupVecEnv", "StepOutput", "group_task_seed", "make_group_vec"]

