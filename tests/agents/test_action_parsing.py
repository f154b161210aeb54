"""The action parser on well-formed and hostile model outputs: never raises, reads what can be read."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hiergym.agents.parsing import extract_tag, parse_action, parse_subgoal

ADMISSIBLE = ["up", "down", "left", "right", "go to cabinet 1"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>box is below</think><action>down</action>", "down"),
        ("<action>  DOWN </action>", "down"),  # case and spaces -> the env's own spelling
        ("<Action>Left</ACTION>", "left"),
        ("< action >right< / action >", "right"),
        ("I restate the format <action>up</action> ... final: <action>left</action>", "left"),  # last wins
        ("<think>maybe <action>up</action>?</think><action>down</action>", "down"),
        ("```xml\n<action>right</action>\n```", "right"),
        ("<action>\n  go   to cabinet 1\n</action>", "go to cabinet 1"),
        ("<action>\"up\".</action>", "up"),  # quotes and a trailing full stop
        ("<action>`down`</action>", "down"),
        ("<think>long</think><action>left", "left"),  # never closed (a stop string cut it)
        ("<action>up\nmore text after the line", "up"),
        ("down</action>", "down"),  # prompt ended in <action>
        ("down", "down"),  # a bare admissible action
        ("  Right.  ", "right"),
        ("<action>open the box</action>", "open the box"),  # not admissible: still the action; the env decides
        ("<action>click[Buy Now]</action>", "click[Buy Now]"),  # brackets that belong to the action stay
        ("<action>search[red shoes, size 9]</action>", "search[red shoes, size 9]"),
        ("<action>\"click[< Prev]\"</action>", "click[< Prev]"),
        ("<action>answer[3.5]</action>", "answer[3.5]"),
        ("<action>[up]</action>", "up"),  # a pair around the whole action goes
        ("<action>(go to cabinet 1).</action>", "go to cabinet 1"),
        ("<action>[a] or [b]</action>", "[a] or [b]"),
        ("<think>x</think><action>click[< Prev]", "click[< Prev]"),  # unclosed, with a '<' inside
        ("<action>up</subgoal>", "up"),
    ],
)
def test_reads_the_action(text, expected):
    parsed = parse_action(text, ADMISSIBLE)
    assert parsed.ok, parsed.error
    assert parsed.action == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty output"),
        ("   \n ", "empty output"),
        ("I think I should go down but I am not sure", "no <action>"),
        ("<think>only thinking</think>", "no <action>"),
        ("<action></action>", "empty <action>"),
        ("<action>   </action>", "empty <action>"),
        ("<action>" + "x" * 400 + "</action>", "longer than"),
        ("<action>caf\u00e9</action>", "non-printable or non-ASCII"),
        ("<action>\x00\x01</action>", "non-printable"),
        (None, "not text"),
        (b"<action>up</action>", "not text"),
        (12, "not text"),
    ],
)
def test_unparseable_outputs_are_failures_not_crashes(text, reason):
    parsed = parse_action(text, ADMISSIBLE)
    assert not parsed.ok
    assert parsed.action is None
    assert reason in parsed.error


def test_think_and_subgoal_markers():
    parsed = parse_action("<think>push it</think><subgoal_done/><action>up</action>", ADMISSIBLE)
    assert parsed.ok and parsed.think == "push it" and parsed.subgoal_done and not parsed.subgoal_failed
    failed = parse_action("<think>blocked</think><Subgoal_Failed />")
    assert not failed.ok and failed.subgoal_failed


def test_subgoal_parsing():
    assert parse_subgoal("<think>x</think><subgoal> push the box  right </subgoal>").action == "push the box right"
    assert parse_subgoal("<subgoal>reach the key").action == "reach the key"
    assert not parse_subgoal("no tags at all").ok
    assert not parse_subgoal("<subgoal></subgoal>").ok


def test_extract_tag_modes():
    assert extract_tag("<a>1</a><a>2</a>", "a") == ("2", "tagged")
    assert extract_tag("<a>1</a> then <a>3", "a") == ("3", "unclosed")
    assert extract_tag("x>4</a>", "a") == ("4", "unopened")
    assert extract_tag("nothing", "a") == (None, "missing")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*"<>/ `\n\"'.", "action", "ACTION", "think", "up", "down", "<action>", "</action>",
                                  "<think>", "</think>", "```", "\u00e9", "\x00"]), max_size=30).map("".join))
def test_never_raises_on_fuzzed_outputs(text):
    parsed = parse_action(text, ADMISSIBLE)
    assert parsed.ok == (parsed.action is not None)
    if parsed.ok:
        assert parsed.action.strip() and len(parsed.action) <= 300


@pytest.mark.parametrize("env_id", ["hiergym/Sokoban-v0", "hiergym/ALFWorld-v0", "hiergym/WebShop-v0",
                                    "hiergym/ToolQA-v0"])
def test_expert_actions_survive_the_output_format(env_id):
    """Every expert action, written in the agent's output format (with the usual noise) and parsed back,
    still wins the episode: the parser never mangles a real action of any env."""
    import gymnasium as gym

    import hiergym  # noqa: F401
    from hiergym.agents.prompts import format_action_response

    env = gym.make(env_id)
    for task_id in range(2):
        _, info = env.reset(seed=task_id, options={"split": "eval_in", "task_id": task_id})
        for _ in range(60):
            plan = env.unwrapped.expert_plan()
            assert plan, "the expert has a plan from every state it reaches"
            response = "<think>the plan says so</think> " + format_action_response(plan[0]) + "\n"
            parsed = parse_action(response, info.get("admissible_actions"))
            assert parsed.ok, parsed.error
            _, _, terminated, truncated, info = env.step(parsed.action)
            assert info["action_valid"], (plan[0], parsed.action)
            if terminated or truncated:
                break
        assert info["won"]
