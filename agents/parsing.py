"""Robust reading of LLM outputs: the action, the reasoning, the subgoal and the executor's status markers.

The output format (``docs/agents.md``) is ``<think>...</think><action>...</action>`` for actions and
``<think>...</think><subgoal>...</subgoal>`` for planner decisions. Models get it wrong in every possible way,
so :func:`parse_action` is forgiving:

- the *last* complete ``<action>...</action>`` wins (models often restate an example first);
- tags in any case and with inner spaces (``< Action >``), a missing closing tag (the text up to the end of
  the line), a missing opening tag when the closing one is there (a prompt that ended in ``<action>``);
- code fences, quotes, brackets and a trailing full stop around the action are dropped, whitespace collapsed;
- an untagged answer (the compact style's format, status markers allowed before it) is accepted only when
  it is exactly one of the admissible actions.

Anything else is a parse failure: ``ParsedAction.ok`` is False with the reason in ``error``; the agent then
sends an empty action, which every env treats as an invalid action (never a crash).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: Longest action text accepted from a model (anything longer is a parse failure, not an action).
MAX_ACTION_CHARS = 300

SUBGOAL_DONE = "<subgoal_done/>"
SUBGOAL_FAILED = "<subgoal_failed/>"

_FENCE = re.compile(r"```[a-zA-Z0-9_+-]*")
_DONE = re.compile(r"<\s*subgoal[_ ]done\s*/?\s*>", re.IGNORECASE)
_FAILED = re.compile(r"<\s*subgoal[_ ]failed\s*/?\s*>", re.IGNORECASE)
_QUOTES = "`'\"* \t\n"
_PAIRS = {"[": "]", "(": ")", "{": "}", "<": ">"}


def _tag_patterns(tag: str) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    opener = rf"<\s*{tag}\s*>"
    closer = rf"<\s*/\s*{tag}\s*>"
    return (
        re.compile(rf"{opener}(.*?){closer}", re.IGNORECASE | re.DOTALL),
        re.compile(opener, re.IGNORECASE),
        re.compile(closer, re.IGNORECASE),
    )


def extract_tag(text: str, tag: str) -> tuple[str | None, str]:
    """The content of the last ``<tag>...</tag>`` in ``text``, tolerating a missing opening or closing tag.

    Returns ``(content, how)`` with ``how`` one of ``"tagged"``, ``"unclosed"`` (opening tag only: the rest of
    its line), ``"unopened"`` (closing tag only: the text before it, from the last line break or ``>``), or
    ``(None, "missing")``.
    """
    if not isinstance(text, str):
        return None, "missing"
    text = _FENCE.sub("", text)
    complete, opener, closer = _tag_patterns(tag)
    matches = list(complete.finditer(text))
    last_complete_end = matches[-1].end() if matches else -1
    openers = [m for m in opener.finditer(text) if m.start() >= last_complete_end]
    if openers:  # an opening tag after the last complete pair: the model started one more and never closed it
        rest = text[openers[-1].end():].strip()
        line = rest.split("\n", 1)[0] if rest else ""
        line = re.split(r"</?[a-zA-Z_]", line, maxsplit=1)[0]  # the next tag; "< Prev" is text
        if line.strip():
            return line, "unclosed"
    if matches:
        return matches[-1].group(1), "tagged"
    closers = list(closer.finditer(text))
    if closers:
        before = text[:closers[-1].start()]
        before = re.split(r"[\n>]", before)[-1]
        if before.strip():
            return before, "unopened"
    return None, "missing"


def clean_action(text: str) -> str:
    """Collapse whitespace; drop quotes, markdown, a bracket pair around the whole action and a final full stop.

    Brackets that belong to the action stay: ``click[Buy Now]`` and ``search[red shoes]`` keep theirs, only
    ``[up]`` or ``(go to desk 1)`` lose them.
    """
    text = " ".join(text.split()).strip(_QUOTES)
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip(_QUOTES)
    while len(text) >= 2 and _PAIRS.get(text[0]) == text[-1] and _closes_at_end(text):
        text = text[1:-1].strip(_QUOTES)
    return text


def _closes_at_end(text: str) -> bool:
    """True when the bracket opening ``text`` is closed by its last character (``[a] or [b]`` is not)."""
    opener, closer, depth = text[0], text[-1], 0
    for i, ch in enumerate(text):
        depth += (ch == opener) - (ch == closer)
        if depth == 0:
            return i == len(text) - 1
    return False


@dataclass
class ParsedAction:
    """What :func:`parse_action` read: ``action`` is None exactly when ``ok`` is False."""

    action: str | None
    ok: bool
    error: str | None = None
    think: str | None = None
    #: ``"tagged"``, ``"unclosed"``, ``"unopened"``, ``"untagged"`` (a bare admissible action) or ``"failed"``.
    how: str = "tagged"
    subgoal_done: bool = False
    subgoal_failed: bool = False


#: An admissible entry that is a template rather than a command: ``search[<query>]`` stands for any
#: ``search[...]`` with text inside the brackets.
_TEMPLATE = re.compile(r"^([a-z_]+)\[<[^<>]+>\]$", re.IGNORECASE)


def match_admissible(action: str, admissible: Sequence[str] | None) -> str | None:
    """The admissible action equal to ``action`` up to case and whitespace, if any; for a template entry such
    as ``search[<query>]``, ``action`` itself when it has that form (``search[red shoes]``)."""
    if not admissible:
        return None
    key = " ".join(action.split()).lower()
    for candidate in admissible:
        if " ".join(str(candidate).split()).lower() == key:
            return str(candidate)
    for candidate in admissible:
        template = _TEMPLATE.match(str(candidate).strip())
        if template is not None:
            verb = template.group(1).lower()
            filled = re.match(rf"^{re.escape(verb)}\[(.*\S.*)\]$", key)
            if filled is not None and "<" not in filled.group(1):
                return " ".join(action.split())
    return None


def parse_action(text: object, admissible: Sequence[str] | None = None, *, tag: str = "action") -> ParsedAction:
    """Read the action from a model's output (see the module docstring); never raises.

    With ``admissible`` given, an action equal to one of them up to case and whitespace is returned in the
    env's own spelling; an action outside the list is still returned (the env decides whether it is valid).
    """
    if not isinstance(text, str):
        return ParsedAction(None, False, f"output is {type(text).__name__}, not text", how="failed")
    think, _ = extract_tag(text, "think")
    done = bool(_DONE.search(text))
    failed = bool(_FAILED.search(text))
    content, how = extract_tag(text, tag)
    if content is None:
        unthought = re.sub(r"<\s*think\s*>.*?<\s*/\s*think\s*>", "", text, flags=re.IGNORECASE | re.DOTALL)
        bare = clean_action(_FENCE.sub("", _FAILED.sub("", _DONE.sub("", unthought))))
        match = match_admissible(bare, admissible)
        if match is not None:
            return ParsedAction(match, True, think=think, how="untagged", subgoal_done=done, subgoal_failed=failed)
        error = f"no <{tag}>...</{tag}> in the output" if text.strip() else "empty output"
        return ParsedAction(None, False, error, think=think, how="failed", subgoal_done=done, subgoal_failed=failed)
    action = clean_action(content)
    if not action:
        return ParsedAction(None, False, f"empty <{tag}>", think=think, how="failed", subgoal_done=done,
                            subgoal_failed=failed)
    if len(action) > MAX_ACTION_CHARS:
        return ParsedAction(None, False, f"<{tag}> longer than {MAX_ACTION_CHARS} characters", think=think,
                            how="failed", subgoal_done=done, subgoal_failed=failed)
    if not action.isprintable() or not action.isascii():
        return ParsedAction(None, False, f"non-printable or non-ASCII characters in <{tag}>", think=think,
                            how="failed", subgoal_done=done, subgoal_failed=failed)
    return ParsedAction(match_admissible(action, admissible) or action, True, think=think, how=how,
                        subgoal_done=done, subgoal_failed=failed)


def parse_subgoal(text: object) -> ParsedAction:
    """Read a planner's ``<subgoal>...</subgoal>`` (same tolerance as :func:`parse_action`, longer limit)."""
    if not isinstance(text, str):
        return ParsedAction(None, False, f"output is {type(text).__name__}, not text", how="failed")
    think, _ = extract_tag(text, "think")
    content, how = extract_tag(text, "subgoal")
    if content is None:
        return ParsedAction(None, False, "no <subgoal>...</subgoal> in the output", think=think, how="failed")
    subgoal = clean_action(content)
    if not subgoal:
        return ParsedAction(None, False, "empty <subgoal>", think=think, how="failed")
    return ParsedAction(subgoal[:500], True, think=think, how=how)
