"""Multi-hop questions over a generated :class:`~hiergym.envs.toolqa.world.World`.

A question follows one or two *paths*: an anchor entity named in the question and a chain of fields
(relations, then a final attribute or relation), e.g. ``("The Silent River", ("author", "employer",
"founded"))`` for "In what year was the employer of the author of "The Silent River" founded?". Field ``i`` of
a path is read on the page of the entity reached after ``i - 1`` links, so a path of ``L`` fields needs ``L``
pages. Three kinds of question:

- ``value``: one path; the answer is the final field's value (a number, a word or an entity's name).
- ``comparison``: two paths ending in the same numeric attribute; the answer is the name of the entity with
  the larger (or smaller) value ("Who was born earlier, X or the founder of Y?").
- ``difference``: two such paths; the answer is the positive difference ("How many years older is ...").

``hops`` is the number of distinct pages a deliberate agent must read, which is also the minimal number of tool
calls (one ``lookup`` per page; arithmetic can be done without a tool). Both are computed here from the world,
and ``tests/envs/test_toolqa_questions.py`` re-derives them by walking the world.

Splits: a *composition* is a pair of consecutive relation fields (``founder`` then ``born_in``).
:data:`HELD_OUT_COMPOSITIONS` never occur in ``train`` / ``eval_in`` questions and every ``eval_out`` question
uses at least one of them, so ``eval_out`` tests generalisation to new chains of known relations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hiergym.envs.toolqa.world import ATTRIBUTES, NUMERIC_ATTRIBUTES, RELATIONS, World

MAX_HOPS = 4

#: Relation-to-relation compositions reserved for the ``eval_out`` split.
HELD_OUT_COMPOSITIONS = frozenset({("founder", "born_in"), ("mayor", "employer"), ("publisher", "headquarters")})

_RELATION_PHRASE = {
    "born_in": "the birthplace of {}",
    "employer": "the employer of {}",
    "mayor": "the mayor of {}",
    "founder": "the founder of {}",
    "headquarters": "the city where {} is headquartered",
    "author": "the author of {}",
    "publisher": "the publisher of {}",
}
_VALUE_QUESTION = {
    "occupation": "What is the occupation of {}?",
    "birth_year": "In what year was {} born?",
    "country": "In which country is {}?",
    "founded": "In what year was {} founded?",
    "population": "What is the population of {}?",
    "employees": "How many people does {} employ?",
    "genre": "What kind of work is {}?",
    "year": "In what year was {} published?",
    "born_in": "In which city was {} born?",
    "employer": "Which company does {} work for?",
    "mayor": "Who is the mayor of {}?",
    "founder": "Who founded {}?",
    "headquarters": "In which city is {} headquartered?",
    "author": "Who wrote {}?",
    "publisher": "Which company published {}?",
}
#: attribute -> (question, "min" or "max"): which entity the comparison asks for.
_COMPARISON_QUESTION = {
    "birth_year": ("Who was born earlier, {} or {}?", "min"),
    "founded": ("Which was founded earlier, {} or {}?", "min"),
    "population": ("Which city has the larger population, {} or {}?", "max"),
    "employees": ("Which company employs more people, {} or {}?", "max"),
    "year": ("Which was published earlier, {} or {}?", "min"),
}
#: attribute -> (question, sign): the answer is sign * (value of first - value of second) and must be > 0.
_DIFFERENCE_QUESTION = {
    "birth_year": ("How many years older is {} than {}?", -1),
    "founded": ("How many years earlier was {} founded than {}?", -1),
    "population": ("How many more people live in {} than in {}?", 1),
    "employees": ("How many more people does {} employ than {}?", 1),
    "year": ("How many years earlier was {} published than {}?", -1),
}


@dataclass(frozen=True)
class Path:
    """An anchor entity and the fields followed from it (all but the last are relations)."""

    anchor: str
    fields: tuple[str, ...]

    def entities(self, world: World) -> list[str]:
        """The entities visited: the anchor, then one per relation field (the last field's value excluded)."""
        names = [self.anchor]
        for field_name in self.fields[:-1]:
            names.append(str(world.value(names[-1], field_name)))
        return names

    def facts(self, world: World) -> list[tuple[str, str]]:
        """``(entity, field)`` facts to read, in order: field i on the page of entity i."""
        return list(zip(self.entities(world), self.fields, strict=True))

    def value(self, world: World) -> int | str:
        holder = self.entities(world)[-1]
        return world.value(holder, self.fields[-1])

    def compositions(self) -> set[tuple[str, str]]:
        return {
            (a, b) for a, b in zip(self.fields, self.fields[1:], strict=False) if a in RELATIONS and b in RELATIONS
        }


@dataclass(frozen=True)
class Question:
    """A question with its gold answer and what a minimal solution reads."""

    text: str
    answer: str
    kind: str
    paths: tuple[Path, ...]
    #: ``(entity, field)`` facts the answer depends on, in reading order.
    needed_facts: tuple[tuple[str, str], ...]
    #: Distinct pages (entity names) holding the needed facts, in reading order.
    pages: tuple[str, ...]

    @property
    def hops(self) -> int:
        return len(self.pages)

    @property
    def minimal_tool_calls(self) -> int:
        return len(self.pages)

    def compositions(self) -> set[tuple[str, str]]:
        return set().union(*(p.compositions() for p in self.paths))


def generate_question(world: World, rng: np.random.Generator, hops: int, split: str = "train") -> Question:
    """A question needing exactly ``hops`` pages, respecting the split's composition rule."""
    if not 1 <= hops <= MAX_HOPS:
        raise ValueError(f"hops must be between 1 and {MAX_HOPS}, got {hops}")
    if split == "eval_out" and hops < 2:
        raise ValueError("eval_out holds out compositions of two relations; it needs hops >= 2")
    kinds = ["value"] if hops == 1 else ["value", "value", "comparison", "difference"]
    for _ in range(5000):
        kind = kinds[int(rng.integers(len(kinds)))]
        question = _value_question(world, rng, hops) if kind == "value" else _two_path_question(world, rng, hops, kind)
        if question is None or question.hops != hops:
            continue
        held_out = bool(question.compositions() & HELD_OUT_COMPOSITIONS)
        if held_out == (split == "eval_out"):
            return question
    raise RuntimeError(f"could not generate a {hops}-hop question for split {split!r}")


def _random_path(world: World, rng: np.random.Generator, length: int, anchor: str | None = None,
                 final_fields: tuple[str, ...] | None = None) -> Path | None:
    """A random walk of ``length`` fields; ``None`` when it dead-ends or revisits an entity."""
    if anchor is None:
        names = world.names()
        anchor = names[int(rng.integers(len(names)))]
    fields: list[str] = []
    current, seen = anchor, {anchor}
    for _ in range(length - 1):
        kind = world.entity(current).kind
        options = [r for r, (src, _) in RELATIONS.items() if src == kind]
        relation = options[int(rng.integers(len(options)))]
        fields.append(relation)
        current = str(world.value(current, relation))
        if current in seen:
            return None
        seen.add(current)
    kind = world.entity(current).kind
    finals = [*ATTRIBUTES[kind], *(r for r, (src, _) in RELATIONS.items() if src == kind)]
    if final_fields is not None:
        finals = [f for f in finals if f in final_fields]
    if not finals:
        return None
    fields.append(finals[int(rng.integers(len(finals)))])
    return Path(anchor, tuple(fields))


def _phrase(world: World, path: Path, upto: int) -> str:
    """How the question names the entity reached after ``upto`` links of ``path``."""
    anchor = world.entity(path.anchor)
    text = f'"{anchor.name}"' if anchor.kind == "work" else anchor.name
    for relation in path.fields[:upto]:
        text = _RELATION_PHRASE[relation].format(text)
    return text


def _assemble(world: World, text: str, answer: str, kind: str, paths: tuple[Path, ...]) -> Question:
    facts: list[tuple[str, str]] = []
    for path in paths:
        for fact in path.facts(world):
            if fact not in facts:
                facts.append(fact)
    pages = tuple(dict.fromkeys(entity for entity, _ in facts))
    return Question(text, answer, kind, paths, tuple(facts), pages)


def _value_question(world: World, rng: np.random.Generator, hops: int) -> Question | None:
    path = _random_path(world, rng, hops)
    if path is None:
        return None
    subject = _phrase(world, path, len(path.fields) - 1)
    text = _VALUE_QUESTION[path.fields[-1]].format(subject)
    return _assemble(world, text[0].upper() + text[1:], str(path.value(world)), "value", (path,))


def _two_path_question(world: World, rng: np.random.Generator, hops: int, kind: str) -> Question | None:
    attribute = sorted(NUMERIC_ATTRIBUTES)[int(rng.integers(len(NUMERIC_ATTRIBUTES)))]
    # Two anchors (pages add up) or one shared anchor with two branches (the anchor page is read once).
    shared = hops >= 3 and rng.random() < 0.4
    total = hops + 1 if shared else hops
    first_length = int(rng.integers(1, total))
    first = _random_path(world, rng, first_length, final_fields=(attribute,))
    if first is None:
        return None
    second = _random_path(world, rng, total - first_length, anchor=first.anchor if shared else None,
                          final_fields=(attribute,))
    if second is None or (shared and first.fields[0] == second.fields[0]):
        return None
    holders = [p.entities(world)[-1] for p in (first, second)]
    values = [int(p.value(world)) for p in (first, second)]
    if holders[0] == holders[1] or values[0] == values[1]:
        return None
    phrases = [_phrase(world, p, len(p.fields) - 1) for p in (first, second)]
    if kind == "comparison":
        template, which = _COMPARISON_QUESTION[attribute]
        winner = int(np.argmin(values) if which == "min" else np.argmax(values))
        answer = world.entity(holders[winner]).name
        paths = (first, second)
    else:
        template, sign = _DIFFERENCE_QUESTION[attribute]
        if sign * (values[0] - values[1]) < 0:
            phrases.reverse()
            values.reverse()
            first, second = second, first
        answer = str(sign * (values[0] - values[1]))
        paths = (first, second)
    text = template.format(*phrases)
    return _assemble(world, text[0].upper() + text[1:], answer, kind, paths)
