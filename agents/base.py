"""The agent protocol: what the harness and the trainer call, and what an agent hands back.

An agent plays a *batch* of episodes at once (batched acting is what makes LLM agents fast)::

    agent.reset(tasks, infos)                 # one task string and one reset-info dict per episode
    outputs = agent.act(observations, infos)  # one str or Decision per episode of the batch

``infos`` are the environments' ``info`` dicts (``task``, ``admissible_actions``, ``won``, ...; see
``docs/environments.md``). ``act`` returns, for every episode of the batch, either the action text or a
:class:`Decision` that also carries the LLM generations behind the action (the trainer turns those into
``training.trajectory.StepRecord`` rows: planner rows and executor rows).

Episodes of a batch may end at different times: ``act`` is called with the episodes still running only,
identified by ``infos[i]["episode_index"]`` (their position in the ``reset`` batch), which the harness and
the trainer always set. A simple third-party agent with ``act(observation, info) -> str`` (and optionally
``reset(task)``), or a plain function ``f(observation, info) -> str``, becomes an agent with
:func:`as_agent`.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

#: The info key that tells an agent which episode of its ``reset`` batch an observation belongs to.
EPISODE_INDEX = "episode_index"
#: The info key (set at reset by the harness and the trainer) with the episode's seed, for agents that sample.
EPISODE_SEED = "episode_seed"
#: ``Decision.info`` key: the agent could not act for this episode (e.g. its model request failed); the value is
#: the error message, and the driver fails this episode only.
AGENT_ERROR = "agent_error"
#: ``Decision.info`` key: the agent ends its episode here without acting (the episode counts as truncated).
STOP_EPISODE = "stop_episode"


@dataclass
class Completion:
    """What a text backend returns for one prompt (before the agent knows what the text means).

    ``prompt_token_ids`` are the exact tokens the model saw (after any chat template);
    ``response_logprobs`` are the behaviour log-probs of ``response_token_ids`` (see
    :class:`Generation`). Remote backends that cannot report tokens leave the lists empty and fill
    ``prompt_tokens`` / ``response_tokens`` with the counts the server reported.
    """

    prompt_text: str
    response_text: str
    prompt_token_ids: list[int] = field(default_factory=list)
    response_token_ids: list[int] = field(default_factory=list)
    response_logprobs: list[float] = field(default_factory=list)
    #: "stop" (a stop string or end-of-sequence), "length" (max_new_tokens reached) or "error".
    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    response_tokens: int | None = None
    error: str | None = None
    #: The texts the response was constrained to (``action_constraint="admissible"``), else None.
    choices: list[str] | None = None
    #: With ``choices``: the allowed token ids at every response position (the masks the log-probs are under).
    response_allowed: list[list[int]] | None = None

    @property
    def num_prompt_tokens(self) -> int:
        return self.prompt_tokens if self.prompt_tokens is not None else len(self.prompt_token_ids)

    @property
    def num_response_tokens(self) -> int:
        return self.response_tokens if self.response_tokens is not None else len(self.response_token_ids)


@dataclass
class Generation:
    """One LLM generation behind a decision, with what a trainer needs to assign it credit.

    - ``level``: ``"planner"`` (a subgoal) or ``"executor"`` (an action).
    - ``segment``: the index of the subgoal segment this generation belongs to (0 for a flat agent).
    - ``prompt_token_ids`` / ``response_token_ids``: the exact tokens the model saw and sampled.
    - ``response_logprobs``: behaviour log-probs of the sampled tokens, ``log softmax(logits / T)`` at the
      sampling temperature ``T`` actually used (``T = 1`` for greedy decoding), *before* any top-p / top-k
      truncation — exactly what :meth:`hiergym.agents.policy.CausalLMPolicy.sequence_logprobs` recomputes
      with the same temperature, so the importance ratio of an unchanged policy is 1.
    - ``parse_ok``: whether the response followed the output format (an action / a subgoal could be read).
    """

    level: str
    segment: int
    prompt_text: str
    response_text: str
    prompt_token_ids: list[int] = field(default_factory=list)
    response_token_ids: list[int] = field(default_factory=list)
    response_logprobs: list[float] = field(default_factory=list)
    parse_ok: bool = True
    #: Token counts when the backend reports counts but no ids (remote APIs).
    prompt_tokens: int | None = None
    response_tokens: int | None = None
    #: The sampling temperature used (``0.0`` = greedy).
    temperature: float = 1.0
    #: Constrained decoding (:mod:`hiergym.agents.constraint`): the texts the response had to be one of, and
    #: the allowed token ids at each response position (``response_logprobs`` are under those masks).
    choices: list[str] | None = None
    response_allowed: list[list[int]] | None = None

    @classmethod
    def from_completion(
        cls, completion: Completion, *, level: str, segment: int, parse_ok: bool, temperature: float = 1.0
    ) -> Generation:
        return cls(
            level=level,
            segment=segment,
            prompt_text=completion.prompt_text,
            response_text=completion.response_text,
            prompt_token_ids=list(completion.prompt_token_ids),
            response_token_ids=list(completion.response_token_ids),
            response_logprobs=list(completion.response_logprobs),
            parse_ok=parse_ok,
            prompt_tokens=completion.prompt_tokens,
            response_tokens=completion.response_tokens,
            temperature=temperature,
            choices=completion.choices,
            response_allowed=completion.response_allowed,
        )

    @property
    def num_prompt_tokens(self) -> int:
        return self.prompt_tokens if self.prompt_tokens is not None else len(self.prompt_token_ids)

    @property
    def num_response_tokens(self) -> int:
        return self.response_tokens if self.response_tokens is not None else len(self.response_token_ids)

    @property
    def logprob_temperature(self) -> float:
        """The temperature ``response_logprobs`` were computed at (1.0 for greedy decoding)."""
        return self.temperature if self.temperature > 0 else 1.0


@dataclass
class Decision:
    """An action and what produced it.

    ``generations`` is empty for non-LLM agents; a hierarchical agent lists the planner generation (if it
    re-planned before this step) before the executor generation. ``info`` carries diagnostics such as
    ``parse_error`` (the output could not be read; ``action`` is then the raw text, which the env will
    reject as an invalid action), ``subgoal``, ``segment``.
    """

    action: str
    generations: list[Generation] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def parse_ok(self) -> bool:
        return not self.info.get("parse_error")

    @property
    def num_tokens(self) -> int:
        return sum(g.num_prompt_tokens + g.num_response_tokens for g in self.generations)


@runtime_checkable
class TextBackend(Protocol):
    """Anything that turns prompts into completions: :class:`~hiergym.agents.policy.CausalLMPolicy` (local
    Hugging Face models and ``tiny``), :class:`~hiergym.agents.openai_backend.OpenAIChatBackend`.

    Optional keywords the LLM agents pass when ``generate`` accepts them: ``choices`` (constrained decoding)
    and ``seeds`` (one int per prompt: the prompt's own sampling stream, so an episode samples the same
    whatever else is in the call; a backend without it gets one ``seed`` per call)."""

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> list[Completion]: ...


@runtime_checkable
class Agent(Protocol):
    """The batched agent protocol (see the module docstring)."""

    def reset(self, tasks: list[str], infos: list[dict[str, Any]]) -> None: ...

    def act(self, observations: list[str], infos: list[dict[str, Any]]) -> list[str | Decision]: ...

    # Optional: ``attach_envs(envs)`` is called before ``reset`` with the batch's environments (same order) by
    # the harness and the trainer; agents that need the env itself (the expert's planner) implement it.


def as_decision(output: Any) -> Decision:
    """Normalise what an agent returned for one episode into a :class:`Decision`.

    A ``str`` becomes ``Decision(action)``; anything else that is not a Decision (``None``, numbers, lists)
    becomes an action the env will reject, with a ``parse_error`` saying what came back — garbage from an
    agent is an invalid action, never a crash.
    """
    if isinstance(output, Decision):
        if not isinstance(output.action, str):
            return Decision(action=str(output.action), generations=output.generations,
                            info={**output.info, "parse_error": f"non-text action {output.action!r:.80}"})
        return output
    if isinstance(output, str):
        return Decision(action=output)
    return Decision(action="" if output is None else repr(output)[:200],
                    info={"parse_error": f"agent returned {type(output).__name__}, not str: {output!r:.80}"})


def episode_indices(infos: Sequence[dict[str, Any]]) -> list[int]:
    """The ``reset``-batch position of every episode in ``infos`` (positions in order when not given)."""
    return [int(info.get(EPISODE_INDEX, i)) for i, info in enumerate(infos)]


class BatchedAgent:
    """Base class for batched agents: keeps one state object per episode of the reset batch.

    Subclasses implement :meth:`act` and may override :meth:`new_episode_state`.
    """

    def reset(self, tasks: list[str], infos: list[dict[str, Any]]) -> None:
        self.tasks = list(tasks)
        self.states = [self.new_episode_state(task, info) for task, info in zip(tasks, infos, strict=True)]

    def new_episode_state(self, task: str, info: dict[str, Any]) -> Any:
        return None

    def act(self, observations: list[str], infos: list[dict[str, Any]]) -> list[str | Decision]:
        raise NotImplementedError


class SingleEpisodeAdapter(BatchedAgent):
    """Runs a one-episode-at-a-time agent on a batch: one deep copy of the prototype per episode.

    The prototype has ``act(observation, info) -> str`` (or a Decision) and optionally ``reset(task)`` or
    ``reset(task, info)``; copies keep episodes from sharing per-episode state.
    """

    def __init__(self, prototype: Any):
        self.prototype = prototype
        self.copies: list[Any] = []

    def reset(self, tasks: list[str], infos: list[dict[str, Any]]) -> None:
        self.copies = []
        for task, info in zip(tasks, infos, strict=True):
            try:
                agent = copy.deepcopy(self.prototype)
            except Exception:  # noqa: BLE001 - uncopyable agents (threads, sockets) are shared instead
                agent = self.prototype
            reset = getattr(agent, "reset", None)
            if callable(reset):
                _call_with_optional_info(reset, task, info)
            self.copies.append(agent)

    def act(self, observations: list[str], infos: list[dict[str, Any]]) -> list[str | Decision]:
        return [self.copies[i].act(obs, info)
                for i, obs, info in zip(episode_indices(infos), observations, infos, strict=True)]


class FunctionAgent(BatchedAgent):
    """A plain function ``f(observation, info) -> str`` (or ``f(observation)``) as a batched agent."""

    def __init__(self, function: Callable[..., Any]):
        self.function = function
        self.takes_info = _accepts_n_args(function, 2)

    def act(self, observations: list[str], infos: list[dict[str, Any]]) -> list[str | Decision]:
        if self.takes_info:
            return [self.function(obs, info) for obs, info in zip(observations, infos, strict=True)]
        return [self.function(obs) for obs in observations]


def is_batched_agent(obj: Any) -> bool:
    """True when ``obj``'s ``act`` takes lists (the batched protocol), judged by its parameter names."""
    act = getattr(obj, "act", None)
    if not callable(act) or isinstance(obj, type):
        return False
    if isinstance(obj, BatchedAgent):
        return True
    if getattr(obj, "batched", None) is not None:  # an explicit declaration wins
        return bool(obj.batched)
    try:
        names = list(inspect.signature(act).parameters)
    except (TypeError, ValueError):
        return False
    return bool(names) and names[0] in {"observations", "obs_batch", "batch"}


def as_agent(obj: Any) -> Agent:
    """Wrap anything agent-like into the batched protocol.

    - a batched agent (a :class:`BatchedAgent`, an object whose ``act`` first parameter is named
      ``observations``, or one with ``batched = True``) is returned as is;
    - an object with ``act(observation, info)`` (and optional ``reset(task)``) is run once per episode;
    - a plain callable ``f(observation, info)`` or ``f(observation)`` becomes a :class:`FunctionAgent`.
    """
    if is_batched_agent(obj):
        if not callable(getattr(obj, "reset", None)):
            obj.reset = lambda tasks, infos: None  # type: ignore[attr-defined]
        return obj
    if callable(getattr(obj, "act", None)) and not isinstance(obj, type):
        return SingleEpisodeAdapter(obj)
    if callable(obj) and not isinstance(obj, type):
        return FunctionAgent(obj)
    raise TypeError(
        f"{obj!r} is not an agent: give an object with act(observation, info) -> str (and optionally "
        "reset(task)), a batched agent with act(observations, infos) -> list, or a function "
        "f(observation, info) -> str"
    )


def _accepts_n_args(function: Callable[..., Any], n: int) -> bool:
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= n


def _call_with_optional_info(function: Callable[..., Any], task: str, info: dict[str, Any]) -> Any:
    return function(task, info) if _accepts_n_args(function, 2) else function(task)
