"""Adapters that let other RL trainers train on hiergym environments (``docs/integrations.md``).

- :mod:`hiergym.integrations.trl`: TRL 1.x's ``GRPOTrainer`` -- an ``environment_factory`` class (the env's
  actions as a tool), a multi-turn ``rollout_func`` and :func:`~hiergym.integrations.trl.task_dataset`
  (needs ``pip install 'hiergym[trl]'``).
- :mod:`hiergym.integrations.verl_agent`: a verl-agent-style environment manager over
  :func:`hiergym.make_group_vec`, with hiergym's exact ``state_key`` anchors for GiGPO.

This package itself holds what both share and loads nothing heavy: the task seeds (the same tasks as
``make_group_vec(...).reset(task_ids=...)``), the text an agent is shown each turn, and the projection from an
LLM's text to an env action (hiergym's own parser, :mod:`hiergym.agents.parsing`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hiergym.agents.parsing import clean_action, match_admissible, parse_action
from hiergym.agents.prompts import FAMILIES, STYLES, executor_prompt, family_for_env

#: How to answer, for the ``full`` style (the format :func:`hiergym.agents.parsing.parse_action` reads).
ANSWER_FORMAT = "Answer with exactly one admissible action inside <action> </action>."


def task_seed(split: str | None, task_id: int) -> int:
    """The reset seed of task ``task_id`` of ``split``: the one ``GroupVecEnv.reset(task_ids=...)`` uses, so a
    task is the same episode here, in ``make_group_vec`` and in every process."""
    from hiergym.envs.vector import fixed_task_seed

    return fixed_task_seed(split, task_id)


def reset_options(split: str | None, task_id: int) -> dict[str, Any]:
    """The reset options of task ``task_id`` of ``split`` (as ``GroupVecEnv.reset(task_ids=...)``)."""
    return {**({"split": split} if split is not None else {}), "task_id": int(task_id)}


def instructions_for(env_id: str | None, family: str | None = None) -> str:
    """The standing instructions of an env family: its role and rules (hiergym's prompts)."""
    spec = FAMILIES[family or family_for_env(env_id)]
    return f"{spec.role}\n{spec.rules}"


def _admissible_list(admissible: Sequence[str] | None, limit: int) -> str | None:
    if not admissible:
        return None
    shown = ", ".join(str(a) for a in list(admissible)[:limit])
    return shown + (f", ... ({len(admissible) - limit} more)" if len(admissible) > limit else "")


def turn_text(
    observation: str,
    info: Mapping[str, Any],
    *,
    family: str = "generic",
    style: str = "full",
    first: bool = False,
    answer_format: str | None = ANSWER_FORMAT,
    max_admissible: int = 60,
) -> str:
    """What the environment says to the agent in one turn of a multi-turn conversation.

    ``full``: the task (first turn), the observation, the admissible actions and ``answer_format``.
    ``compact``: hiergym's compact executor prompt without history (what the built-in ``tiny`` model is
    behaviour-cloned on): the task, the observation without its legend, ``actions: ...``.
    """
    if style not in STYLES:
        raise ValueError(f"unknown prompt style {style!r}; choose one of {', '.join(STYLES)}")
    admissible = info.get("admissible_actions")
    task = str(info.get("task") or "")
    if style == "compact":
        return executor_prompt(family=family, style="compact", task=task, observation=observation,
                               admissible=admissible, max_admissible=max_admissible)
    parts = []
    if first and task and task not in observation:
        parts.append(f"Your task: {task}")
    parts.append(f"Current observation:\n{observation.strip()}")
    actions = _admissible_list(admissible, max_admissible)
    if actions:
        parts.append(f"Admissible actions: [{actions}]")
    if answer_format:
        parts.append(answer_format)
    return "\n".join(parts)


def project_action(text: str, admissible: Sequence[str] | None = None) -> tuple[str, bool]:
    """An LLM's output -> (env action, parsed): hiergym's parser (:func:`~hiergym.agents.parsing.parse_action`).

    The last ``<action>...</action>`` wins (tolerant of case, missing tags, quotes, brackets); a bare answer
    counts only when it is one of the admissible actions. An unreadable output gives ``("", False)``: the
    empty action, which every hiergym env treats as an invalid action -- exactly what hiergym's own agents
    send.
    """
    parsed = parse_action(text, admissible)
    return (parsed.action or "", True) if parsed.ok else ("", False)


def project_actions(
    text_actions: Sequence[str], admissible_actions: Sequence[Sequence[str] | None] | None = None
) -> tuple[list[str], list[int]]:
    """verl-agent's projection signature: texts -> (env actions, validity 1/0), one per copy."""
    admissible = list(admissible_actions) if admissible_actions is not None else [None] * len(text_actions)
    if len(admissible) != len(text_actions):
        raise ValueError(f"got {len(text_actions)} texts and {len(admissible)} admissible lists")
    actions, valids = [], []
    for text, allowed in zip(text_actions, admissible, strict=True):
        action, ok = project_action(text, allowed)
        actions.append(action)
        valids.append(int(ok))
    return actions, valids


def tool_action(argument: object, admissible: Sequence[str] | None = None) -> str:
    """A tool call's ``action`` argument -> env action: already an action (no tags needed), cleaned and put
    in the env's own spelling when it is one of the admissible actions."""
    if not isinstance(argument, str):
        return ""
    text = argument
    if "<" in text and ">" in text:  # a model that wrapped its argument in the tags anyway
        text, _ = project_action(text, admissible)
    action = clean_action(text)
    return match_admissible(action, admissible) or action


__all__ = [
    "ANSWER_FORMAT",
    "instructions_for",
    "project_action",
    "project_actions",
    "reset_options",
    "task_seed",
    "tool_action",
    "turn_text",
]
