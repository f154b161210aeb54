"""ToolQA question generation: gold answers hold in the generated world, and the minimal calls are right."""

from __future__ import annotations

import numpy as np
import pytest

from hiergym.envs.toolqa import ToolQAEnv
from hiergym.envs.toolqa.questions import HELD_OUT_COMPOSITIONS, generate_question
from hiergym.envs.toolqa.world import RELATIONS, generate_world

# Direction of each comparison and difference, restated here so the test does not trust the generator.
LOWER_WINS = {"birth_year": True, "founded": True, "year": True, "population": False, "employees": False}


def walk(world, anchor: str, fields: tuple[str, ...]) -> tuple[list[str], object]:
    """The entities read along a path and the final value, straight from the world's entity table."""
    current = world.entities[anchor.lower()]
    visited = [current.name]
    for relation in fields[:-1]:
        current = world.entities[str(current.fields[relation]).lower()]
        visited.append(current.name)
    return visited, current.fields[fields[-1]]


def questions(split: str, hops: int, count: int = 12):
    for seed in range(count):
        rng = np.random.default_rng([seed, hops, len(split)])
        world = generate_world(rng)
        yield world, generate_question(world, rng, hops, split)


CASES = [(s, h) for s in ("train", "eval_in", "eval_out") for h in range(1, 5) if not (s == "eval_out" and h == 1)]


@pytest.mark.parametrize(("split", "hops"), CASES)
def test_gold_answer_is_true_in_the_world(split: str, hops: int) -> None:
    for world, question in questions(split, hops):
        walked = [walk(world, p.anchor, p.fields) for p in question.paths]
        for path in question.paths:
            assert path.anchor.lower() in question.text.lower() or f'"{path.anchor}"' in question.text
        if question.kind == "value":
            (_, value), = walked
            assert question.answer == str(value)
        else:
            (holders_a, a), (holders_b, b) = walked
            assert question.paths[0].fields[-1] == question.paths[1].fields[-1]
            attribute = question.paths[0].fields[-1]
            assert a != b and holders_a[-1] != holders_b[-1]
            if question.kind == "comparison":
                lower_first = a < b
                expected = holders_a[-1] if lower_first == LOWER_WINS[attribute] else holders_b[-1]
                assert question.answer == expected
            else:
                assert question.kind == "difference"
                assert question.answer == str(abs(a - b)) and int(question.answer) > 0
                # the first phrase is the older / earlier / larger one, as the question words it
                assert (a < b) == LOWER_WINS[attribute]


@pytest.mark.parametrize(("split", "hops"), CASES)
def test_minimal_calls_are_the_pages_holding_needed_facts(split: str, hops: int) -> None:
    for world, question in questions(split, hops):
        needed = []
        for path in question.paths:
            visited, _ = walk(world, path.anchor, path.fields)
            needed += list(zip(visited, path.fields, strict=True))
        assert set(question.needed_facts) == set(needed)
        assert question.hops == hops == question.minimal_tool_calls == len(set(question.pages))
        assert set(question.pages) == {entity for entity, _ in needed}
        for entity, field_name in needed:
            value = world.entities[entity.lower()].fields[field_name]
            # Each needed fact is stated by one sentence of its subject's page and by no other page, so
            # reading fewer pages than there are subjects leaves some fact unread: the count is minimal.
            sentence = dict(world.pages[entity.lower()])[field_name]
            assert str(value) in sentence or f"{value:,}" in sentence
            assert [k for k in world.pages if sentence in world.page_text(k)] == [entity.lower()]


@pytest.mark.parametrize(("split", "hops"), CASES)
def test_splits_hold_out_relation_compositions(split: str, hops: int) -> None:
    for _, question in questions(split, hops):
        pairs = {
            (a, b) for p in question.paths for a, b in zip(p.fields, p.fields[1:], strict=False)
            if a in RELATIONS and b in RELATIONS
        }
        assert bool(pairs & HELD_OUT_COMPOSITIONS) == (split == "eval_out")


def test_expert_plan_uses_exactly_the_minimal_calls_and_wins() -> None:
    env = ToolQAEnv()
    for seed in range(30):
        _, info = env.reset(seed=seed)
        plan = env.expert_plan()
        assert len(plan) == info["minimal_tool_calls"] + 1 == info["hops"] + 1
        assert all(a.startswith("lookup[") for a in plan[:-1]) and plan[-1].startswith("answer[")
        for action in plan:
            _, reward, terminated, _, info = env.step(action)
            assert info["action_valid"]
        assert terminated and info["won"] and reward == 1.0 and info["tool_calls"] == info["minimal_tool_calls"]


def test_hops_argument_sets_difficulty_and_is_validated() -> None:
    for hops in (1, 2, 3, 4):
        env = ToolQAEnv(hops=hops)
        assert {env.reset(seed=s)[1]["hops"] for s in range(6)} == {hops}
    env = ToolQAEnv()
    assert env.reset(seed=0, options={"hops": 3})[1]["hops"] == 3
    assert {env.reset(seed=s)[1]["hops"] for s in range(40)} == {1, 2, 3, 4}
    assert all(env.reset(seed=s, options={"split": "eval_out"})[1]["hops"] >= 2 for s in range(10))
    for bad in (0, 5, [], [1, 9], "2", True):
        with pytest.raises(ValueError, match="hops"):
            ToolQAEnv(hops=bad)
    with pytest.raises(ValueError, match="eval_out"):
        ToolQAEnv(hops=1).reset(options={"split": "eval_out"})


def test_world_is_deterministic_and_consistent() -> None:
    a, b = generate_world(np.random.default_rng(5)), generate_world(np.random.default_rng(5))
    assert a.digest() == b.digest() and a.pages == b.pages
    for entity in a.entities.values():
        for relation, (source, target) in RELATIONS.items():
            if entity.kind == source:
                assert a.entities[entity.fields[relation].lower()].kind == target
        if entity.kind == "company":  # founders are adults when they found their company
            assert entity.fields["founded"] >= a.value(entity.fields["founder"], "birth_year") + 18
        assert all(text.isascii() for _, text in a.pages[entity.name.lower()])
