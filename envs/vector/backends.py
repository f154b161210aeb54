"""Where the copies of a group vector env run: in this process (``sync``) or in worker processes
(``process``), both through the one function that touches environments, :func:`_run_commands` (so does the
``ray`` backend, in ``ray_backend.py``)."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for_connections
from typing import Any

import gymnasium as gym
import numpy as np


def default_num_workers(num_copies: int) -> int:
    """Worker processes when none are asked for: the CPUs this process may use, less one left to the caller
    (it generates, and it pickles every action and result), at least 1 and at most one per copy."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus - 1, num_copies))


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

    #: The envs run elsewhere: an exception of theirs is raised here with their traceback as its cause.
    remote = True

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


