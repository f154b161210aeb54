"""ToolQA: answer multi-hop questions about a generated encyclopedia with search, lookup and a calculator."""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from hiergym.envs.core import (
    NOTHING_HAPPENS,
    EpisodeEnd,
    check_options,
    make_info,
    normalize_action,
    select_task,
    text_action_space,
    text_observation_space,
)
from hiergym.envs.toolqa.answers import NUMBER_IN_TEXT, exact_match, f1_score, normalize_answer
from hiergym.envs.toolqa.calculator import CalculatorError, calculate, format_number
from hiergym.envs.toolqa.questions import MAX_HOPS, Question, generate_question
from hiergym.envs.toolqa.world import World, generate_world

ENV_NAME = "hiergym/ToolQA-v0"
TOOLS = ("search", "lookup", "calculate", "answer")
TOOL_HELP = (
    "Tools: search[query] (top matching sentences), lookup[entity] (an entity's full page), "
    "calculate[expression] (arithmetic), answer[text] (your final answer; ends the episode)."
)
EXPERT_ANSWERS = ("gold", "shown")
_TOOL_CALL = re.compile(r"^(search|lookup|calculate|answer)\[(.*)\]$")
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    # Prepositions stay: "founded by" and "founded in" are different facts.
    "a an and are as be how is it its many much of or than that the this to was were what when where which "
    "who whom why".split()
)


class ToolQAEnv(EpisodeEnd, gym.Env):
    """Multi-hop question answering with tools over a seeded, generated encyclopedia.

    Each task is a fresh world (12 people, 6 cities, 6 companies, 6 works, each with a one-fact-per-sentence
    page; see :mod:`hiergym.envs.toolqa.world`) and a question needing ``hops`` pages: a chain of relations,
    or two chains compared or subtracted (:mod:`hiergym.envs.toolqa.questions`).

    **Observation**: text. On reset, the question and the list of tools; after each step, the tool's result.

    **Action**: one tool call as text (case and surrounding whitespace are ignored):

    - ``search[query]``: BM25 (``bm25s``) over the pages; the best sentence of each of the ``top_k`` best pages.
    - ``lookup[entity]``: the entity's full page (leading articles and quotes are forgiven). An unknown entity
      is an invalid action that suggests close names.
    - ``calculate[expression]``: safe arithmetic (:mod:`hiergym.envs.toolqa.calculator`; never ``eval``).
      An expression it refuses (``1/0``, ``__import__('os')``) is an invalid action with the reason.
    - ``answer[text]``: the final answer; ends the episode.

    Anything else is an invalid action (``Nothing happens.`` and the tool list).

    **Reward**: 1.0 when the answer is correct (normalised exact match, :mod:`hiergym.envs.toolqa.answers`),
    else 0.0; 0.0 for every other step. Cost-aware rewards come from :class:`hiergym.envs.wrappers.ToolBudget`.

    **Episode end**: terminated on ``answer[...]``; truncated after ``max_steps`` steps. Every step after
    that, until ``reset``, repeats the last observation with reward 0 and ``action_valid=False`` (the
    contract's rule, :class:`~hiergym.envs.core.EpisodeEnd`).

    **Info** (besides the contract keys): ``hops``, ``question_kind``, ``minimal_tool_calls`` (pages a
    deliberate agent must read: OTC's optimal number of calls; arithmetic needs no tool), ``tool_calls``
    (search/lookup/calculate calls so far, well-formed or not), ``answered``, ``em`` and ``f1`` of the answer
    (0.0 before), and once the episode ends ``gold_answer``.

    ``won`` is a correct answer. ``state_key`` is the task plus which of the needed facts the agent has seen (a
    lookup shows a whole page, a search shows single sentences): the information state that decides the
    rest of the solution. ``admissible_actions`` lists ``lookup[...]`` for every entity the agent knows of
    (named in the question or in a tool result so far; ``[]`` once the episode is over); free-text actions (search, calculate, answer) cannot
    be enumerated and are not listed. ``expert_plan()`` looks up each page with a needed fact not yet seen,
    then answers: ``minimal_tool_calls`` lookups from reset. With ``expert_answers="shown"`` every answer it
    gives is text it has been shown, which a policy restricted to what it has seen can imitate
    (``action_constraint="observation_spans"``): before a difference it calls ``calculate[larger - smaller]``
    on the two values it read (once), and it writes a number as the page did (``2,294,000``).

    Splits: ``eval_out`` questions use a held-out composition of two relations
    (:data:`~hiergym.envs.toolqa.questions.HELD_OUT_COMPOSITIONS`), never seen in ``train`` / ``eval_in``;
    they need ``hops >= 2``. ``options["hops"]`` on reset overrides the difficulty for one episode.

    Args:
        hops: pages a question needs, an int in 1..4 or a sequence to draw from (default: 1 to 4).
        top_k: search results shown per query.
        max_steps: steps before truncation.
        expert_answers: ``"gold"`` (``expert_plan`` answers the gold answer's text, a difference at once:
            arithmetic needs no tool) or ``"shown"`` (text it has been shown, above).
        render_mode: ``"ansi"`` or None.

    Version history: v0, ``expert_answers`` added without changing the default expert.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}
    #: Tool costs the :class:`~hiergym.envs.wrappers.ToolBudget` wrapper uses by default: every tool but answer.
    default_tool_costs = {"search": 1.0, "lookup": 1.0, "calculate": 1.0}

    def __init__(
        self,
        hops: int | Sequence[int] = (1, 2, 3, 4),
        top_k: int = 3,
        max_steps: int = 20,
        expert_answers: str = "gold",
        render_mode: str | None = None,
    ) -> None:
        self.hops_choices = self._validate_hops(hops)
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None")
        self.top_k = top_k
        self.max_steps = max_steps
        if expert_answers not in EXPERT_ANSWERS:
            raise ValueError(f"expert_answers must be one of {', '.join(EXPERT_ANSWERS)}, got {expert_answers!r}")
        self.expert_answers = expert_answers
        self.render_mode = render_mode
        self.observation_space = text_observation_space()
        self.action_space = text_action_space()
        self.world: World | None = None
        self.question: Question | None = None
        self._retriever = None
        self._page_keys: list[str] = []
        self._aliases: dict[str, str] = {}
        self._task_digest = ""
        self._seen_facts: set[tuple[str, str]] = set()
        self._known_entities: set[str] = set()
        self._steps = 0
        self._tool_calls = 0
        self._answered = False
        self._calculated = False  # a calculate call returned the answer (the "shown" expert's step)
        self._em = False
        self._f1 = 0.0
        self._done = False
        self._last_observation = ""

    # ------------------------------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = check_options(options)
        split, _, task_rng = select_task(ENV_NAME, self.np_random, options)
        hops_choices = self._validate_hops(options["hops"]) if "hops" in options else self.hops_choices
        if split == "eval_out":
            hops_choices = tuple(h for h in hops_choices if h >= 2)
            if not hops_choices:
                raise ValueError("eval_out holds out compositions of two relations; it needs hops >= 2")
        hops = hops_choices[int(task_rng.integers(len(hops_choices)))]
        self.world = generate_world(task_rng)
        self.question = generate_question(self.world, task_rng, hops, split)
        self._build_index()
        self._task_digest = hashlib.sha256(
            f"{self.world.digest()}|{self.question.text}".encode()
        ).hexdigest()[:12]
        self._seen_facts = set()
        self._known_entities = {p.anchor for p in self.question.paths}
        self._steps = self._tool_calls = 0
        self._answered = self._em = self._done = self._calculated = False
        self._f1 = 0.0
        self._last_observation = f"Question: {self.question.text}\n{TOOL_HELP}"
        return self._last_observation, self._info(action_valid=True)

    def step(self, action: Any):
        if self.question is None:
            raise RuntimeError("call reset() before step()")
        self._steps += 1
        text = normalize_action(action)
        match = _TOOL_CALL.match(text) if text is not None else None
        reward, valid = 0.0, False
        if match is None:
            observation = f"{NOTHING_HAPPENS} {TOOL_HELP}"
        else:
            tool, argument = match.group(1), match.group(2).strip()
            if tool != "answer":
                self._tool_calls += 1
            if not argument:
                observation = f"{NOTHING_HAPPENS} {tool}[...] needs an argument inside the brackets."
            elif tool == "search":
                observation, valid = self._search(argument)
            elif tool == "lookup":
                observation, valid = self._lookup(argument)
            elif tool == "calculate":
                observation, valid = self._calculate(argument)
            else:
                observation, valid = self._answer(argument), True
                reward = 1.0 if self._em else 0.0
        terminated = self._answered
        truncated = not terminated and self._steps >= self.max_steps
        self._done = terminated or truncated
        self._last_observation = observation
        return observation, reward, terminated, truncated, self._info(action_valid=valid)

    def render(self) -> str:
        # The text view is the only view, so it is returned whatever the render mode (as the contract expects).
        if self.question is None:
            return ""
        return f"Question: {self.question.text}\n\n{self._last_observation}\n"

    # ------------------------------------------------------------------------------------------ expert
    def expert_plan(self) -> list[str] | None:
        """Look up every page holding a needed fact not yet seen, then answer: the minimal calls from here."""
        if self.question is None or self._done:
            return []
        plan = [
            f"lookup[{self.world.entity(page).name}]"
            for page in self.question.pages
            if any(fact not in self._seen_facts for fact in self.question.needed_facts if fact[0] == page)
        ]
        answer = self.question.answer
        if self.expert_answers == "shown":
            if self.question.kind == "difference" and not self._calculated:
                larger, smaller = sorted((int(p.value(self.world)) for p in self.question.paths), reverse=True)
                plan.append(f"calculate[{larger} - {smaller}]")
            elif answer.isdigit():  # spelled as the page holding the answer writes it (known from reset on)
                page = self.question.needed_facts[-1][0]
                answer = next((m.group(0) for m in NUMBER_IN_TEXT.finditer(self.world.page_text(page))
                               if exact_match(m.group(0), answer)), answer)
        return [*plan, f"answer[{answer}]"]

    # ------------------------------------------------------------------------------------------ tools
    def _build_index(self) -> None:
        import bm25s  # loaded on first reset, not when hiergym is imported

        self._page_keys = list(self.world.pages)
        texts = [self.world.page_text(key) for key in self._page_keys]
        self._retriever = bm25s.BM25()
        self._retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
        self._aliases = {}
        for key in self._page_keys:
            name = self.world.entities[key].name
            self._aliases[name.lower()] = key
            self._aliases.setdefault(normalize_answer(name), key)

    def _search(self, query: str) -> tuple[str, bool]:
        import bm25s

        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        k = min(self.top_k, len(self._page_keys))
        documents, scores = self._retriever.retrieve(tokens, k=k, show_progress=False)
        hits = [(int(d), float(s)) for d, s in zip(documents[0], scores[0], strict=True) if s > 0]
        if not hits:
            return f"No results for '{query}'.", True
        query_words = set(_WORD.findall(query.lower())) - _STOPWORDS
        lines = [f"Search results for '{query}':"]
        for rank, (doc, _) in enumerate(hits, start=1):
            key = self._page_keys[doc]
            sentences = self.world.pages[key]
            # The snippet is the page's sentence sharing most words with the query (the first on a tie).
            overlap = [len(query_words & set(_WORD.findall(s.lower()))) for _, s in sentences]
            field_name, sentence = sentences[int(np.argmax(overlap))]
            self._reveal(key, [(field_name, sentence)])
            lines.append(f"{rank}. [{self.world.entities[key].name}] {sentence}")
        return "\n".join(lines), True

    def _lookup(self, argument: str) -> tuple[str, bool]:
        name = argument.strip().strip("\"'").strip()
        key = self._aliases.get(name) or self._aliases.get(normalize_answer(name))
        if key is None:
            close = difflib.get_close_matches(name, [self.world.entities[k].name.lower() for k in self._page_keys],
                                              n=3, cutoff=0.6)
            hint = f" Did you mean: {', '.join(close)}?" if close else f" Try search[{name}]."
            return f"There is no page for '{name}'.{hint}", False
        entity = self.world.entities[key]
        self._reveal(key, self.world.pages[key])
        return f"{entity.name} ({entity.kind})\n{self.world.page_text(key)}", True

    def _calculate(self, expression: str) -> tuple[str, bool]:
        try:
            result = format_number(calculate(expression))
            self._calculated = self._calculated or exact_match(result, self.question.answer)
            return f"{expression} = {result}", True
        except CalculatorError as error:
            return f"Calculator error: {error}.", False

    def _answer(self, text: str) -> str:
        self._answered = True
        self._em = exact_match(text, self.question.answer)
        self._f1 = f1_score(text, self.question.answer)
        return f"Your answer: {text}. " + ("Correct." if self._em else "Incorrect.")

    def _reveal(self, key: str, sentences: list[tuple[str, str]]) -> None:
        entity = self.world.entities[key]
        self._known_entities.add(entity.name)
        for field_name, _ in sentences:
            self._seen_facts.add((entity.name, field_name))
            value = entity.fields[field_name]
            if isinstance(value, str) and value.lower() in self.world.entities:
                self._known_entities.add(self.world.entities[value.lower()].name)

    # ------------------------------------------------------------------------------------------ info
    def _info(self, *, action_valid: bool) -> dict[str, Any]:
        seen = sorted(f"{e}.{f}" for e, f in self.question.needed_facts if (e, f) in self._seen_facts)
        state_key = f"toolqa:{self._task_digest}|seen:{','.join(seen)}|answered:{int(self._answered)}"
        extra: dict[str, Any] = {
            "hops": self.question.hops,
            "question_kind": self.question.kind,
            "minimal_tool_calls": self.question.minimal_tool_calls,
            "tool_calls": self._tool_calls,
            "answered": self._answered,
            "em": float(self._em),
            "f1": float(self._f1),
        }
        if self._done or self._answered:
            extra["gold_answer"] = self.question.answer
        return make_info(
            task=self.question.text,
            # [] once the episode is over (nothing is accepted), never None: one type on every step
            admissible_actions=[] if self._done else [f"lookup[{n}]" for n in sorted(self._known_entities)],
            won=self._em,
            action_valid=action_valid,
            state_key=state_key,
            **extra,
        )

    @staticmethod
    def _validate_hops(hops: int | Sequence[int]) -> tuple[int, ...]:
        choices = (hops,) if isinstance(hops, int | np.integer) else tuple(hops)
        if not choices or any(isinstance(h, bool) or not isinstance(h, int | np.integer) for h in choices) or any(
            not 1 <= h <= MAX_HOPS for h in choices
        ):
            raise ValueError(f"hops must be an int in 1..{MAX_HOPS} or a non-empty list of them, got {hops!r}")
        return tuple(int(h) for h in choices)
