"""The ``ray`` backend of the group vector env: the copies live in Ray actors, anywhere on a Ray cluster.

Each actor holds a shard of the copies and answers each command message with one reply, through
:func:`hiergym.envs.vector.backends._run_commands` (the one function that touches environments, as in the sync
and process backends: the same seeds give the same results). Its interface mirrors ``_ProcessBackend``:
``send`` queues a command per actor and returns at once, ``receive`` returns the replies that are ready and
the failures (an actor that died, or that did not answer within ``step_timeout`` per copy, is killed,
replaced by a new one, and its unanswered commands fail their copies).

Needs ``pip install 'hiergym[ray]'``. ``ray.init(address=...)`` (or ``RAY_ADDRESS``) joins an existing cluster;
without either, a fresh local Ray instance starts (``address="local"``). Every node must be able to
import hiergym and build the environment (install hiergym there, or pass a ``runtime_env`` to ``ray.init``
yourself before making the env).

Joining a cluster started with ``ray start --head`` (docs/scaling.md has the commands): Ray 2.5x+ enables token
authentication on a head that finds a token (``~/.ray/auth_token``, written by any earlier local
``ray.init()``), but a driver given an explicit address never enables it by itself, so the head refuses it
(``InvalidAuthToken``) unless the driver runs with ``RAY_AUTH_MODE=token`` and the same token
(``~/.ray/auth_token``, ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``), or both sides run with
``RAY_AUTH_MODE=disabled``. Before ``ray.init`` the GCS port of a ``host:port`` address is probed with a plain
TCP connection (:data:`PROBE_TIMEOUT_S`): nothing listening there is a one-line error at once, not minutes of
Ray's retries.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from hiergym.envs.vector.backends import (
    _picklable_result,
    _Result,
    _run_commands,
    _sendable_result,
    _WorkerFailure,
)

#: Placement of the actors over the cluster's nodes: Ray's ``scheduling_strategy`` of each actor.
STRATEGIES = ("SPREAD", "DEFAULT")
#: Seconds the TCP probe of a cluster address waits for the connection before ``ray.init`` is tried.
PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class RayOptions:
    """How the ``ray`` backend places the copies.

    - ``copies_per_actor``: copies held by one actor (default: the copies spread over as many actors as the
      cluster has CPUs for, ``num_cpus`` each; ``num_workers`` of :func:`make_group_vec` sets the actor count
      instead). Copy ``i`` lives in actor ``i % num_actors`` (round-robin, as the process backend does).
    - ``num_cpus``: CPUs Ray reserves for each actor (fractions allowed, e.g. 0.5 for cheap envs).
    - ``strategy``: ``"SPREAD"`` places the actors across the cluster's nodes, ``"DEFAULT"`` lets Ray pack them.
    - ``address``: the cluster to join (``ray.init(address=...)``; default ``RAY_ADDRESS``, else a local
      instance). Ignored when Ray is already initialised in this process.
    - ``resources``: extra custom resources each actor needs (e.g. ``{"alfworld": 1}`` for nodes that carry
      the ALFWorld data).
    """

    copies_per_actor: int | None = None
    num_cpus: float = 1.0
    strategy: str = "SPREAD"
    address: str | None = None
    resources: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.copies_per_actor is not None and (isinstance(self.copies_per_actor, bool)
                                                  or not isinstance(self.copies_per_actor, int)
                                                  or self.copies_per_actor < 1):
            raise ValueError(f"copies_per_actor must be a positive integer or None, got {self.copies_per_actor!r}")
        if not isinstance(self.num_cpus, int | float) or self.num_cpus <= 0:
            raise ValueError(f"num_cpus must be a positive number of CPUs per actor, got {self.num_cpus!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")


def import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError("backend='ray' needs Ray: pip install 'hiergym[ray]' (or pip install 'ray[default]')"
                          ) from None
    return ray


def ensure_ray(address: str | None = None):
    """Ray, initialised: joins ``address`` (or ``RAY_ADDRESS``) if given, else starts a local instance."""
    ray = import_ray()
    if not ray.is_initialized():
        # "local": a fresh local instance, never a stale one named by /tmp/ray/ray_current_cluster.
        given = address or os.environ.get("RAY_ADDRESS")
        source = "address" if address else "RAY_ADDRESS"
        fix = ("start it with `ray start --head --port PORT`, correct the address, or unset RAY_ADDRESS to run "
               "a local instance")
        unreachable = probe_address(given) if given else None
        if unreachable:
            # A value error: the CLIs answer it in one line.
            raise ValueError(f"cannot join the Ray cluster at {given!r} ({source}): {unreachable}; {fix}")
        try:
            ray.init(address=given or "local", ignore_reinit_error=True, log_to_driver=False)
        except (ConnectionError, RuntimeError) as exc:
            if not given:
                raise
            reason = str(exc).strip().splitlines()[0][:200]
            if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
                # The port answered, so the usual cause is a head with token authentication (module docstring).
                fix = ("if the head runs with token authentication (the default when it found ~/.ray/auth_token), "
                       "set RAY_AUTH_MODE=token here with its token (~/.ray/auth_token or RAY_AUTH_TOKEN), or start "
                       "both with RAY_AUTH_MODE=disabled; else " + fix)
            raise ValueError(f"cannot join the Ray cluster at {given!r} ({source}): {reason}; {fix}") from None
    return ray


def probe_address(address: str) -> str | None:
    """Why nothing can be joined at ``address`` (a ``host:port`` or ``ray://host:port``), from one TCP connection
    of at most :data:`PROBE_TIMEOUT_S`; None when the port accepts connections or the address is not of that
    form (``auto``, ``local``: Ray resolves those itself)."""
    target = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = target.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not host:
        return None
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        what = "timed out" if isinstance(exc, TimeoutError | socket.timeout) else (exc.strerror or str(exc))
        return f"nothing accepts connections on {host}:{port} ({what})"


class _EnvActor:
    """The actor's body (wrapped with ``ray.remote`` at first use): the envs of its copies."""

    def __init__(self, make_env: Callable[[], gym.Env]) -> None:
        self._make_env = make_env
        self._envs: dict[int, gym.Env] = {}

    def run(self, kind: str, items: Sequence[tuple[int, Any]]) -> tuple[str, list[_Result]]:
        results = [_sendable_result(_picklable_result(r)) for r in _run_commands(self._envs, self._make_env, kind,
                                                                                    items)]
        return kind, results

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        for env in self._envs.values():
            try:
                env.close()
            except Exception:
                pass
        self._envs.clear()


_REMOTE_ACTOR: Any = None


def _remote_actor_class():
    global _REMOTE_ACTOR
    if _REMOTE_ACTOR is None:
        ray = import_ray()
        # max_restarts=0: a dead actor is replaced by this backend (which knows what it was doing), not by Ray.
        _REMOTE_ACTOR = ray.remote(max_restarts=0, max_task_retries=0)(_EnvActor)
    return _REMOTE_ACTOR


def default_num_actors(num_copies: int, options: RayOptions, ray) -> int:
    if options.copies_per_actor is not None:
        return max(1, math.ceil(num_copies / options.copies_per_actor))
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    return max(1, min(num_copies, int(cpus // options.num_cpus) or 1))


class _RayBackend:
    """Copies sharded over Ray actors; each actor runs its commands in order, actors run in parallel."""

    remote = True

    def __init__(self, make_env: Callable[[], gym.Env], num_copies: int, num_actors: int | None,
                 step_timeout: float | None, options: RayOptions | None = None) -> None:
        self.options = options or RayOptions()
        self._ray = ensure_ray(self.options.address)
        self._make_env = make_env
        self._make_env_ref = self._ray.put(make_env)
        self.num_copies = num_copies
        n = num_actors if num_actors is not None else default_num_actors(num_copies, self.options, self._ray)
        self.num_workers = n = max(1, min(int(n), num_copies))
        self.worker_of = np.arange(num_copies, dtype=np.int64) % n
        self.shards = [list(range(w, num_copies, n)) for w in range(n)]
        self.step_timeout = step_timeout
        self.restarts = 0
        self._actors: list[Any] = [None] * n
        #: Per actor, the commands sent and not yet answered: (kind, copy indices, object ref).
        self._inflight: list[deque[tuple[str, list[int], Any]]] = [deque() for _ in range(n)]
        self._head_since = [0.0] * n
        for w in range(n):
            self._start(w)

    def _start(self, w: int) -> None:
        actor_class = _remote_actor_class()
        opts: dict[str, Any] = {"num_cpus": self.options.num_cpus, "scheduling_strategy": self.options.strategy}
        if self.options.resources:
            opts["resources"] = dict(self.options.resources)
        self._actors[w] = actor_class.options(**opts).remote(self._make_env_ref)
        self._inflight[w].clear()
        self.send("make", [(i, None) for i in self.shards[w]])

    @property
    def busy(self) -> bool:
        return any(self._inflight)

    def worker_pids(self) -> list[int]:
        """The actors' process ids (on their own nodes)."""
        return [int(p) for p in self._ray.get([a.pid.remote() for a in self._actors])]

    def actors(self) -> list[Any]:
        """The actor handles, copy ``i`` in ``actors()[i % len]``."""
        return list(self._actors)

    def send(self, kind: str, items: Sequence[tuple[int, Any]]) -> None:
        per_actor: dict[int, list[tuple[int, Any]]] = {}
        for item in items:
            per_actor.setdefault(int(self.worker_of[item[0]]), []).append(item)
        now = time.monotonic()
        for w, shard_items in per_actor.items():
            if not self._inflight[w]:
                self._head_since[w] = now
            ref = self._actors[w].run.remote(kind, shard_items)
            self._inflight[w].append((kind, [i for i, _ in shard_items], ref))

    def receive(self, timeout: float | None) -> tuple[list[tuple[str, list[_Result]]], list[_WorkerFailure]]:
        """Replies available now, waiting up to ``timeout`` seconds for the first one (None: no limit)."""
        replies: list[tuple[str, list[_Result]]] = []
        failures: list[_WorkerFailure] = []
        if not self.busy:
            return replies, failures
        busy = [w for w in range(len(self._actors)) if self._inflight[w]]
        wait_s = timeout
        if self.step_timeout is not None:
            until_deadline = max(0.0, min(self._deadline(w) for w in busy) - time.monotonic())
            wait_s = until_deadline if wait_s is None else min(wait_s, until_deadline)
        heads = {self._inflight[w][0][2]: w for w in busy}
        self._ray.wait(list(heads), num_returns=1, timeout=wait_s, fetch_local=False)
        for w in busy:
            while self._inflight[w]:
                ref = self._inflight[w][0][2]
                ready, _ = self._ray.wait([ref], num_returns=1, timeout=0, fetch_local=True)
                if not ready:
                    break
                try:
                    reply = self._ray.get(ref)
                except Exception as exc:  # RayActorError and kin: the actor (or its node) is gone
                    failures.append(self._fail(w, f"actor {w} died ({type(exc).__name__}: "
                                                  f"{_first_line(exc)})"))
                    break
                self._inflight[w].popleft()
                self._head_since[w] = time.monotonic()
                replies.append(reply)
        if self.step_timeout is not None:
            now = time.monotonic()
            for w in busy:
                if self._inflight[w] and now > self._deadline(w):
                    failures.append(self._fail(w, f"actor {w} did not answer within {self.step_timeout:g} s per "
                                                  "copy"))
        return replies, failures

    def _deadline(self, w: int) -> float:
        return self._head_since[w] + self.step_timeout * max(1, len(self._inflight[w][0][1]))

    def _fail(self, w: int, reason: str) -> _WorkerFailure:
        try:
            self._ray.kill(self._actors[w], no_restart=True)
        except Exception:
            pass
        unanswered = [(kind, indices) for kind, indices, _ in self._inflight[w]]
        self._start(w)
        self.restarts += 1
        return _WorkerFailure(f"{reason}; restarted it as a new actor", unanswered, self.shards[w])

    def close(self) -> None:
        live = [a for a in self._actors if a is not None]
        try:  # let the envs close (engines with subprocesses of their own), then end the actors
            self._ray.wait([a.close.remote() for a in live], num_returns=len(live), timeout=5)
        except Exception:
            pass
        for actor in live:
            try:
                self._ray.kill(actor, no_restart=True)
            except Exception:
                pass
        self._actors = [None] * len(self._actors)
        for queue in self._inflight:
            queue.clear()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
