"""Prompts for LLM agents, per environment family, in the style the agentic-RL literature uses.

An executor prompt states the role and the rules of the environment, the task, the current subgoal (for a
hierarchical agent), the number of steps taken and a window of recent steps, the current observation and the
admissible actions, and asks for reasoning then exactly one action::

    <think> ... </think><action> one admissible action </action>

(the format of verl-agent / GiGPO's prompts for ALFWorld, WebShop and Sokoban). A planner prompt shows the same
state plus the subgoals so far and asks for ``<think> ... </think><subgoal> ... </subgoal>``.

Two styles: ``"full"`` (the above, for real instruct models) and ``"compact"`` (a few lines without the
instructions and without ``<think>``: the built-in ``tiny`` model reads every byte, on a CPU). Families:
``sokoban``, ``alfworld``, ``webshop``, ``toolqa`` and ``generic`` (any other text env); pick one with
:func:`family_for_env`. :func:`format_action_response` / :func:`format_subgoal_response` write a response in
the same format (behaviour-cloning demonstrations).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from hiergym.agents.parsing import SUBGOAL_DONE, SUBGOAL_FAILED

STYLES = ("full", "compact")


@dataclass(frozen=True)
class Step:
    """One past step in an agent's history: the action and the observation it led to."""

    action: str
    observation: str
    valid: bool = True


@dataclass(frozen=True)
class SubgoalRecord:
    """A finished (or current) subgoal and how it ended: ``done``, ``failed``, ``timeout`` or ``current``."""

    subgoal: str
    outcome: str
    steps: int


@dataclass(frozen=True)
class EnvPrompt:
    family: str
    role: str
    rules: str
    think_hint: str
    subgoal_example: str
    #: Lines of the observation dropped in compact prompts (static legends the model learns anyway).
    compact_drop_prefixes: tuple[str, ...] = field(default_factory=tuple)
    #: Free-text actions the env accepts but ``admissible_actions`` does not list (it cannot enumerate them),
    #: with ``<...>`` placeholders: full prompts say the admissible list is partial and show these too.
    action_templates: tuple[str, ...] = field(default_factory=tuple)
    #: Compact hierarchical prompts put the observation before the subgoal lines: where observations of one
    #: task share a long start (a Sokoban room's rows above the player), the rollout's prefix cache and the
    #: update's packed scoring compute it once for every subgoal (the subgoal first splits them at its line).
    subgoal_after_state: bool = False

    @property
    def planner_role(self) -> str:
        return (self.role.replace("an expert agent", "the planner of an agent", 1)
                if "an expert agent" in self.role else self.role)


FAMILIES: dict[str, EnvPrompt] = {
    "sokoban": EnvPrompt(
        family="sokoban",
        role="You are an expert agent playing Sokoban, a puzzle on a grid.",
        rules=(
            "Symbols: # wall, _ floor, O target, X box, V box on target, P player, S player on target.\n"
            "Rules: the player moves up, down, left or right. Walking into a box pushes it one square if the "
            "square behind it is free. Boxes cannot be pulled, so a box pushed into a corner or along a wall "
            "away from every target is stuck for good. The puzzle is solved when every box is on a target. "
            "Boxes are numbered from 1 row by row from the top, left to right."
        ),
        think_hint="where the player, the boxes and the targets are, and which push brings a box closer to a "
                   "target without trapping it",
        subgoal_example="push box 2 left 3 times",
        compact_drop_prefixes=("Legend:",),
        subgoal_after_state=True,
    ),
    "alfworld": EnvPrompt(
        family="alfworld",
        role="You are an expert agent operating in a text-based household environment (ALFWorld).",
        rules=(
            "Commands follow ALFWorld's grammar, e.g. go to {receptacle}, open/close {receptacle}, take {object} "
            "from {receptacle}, move {object} to {receptacle}, heat/cool/clean {object} with {appliance}, use "
            "{lamp}, examine {thing}, look, inventory. Objects are only visible where you are."
        ),
        think_hint="what the task needs, where the objects probably are, and what is left to do",
        subgoal_example="find an apple: go to the countertops and the fridge until you see one",
        compact_drop_prefixes=("-= Welcome",),
    ),
    "webshop": EnvPrompt(
        family="webshop",
        role="You are an expert shopping agent on a web store (WebShop).",
        rules=(
            "Actions: search[your query] on the search page, and click[button] for a button shown on the page "
            "(a product, an option such as a size or colour, < Prev, Next >, Back to Search, Description, Buy "
            "Now). Buy the product that matches every attribute, option and the price limit of the instruction."
        ),
        think_hint="which attributes, options and price the instruction asks for and which product matches",
        subgoal_example="search for the product with its key attributes",
    ),
    "toolqa": EnvPrompt(
        family="toolqa",
        role="You are an expert agent answering a question with tools.",
        rules=(
            "Each action is one tool call written as the observation shows; tool calls cost budget, so call a "
            "tool only when you need its result. When you know the answer, give it with the answer action."
        ),
        think_hint="what you already know, what is missing, and which single tool call finds it",
        subgoal_example="look up the value the question needs in the table",
        # admissible_actions lists lookup[...] for the entities seen so far; these cannot be enumerated.
        action_templates=("search[<query>]", "calculate[<expression>]", "answer[<answer>]"),
    ),
    "household": EnvPrompt(
        family="household",
        role="You are an expert agent doing a household task together with a teammate.",
        rules=("Each turn you send one command; you see only your own room. Messages to your teammate, "
               "delivered next round, do not appear in the admissible list."),
        think_hint="what the task needs, what your teammate can see or do, and what is left to do",
        subgoal_example="find the object and tell your teammate where it is",
        # say[...] takes free text, so admissible_actions cannot list it.
        action_templates=("say[<message>]",),
    ),
    "generic": EnvPrompt(
        family="generic",
        role="You are an expert agent acting in a text environment.",
        rules="Each turn you send one command; the environment answers with an observation.",
        think_hint="the current situation and what brings you closer to the task",
        subgoal_example="reach the next milestone towards the task",
    ),
}


def family_for_env(env_id: str | None) -> str:
    """The prompt family of an env id (by name: sokoban, alfworld, webshop, toolqa, household; else
    ``generic``)."""
    key = (env_id or "").lower()
    for family in ("sokoban", "alfworld", "webshop", "toolqa", "household"):
        if family in key:
            return family
    return "generic"


def env_prompt(family: str) -> EnvPrompt:
    """The prompt specification of a family (its role, rules and free-text action templates)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown prompt family {family!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[family]



def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"unknown prompt style {style!r}; choose one of {', '.join(STYLES)}")


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0] if text.strip() else ""


def _admissible_text(admissible: Sequence[str] | None, limit: int) -> str | None:
    if not admissible:
        return None
    shown = [str(a) for a in admissible[:limit]]
    more = f", ... ({len(admissible) - limit} more)" if len(admissible) > limit else ""
    return ", ".join(shown) + more


def compact_observation(family: str, observation: str) -> str:
    """The observation without static lines (legends) the compact style drops."""
    drops = env_prompt(family).compact_drop_prefixes
    lines = [line for line in observation.strip().split("\n") if not line.startswith(drops)] if drops else \
        observation.strip().split("\n")
    return "\n".join(lines)


#: The history line's feedback, in full prompts, for a step whose output could not be read as an action.
FORMAT_FEEDBACK = ("wrong format, nothing was done: write your reasoning inside <think> </think>, then exactly "
                   "one action inside <action> </action>")


def _history_lines(history: Sequence[Step], window: int, limit: int, style: str = "compact") -> list[str]:
    """``k. action -> first line of what happened`` for the last ``window`` steps.

    A step without an action (its output could not be read) shows ``(no readable action) -> <the env's
    answer>`` in the compact style (what the tiny model's training rollouts saw) and ``(no readable action)
    -> wrong format ...`` (what to write instead) in the full style.
    """
    if window <= 0 or not history:
        return []
    first = len(history) - min(window, len(history))
    lines = []
    for k, step in enumerate(history[first:], start=first + 1):
        result = _shorten(_first_line(step.observation), limit)
        if not step.action and style == "full":
            result = FORMAT_FEEDBACK
        action = step.action or "(no readable action)"
        lines.append(f"{k}. {action} -> {result}")
    return lines


_PLACEHOLDER = re.compile(r"<[a-z][a-z _-]*>")


def _actions_part(spec: EnvPrompt, actions: str | None, label: str) -> str | None:
    """The full-style block that shows the actions: the admissible list, and the templates it leaves out."""
    if not spec.action_templates:
        return f"{label}: [{actions}]" if actions else None
    templates = ", ".join(spec.action_templates)
    if not actions:
        return f"Actions (replace each <...> with your own text): {templates}"
    return (f"{label} include: [{actions}]\n"
            f"Other actions (replace each <...> with your own text): {templates}")


def _action_instruction(spec: EnvPrompt, actions: str | None) -> str:
    if spec.action_templates:
        return ("Then give exactly one action inside <action> </action>: one of the admissible actions, or one "
                "of the other actions with its <...> replaced by your own text.")
    if not actions:
        return "Then give exactly one action inside <action> </action>."
    fill = " (replace a placeholder such as <query> with your own text)" if _PLACEHOLDER.search(actions) else ""
    return f"Then give exactly one admissible action{fill} inside <action> </action>."


def split_system_prompt(prompt: str) -> tuple[str | None, str]:
    """``(system instructions, user content)`` of a prompt built by :func:`executor_prompt` /
    :func:`planner_prompt`.

    A full-style prompt starts with its family's role and rules (the agent's instructions, which belong in a
    chat model's system message); anything else (compact prompts, other text) is ``(None, prompt)``. The
    prompts themselves are unchanged: backends with chat roles split them here.
    """
    for spec in FAMILIES.values():
        for role in (spec.role, spec.planner_role):
            head = f"{role}\n\n{spec.rules}\n\n"
            if prompt.startswith(head):
                return head.rstrip("\n"), prompt[len(head):]
    return None, prompt


def executor_prompt(
    *,
    family: str = "generic",
    style: str = "full",
    task: str,
    observation: str,
    admissible: Sequence[str] | None,
    history: Sequence[Step] = (),
    history_window: int = 3,
    subgoal: str | None = None,
    max_admissible: int = 60,
    list_actions: bool = True,
) -> str:
    """The prompt for choosing the next action (a flat agent, or the executor with ``subgoal``).

    The compact executor sees its subgoal instead of the task (the planner holds the task): a hierarchical
    decision's prompt is shorter than the flat agent's. ``list_actions=False`` leaves the admissible list out
    (under constrained decoding the sampler holds it; the observation's own text is kept).
    """
    _check_style(style)
    spec = env_prompt(family)
    actions = _admissible_text(admissible, max_admissible if style == "full" else 30) if list_actions else None
    if style == "compact":
        lines = []
        obs = compact_observation(family, observation)
        if task and task not in obs and subgoal is None:
            lines.append(f"task: {task}")
        subgoal_line = [f"subgoal: {subgoal}"] if subgoal is not None else []
        if not spec.subgoal_after_state:
            lines += subgoal_line
        past = _history_lines(history, history_window, 60)
        if past:
            lines.append("recent: " + " | ".join(p.split(". ", 1)[1] for p in past))
        lines.append(obs)
        if actions:
            lines.append(f"actions: {actions}")
        if spec.subgoal_after_state:
            lines += subgoal_line
        return "\n".join(lines) + "\n"
    parts = [spec.role, spec.rules]
    if task:
        parts.append(f"Your task: {task}")
    if subgoal is not None:
        parts.append(f"Your current subgoal (from your planner): {subgoal}")
    past = _history_lines(history, history_window, 200, style)
    if past:
        parts.append(f"You have taken {len(history)} step(s) so far. Your last {len(past)} step(s) "
                     "(action -> what happened):\n" + "\n".join(past))
    else:
        parts.append("This is your first step.")
    parts.append(f"Current observation:\n{observation.strip()}")
    shown = _actions_part(spec, actions, "Admissible actions")
    if shown:
        parts.append(shown)
    instruction = (
        f"Now choose your next action. First think step by step about {spec.think_hint}; put this reasoning "
        "inside <think> </think>. " + _action_instruction(spec, actions)
    )
    if subgoal is not None:
        instruction += (
            f" If your action completes the subgoal, write {SUBGOAL_DONE} before the <action>. If the subgoal "
            f"cannot be achieved, write {SUBGOAL_FAILED} instead of an action and your planner will give you "
            "a new one."
        )
    parts.append(instruction)
    return "\n\n".join(parts)


def planner_prompt(
    *,
    family: str = "generic",
    style: str = "full",
    task: str,
    observation: str,
    admissible: Sequence[str] | None,
    history: Sequence[Step] = (),
    history_window: int = 3,
    subgoals: Sequence[SubgoalRecord] = (),
    max_admissible: int = 60,
) -> str:
    """The prompt for writing the next subgoal, given the subgoals so far and how they ended."""
    _check_style(style)
    spec = env_prompt(family)
    actions = _admissible_text(admissible, max_admissible if style == "full" else 30)
    if style == "compact":
        lines = []
        obs = compact_observation(family, observation)
        if task and task not in obs:
            lines.append(f"task: {task}")
        subgoal_line = (["subgoals: " + " | ".join(f"{s.subgoal} ({s.outcome})" for s in subgoals[-3:])]
                        if subgoals else [])
        if spec.subgoal_after_state:
            lines += [obs, *subgoal_line]
        else:
            lines += [*subgoal_line, obs]
        lines.append("plan:")
        return "\n".join(lines) + "\n"
    parts = [spec.planner_role, spec.rules]
    if task:
        parts.append(f"Your task: {task}")
    if subgoals:
        done = "\n".join(f"{k}. {s.subgoal} ({s.outcome} after {s.steps} step(s))"
                         for k, s in enumerate(subgoals, start=1))
        parts.append("Subgoals so far:\n" + done)
    past = _history_lines(history, history_window, 200, style)
    if past:
        parts.append(f"{len(history)} step(s) taken so far; the last {len(past)} (action -> what happened):\n"
                     + "\n".join(past))
    parts.append(f"Current observation:\n{observation.strip()}")
    shown = _actions_part(spec, actions, "Admissible actions now")
    if shown:
        parts.append(shown)
    parts.append(
        "Write the next subgoal for the executor: one short instruction it can complete in a few actions "
        f"(for example: {spec.subgoal_example}). First think about {spec.think_hint} inside <think> </think>, "
        "then give the subgoal inside <subgoal> </subgoal>."
    )
    return "\n\n".join(parts)


def format_action_response(action: str, *, think: str | None = None, style: str = "full",
                           subgoal_done: bool = False) -> str:
    """A response in the executor's output format (e.g. for behaviour-cloning demonstrations).

    The compact style answers with the bare action (``right``, ``<subgoal_done/>right``): every generated byte
    is a chance for a small sampled model to break the format, and the parser accepts a bare action that is
    one of the admissible ones.
    """
    _check_style(style)
    marker = SUBGOAL_DONE if subgoal_done else ""
    if style == "compact":
        return f"{marker}{action}"
    reasoning = f"<think>{think}</think>" if think else ""
    return f"{reasoning}{marker}<action>{action}</action>"


def format_subgoal_response(subgoal: str, *, think: str | None = None, style: str = "full") -> str:
    """A response in the planner's output format."""
    _check_style(style)
    reasoning = f"<think>{think}</think>" if think and style == "full" else ""
    return f"{reasoning}<subgoal>{subgoal}</subgoal>"
