"""ToolQA tools (search, lookup, calculate, answer), bad tool syntax, answer checking and the calculator."""

from __future__ import annotations

import time

import gymnasium as gym
import pytest

import hiergym  # noqa: F401  (registers the envs)
from hiergym.envs.toolqa import ToolQAEnv
from hiergym.envs.toolqa.answers import exact_match, f1_score, normalize_answer
from hiergym.envs.toolqa.calculator import CalculatorError, calculate


def fresh(seed: int = 3, **kwargs) -> tuple[ToolQAEnv, dict]:
    env = ToolQAEnv(**kwargs)
    _, info = env.reset(seed=seed)
    return env, info


def test_search_returns_top_k_sentences_from_matching_pages() -> None:
    env, _ = fresh(top_k=3)
    company = env.world.names("company")[0]
    obs, reward, terminated, _, info = env.step(f"search[who was {company} founded by]")
    assert info["action_valid"] and reward == 0.0 and not terminated
    lines = obs.splitlines()[1:]
    assert len(lines) == 3 and lines[0].startswith(f"1. [{company}]")
    assert f"was founded by {env.world.value(company, 'founder')}" in lines[0]
    for line in lines:  # every snippet is a real sentence of the page it names
        name, sentence = line.split("] ", 1)[0].split("[", 1)[1], line.split("] ", 1)[1]
        assert sentence in env.world.page_text(name)
    assert info["tool_calls"] == 1
    obs, _, _, _, info = env.step("search[qqqq zzzz]")
    assert obs.startswith("No results") and info["action_valid"]


def test_search_and_lookup_reveal_facts_into_the_state() -> None:
    env, info = fresh(seed=1)  # a multi-hop question
    start_key, plan = info["state_key"], env.expert_plan()
    assert len(plan) >= 3
    obs, _, _, _, info = env.step(plan[0])
    assert info["action_valid"] and info["state_key"] != start_key
    page = plan[0][len("lookup["):-1]
    assert obs.startswith(page) and env.world.page_text(page) in obs
    # the plan from the new state skips the page just read: minimal calls from the current state
    assert env.expert_plan() == plan[1:]
    # every entity the page names can now be looked up
    entity = env.world.entity(page)
    named = {str(v) for v in entity.fields.values() if str(v).lower() in env.world.entities}
    assert named and {f"lookup[{n}]" for n in named | {entity.name}} <= set(info["admissible_actions"])


def test_lookup_forgives_case_quotes_and_articles_and_refuses_unknown_pages() -> None:
    env, _ = fresh()
    work = env.world.names("work")[0]  # "The Adjective Noun"
    for spelling in (work, work.upper(), f'"{work}"', work[len("The "):], f"  {work.lower()} "):
        obs, _, _, _, info = env.step(f"lookup[{spelling}]")
        assert info["action_valid"] and obs.startswith(work), spelling
    obs, _, _, _, info = env.step(f"lookup[{work[:-1]}]")
    assert not info["action_valid"] and "no page" in obs and "did you mean" in obs.lower()
    key = info["state_key"]
    obs, _, _, _, info = env.step("lookup[nobody at all]")
    assert not info["action_valid"] and info["state_key"] == key


def test_calculate_tool() -> None:
    env, _ = fresh()
    obs, _, _, _, info = env.step("calculate[(1990 - 1962) * 2]")
    assert info["action_valid"] and obs.endswith("= 56")
    obs, _, _, _, info = env.step("calculate[1,250,000 / 4]")
    assert info["action_valid"] and obs.endswith("= 312500")
    for bad in ("calculate[1/0]", "calculate[__import__('os').system('ls')]", "calculate[9**9**9]"):
        obs, _, terminated, _, info = env.step(bad)
        assert not info["action_valid"] and obs.startswith("Calculator error") and not terminated
    assert info["tool_calls"] == 5


def test_answer_ends_the_episode_with_em_and_f1() -> None:
    env, _ = fresh(seed=0)
    gold = env.question.answer
    obs, reward, terminated, truncated, info = env.step(f"answer[The {gold}.]")
    assert terminated and not truncated and reward == 1.0 and info["won"] and info["em"] == 1.0
    assert info["f1"] == 1.0 and info["gold_answer"] == gold and "Correct" in obs
    env.reset(seed=0)
    obs, reward, terminated, _, info = env.step("answer[definitely not it]")
    assert terminated and reward == 0.0 and not info["won"] and info["em"] == 0.0 and "Incorrect" in obs
    assert info["tool_calls"] == 0
    obs, reward, terminated, _, info = env.step("lookup[anything]")  # after the end: harmless
    assert terminated and reward == 0.0 and not info["action_valid"]


@pytest.mark.parametrize(
    "action",
    ["search", "search[", "search[]", "lookup()", "lookup(x)", "answer[]", "answer[   ]", "[x]", "foo[bar]",
     "calculate[]", "lookup[x] and more", "ask[who]", "answer: 12"],
)
def test_bad_tool_syntax_is_an_invalid_step(action: str) -> None:
    env, info = fresh()
    obs, reward, terminated, truncated, step_info = env.step(action)
    assert not step_info["action_valid"] and reward == 0.0 and not terminated and not truncated
    assert step_info["state_key"] == info["state_key"] and obs and obs.isascii()


def test_truncation_and_render() -> None:
    env, _ = fresh(max_steps=3)
    for _ in range(2):
        assert env.step("search[founded]")[3] is False
    _, _, terminated, truncated, info = env.step("search[founded]")
    assert truncated and not terminated and info["gold_answer"] == env.question.answer
    assert env.render().startswith("Question: ")
    made = gym.make("hiergym/ToolQA-v0", hops=2)
    assert made.reset(seed=0)[1]["hops"] == 2


def test_answer_normalisation() -> None:
    assert normalize_answer("The  Silent River!") == "silent river"
    assert exact_match("1,250,000", "1250000") and exact_match("12.0", "12") and exact_match("twelve", "12")
    assert exact_match("12 years", "12") and not exact_match("12 or 13", "12")
    assert exact_match("Ada Pelnoson.", "ada pelnoson") and not exact_match("Ada", "Ada Pelnoson")
    assert exact_match("-3.50", "-3.5") and not exact_match("3.5", "-3.5")
    assert f1_score("Ada", "Ada Pelnoson") == pytest.approx(2 / 3)
    assert f1_score("something else", "Ada Pelnoson") == 0.0 and f1_score("", "x") == 0.0


def test_calculator_valid_expressions() -> None:
    cases = {
        "2+3*4": 14, "(2+3)*4": 20, "10/4": 2.5, "2^10": 1024, "1,250,000 - 250,000": 1_000_000, "-(3)": -3,
        "7//2": 3, "7%3": 1, "+5": 5, "((((1))))": 1, "1e3 + 1": 1001, "3 x 4": 12,
    }
    for expression, expected in cases.items():
        assert calculate(expression) == expected, expression
    assert calculate("2**0.5") == pytest.approx(1.41421356)


MALICIOUS = [
    "__import__('os')", "__import__('os').system('echo hi')", "open('/etc/passwd').read()", "().__class__",
    "lambda: 1", "[1] * 10", "'a' * 3", "a + 1", "1 if 1 else 2", "True + 1", "1 == 1", "~1", "1 << 100",
    "import os", "1; 2", "9**9**9", "2**10000", "10**19", "1e308 * 10", "-(2**64)**2", "(-8)**0.5",
    "0**-1", "1/0", "1//0", "1%0", "", "   ", ")(", "((1)", "(1))", "1 +", "*", "1" * 10_000,
    "(" * 100_000 + "1" + ")" * 100_000, "(" * 17 + "1" + ")" * 17, "+".join(["1"] * 200), "\x00", "1_0_0" * 100,
]


@pytest.mark.parametrize("expression", MALICIOUS)
def test_calculator_refuses_malicious_or_malformed(expression: str) -> None:
    start = time.perf_counter()
    with pytest.raises(CalculatorError):
        calculate(expression)
    assert time.perf_counter() - start < 1.0  # refused quickly, never evaluated at length


def test_the_shown_expert_answers_only_with_text_it_was_shown() -> None:
    """expert_answers="shown": a number spelled as its page wrote it, a difference through the calculator, and
    every action one the observation_spans constraint allows; it still solves every task, in one more call
    for a difference."""
    from hiergym.agents.constraint import admissible_choices
    from hiergym.agents.prompts import env_prompt

    env = gym.make("hiergym/ToolQA-v0", expert_answers="shown")
    templates = env_prompt("toolqa").action_templates
    kinds = set()
    for seed in range(150):
        _, info = env.reset(seed=seed)
        kinds.add(info["question_kind"])
        seen, actions = [], []
        for action in env.unwrapped.expert_plan():  # the plan made at reset, played out as the demonstrator does
            assert action in admissible_choices([*info["admissible_actions"], *templates], "compact",
                                                task=info["task"], seen=seen)
            observation, _, terminated, truncated, info = env.step(action)
            seen.append(observation)
            actions.append(action)
            if terminated or truncated:
                break
        assert info["won"], (seed, actions)
        calls = sum(not a.startswith("answer[") for a in actions)
        assert calls == info["minimal_tool_calls"] + (info["question_kind"] == "difference")
    assert kinds == {"value", "comparison", "difference"}
    gold = gym.make("hiergym/ToolQA-v0")
    gold.reset(seed=3)
    assert gold.unwrapped.expert_plan()[-1] == f"answer[{gold.unwrapped.question.answer}]"  # the default
    with pytest.raises(ValueError, match="expert_answers"):
        gym.make("hiergym/ToolQA-v0", expert_answers="mental")
