"""Prompts agree with the envs' admissible lists, and tell the model when its output had the wrong format."""

from __future__ import annotations

import re

import gymnasium as gym
import pytest

from hiergym.agents.prompts import (
    FAMILIES,
    FORMAT_FEEDBACK,
    Step,
    executor_prompt,
    family_for_env,
    planner_prompt,
)
from hiergym.registration import register_all

register_all()

#: One env per prompt family (generic: every env without a family of its own).
FAMILY_ENVS = {
    "sokoban": ["hiergym/Sokoban-v0"],
    "alfworld": ["hiergym/ALFWorld-v0"],
    "webshop": ["hiergym/WebShop-v0"],
    "toolqa": ["hiergym/ToolQA-v0"],
    "household": ["hiergym/HouseholdCoop-v0"],
    "generic": ["hiergym/TicTacToe-v0", "hiergym/KuhnPoker-v0", "hiergym/Negotiation-v0"],
}
EXACT = "exactly one admissible action"


def test_every_family_is_covered():
    assert set(FAMILY_ENVS) == set(FAMILIES)
    for family, env_ids in FAMILY_ENVS.items():
        assert all(family_for_env(e) == family for e in env_ids)


def _templates_named(prompt: str) -> list[str]:
    """The free-text action templates a full prompt offers besides the admissible list."""
    match = re.search(r"^(?:Other actions|Actions) \(replace each <\.\.\.> with your own text\): (.+)$", prompt, re.M)
    return [t.strip() for t in match.group(1).split(", ")] if match else []


def _matches(action: str, template: str) -> bool:
    pattern = "".join(".+" if re.fullmatch(r"<[^>]+>", part) else re.escape(part)
                      for part in re.split(r"(<[^>]+>)", template))
    return re.fullmatch(pattern, action, re.S | re.I) is not None


@pytest.mark.parametrize("family", sorted(FAMILY_ENVS))
def test_prompt_and_admissible_actions_agree(family):
    """Along expert episodes, every action the env accepts is one the full prompt offers: an admissible action
    (or a <placeholder> one filled in), or one of the templates the prompt names besides the list; a prompt
    that says "exactly one admissible action" is never contradicted by the expert's action."""
    for env_id in FAMILY_ENVS[family]:
        env = gym.make(env_id)
        for seed in range(3):
            obs, info = env.reset(seed=seed)
            plan = env.unwrapped.expert_plan() or []
            assert plan, f"{env_id} seed {seed}: no expert plan"
            for action in plan:
                admissible = info.get("admissible_actions") or []
                prompt = executor_prompt(family=family, task=info.get("task", ""), observation=obs,
                                         admissible=admissible)
                offered = list(admissible) + _templates_named(prompt)
                assert any(a.lower() == action.lower() or _matches(action, a) for a in offered), (
                    f"{env_id}: the expert's {action!r} is not among the actions the prompt offers: {offered[:8]}")
                if action.lower() not in {a.lower() for a in admissible}:
                    assert EXACT not in prompt or any("<" in a and _matches(action, a) for a in admissible)
                obs, _, terminated, truncated, info = env.step(action)
                assert info["action_valid"], f"{env_id}: expert action {action!r} rejected"
                if terminated or truncated:
                    break


def test_the_household_prompt_offers_messages_the_admissible_list_leaves_out():
    env = gym.make("hiergym/HouseholdCoop-v0")
    obs, info = env.reset(seed=0)
    prompt = executor_prompt(family="household", task=info["task"], observation=obs,
                             admissible=info["admissible_actions"])
    assert not any(a.startswith("say[") for a in info["admissible_actions"])
    assert "say[<message>]" in _templates_named(prompt) and EXACT not in prompt
    _, _, _, _, info = env.step("say[the mug is in the cabinet]")
    assert info["action_valid"]


def test_toolqa_prompt_names_its_free_text_actions_and_they_are_real_actions():
    env = gym.make("hiergym/ToolQA-v0")
    obs, info = env.reset(seed=0)
    prompt = executor_prompt(family="toolqa", task=info["task"], observation=obs,
                             admissible=info["admissible_actions"])
    assert EXACT not in prompt and "Admissible actions include: [lookup[" in prompt
    templates = _templates_named(prompt)
    assert templates == list(FAMILIES["toolqa"].action_templates)
    # every tool the prompt names is either in the admissible list or a template
    tools = set(re.findall(r"\b(search|lookup|calculate|answer)\[", prompt))
    covered = {a.split("[")[0] for a in info["admissible_actions"]} | {t.split("[")[0] for t in templates}
    assert tools == {"search", "lookup", "calculate", "answer"} <= covered
    for filled in ("search[mayor]", "calculate[2 + 3]", "answer[unknown]"):
        assert any(_matches(filled, t) for t in templates)
        env.reset(seed=0)
        assert env.step(filled)[4]["action_valid"], filled
    planner = planner_prompt(family="toolqa", task=info["task"], observation=obs,
                             admissible=info["admissible_actions"])
    assert "Admissible actions now include: [" in planner and _templates_named(planner) == templates


def test_webshop_placeholder_is_explained():
    prompt = executor_prompt(family="webshop", task="t", observation="o", admissible=["search[<query>]"])
    assert "exactly one admissible action (replace a placeholder such as <query> with your own text)" in prompt


# ----------------------------------------------------------------------------------- parse feedback
HISTORY = [Step("up", "You moved up.\nmore"), Step("", "Nothing happens."), Step("left", "Nothing happens.", False)]


def test_full_style_history_says_the_format_was_wrong():
    for prompt in (
        executor_prompt(family="sokoban", style="full", task="t", observation="o", admissible=["up"], history=HISTORY),
        planner_prompt(family="sokoban", style="full", task="t", observation="o", admissible=["up"], history=HISTORY),
    ):
        assert f"2. (no readable action) -> {FORMAT_FEEDBACK}" in prompt
        assert "<action> </action>" in FORMAT_FEEDBACK and "wrong format" in FORMAT_FEEDBACK
        assert "1. up -> You moved up." in prompt and "3. left -> Nothing happens." in prompt


def test_compact_style_history_is_unchanged():
    # The tiny model's training rollouts contain unreadable outputs: the compact text stays as it always was.
    assert executor_prompt(family="sokoban", style="compact", task="push", observation="Legend: x\n#P#",
                           admissible=["up", "down"], history=HISTORY) == (
        "task: push\nrecent: up -> You moved up. | (no readable action) -> Nothing happens. | left -> Nothing "
        "happens.\n#P#\nactions: up, down\n")
    assert planner_prompt(family="alfworld", style="compact", task="heat", observation="-= Welcome =-\nroom",
                          admissible=["look"], history=HISTORY) == "task: heat\nroom\nplan:\n"
    assert executor_prompt(family="toolqa", style="compact", task="q?", observation="Question: q?",
                           admissible=["lookup[A]"], subgoal="find A", history=HISTORY[:2]) == (
        "subgoal: find A\nrecent: up -> You moved up. | (no readable action) -> Nothing happens.\nQuestion: q?\n"
        "actions: lookup[A]\n")


def test_full_prompts_without_parse_errors_are_unchanged_for_sokoban():
    spec = FAMILIES["sokoban"]
    prompt = executor_prompt(family="sokoban", task="push", observation="#P#", admissible=["up", "down"],
                             history=HISTORY[:1])
    assert prompt == (
        f"{spec.role}\n\n{spec.rules}\n\nYour task: push\n\nYou have taken 1 step(s) so far. Your last 1 step(s) "
        "(action -> what happened):\n1. up -> You moved up.\n\nCurrent observation:\n#P#\n\nAdmissible actions: "
        f"[up, down]\n\nNow choose your next action. First think step by step about {spec.think_hint}; put this "
        "reasoning inside <think> </think>. Then give exactly one admissible action inside <action> </action>.")


def test_list_actions_false_leaves_the_admissible_list_out() -> None:
    for style in ("compact", "full"):
        listed = executor_prompt(family="generic", style=style, task="t", observation="o", admissible=["a1", "b2"])
        bare = executor_prompt(family="generic", style=style, task="t", observation="o", admissible=["a1", "b2"],
                               list_actions=False)
        assert "b2" in listed and "b2" not in bare and len(bare) < len(listed)
