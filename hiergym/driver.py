"""The episode driver: the one loop that plays a batch of episodes with a batched agent.

Evaluation (``benchmarks/harness.py``), RL rollouts (``training/rollout.py``) and behaviour-cloning
demonstrations (``training/demonstrations.py``) all play episodes through :func:`play_episodes`::

    batch = EnvEpisodes(envs, resets=[{"seed": s, "options": {"split": "eval_in", "task_id": t}}, ...])
    played = play_episodes(batch, agent)
    played.results      # one EpisodeResult per episode
    played.steps        # every step as played: the agent's Decision and the env's Transition
    step_records(played.steps)   # the trajectory contract's StepRecord rows (planner and executor)

The loop: reset every episode, ``agent.reset``, then while episodes run: ``agent.act`` on the running ones,
each output turned into a :class:`~hiergym.agents.base.Decision`, one env step per running episode, the
step's bookkeeping (result counters, transcript line), and the episode ends on ``terminated``, ``truncated``,
``max_steps``, an error, or an agent that ends it (``Decision.info["stop_episode"]``).

An episode source is either a list of Gymnasium envs with one reset each (:class:`EnvEpisodes`: evaluation
and demonstrations) or a :class:`~hiergym.envs.vector.GroupVecEnv` (:class:`GroupEpisodes`: B tasks x G
copies, for RL). The driver sits above the agents and the envs and below training and evaluation
(``docs/architecture.md``).
"""

from __future__ import annotations

import concurrent.futures as futures
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hiergym.agents.base import AGENT_ERROR, EPISODE_INDEX, STOP_EPISODE, Decision, as_decision
from hiergym.records import EpisodeResult, StepRecord, to_jsonable

#: Final-info keys read as the episode's tool calls / tool cost (the first present wins). ``tool_calls_used`` and
#: ``tool_cost`` come from the ToolBudget wrapper, ``tool_calls`` from envs that count their own.
TOOL_CALL_KEYS = ("tool_calls_used", "tool_calls")
COST_KEYS = ("tool_cost", "cost")
#: Info keys read as the episode's task type, for the per-type breakdown.
TASK_TYPE_KEYS = ("task_type", "question_kind", "category")
#: The error of a group vector env copy that an unequal allocation left out of the batch (no episode played).
IDLE_COPY = "idle copy: no task allocated to it in this batch"
#: Longest action text written into a transcript.
MAX_RECORDED_ACTION = 5000

#: ``reward_fn(reward, info, decision, episode) -> reward``: shaping applied to every env step.
RewardFn = Callable[[float, dict, Decision, int], float]


class StepTimeout(Exception):
    """An ``agent.act`` call outlasted the driver's ``act_timeout``."""


@dataclass
class Transition:
    """What one env step did for one episode."""

    prev_observation: str
    observation: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    #: The env flagged the action invalid (``info["action_valid"] is False``).
    invalid: bool
    won: bool
    #: The step failed (the env raised, its worker died): the episode is over.
    error: str | None = None
    group_id: int = 0
    traj_id: int = 0
    #: Index of the step within its trajectory: 0 for the first action after reset.
    step: int = 0
    #: ``state_key`` before the action (the GiGPO anchor state).
    anchor: str = ""


@dataclass
class PlayedStep:
    """One step of one episode: the agent's decision and what the env did with it."""

    episode: int
    decision: Decision
    transition: Transition
    #: The reward after the driver's shaping (``reward_fn`` and the invalid-action penalty).
    reward: float


@dataclass
class PlayedEpisodes:
    results: list[EpisodeResult]
    steps: list[PlayedStep] = field(default_factory=list)
    #: One transcript per episode (JSON-ready dicts) when ``play_episodes(transcripts=True)``.
    transcripts: list[list[dict[str, Any]]] | None = None


# --------------------------------------------------------------------------------------- episode sources
def _state_key(info: dict[str, Any]) -> str:
    return str(info.get("state_key", ""))


class EnvEpisodes:
    """One episode per env of ``envs``: episode ``k`` resets ``envs[k]`` with ``resets[k]`` (``seed``,
    ``options``) and is its own group and trajectory."""

    def __init__(self, envs: Sequence[Any], resets: Sequence[dict[str, Any]]):
        if len(envs) != len(resets):
            raise ValueError(f"{len(envs)} envs for {len(resets)} resets")
        self.envs = list(envs)
        self.resets = [dict(r) for r in resets]
        self._observations: list[str] = [""] * len(envs)
        self._infos: list[dict[str, Any]] = [{} for _ in envs]
        self._steps = [0] * len(envs)

    def __len__(self) -> int:
        return len(self.envs)

    def reset(self) -> tuple[list[str], list[dict[str, Any]], list[str | None]]:
        errors: list[str | None] = []
        for k, (env, reset) in enumerate(zip(self.envs, self.resets, strict=True)):
            try:
                obs, info = env.reset(**reset)
            except Exception as exc:  # noqa: BLE001 - an env that cannot reset fails its episode only
                errors.append(f"env reset failed: {type(exc).__name__}: {exc}")
                continue
            self._observations[k], self._infos[k] = str(obs), dict(info)
            errors.append(None)
        return list(self._observations), list(self._infos), errors

    def step(self, actions: dict[int, str]) -> dict[int, Transition]:
        transitions = {}
        for k, action in actions.items():
            before, anchor = self._observations[k], _state_key(self._infos[k])
            try:
                obs, reward, terminated, truncated, info = self.envs[k].step(action)
            except Exception as exc:  # noqa: BLE001 - an env that raises fails this episode only
                transitions[k] = Transition(before, before, 0.0, True, False, dict(self._infos[k]), False, False,
                                            error=f"env step raised {type(exc).__name__}: {exc}",
                                            group_id=k, traj_id=k, step=self._steps[k], anchor=anchor)
                continue
            info = dict(info)
            transitions[k] = Transition(before, str(obs), float(reward), bool(terminated), bool(truncated), info,
                                        invalid=not bool(info.get("action_valid", True)),
                                        won=bool(info.get("won", False)), group_id=k, traj_id=k,
                                        step=self._steps[k], anchor=anchor)
            self._observations[k], self._infos[k] = str(obs), info
            self._steps[k] += 1
        return transitions

    def view(self, k: int) -> tuple[str, dict[str, Any]]:
        return self._observations[k], self._infos[k]


class GroupEpisodes:
    """The copies of a :class:`~hiergym.envs.vector.GroupVecEnv` as episodes (copy ``i`` is episode ``i``);
    ``task_ids`` resets the groups to fixed tasks of the env's split, otherwise new tasks are drawn.
    ``group_sizes`` (with ``task_ids``) gives the groups unequal sizes; copies it leaves idle play no episode
    (their result carries ``IDLE_COPY`` as its error and they have no steps)."""

    envs = None  # the copies may live in worker processes

    def __init__(self, vec_env: Any, task_ids: Sequence[int] | None = None,
                 group_sizes: Sequence[int] | None = None):
        self.vec_env = vec_env
        self.task_ids = task_ids
        self.group_sizes = group_sizes

    def __len__(self) -> int:
        return int(self.vec_env.num_envs)

    def reset(self) -> tuple[list[str], list[dict[str, Any]], list[str | None]]:
        if self.group_sizes is None:
            observations, infos = self.vec_env.reset(task_ids=self.task_ids)
            return list(observations), [dict(i) for i in infos], [None] * len(observations)
        observations, infos = self.vec_env.reset(task_ids=self.task_ids, group_sizes=self.group_sizes)
        errors = [None if running else IDLE_COPY for running in self.vec_env.running]
        return list(observations), [dict(i) for i in infos], errors

    def step(self, actions: dict[int, str]) -> dict[int, Transition]:
        vec = self.vec_env
        submitted: list[Any] = [None] * vec.num_envs
        for k, action in actions.items():
            submitted[k] = action
        out = vec.step(submitted)
        transitions = {}
        for r in np.flatnonzero(out.active):
            k = int(out.indices[r])
            info = out.infos[r]
            transitions[k] = Transition(
                out.prev_observations[r], vec.observations[k], float(out.rewards[r]), bool(out.terminated[r]),
                bool(out.truncated[r]), info, invalid=bool(out.invalid[r]), won=bool(out.won[r]),
                error=info.get("error", "step failed") if out.error[r] else None, group_id=int(out.group_id[r]),
                traj_id=int(out.traj_id[r]), step=int(out.step[r]), anchor=str(out.anchor[r]))
        return transitions

    def view(self, k: int) -> tuple[str, dict[str, Any]]:
        # Rows of masked copies repeat their last view; the env's attributes hold every copy's current one.
        return self.vec_env.observations[k], self.vec_env.infos[k]


# ------------------------------------------------------------------------------------------- the loop
class AgentCaller:
    """Calls the agent, in a helper thread when ``timeout`` is set so that a call past it can be abandoned
    (the hung call keeps its thread; a fresh thread serves the next calls, and ``timed_out`` tells the owner
    to build a fresh agent)."""

    def __init__(self, timeout: float | None = None):
        self.timeout = timeout
        self.pool: futures.ThreadPoolExecutor | None = None
        self.timed_out = False

    def __call__(self, function: Callable[..., Any], *args: Any) -> Any:
        if not self.timeout:
            return function(*args)
        if self.pool is None:
            self.pool = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hiergym-agent")
        future = self.pool.submit(function, *args)
        try:
            return future.result(timeout=self.timeout)
        except futures.TimeoutError:
            self.close()
            self.timed_out = True
            raise StepTimeout(f"agent step took longer than {self.timeout:g} s (step timeout)") from None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None


def _numeric(info: dict[str, Any], keys: Sequence[str]) -> float | None:
    for key in keys:
        value = info.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(float(value)):
            return float(value)
    return None


def task_type(*infos: dict[str, Any]) -> str | None:
    """The episode's task type from the first info that names one (``TASK_TYPE_KEYS``)."""
    for info in infos:
        for key in TASK_TYPE_KEYS:
            if info.get(key) is not None:
                return str(info[key])
    return None


def play_episodes(
    source: EnvEpisodes | GroupEpisodes,
    agent: Any,
    *,
    results: Sequence[EpisodeResult] | None = None,
    extra_infos: Sequence[dict[str, Any]] | None = None,
    observation_notes: Sequence[str] | None = None,
    reward_fn: RewardFn | None = None,
    invalid_action_penalty: float = 0.0,
    max_steps: int | None = None,
    call: Callable[..., Any] | None = None,
    catch_agent_errors: bool = False,
    transcripts: bool = False,
    save_prompts: bool = False,
    split: str | None = None,
) -> PlayedEpisodes:
    """Play every episode of ``source`` to its end with the batched ``agent`` (see the module docstring).

    - ``results``: one :class:`EpisodeResult` per episode to fill (its ``episode``, ``seed`` and ``task_id``
      are the caller's); default: episode ``k`` with seed and task id unknown.
    - ``extra_infos``: merged into the infos the agent sees for episode ``k`` at every step (e.g. its seed, an
      HBPO token budget); ``observation_notes``: a line appended to every observation it sees.
    - ``reward_fn`` shapes every env reward; ``invalid_action_penalty`` is subtracted from invalid actions'.
    - ``max_steps``: an episode still running after that many steps ends (truncated).
    - ``call(function, *args)`` calls the agent (e.g. an :class:`AgentCaller` with a timeout).
    - ``catch_agent_errors``: an agent that raises, or returns something that is not an action, fails the
      episodes of that call (recorded in ``error``) and the rest go on; otherwise the exception propagates.
      An output whose ``Decision.info`` carries ``agent_error`` always fails its own episode only.
    - ``transcripts``: also build one JSON-ready transcript per episode (reset, step, error and end lines).
    """
    call = call or (lambda function, *args: function(*args))
    started = time.perf_counter()
    n = len(source)
    results = list(results) if results is not None else [EpisodeResult(episode=k, seed=0, task_id=None)
                                                          for k in range(n)]
    extra = list(extra_infos) if extra_infos is not None else [{} for _ in range(n)]
    lines: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    steps: list[PlayedStep] = []

    observations, infos, errors = source.reset()
    running: list[int] = []
    for k in range(n):
        if errors[k] is not None:
            results[k].error = errors[k]
            continue
        results[k].task = str(infos[k].get("task", ""))
        results[k].task_type = task_type(infos[k])
        if transcripts:
            lines[k].append({"type": "reset", "episode": results[k].episode, "seed": results[k].seed,
                             "task_id": results[k].task_id, "split": split, "task": results[k].task,
                             "observation": observations[k], "info": to_jsonable(infos[k])})
        running.append(k)

    def agent_infos(rows: Sequence[int]) -> list[dict[str, Any]]:
        return [{**infos[k], **extra[k], EPISODE_INDEX: int(k)} for k in rows]

    def agent_observation(k: int) -> str:
        return observations[k] + ("\n" + observation_notes[k] if observation_notes else "")

    def fail(rows: Sequence[int], message: str) -> None:
        for k in rows:
            results[k].error = message
            if transcripts:
                lines[k].append({"type": "error", "t": results[k].steps, "error": message})
        running[:] = [k for k in running if k not in rows]

    failed = object()

    def guarded(function: Callable[..., Any], *args: Any, rows: Sequence[int], what: str) -> Any:
        try:
            return call(function, *args)
        except Exception as exc:
            if not catch_agent_errors:
                raise
            fail(rows, exc.args[0] if isinstance(exc, StepTimeout) else f"agent {what} {type(exc).__name__}: {exc}")
            return failed

    def start() -> None:
        attach = getattr(agent, "attach_envs", None)
        if callable(attach) and source.envs is not None:
            attach(source.envs)
        tasks = [str(infos[k].get("task", "")) if k in running else "" for k in range(n)]
        agent.reset(tasks, agent_infos(range(n)))

    if running:
        guarded(start, rows=list(running), what="reset failed:")

    while running:
        rows = list(running)
        outputs = guarded(agent.act, [agent_observation(k) for k in rows], agent_infos(rows), rows=rows,
                          what="raised")
        if outputs is failed:
            continue
        if not isinstance(outputs, list | tuple) or len(outputs) != len(rows):
            got = f"{len(outputs)} outputs" if isinstance(outputs, list | tuple) else type(outputs).__name__
            message = f"agent returned {got} for {len(rows)} episode(s); act must return one action per episode"
            if not catch_agent_errors:
                raise TypeError(message)
            fail([k for k in rows if k in running], message)
            continue
        decisions: dict[int, Decision] = {}
        for k, output in zip(rows, outputs, strict=True):
            if not isinstance(output, str | Decision):
                if catch_agent_errors:
                    fail([k], f"agent returned {type(output).__name__} instead of an action (str or Decision): "
                              f"{output!r:.120}")
                    continue
            decision = as_decision(output)
            result = results[k]
            for generation in decision.generations:
                result.generations += 1
                result.planner_generations += generation.level == "planner"
                result.prompt_tokens += generation.num_prompt_tokens
                result.response_tokens += generation.num_response_tokens
            if decision.info.get(AGENT_ERROR):
                fail([k], str(decision.info[AGENT_ERROR]))
                continue
            if decision.info.get(STOP_EPISODE):
                result.truncated = True
                running.remove(k)
                continue
            if decision.info.get("parse_error"):
                result.parse_errors += 1
            decisions[k] = decision
        transitions = source.step({k: d.action for k, d in decisions.items()})
        for k in sorted(transitions):
            t, decision, result = transitions[k], decisions[k], results[k]
            if t.error is not None and source.envs is not None:
                fail([k], t.error)
                continue
            reward = t.reward
            if reward_fn is not None:
                reward = float(reward_fn(reward, t.info, decision, k))
            if t.invalid:
                reward -= invalid_action_penalty
            steps.append(PlayedStep(k, decision, t, reward))
            result.steps += 1
            result.total_reward += reward
            valid = not t.invalid and not decision.info.get("parse_error")
            result.invalid_actions += not valid
            if t.error is not None:
                result.error = t.error
            observations[k], infos[k] = source.view(k)
            if transcripts:
                lines[k].append(_transcript_step(result.steps, decision, t, valid, save_prompts))
            capped = max_steps is not None and result.steps >= max_steps
            if t.terminated or t.truncated or capped or t.error is not None:
                result.success = t.won
                result.truncated = bool(t.truncated or (capped and not t.terminated))
                result.tool_calls = _numeric(t.info, TOOL_CALL_KEYS)
                result.cost = _numeric(t.info, COST_KEYS)
                result.task_type = result.task_type or task_type(t.info)
                running.remove(k)
    elapsed = time.perf_counter() - started
    for k, result in enumerate(results):
        result.wall_time_s = round(elapsed, 4)
        if transcripts:
            lines[k].append({"type": "end", **asdict(result)})
    return PlayedEpisodes(results=results, steps=steps, transcripts=lines if transcripts else None)


def _transcript_step(t: int, decision: Decision, transition: Transition, valid: bool,
                     save_prompts: bool) -> dict[str, Any]:
    # A megabyte of junk from an agent is an invalid action, not a megabyte in every transcript.
    action = decision.action
    shown = action if len(action) <= MAX_RECORDED_ACTION else \
        action[:MAX_RECORDED_ACTION] + f"... ({len(action)} characters)"
    record = {"type": "step", "t": t, "action": shown, "reward": transition.reward,
              "terminated": transition.terminated, "truncated": transition.truncated, "action_valid": valid,
              "observation": transition.observation}
    if decision.generations:
        record["generations"] = [
            {"level": g.level, "segment": g.segment, "response": g.response_text, "parse_ok": g.parse_ok,
             "prompt_tokens": g.num_prompt_tokens, "response_tokens": g.num_response_tokens,
             **({"prompt": g.prompt_text} if save_prompts else {})}
            for g in decision.generations
        ]
    if decision.info:
        record["decision"] = to_jsonable(decision.info)
    record["info"] = to_jsonable({key: v for key, v in transition.info.items() if key != "admissible_actions"})
    return record


# ---------------------------------------------------------------------------------------- trajectory rows
def step_records(steps: Sequence[PlayedStep]) -> list[StepRecord]:
    """The trajectory contract's rows of played steps: one row per generation (planner rows with reward 0,
    executor rows with the step's reward), a plain executor row for a step of a non-LLM agent."""
    records: list[StepRecord] = []
    for played in steps:
        t, decision = played.transition, played.decision
        done = bool(t.terminated or t.truncated)
        base = dict(group_id=t.group_id, traj_id=t.traj_id, step=t.step, anchor=t.anchor,
                    observation=t.prev_observation, done=done)
        # The last executor generation chose the env action; an earlier one in the same step (an executor that
        # declared its subgoal done or failed, honoured with a new plan) took no env action: no env reward.
        acting = max((k for k, g in enumerate(decision.generations) if g.level == "executor"), default=-1)
        for k, generation in enumerate(decision.generations):
            is_acting = k == acting
            records.append(StepRecord(
                **base, level=generation.level, segment=int(generation.segment),
                action=decision.action if is_acting else generation.response_text,
                reward=played.reward if is_acting else 0.0,
                invalid=(bool(t.invalid or not generation.parse_ok) if is_acting
                         else generation.level == "planner" and not generation.parse_ok),
                prompt_token_ids=list(generation.prompt_token_ids),
                response_token_ids=list(generation.response_token_ids),
                response_logprobs=list(generation.response_logprobs),
                response_allowed=generation.response_allowed,
            ))
        if acting < 0:  # a non-LLM agent: the env step still is a row
            segment = decision.generations[-1].segment if decision.generations else 0
            records.append(StepRecord(**base, level="executor", segment=segment, action=decision.action,
                                      reward=played.reward, invalid=bool(t.invalid)))
    return records


# ------------------------------------------------------------------------------------ evaluation episodes
def uses_task_ids(env: Any) -> bool:
    """Whether ``env`` takes ``options={"split", "task_id"}`` at reset (every hiergym env, and any env with an
    expert): evaluation episode ``i`` is then the ``i``-th task of the split."""
    spec = getattr(env, "spec", None)
    return bool(spec and str(spec.id).startswith("hiergym/")) or hasattr(env.unwrapped, "expert_plan")


def play_evaluation(
    envs: Sequence[Any],
    agent: Any,
    episode_ids: Sequence[int],
    *,
    seed: int,
    split: str,
    max_steps: int,
    call: Callable[..., Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    save_prompts: bool = False,
) -> list[EpisodeResult]:
    """Play evaluation episodes ``episode_ids``, one per env of ``envs``: episode ``i`` resets with seed
    ``seed + i`` and (for envs with task ids) ``options={"split": split, "task_id": i}``, so every agent
    evaluated on a split meets the same tasks. The agent sees ``episode_seed`` in every info. An agent that
    raises, hangs past ``call``'s timeout or returns garbage fails its episodes only. With ``out``, each
    episode's transcript is written to ``out/episodes/episode_NNNNNN.jsonl``."""
    from hiergym.agents.base import EPISODE_SEED

    results, resets = [], []
    for episode, env in zip(episode_ids, envs, strict=False):
        with_task = uses_task_ids(env)
        results.append(EpisodeResult(episode=episode, seed=seed + episode, task_id=episode if with_task else None))
        resets.append({"seed": seed + episode, "options": {"split": split, "task_id": episode}} if with_task
                      else {"seed": seed + episode})
    played = play_episodes(EnvEpisodes(envs[: len(results)], resets), agent, results=results,
                           extra_infos=[{EPISODE_SEED: r.seed} for r in results], max_steps=max_steps, call=call,
                           catch_agent_errors=True, transcripts=out is not None, save_prompts=save_prompts,
                           split=split)
    if out is not None:
        for result, lines in zip(played.results, played.transcripts or [], strict=True):
            write_transcript(Path(out), result.episode, lines)
    return played.results


def transcript_path(out: Path, episode: int) -> Path:
    return out / "episodes" / f"episode_{episode:06d}.jsonl"


def write_transcript(out: Path, episode: int, lines: list[dict[str, Any]]) -> None:
    path = transcript_path(out, episode)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w") as handle:
        for line in lines:
            handle.write(json.dumps(line) + "\n")
    os.replace(tmp, path)  # a killed run never leaves a half transcript under the final name
