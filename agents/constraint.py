"""Decoding restricted to a set of allowed responses (``action_constraint="admissible"``, ``"task_spans"`` or
``"observation_spans"``).

An agent that constrains its executor passes, per prompt, the responses it may write (the admissible actions
in its output format, :func:`admissible_choices`). The policy tokenizes them and walks a token-prefix trie
(:class:`ChoiceTrie`) while it samples: at every position only the tokens that continue some choice keep
their logits, the rest are set to ``-inf`` *before* the temperature, top-p and the softmax. So

- every sampled response is one of the choices (valid by construction), and
- the behaviour log-probs recorded are those of the *constrained* distribution
  ``log softmax(masked logits / T)``: a token that is the only continuation has log-prob 0.

The allowed token ids of every response position (``response_allowed``) travel with the generation into the
trajectory (``StepRecord.response_allowed``); the update scores the response under the same masks
(:func:`masked_log_softmax`), so for unchanged weights the importance ratio is exactly 1.

A choice ends with the end-of-sequence token unless it ends with one of the call's stop strings (a full-style
``<action>..</action>`` ends at ``</action>``), so a choice that is a prefix of another ("go to cabinet 1" and
"go to cabinet 10") is still a complete response of its own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from hiergym.agents.prompts import format_action_response

#: Values of the agents' ``action_constraint`` option.
ACTION_CONSTRAINTS = ("none", "admissible", "task_spans", "observation_spans")
#: A free-text slot in an admissible-action template (``search[<query>]``).
TEMPLATE_SLOT = re.compile(r"<[a-z_ ]+>")
#: ``task_spans`` fills a slot from the task's first words only (the spans grow as the square of the words).
MAX_SPAN_WORDS = 64
#: ``observation_spans`` fills an answer slot with runs of at most this many words of what the episode has
#: shown (names, values: "Ida Rasdoberg", "1107", "2,294,000"); longer runs are not answers.
MAX_ANSWER_WORDS = 4
#: A number as the envs write it (thousands separators allowed).
_NUMBER = re.compile(r"(?<![\w.,])\d{1,3}(?:,\d{3})+(?!\d|,\d)|(?<![\w.,])\d+(?!\d|,\d)")


def task_spans(task: str) -> list[str]:
    """Every run of consecutive words of ``task`` (its first :data:`MAX_SPAN_WORDS`; brackets and angle brackets,
    which the action syntax reserves, read as spaces): what ``action_constraint="task_spans"`` lets a free-text
    slot hold. The words are joined by single spaces, as the action parser reads them."""
    words = re.sub(r"[\[\]<>]", " ", task).split()[:MAX_SPAN_WORDS]
    return [" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)]


def text_spans(texts: Sequence[str], max_words: int = MAX_ANSWER_WORDS) -> list[str]:
    """Every run of 1..``max_words`` consecutive words within a sentence of ``texts``, in order of first
    appearance, without duplicates. Words lose the punctuation around them ("1107." -> "1107", "[Ida
    Rasdoberg]" -> "Ida Rasdoberg"; a number keeps its separators, "2,294,000"); a sentence or line ends a run."""
    spans: dict[str, None] = {}
    for text in texts:
        for sentence in re.split(r"(?<=[.!?])\s+|\n", text):
            words = [w for w in (w.strip(".,;:!?\"'()[]<>") for w in sentence.split()) if w]
            for i in range(len(words)):
                for j in range(i + 1, min(i + max_words, len(words)) + 1):
                    spans.setdefault(" ".join(words[i:j]))
    return list(spans)


def number_differences(texts: Sequence[str]) -> list[str]:
    """``a - b`` for every ordered pair of different numbers written in ``texts`` (separators dropped): the
    arithmetic ToolQA's difference questions ask for, as a ``calculate[<expression>]`` slot's values."""
    numbers = list(dict.fromkeys(m.group(0).replace(",", "") for text in texts for m in _NUMBER.finditer(text)))
    return [f"{a} - {b}" for a in numbers for b in numbers if a != b]


def slot_values(slot: str, task: str, seen: Sequence[str] | None) -> list[str]:
    """What a template's free-text ``slot`` may hold: under ``task_spans`` (``seen`` None) a run of the task's
    words, whatever the slot; under ``observation_spans`` a search query still a run of the task's words, an
    expression a difference of two numbers seen (:func:`number_differences`), and any other slot (an answer) a
    run of at most :data:`MAX_ANSWER_WORDS` words of the task or of what the episode has shown (``seen``)."""
    if seen is None or slot == "<query>":
        return task_spans(task)
    if slot == "<expression>":
        return number_differences([task, *seen])
    return text_spans([task, *seen])


def admissible_choices(admissible: Sequence[str] | None, style: str, *, subgoal_done: bool = False,
                       task: str | None = None, seen: Sequence[str] | None = None) -> list[str] | None:
    """The responses an executor may write under ``action_constraint="admissible"``: every admissible action
    in the output format of ``style`` (and, for a hierarchical executor, each also with ``<subgoal_done/>``).
    None when the env lists no admissible actions, or lists a template with a free-text slot (WebShop's
    ``search[<query>]``): the response is then unconstrained, unless ``task`` is given
    (``action_constraint="task_spans"``): a template with one slot then stands for itself with the slot
    filled by each run of consecutive words of the task (:func:`task_spans`), so WebShop's query is copied
    from the instruction, which a small model otherwise fails to do on product types it was not trained on.
    With ``seen`` too (the episode's observations, ``action_constraint="observation_spans"``), each slot holds
    what :func:`slot_values` gives it: ToolQA's ``answer[<answer>]`` a run of words it was shown; a template
    that gets no value (no two numbers seen yet) is left out."""
    actions = [a for a in dict.fromkeys(admissible or []) if a]
    if not actions:
        return None
    if any(TEMPLATE_SLOT.search(a) for a in actions):
        if task is None or any(len(TEMPLATE_SLOT.findall(a)) > 1 for a in actions):
            return None
        if seen is None and not task_spans(task):  # task_spans with nothing to copy: unconstrained
            return None
        filled_actions: list[str] = []
        for action in actions:
            slot = TEMPLATE_SLOT.search(action)
            if slot is None:
                filled_actions.append(action)
                continue
            filled_actions += [action[:slot.start()] + value + action[slot.end():]
                               for value in slot_values(slot.group(0), task, seen)]
        actions = list(dict.fromkeys(filled_actions))
        if not actions:
            return None
    choices = [format_action_response(a, style=style) for a in actions]
    if subgoal_done:
        choices += [format_action_response(a, style=style, subgoal_done=True) for a in actions]
    return choices


class ChoiceTrie:
    """A trie over token sequences: which tokens may come next after a given prefix."""

    def __init__(self, sequences: Sequence[Sequence[int]]):
        self.root: dict[int, dict] = {}
        self.longest = 0
        for sequence in sequences:
            node = self.root
            for token in sequence:
                node = node.setdefault(int(token), {})
            self.longest = max(self.longest, len(sequence))

    def allowed(self, prefix: Sequence[int]) -> list[int] | None:
        """Tokens that continue ``prefix`` toward a choice; None once the prefix has left the trie or a choice
        is complete (the response is then unconstrained: it has ended)."""
        node = self.root
        for token in prefix:
            node = node.get(int(token))
            if node is None:
                return None
        return sorted(node) or None

    def along(self, response: Sequence[int]) -> list[list[int]] | None:
        """The allowed tokens at every position of ``response`` (None if it is not a path of the trie)."""
        out: list[list[int]] = []
        node = self.root
        for token in response:
            if not node:
                return None
            out.append(sorted(node))
            node = node.get(int(token))
            if node is None:
                return None
        return out


def choice_sequences(tokenizer: Any, choices: Sequence[str], eos_id: int, stops: Sequence[str] = ()
                     ) -> list[list[int]]:
    """Token ids of each choice as the policy samples it: the text's own tokens (no special tokens), then
    ``eos_id`` unless the text ends with a stop string (generation ends there)."""
    encoded = tokenizer(list(choices), add_special_tokens=False)["input_ids"] if choices else []
    stops = [s for s in stops if s]
    return [list(ids) + ([] if any(text.endswith(s) for s in stops) else [eos_id])
            for text, ids in zip(choices, encoded, strict=True)]


def build_trie(tokenizer: Any, choices: Sequence[str] | None, eos_id: int, stops: Sequence[str] = ()
               ) -> ChoiceTrie | None:
    if not choices:
        return None
    return ChoiceTrie(choice_sequences(tokenizer, choices, eos_id, stops))


def allowed_mask(allowed: Sequence[Sequence[int]], vocab: int, device: torch.device) -> torch.Tensor:
    """[len(allowed), vocab] True where a token is allowed at that position."""
    mask = torch.zeros((len(allowed), vocab), dtype=torch.bool)
    for position, ids in enumerate(allowed):
        mask[position, list(ids)] = True
    return mask.to(device)


def masked_log_softmax(logits: torch.Tensor, temperature: float, allowed: Sequence[Sequence[int]] | None,
                       *, return_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``log softmax(logits / T)`` over [positions, vocab], restricted to the ``allowed`` tokens of each
    position when given (other tokens get ``-inf``); with ``return_entropy`` also the entropy of each
    position's (restricted) distribution, finite and differentiable."""
    scaled = logits.float() / temperature
    if allowed is None:
        step = torch.log_softmax(scaled, dim=-1)
        entropy = -(step.exp() * step).sum(-1) if return_entropy else None
        return step, entropy
    mask = allowed_mask(allowed, scaled.shape[-1], scaled.device)
    step = torch.log_softmax(scaled.masked_fill(~mask, float("-inf")), dim=-1)
    entropy = None
    if return_entropy:
        # 0 * -inf is NaN: masked tokens have probability 0 and contribute 0.
        entropy = -(step.exp() * step.masked_fill(~mask, 0.0)).sum(-1)
    return step, entropy


def mask_logits(logits: torch.Tensor, allowed_rows: Sequence[Sequence[int] | None]) -> torch.Tensor:
    """One decoding step: set to ``-inf`` the logits of every token a row may not write (rows with None are
    unconstrained). ``logits``: [rows, vocab]."""
    if all(a is None for a in allowed_rows):
        return logits
    mask = torch.ones_like(logits, dtype=torch.bool)
    for row, ids in enumerate(allowed_rows):
        if ids is not None:
            mask[row] = False
            mask[row, list(ids)] = True
    return logits.masked_fill(~mask, float("-inf"))


class TrieLogitsProcessor:
    """A Hugging Face ``LogitsProcessor`` for ``model.generate``: masks every row's logits to the tokens its
    trie allows after what the row generated so far (``prompt_width``: where generation started)."""

    def __init__(self, tries: Sequence[ChoiceTrie | None], prompt_width: int):
        self.tries = list(tries)
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_width:].tolist()
        allowed = [trie.allowed(prefix) if trie is not None else None
                   for trie, prefix in zip(self.tries, generated, strict=True)]
        return mask_logits(scores, allowed)
