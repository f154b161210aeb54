"""What playing episodes records, for every layer above the environments: one :class:`StepRecord` per
generation (the trajectory contract the estimators consume), one :class:`EpisodeResult` per episode (what an
evaluation counts), and the JSON Lines file of results that a run appends to and resumes from.

This module imports nothing else from hiergym: the group vector env (``envs/``), the episode driver, the
trainer and the evaluation harness all build on it (``docs/architecture.md``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

#: The two levels of a hierarchical agent's generations (a flat agent has executor rows only).
LEVELS = ("executor", "planner")


@dataclass
class StepRecord:
    """One generation of an agent (or one env step of a non-LLM agent), see ``docs/training.md``.

    - ``level="executor"`` rows are environment steps: the observation the agent saw, the action text it
      produced, the reward the env returned for it.
    - ``level="planner"`` rows are subgoal decisions of a hierarchical agent. They act on no environment, so
      their ``reward`` is 0; ``step`` is the index of the environment step the subgoal was written before, and
      ``segment`` is the subgoal segment the decision opens.
    """

    group_id: int
    traj_id: int
    step: int
    level: str = "executor"
    segment: int = 0
    anchor: str = ""
    observation: str = ""
    action: str = ""
    reward: float = 0.0
    #: True on the last environment step of the trajectory (terminated or truncated).
    done: bool = False
    #: True when the env flagged the action invalid (or the agent's output could not be parsed).
    invalid: bool = False
    prompt_token_ids: list[int] = field(default_factory=list)
    response_token_ids: list[int] = field(default_factory=list)
    #: Behaviour-policy log-probs of ``response_token_ids``, one per token.
    response_logprobs: list[float] = field(default_factory=list)
    #: Critic value of the state before the action, when a value head was used (else NaN).
    value: float = float("nan")
    #: The seat (role) whose turn this was, in a multi-agent game (``player_i`` -> ``i``); 0 for single-agent
    #: envs. Estimators with ``normalize_by="role"`` take their statistics per role.
    role: int = 0
    #: Constrained decoding: the allowed token ids at each response position (the masks the behaviour log-probs
    #: are under, and the update scores under); None when the response was unconstrained.
    response_allowed: list[list[int]] | None = None


@dataclass
class EpisodeResult:
    """One played episode, as an evaluation counts it (a line of ``results.jsonl``)."""

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


_RESULT_FIELDS = frozenset(f.name for f in fields(EpisodeResult))


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


def results_path(directory: str | os.PathLike[str]) -> Path:
    return Path(directory) / "results.jsonl"


def read_results(path: str | os.PathLike[str], *, repair: bool = False) -> list[EpisodeResult]:
    """The results of a ``results.jsonl`` file, one per complete line, the last result of an episode winning.

    A kill while a line was being written leaves a last line without its newline: it is not a result. With
    ``repair`` that partial tail is cut off the file, so that the next append starts on a fresh line and the
    file holds exactly the results counted here.
    """
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if repair and len(complete) != len(data):
        with path.open("r+b") as handle:
            handle.truncate(len(complete))
    by_episode: dict[int, EpisodeResult] = {}
    for line in complete.decode("utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
            result = EpisodeResult(**{k: v for k, v in row.items() if k in _RESULT_FIELDS})
        except (json.JSONDecodeError, TypeError, AttributeError):
            continue
        by_episode[result.episode] = result
    return [by_episode[e] for e in sorted(by_episode)]


def load_results(directory: str | os.PathLike[str]) -> list[EpisodeResult]:
    """The per-episode results of a run directory (``results.jsonl``)."""
    path = results_path(directory)
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent} holds no results.jsonl (make one with `hiergym eval --out DIR`)")
    return read_results(path)


def append_results(path: str | os.PathLike[str], results: list[EpisodeResult]) -> None:
    """Append results, one line each, in one write, flushed to disk before returning."""
    if not results:
        return
    text = "".join(json.dumps(asdict(r)) + "\n" for r in results)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
