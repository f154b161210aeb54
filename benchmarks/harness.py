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

Robustness: an agent that raises, exceeds the per-step timeout, or returns something that is not an action
fails its episode(s) with the error recorded, and the run goes on. A killed run re-run with the same
``--out`` skips the episodes already in ``results.jsonl``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Final-info keys read as the episode's tool calls / tool cost (the first present wins). ``tool_calls_used`` and
#: ``tool_cost`` come from the ToolBudget wrapper, ``tool_calls`` from envs that count their own.
TOOL_CALL_KEYS = ("tool_calls_used", "tool_calls")
COST_KEYS = ("tool_cost", "cost")
#: Info keys read as the episode's task type, for the per-type breakdown.
TASK_TYPE_KEYS = ("task_type", "question_kind", "category")
#: Longest action text written into a transcript.
MAX_RECORDED_ACTION = 5000
#: Fallback episode length limit when the env has none.
DEFAULT_MAX_STEPS = 200
#: Configuration fields that must match for a run directory to be resumed.
RESUME_KEYS = ("env", "env_args", "agent", "agent_args", "split", "seed", "max_steps")


class HarnessError(ValueError):
    """A configuration mistake the user can fix; the message says how."""


class StepTimeout(Exception):
    pass


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


@dataclass
class EpisodeResult:
    episode: int
    seed: int
    task_id: int | None
    task: str = ""
    task_type: str | None = None
    success: bool = False
    total_reward: float = 0.0
    steps: int = 0
    invalid_actions: int = 0
    parse_errors: int = 0
    generations: int = 0
    planner_generations: int = 0
    prompt_tokens: int = 0
    response_tokens: int = 0
    tool_calls: float | None = None
    cost: float | None = None
    truncated: bool = False
    error: str | None = None
    wall_time_s: float = 0.0


# ------------------------------------------------------------------------------------------------ helpers
def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (well-behaved at 0, 1 and small n)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At 0 and n successes the bound is exactly 0 / 1; the formula leaves a rounding error there.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def paired_success_difference(first: Sequence[EpisodeResult], second: Sequence[EpisodeResult],
                               z: float = 1.959963984540054) -> dict[str, Any]:
    """Success of ``second`` minus ``first`` on the same episodes (matched by episode id), paired.

    Two runs on the same tasks differ only on *discordant* episodes (won by one, lost by the other), so the
    paired difference is far tighter than two separate intervals: ``ci95`` is the normal interval of the mean
    per-episode difference, and ``p_value`` McNemar's exact two-sided test (a binomial test of the discordant
    episodes at 1/2).
    """
    before = {r.episode: bool(r.success) for r in first}
    after = {r.episode: bool(r.success) for r in second}
    common = sorted(before.keys() & after.keys())
    n = len(common)
    gained = sum(after[e] and not before[e] for e in common)
    lost = sum(before[e] and not after[e] for e in common)
    if n == 0:
        return {"pairs": 0, "gained": 0, "lost": 0, "difference": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0}
    difference = (gained - lost) / n
    variance = (gained + lost) / n - difference ** 2
    half = z * math.sqrt(max(variance, 0.0) / n)
    discordant = gained + lost
    tail = sum(math.comb(discordant, k) for k in range(min(gained, lost) + 1)) / 2 ** discordant
    return {"pairs": n, "gained": gained, "lost": lost, "difference": difference,
            "ci95": [difference - half, difference + half], "p_value": min(1.0, 2 * tail)}


def load_results(directory: str | os.PathLike[str]) -> list[EpisodeResult]:
    """The per-episode results of a run directory (``results.jsonl``)."""
    path = Path(directory) / "results.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent} holds no results.jsonl (make one with `hiergym eval --out DIR`)")
    results = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError, TypeError):
            results.append(EpisodeResult(**json.loads(line)))
    return results


def to_jsonable(value: Any, depth: int = 0) -> Any:
    """JSON-safe copy of info values (NumPy scalars and arrays, tuples, sets, anything else as text)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth > 6:
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v, depth + 1) for v in value]
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 1) == 0:
        return to_jsonable(item(), depth + 1)
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return to_jsonable(tolist(), depth + 1)
    return str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "run"


def default_out_dir(env: str, agent: str, split: str, seed: int) -> str:
    return str(Path("runs") / "eval" / f"{_slug(env)}__{_slug(agent)}__{split}_s{seed}")


def _numeric(info: dict[str, Any], keys: Sequence[str]) -> float | None:
    for key in keys:
        value = info.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(float(value)):
            return float(value)
    return None


def _task_type(*infos: dict[str, Any]) -> str | None:
    for info in infos:
        for key in TASK_TYPE_KEYS:
            if info.get(key) is not None:
                return str(info[key])
    return None


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


def _uses_task_ids(env: Any) -> bool:
    spec = getattr(env, "spec", None)
    return bool(spec and str(spec.id).startswith("hiergym/")) or hasattr(env.unwrapped, "expert_plan")


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
        self.pool: futures.ThreadPoolExecutor | None = None

    # The agent runs in a helper thread so that a call past the step timeout can be abandoned.
    def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        timeout = self.config.step_timeout
        if not timeout:
            return function(*args)
        if self.pool is None:
            self.pool = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hiergym-agent")
        future = self.pool.submit(function, *args)
        try:
            return future.result(timeout=timeout)
        except futures.TimeoutError:
            # The hung call keeps its thread; a fresh thread and a fresh agent serve the next batches.
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
            self.agent = None
            raise StepTimeout(f"agent step took longer than {timeout:g} s (step timeout)") from None

    def prepare(self) -> None:
        self._ensure(0)

    def _ensure(self, count: int) -> None:
        if self.agent is None:
            from hiergym.agents.base import as_agent

            self.agent = as_agent(self.agent_factory())
        while len(self.envs) < count:
            self.envs.append(_make_env(self.config.env, self.config.env_args))

    def play(self, episode_ids: Sequence[int]) -> list[EpisodeResult]:
        from hiergym.agents.base import EPISODE_INDEX, EPISODE_SEED, Decision, as_decision

        cfg = self.config
        self._ensure(len(episode_ids))
        envs = self.envs[: len(episode_ids)]
        started = time.perf_counter()
        results = [EpisodeResult(episode=i, seed=cfg.seed + i, task_id=None) for i in episode_ids]
        transcripts: list[list[dict[str, Any]]] = [[] for _ in episode_ids]
        observations: list[str] = [""] * len(episode_ids)
        infos: list[dict[str, Any]] = [{} for _ in episode_ids]
        running: list[int] = []
        for k, (episode, env) in enumerate(zip(episode_ids, envs, strict=True)):
            result = results[k]
            try:
                if _uses_task_ids(env):
                    result.task_id = episode
                    obs, info = env.reset(seed=cfg.seed + episode, options={"split": cfg.split, "task_id": episode})
                else:
                    obs, info = env.reset(seed=cfg.seed + episode)
            except Exception as exc:  # noqa: BLE001 - an env that cannot reset fails its episode only
                result.error = f"env reset failed: {type(exc).__name__}: {exc}"
                continue
            observations[k], infos[k] = str(obs), dict(info)
            result.task = str(info.get("task", ""))
            result.task_type = _task_type(info)
            transcripts[k].append({"type": "reset", "episode": episode, "seed": cfg.seed + episode,
                                   "task_id": result.task_id, "split": cfg.split, "task": result.task,
                                   "observation": str(obs), "info": to_jsonable(info)})
            running.append(k)

        def agent_infos(rows: list[int]) -> list[dict[str, Any]]:
            return [{**infos[k], EPISODE_INDEX: k, EPISODE_SEED: cfg.seed + episode_ids[k]} for k in rows]

        def fail(rows: list[int], message: str) -> None:
            for k in rows:
                results[k].error = message
                transcripts[k].append({"type": "error", "t": results[k].steps, "error": message})
            running[:] = [k for k in running if k not in rows]

        if running:
            try:
                attach = getattr(self.agent, "attach_envs", None)
                if callable(attach):
                    attach(envs)
                self._call(self.agent.reset, [infos[k].get("task", "") if k in running else "" for k in
                                              range(len(episode_ids))], agent_infos(list(range(len(episode_ids)))))
            except Exception as exc:  # noqa: BLE001 - recorded; the run goes on
                fail(list(running), f"agent reset failed: {type(exc).__name__}: {exc}")

        while running:
            rows = list(running)
            try:
                outputs = self._call(self.agent.act, [observations[k] for k in rows], agent_infos(rows))
            except Exception as exc:  # noqa: BLE001 - recorded; the run goes on
                fail(rows, exc.args[0] if isinstance(exc, StepTimeout) else f"agent raised {type(exc).__name__}: {exc}")
                continue
            if not isinstance(outputs, list | tuple) or len(outputs) != len(rows):
                got = f"{len(outputs)} outputs" if isinstance(outputs, list | tuple) else type(outputs).__name__
                fail(rows, f"agent returned {got} for {len(rows)} episode(s); act must return one action per episode")
                continue
            for k, output in zip(rows, outputs, strict=True):
                result = results[k]
                if not isinstance(output, str | Decision):
                    fail([k], f"agent returned {type(output).__name__} instead of an action (str or Decision): "
                              f"{output!r:.120}")
                    continue
                decision = as_decision(output)
                for generation in decision.generations:
                    result.generations += 1
                    result.planner_generations += generation.level == "planner"
                    result.prompt_tokens += generation.num_prompt_tokens
                    result.response_tokens += generation.num_response_tokens
                if decision.info.get("parse_error"):
                    result.parse_errors += 1
                try:
                    obs, reward, terminated, truncated, info = envs[k].step(decision.action)
                except Exception as exc:  # noqa: BLE001 - an env that raises fails this episode only
                    fail([k], f"env step raised {type(exc).__name__}: {exc}")
                    continue
                result.steps += 1
                result.total_reward += float(reward)
                valid = bool(info.get("action_valid", True)) and not decision.info.get("parse_error")
                result.invalid_actions += not valid
                observations[k], infos[k] = str(obs), dict(info)
                # A megabyte of junk from an agent is an invalid action, not a megabyte in every transcript.
                shown = decision.action if len(decision.action) <= MAX_RECORDED_ACTION else \
                    decision.action[:MAX_RECORDED_ACTION] + f"... ({len(decision.action)} characters)"
                record = {"type": "step", "t": result.steps, "action": shown, "reward": float(reward),
                          "terminated": bool(terminated), "truncated": bool(truncated), "action_valid": valid,
                          "observation": str(obs)}
                if decision.generations:
                    record["generations"] = [
                        {"level": g.level, "segment": g.segment, "response": g.response_text, "parse_ok": g.parse_ok,
                         "prompt_tokens": g.num_prompt_tokens, "response_tokens": g.num_response_tokens,
                         **({"prompt": g.prompt_text} if cfg.save_prompts else {})}
                        for g in decision.generations
                    ]
                if decision.info:
                    record["decision"] = to_jsonable(decision.info)
                record["info"] = to_jsonable({key: v for key, v in info.items() if key != "admissible_actions"})
                transcripts[k].append(record)
                capped = result.steps >= self.max_steps
                if terminated or truncated or capped:
                    result.success = bool(info.get("won", False))
                    result.truncated = bool(truncated or (capped and not terminated))
                    result.tool_calls = _numeric(info, TOOL_CALL_KEYS)
                    result.cost = _numeric(info, COST_KEYS)
                    result.task_type = result.task_type or _task_type(info)
                    running.remove(k)
        elapsed = time.perf_counter() - started
        for k, result in enumerate(results):
            result.wall_time_s = round(elapsed, 4)
            transcripts[k].append({"type": "end", **asdict(result)})
            if self.out is not None:
                _write_transcript(self.out, result.episode, transcripts[k])
        return results

    def close(self) -> None:
        for env in self.envs:
            with contextlib.suppress(Exception):
                env.close()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


def _transcript_path(out: Path, episode: int) -> Path:
    return out / "episodes" / f"episode_{episode:06d}.jsonl"


def _write_transcript(out: Path, episode: int, records: list[dict[str, Any]]) -> None:
    path = _transcript_path(out, episode)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    os.replace(tmp, path)  # a killed run never leaves a half transcript under the final name


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
    return to_jsonable(record)


def _prepare_out(out: Path, record: dict[str, Any], config: EvalConfig) -> dict[int, EpisodeResult]:
    """Create or resume the output directory; returns the finished episodes to skip."""
    run_file = out / "run.json"
    results_file = out / "results.jsonl"
    if out.exists() and not out.is_dir():
        raise HarnessError(f"--out {out} is a file; give a directory")
    if config.overwrite and out.exists():
        for path in (run_file, results_file, out / "summary.json", out / "summary.md"):
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
        if differing:
            details = "; ".join(f"{k}: {previous.get(k)!r} there, {record.get(k)!r} now" for k in differing)
            raise HarnessError(f"{out} holds a different run ({details}). Use another --out, or --overwrite to "
                               "replace it")
        if results_file.exists():
            for line in results_file.read_text().splitlines():
                try:
                    data = json.loads(line)
                    result = EpisodeResult(**data)
                except (json.JSONDecodeError, TypeError):
                    continue  # a line cut short by a kill: that episode runs again
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
    finished = _prepare_out(out, record, config) if out else {}
    todo = [i for i in range(config.episodes) if i not in finished]
    results: dict[int, EpisodeResult] = {i: r for i, r in finished.items() if i < config.episodes}
    started = time.perf_counter()
    previous_wall = _previous_wall_time(out) if out and finished else 0.0

    from tqdm.auto import tqdm

    label = config.label or f"{_agent_label(config.agent)} on {record['env']}"
    bar = tqdm(total=config.episodes, initial=len(results), desc=label[:50], unit="ep",
               disable=not config.progress, dynamic_ncols=True, file=sys.stderr)
    results_handle = (out / "results.jsonl").open("a") if out else None

    def record_batch(batch: list[EpisodeResult]) -> None:
        for result in batch:
            results[result.episode] = result
            if results_handle is not None:
                results_handle.write(json.dumps(asdict(result)) + "\n")
        if results_handle is not None:
            results_handle.flush()
            os.fsync(results_handle.fileno())
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
        if results_handle is not None:
            results_handle.close()

    wall = previous_wall + (time.perf_counter() - started)
    summary = summarize([results[i] for i in sorted(results)], config=record, wall_time_s=wall)
    if out:
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        (out / "summary.md").write_text(summary_markdown([summary]) + "\n")
    return summary


def _previous_wall_time(out: Path) -> float:
    try:
        return float(json.loads((out / "summary.json").read_text()).get("wall_time_s") or 0.0)
    except (OSError, ValueError, AttributeError):
        return 0.0


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


# -------------------------------------------------------------------------------------------- summary
def _aggregate(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    n = len(results)
    if n == 0:
        return {"episodes": 0}
    wins = sum(r.success for r in results)
    low, high = wilson_interval(wins, n)
    steps = sum(r.steps for r in results)
    returns = [r.total_reward for r in results]
    mean_return = sum(returns) / n
    tool = [r.tool_calls for r in results if r.tool_calls is not None]
    cost = [r.cost for r in results if r.cost is not None]
    return {
        "episodes": n,
        "successes": wins,
        "success_rate": wins / n,
        "success_ci95": [low, high],
        "mean_return": mean_return,
        "std_return": math.sqrt(sum((x - mean_return) ** 2 for x in returns) / n),
        "mean_steps": steps / n,
        "invalid_action_rate": (sum(r.invalid_actions for r in results) / steps) if steps else 0.0,
        "parse_error_rate": (sum(r.parse_errors for r in results) / steps) if steps else 0.0,
        "tokens_per_episode": sum(r.prompt_tokens + r.response_tokens for r in results) / n,
        "response_tokens_per_episode": sum(r.response_tokens for r in results) / n,
        "generations_per_episode": sum(r.generations for r in results) / n,
        "planner_generations_per_episode": sum(r.planner_generations for r in results) / n,
        "tool_calls_per_episode": (sum(tool) / len(tool)) if tool else None,
        "cost_per_episode": (sum(cost) / len(cost)) if cost else None,
        "truncated": sum(r.truncated for r in results),
        "errors": sum(r.error is not None for r in results),
    }


def summarize(results: Sequence[EpisodeResult], *, config: dict[str, Any] | None = None,
              wall_time_s: float = 0.0) -> dict[str, Any]:
    """The summary of a run: overall numbers, per task type, and a few error messages."""
    summary: dict[str, Any] = {}
    if config:
        summary.update({k: config.get(k) for k in ("env", "env_args", "agent", "agent_args", "split", "seed",
                                                   "label")})
    summary.update(_aggregate(results))
    summary["wall_time_s"] = round(wall_time_s, 3)
    summary["episodes_per_s"] = round(len(results) / wall_time_s, 4) if wall_time_s > 0 else None
    types = sorted({r.task_type for r in results if r.task_type is not None})
    summary["by_task_type"] = {t: _aggregate([r for r in results if r.task_type == t]) for t in types}
    errors = [f"episode {r.episode}: {r.error}" for r in results if r.error]
    summary["error_examples"] = errors[:5]
    return summary


def _fmt(value: Any, kind: str = "float") -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "int":
        return f"{value:.0f}"
    return f"{value:.2f}" if abs(value) < 1000 else f"{value:.0f}"


def run_label(summary: dict[str, Any]) -> str:
    return summary.get("label") or f"{summary.get('agent')} @ {summary.get('env')}"


def summary_markdown(summaries: Sequence[dict[str, Any]]) -> str:
    """A Markdown table, one row per run, and a per-task-type success table when the envs have types."""
    header = ("| run | episodes | success (95% CI) | mean return | mean steps | invalid actions | tokens/ep "
              "| tool calls/ep | errors | wall time |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for s in summaries:
        ci = s.get("success_ci95") or [None, None]
        success = (f"{_fmt(s.get('success_rate'), 'pct')} ({_fmt(ci[0], 'pct')}-{_fmt(ci[1], 'pct')})"
                   if s.get("episodes") else "-")
        lines.append(
            f"| {run_label(s)} | {s.get('episodes', 0)} | {success} | {_fmt(s.get('mean_return'))} "
            f"| {_fmt(s.get('mean_steps'))} | {_fmt(s.get('invalid_action_rate'), 'pct')} "
            f"| {_fmt(s.get('tokens_per_episode'), 'int')} | {_fmt(s.get('tool_calls_per_episode'))} "
            f"| {s.get('errors', 0)} | {_fmt(s.get('wall_time_s'))} s |"
        )
    types = sorted({t for s in summaries for t in (s.get("by_task_type") or {})})
    if types:
        lines += ["", "| task type | " + " | ".join(run_label(s) for s in summaries) + " |",
                  "|---|" + "---|" * len(summaries)]
        for t in types:
            cells = []
            for s in summaries:
                part = (s.get("by_task_type") or {}).get(t)
                cells.append(f"{_fmt(part['success_rate'], 'pct')} (n={part['episodes']})" if part else "-")
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ compare
def load_summary(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The summary of a run directory (recomputed from ``results.jsonl`` when ``summary.json`` is missing)."""
    path = Path(directory)
    if (path / "summary.json").is_file():
        return json.loads((path / "summary.json").read_text())
    if (path / "results.jsonl").is_file():
        results = load_results(path)
        config = json.loads((path / "run.json").read_text()) if (path / "run.json").is_file() else {}
        return summarize(results, config=config)
    raise FileNotFoundError(f"{path} is not an evaluation run directory (no summary.json or results.jsonl; "
                            "make one with `hiergym eval --out DIR`)")


def compare_chart(summaries: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> bool:
    """A bar chart of success rates with their 95% intervals; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = [run_label(s) for s in summaries]
    rates = [100 * (s.get("success_rate") or 0.0) for s in summaries]
    cis = [s.get("success_ci95") or [0.0, 0.0] for s in summaries]
    errors = [[r - 100 * c[0] for r, c in zip(rates, cis, strict=True)],
              [100 * c[1] - r for r, c in zip(rates, cis, strict=True)]]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(labels) + 1.5), 3.8))
    ax.bar(range(len(labels)), rates, yerr=errors, capsize=4, color="#4C72B0")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title("success rate with 95% Wilson interval")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------------- CLI
def add_eval_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate an agent on an environment",
        description="Evaluate an agent on a hiergym environment: the same tasks for every agent "
        "(task_id 0..N-1 of the split), transcripts and a summary table in --out.",
        epilog="Agent SPECs: random, expert, tiny[:DIR], hf:PATH_OR_ID, openai:MODEL@BASE_URL, smollm2, "
        "package.module:Name. See docs/agents.md.",
    )
    p.add_argument("--env", required=True, help="environment id, e.g. hiergym/Sokoban-v0 (see `hiergym list`)")
    p.add_argument("--env-arg", action="append", default=[], metavar="K=V", help="environment argument, repeatable")
    p.add_argument("--agent", required=True, metavar="SPEC", help="the agent (see below)")
    p.add_argument("--agent-arg", action="append", default=[], metavar="K=V",
                   help="agent argument, repeatable (e.g. mode=hierarchical, temperature=0.7)")
    p.add_argument("--episodes", type=int, default=20, help="number of episodes (default 20)")
    p.add_argument("--split", default="eval_out", help="task split: train, eval_in or eval_out (default)")
    p.add_argument("--seed", type=int, default=0, help="base seed: episode i resets with seed+i (default 0)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="episodes acted on together (default 8 for LLM agents, 1 otherwise)")
    p.add_argument("--step-timeout", type=float, default=300.0,
                   help="seconds one agent step may take before its episode fails (default 300; 0 = none)")
    p.add_argument("--max-steps", type=int, default=None, help="episode step limit (default: the env's)")
    p.add_argument("--out", default=None,
                   help="output directory; re-running with the same one resumes (default runs/eval/ENV__AGENT__...)")
    p.add_argument("--overwrite", action="store_true", help="replace a different run already in --out")
    p.add_argument("--retry-errors", action="store_true", help="on resume, run again the episodes that errored")
    p.add_argument("--save-prompts", action="store_true", help="also write every prompt into the transcripts")
    p.add_argument("--api-key-env", default=None, help="environment variable with the API key (openai: agents)")
    p.add_argument("--label", default=None, help="name of this run in tables")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from hiergym.registration import parse_env_args

    agent_args = parse_env_args(args.agent_arg)
    if args.api_key_env:
        agent_args["api_key_env"] = args.api_key_env
    out = args.out or default_out_dir(args.env, args.agent, args.split, args.seed)
    summary = evaluate(
        args.env, args.agent, episodes=args.episodes, split=args.split, seed=args.seed, workers=args.workers,
        batch_size=args.batch_size, env_args=parse_env_args(args.env_arg), agent_args=agent_args,
        step_timeout=args.step_timeout or None, max_steps=args.max_steps, out=out, overwrite=args.overwrite,
        retry_errors=args.retry_errors, save_prompts=args.save_prompts, progress=not args.quiet,
        label=args.label,
    )
    print(summary_markdown([summary]))
    for line in summary["error_examples"]:
        print(f"error: {line}")
    print(f"transcripts and summary in {out}")
    return 0


def add_compare_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare", help="compare evaluation runs side by side",
                              description="Print evaluation runs side by side and draw their success rates.")
    p.add_argument("runs", nargs="+", metavar="DIR", help="run directories written by `hiergym eval --out DIR`")
    p.add_argument("--png", default="compare.png",
                   help="bar chart of success rates (default compare.png; needs matplotlib)")
    p.add_argument("--no-png", action="store_true", help="do not draw the chart")
    p.set_defaults(func=run_compare)


def paired_lines(runs: Sequence[str], summaries: Sequence[dict[str, Any]]) -> list[str]:
    """Each run's success against the first run's on the same episodes, when they played the same tasks
    (same env, env arguments, split and seed) and kept their per-episode results."""
    same = ("env", "env_args", "split", "seed")
    if len(runs) < 2 or any(any(s.get(k) != summaries[0].get(k) for k in same) for s in summaries[1:]):
        return []
    try:
        results = [load_results(run) for run in runs]
    except FileNotFoundError:
        return []
    lines = [f"paired against {run_label(summaries[0])} on the same episodes (95% interval, McNemar's exact p):"]
    for summary, result in zip(summaries[1:], results[1:], strict=True):
        d = paired_success_difference(results[0], result)
        lines.append(f"  {run_label(summary)}: {100 * d['difference']:+.1f} points [{100 * d['ci95'][0]:+.1f}, "
                     f"{100 * d['ci95'][1]:+.1f}], {d['gained']} episodes gained, {d['lost']} lost of "
                     f"{d['pairs']}, p = {d['p_value']:.2g}")
    return lines


def run_compare(args: argparse.Namespace) -> int:
    summaries = [load_summary(d) for d in args.runs]
    print(summary_markdown(summaries))
    paired = paired_lines(args.runs, summaries)
    if paired:
        print("\n" + "\n".join(paired))
    if not args.no_png:
        if compare_chart(summaries, args.png):
            print(f"chart: {args.png}")
        else:
            print('(install matplotlib for a chart: pip install "hiergym[plot]")')
    return 0
