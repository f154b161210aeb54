"""Answer checking: normalisation, exact match and token F1 (SQuAD-style, with number handling).

Normalisation lower-cases, drops punctuation and the articles *a*, *an*, *the*, collapses whitespace, and
writes numbers canonically: ``"1,250,000"`` -> ``1250000``, ``"12.0"`` -> ``12``, ``"twelve"`` -> ``12``.
A numeric gold answer also matches a prediction whose only number equals it (``"12 years"`` for ``12``), since
the unit is not what the question tests.
"""

from __future__ import annotations

import re
from collections import Counter

_ARTICLES = {"a", "an", "the"}
_NUMBER_WORDS = {
    word: index
    for index, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
# A number with optional thousands separators and decimals, kept whole before punctuation is stripped.
NUMBER_IN_TEXT = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])-?\d+(?:\.\d+)?")


def _canonical_number(text: str) -> str:
    value = float(text.replace(",", ""))
    return str(int(value)) if value.is_integer() else f"{value:.10g}"


def answer_tokens(text: str) -> list[str]:
    """The normalised tokens of an answer."""
    text = str(text).lower()
    text = NUMBER_IN_TEXT.sub(lambda m: f" {_canonical_number(m.group(0))} ", text)
    # Punctuation becomes a space, except a decimal point or minus sign inside a number.
    text = re.sub(r"(?<!\d)\.|\.(?!\d)|-(?!\d)|[^\w\s.\-]", " ", text)
    tokens = []
    for token in text.split():
        if token in _ARTICLES:
            continue
        if token in _NUMBER_WORDS:
            token = str(_NUMBER_WORDS[token])
        tokens.append(token)
    return tokens


def normalize_answer(text: str) -> str:
    """Normalised answer string (see the module docstring)."""
    return " ".join(answer_tokens(text))


def _numbers(tokens: list[str]) -> list[str]:
    return [t for t in tokens if _NUMBER.match(t)]


def exact_match(prediction: str, gold: str) -> bool:
    """Normalised strings are equal, or the gold is a number and is the prediction's only number."""
    pred_tokens, gold_tokens = answer_tokens(prediction), answer_tokens(gold)
    if pred_tokens == gold_tokens:
        return True
    if len(gold_tokens) == 1 and _NUMBER.match(gold_tokens[0]):
        return _numbers(pred_tokens) == gold_tokens
    return False


def f1_score(prediction: str, gold: str) -> float:
    """Token-level F1 between the normalised prediction and gold (1.0 for an exact match)."""
    if exact_match(prediction, gold):
        return 1.0
    pred_tokens, gold_tokens = answer_tokens(prediction), answer_tokens(gold)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)
