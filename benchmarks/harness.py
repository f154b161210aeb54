"""The evaluation harness: any agent on any hiergym environment, as ``hiergym eval`` / ``hiergym compare`` and as
:func:`evaluate`.

Episode ``i`` of a run is ``env.reset(seed=seed + i, options={"split": split, "task_id": i})``: the
``task_id``-th task of the split, so every agent evaluated with the same ``--split`` meets the same tasks (and
the same env randomness for the same ``--seed``). Episodes are played in batches (``batch_size`` episodes
acted on together, which is what makes LLM agents fast) by ``workers`` processes in parallel.

Output directory (``--out``):

- ``run.json``: the run's configuration (a re-run with a different one is refused unless ``--overwrite``);
- ``episodes/episode_000007.jsonl``: one transcript per episode (a ``reset`` line, a ``step`` line per step
  with the action, the model's responses, token counts, reward, validity and info, an ``end`` line);
- ``results.jsonl``: one line per finished episode (appended as they finish);
- ``summary.json`` and ``summary.md``: success rate with a 95% Wilson interval, mean return, mean steps,
  invalid-action rate, tokens and tool calls per episode, wall time, and the same per task type.

Episodes are played by the episode driver (:func:`hiergym.driver.play_evaluation`, the loop the trainer's
evaluations use too); this module adds the run around it: validation, the output directory and its resume,
worker processes, progress and the summary files.

Robustness: an agent that raises, exceeds the per-step timeout, or returns something that is not an action
fails its episode(s) with the error recorded, and the run goes on; errored episodes are counted apart from
failed ones in the summary. A killed run re-run with the same ``--out`` skips the episodes already in
``results.jsonl`` (a line cut short by the kill is dropped and its episode played again), and counts the
killed process's time (``progress.json``). The directory is locked while a run writes it (``.lock``);
arguments whose names say key, token, secret or password are written as ``<redacted>``.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import dataclasses
import json
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hiergym.agents.spec import redact_secrets
from hiergym.benchmarks.summary import load_summary, summary_markdown
from hiergym.driver import AgentCaller, StepTimeout, play_evaluation
from hiergym.records import EpisodeResult, append_results, load_results, read_results, to_jsonable
from hiergym.stats import paired_success_difference, summarize, wilson_interval

#: Fallback episode length limit when the env has none.
DEFAULT_MAX_STEPS = 200
#: Configuration fields that must match for a run directory to be resumed.
RESUME_KEYS = ("env", "env_args", "agent", "agent_args", "split", "seed", "max_steps")

#: Re-exported for callers of the harness: what it records and how it summarises.
__all__ = ["DEFAULT_MAX_STEPS", "EpisodeResult", "EvalConfig", "HarnessError", "StepTimeout", "evaluate",
           "load_results", "load_summary", "paired_success_difference", "summarize", "summary_markdown",
           "to_jsonable", "wilson_interval"]


class HarnessError(ValueError):
    """A configuration mistake the user can fix; the message says how."""


# ------------------------------------------------------------------------------------------------ config
@dataclass
class EvalConfig:
    """What :func:`evaluate` runs (see the module docstring)."""

    env: str
    agent: str = "random"
    episodes: int = 20
    split: str = "eval_out"
    seed: int = 0
    workers: int = 1
    #: Episodes acted on together; default 8 for LLM SPECs and batched agent objects, 1 otherwise.
    batch_size: int | None = None
    env_args: dict[str, Any] = field(default_factory=dict)
    agent_args: dict[str, Any] = field(default_factory=dict)
    #: Seconds one ``act`` call (one step of a batch) may take; None for no limit.
    step_timeout: float | None = 300.0
    #: Episode step limit; default: the env's registered limit, else 200.
    max_steps: int | None = None
    out: str | None = None
    overwrite: bool = False
    retry_errors: bool = False
    save_prompts: bool = False
    progress: bool = True
    label: str | None = None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "run"


def default_out_dir(env: str, agent: str, split: str, seed: int) -> str:
    return str(Path("runs") / "eval" / f"{_slug(env)}__{_slug(agent)}__{split}_s{seed}")


def _agent_label(agent: Any) -> str:
    """A SPEC as is; a class or function by its import path; an object by its class's."""
    if isinstance(agent, str):
        return agent
    named = agent if hasattr(agent, "__qualname__") else type(agent)
    return f"{named.__module__}.{named.__qualname__}"


# ------------------------------------------------------------------------------------------ environments
def _make_env(env: str | Callable[[], Any], env_args: dict[str, Any]) -> Any:
    import gymnasium as gym

    import hiergym  # noqa: F401 - registers the hiergym/ envs in worker processes too
    from hiergym.registration import resolve_env_id

    if callable(env):
        return env(**env_args)
    resolved = resolve_env_id(env)
    try:
        return gym.make(resolved, **env_args)
    except TypeError as exc:
        raise HarnessError(f"bad environment arguments for {resolved}: {exc} (see `hiergym list`)") from None


# ------------------------------------------------------------------------------------------ the worker
class _Player:
    """Plays batches of episodes with one agent (in the main process or in a worker process)."""

    def __init__(self, config: EvalConfig, agent_factory: Callable[[], Any], max_steps: int, out: Path | None):
        self.config = config
        self.agent_factory = agent_factory
        self.agent: Any = None
        self.max_steps = max_steps
        self.out = out
        self.envs: list[Any] = []
        self.caller = AgentCaller(config.step_timeout)

    def prepare(self) -> None:
        self._ensure(0)

    def _ensure(self, count: int) -> None:
        if self.agent is None:
            from hiergym.agents.base import as_agent

            self.agent = as_agent(self.agent_factory())
        while len(self.envs) < count:
            self.envs.append(_make_env(self.config.env, self.config.env_args))

    def play(self, episode_ids: Sequence[int]) -> list[EpisodeResult]:
        cfg = self.config
        self._ensure(len(episode_ids))
        results = play_evaluation(self.envs, self.agent, episode_ids, seed=cfg.seed, split=cfg.split,
                                  max_steps=self.max_steps, call=self.caller, out=self.out,
                                  save_prompts=cfg.save_prompts)
        if self.caller.timed_out:  # the hung call keeps the old agent: a fresh one serves the next batches
            self.agent, self.caller.timed_out = None, False
        return results

    def close(self) -> None:
        for env in self.envs:
            try:
                env.close()
            except Exception:  # noqa: BLE001, S110 - closing is best effort
                pass
        self.caller.close()


# ----------------------------------------------------------------------------------- worker processes
_WORKER: _Player | None = None


def _agent_factory(config: EvalConfig, agent_object: Any = None) -> Callable[[], Any]:
    if agent_object is not None:
        return lambda: agent_object
    from hiergym.agents.spec import make_agent

    env_id = config.env if isinstance(config.env, str) else None
    return lambda: make_agent(config.agent, env_id=env_id, agent_args=config.agent_args, seed=config.seed)


def _init_worker(config: EvalConfig, agent_object: Any, max_steps: int, out: str | None, threads: int) -> None:
    global _WORKER
    # W workers each using every core would oversubscribe the CPU: torch (imported later, by the agent) reads
    # this at import. Set HIERGYM_WORKER_THREADS to give each worker more.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    _WORKER = _Player(config, _agent_factory(config, agent_object), max_steps, Path(out) if out else None)


def _worker_play(episode_ids: list[int]) -> list[EpisodeResult]:
    assert _WORKER is not None
    return _WORKER.play(episode_ids)


# ----------------------------------------------------------------------------------------- the run
def _validate(config: EvalConfig) -> None:
    from hiergym.envs.core import SPLITS

    if config.episodes < 1:
        raise HarnessError(f"--episodes must be at least 1, got {config.episodes}")
    if config.workers < 1:
        raise HarnessError(f"--workers must be at least 1, got {config.workers}")
    if config.batch_size is not None and config.batch_size < 1:
        raise HarnessError(f"--batch-size must be at least 1, got {config.batch_size}")
    if config.split not in SPLITS:
        raise HarnessError(f"unknown split {config.split!r}; choose one of {', '.join(SPLITS)}")
    if config.step_timeout is not None and config.step_timeout <= 0:
        raise HarnessError(f"--step-timeout must be positive, got {config.step_timeout}")
    if config.max_steps is not None and config.max_steps < 1:
        raise HarnessError(f"--max-steps must be at least 1, got {config.max_steps}")


def _run_record(config: EvalConfig) -> dict[str, Any]:
    # Not asdict: it would deep-copy an agent object (a whole model) only to print its name.
    record = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    record["env"] = config.env if isinstance(config.env, str) else _agent_label(config.env)
    record["agent"] = _agent_label(config.agent)
    # Never write secrets: an api_key given as an agent argument is "<redacted>" in run.json and summary.json.
    record["agent_args"] = redact_secrets(dict(config.agent_args))
    record["env_args"] = redact_secrets(dict(config.env_args))
    return to_jsonable(record)


def _prepare_out(out: Path, record: dict[str, Any], config: EvalConfig) -> dict[int, EpisodeResult]:
    """Create or resume the output directory; returns the finished episodes to skip."""
    run_file = out / "run.json"
    results_file = out / "results.jsonl"
    if out.exists() and not out.is_dir():
        raise HarnessError(f"--out {out} is a file; give a directory")
    if config.overwrite and out.exists():
        for path in (run_file, results_file, out / "summary.json", out / "summary.md", out / "progress.json"):
            path.unlink(missing_ok=True)
        for path in (out / "episodes").glob("episode_*.jsonl*") if (out / "episodes").exists() else []:
            path.unlink()
    finished: dict[int, EpisodeResult] = {}
    if run_file.exists():
        try:
            previous = json.loads(run_file.read_text())
        except json.JSONDecodeError:
            raise HarnessError(f"{run_file} is damaged; use --overwrite to start this run again") from None
        differing = [k for k in RESUME_KEYS if previous.get(k) != record.get(k)]
        if differing and not read_results(results_file):
            differing = []  # a run that never finished an episode (e.g. its agent failed to load): nothing to keep
            results_file.unlink(missing_ok=True)
        if differing:
            details = "; ".join(f"{k}: {previous.get(k)!r} there, {record.get(k)!r} now" for k in differing)
            raise HarnessError(f"{out} holds a different run ({details}). Use another --out, or --overwrite to "
                               "replace it")
        # A kill mid-append leaves a partial last line: cut it off, so the next append starts a fresh line.
        for result in read_results(results_file, repair=True):
            if config.retry_errors and result.error:
                continue
            finished[result.episode] = result
    out.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps(record, indent=1) + "\n")
    return finished


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def evaluate(
    env: str | Callable[..., Any] | EvalConfig,
    agent: Any = "random",
    **options: Any,
) -> dict[str, Any]:
    """Evaluate an agent; returns the summary (see :func:`summarize`) and writes the run to ``out`` if given.

    ``env`` is an env id (or a factory ``f(**env_args) -> env``, or a full :class:`EvalConfig`); ``agent`` is a
    SPEC string (``hiergym.agents.spec``) or an agent object (batched or ``act(observation, info)``; with
    ``workers > 1`` it must be picklable). ``options`` are :class:`EvalConfig` fields.
    """
    config = env if isinstance(env, EvalConfig) else EvalConfig(env=env, agent=agent, **options)
    _validate(config)
    if isinstance(config.env, str):
        from hiergym.registration import resolve_env_id

        config = dataclasses.replace(config, env=resolve_env_id(config.env))  # one name per env in records
    agent_object = None if isinstance(config.agent, str) else config.agent
    if isinstance(config.agent, str):
        from hiergym.agents.spec import AgentSpecError, is_llm_spec, make_agent

        is_llm = is_llm_spec(config.agent)
        if not is_llm:  # cheap to build: check the SPEC and its arguments before any work
            try:
                make_agent(config.agent, env_id=config.env if isinstance(config.env, str) else None,
                           agent_args=config.agent_args, seed=config.seed)
            except AgentSpecError as exc:
                raise HarnessError(str(exc)) from None
    else:
        from hiergym.agents.base import is_batched_agent

        is_llm = is_batched_agent(config.agent)  # an agent object that takes batches gets them
    batch_size = config.batch_size or (8 if is_llm else 1)

    probe = _make_env(config.env, config.env_args)  # fails fast on a wrong id or arguments
    spec = getattr(probe, "spec", None)
    max_steps = config.max_steps or (spec.max_episode_steps if spec and spec.max_episode_steps else None) \
        or DEFAULT_MAX_STEPS
    probe.close()

    record = _run_record(config)
    out = Path(config.out) if config.out else None
    with _RunLock(out) if out else contextlib.nullcontext():
        finished = _prepare_out(out, record, config) if out else {}
        return _evaluate_into(config, record, out, finished, agent_object, batch_size, max_steps)


class _RunLock:
    """An exclusive lock on a run directory (``.lock``, released when the process ends however it ends), so
    two evaluations never write the same ``results.jsonl``."""

    def __init__(self, out: Path):
        if out.exists() and not out.is_dir():
            raise HarnessError(f"--out {out} is a file; give a directory")
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / ".lock"

    def __enter__(self) -> _RunLock:
        import fcntl

        self.handle = self.path.open("a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            raise HarnessError(f"{self.path.parent} is in use by another evaluation (pid {holder}); wait for it to "
                               "finish, or give this run another --out") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def _evaluate_into(config: EvalConfig, record: dict[str, Any], out: Path | None, finished: dict[int, EpisodeResult],
                   agent_object: Any, batch_size: int, max_steps: int) -> dict[str, Any]:
    todo = [i for i in range(config.episodes) if i not in finished]
    results: dict[int, EpisodeResult] = {i: r for i, r in finished.items() if i < config.episodes}
    started = time.perf_counter()
    previous_wall = _previous_wall_time(out) if out and finished else 0.0

    from tqdm.auto import tqdm

    label = config.label or f"{_agent_label(config.agent)} on {record['env']}"
    bar = tqdm(total=config.episodes, initial=len(results), desc=label[:50], unit="ep",
               disable=not config.progress, dynamic_ncols=True, file=sys.stderr)
    results_file = out / "results.jsonl" if out else None

    def record_batch(batch: list[EpisodeResult]) -> None:
        for result in batch:
            results[result.episode] = result
        if results_file is not None:
            append_results(results_file, batch)
            _save_wall_time(out, previous_wall + (time.perf_counter() - started))
        wins = sum(r.success for r in results.values())
        errors = sum(r.error is not None for r in results.values())
        bar.set_postfix_str(f"success {wins}/{len(results)}" + (f", errors {errors}" if errors else ""))
        bar.update(len(batch))

    try:
        if todo and config.workers == 1:
            player = _Player(config, _agent_factory(config, agent_object), max_steps, out)
            try:
                player.prepare()  # load the model before the clock of the first batch starts
                for chunk in _chunks(todo, batch_size):
                    record_batch(player.play(chunk))
            finally:
                player.close()
        elif todo:
            _run_parallel(config, agent_object, max_steps, out, todo, batch_size, record_batch)
    except KeyboardInterrupt:
        bar.close()
        if out:
            print(f"interrupted: {len(results)} episode(s) saved in {out}; run the same command again to resume",
                  file=sys.stderr)
        raise
    finally:
        bar.close()

    wall = previous_wall + (time.perf_counter() - started)
    summary = summarize([results[i] for i in sorted(results)], config=record, wall_time_s=wall)
    if out:
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        (out / "summary.md").write_text(summary_markdown([summary]) + "\n")
    return summary


def _previous_wall_time(out: Path) -> float:
    """The wall time the run's earlier processes spent (``progress.json``, written after every batch, so a
    killed process's time counts too; ``summary.json`` for runs written before it existed)."""
    for name in ("progress.json", "summary.json"):
        try:
            return float(json.loads((out / name).read_text()).get("wall_time_s") or 0.0)
        except (OSError, ValueError, AttributeError):
            continue
    return 0.0


def _save_wall_time(out: Path, seconds: float) -> None:
    tmp = out / "progress.json.tmp"
    tmp.write_text(json.dumps({"wall_time_s": round(seconds, 3)}) + "\n")
    os.replace(tmp, out / "progress.json")


def _run_parallel(config: EvalConfig, agent_object: Any, max_steps: int, out: Path | None, todo: list[int],
                  batch_size: int, record_batch: Callable[[list[EpisodeResult]], None]) -> None:
    import pickle

    if agent_object is not None:
        try:
            pickle.dumps(agent_object)
        except Exception as exc:  # noqa: BLE001
            raise HarnessError(f"workers > 1 needs a picklable agent (or a SPEC string); {exc}. Use --workers 1")\
                from None
    if callable(config.env) and not isinstance(config.env, str):
        try:
            pickle.dumps(config.env)
        except Exception as exc:  # noqa: BLE001
            raise HarnessError(f"workers > 1 needs a picklable env factory; {exc}. Use workers=1") from None
    # spawn: a fresh interpreter per worker (forking a process that holds torch threads is unsafe).
    context = multiprocessing.get_context("spawn")
    threads = int(os.environ.get("HIERGYM_WORKER_THREADS", "1"))
    initargs = (config, agent_object, max_steps, str(out) if out else None, threads)
    with futures.ProcessPoolExecutor(max_workers=config.workers, mp_context=context, initializer=_init_worker,
                                     initargs=initargs) as pool:
        pending = {pool.submit(_worker_play, chunk): chunk for chunk in _chunks(todo, batch_size)}
        try:
            for future in futures.as_completed(pending):
                try:
                    record_batch(future.result())
                except futures.process.BrokenProcessPool as exc:
                    raise HarnessError(f"a worker process died ({exc}); the finished episodes are saved, re-run "
                                       "to resume (with fewer --workers if memory ran out)") from None
                except Exception as exc:  # noqa: BLE001 - e.g. the agent could not be built in the worker
                    from hiergym.agents.spec import AgentSpecError

                    if isinstance(exc, AgentSpecError | FileNotFoundError | HarnessError):
                        raise HarnessError(str(exc)) from None
                    raise
        except BaseException:
            for future in pending:
                future.cancel()
            raise
