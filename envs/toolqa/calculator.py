"""A safe arithmetic calculator for the ``calculate[expression]`` tool.

The expression is parsed with :mod:`ast` (never ``eval``) and walked with a whitelist of node types: numbers,
``+ - * / // % **``, unary signs and parentheses. Everything else (names, calls, attributes, strings,
comparisons...) is rejected. Bounds keep any input cheap to evaluate: at most :data:`MAX_EXPRESSION_CHARS`
characters, :data:`MAX_NESTING` levels of parentheses (checked before parsing, so the parser never recurses
deeply), :data:`MAX_NODES` syntax nodes, exponents of at most :data:`MAX_EXPONENT` in magnitude and every
intermediate value at most :data:`MAX_MAGNITUDE` in magnitude. Failures are a :class:`CalculatorError` whose
message is shown to the agent.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable

MAX_EXPRESSION_CHARS = 256
MAX_NESTING = 16
MAX_NODES = 128
MAX_EXPONENT = 64
MAX_MAGNITUDE = 1e18

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}

# "1,250,000" is how pages print numbers; an agent copying one should not get a tuple error.
_THOUSANDS_SEPARATOR = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


class CalculatorError(ValueError):
    """An expression the calculator refuses or cannot evaluate; the message is meant for the agent."""


def calculate(expression: str) -> int | float:
    """Evaluate an arithmetic expression safely; raises :class:`CalculatorError` with a readable reason."""
    if not isinstance(expression, str):
        raise CalculatorError("the expression must be text")
    text = expression.strip()
    if not text:
        raise CalculatorError("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    text = _THOUSANDS_SEPARATOR.sub("", text).replace("^", "**").replace("x", "*").replace("\u00d7", "*")
    _check_nesting(text)
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise CalculatorError("not an arithmetic expression") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculatorError(f"expression has more than {MAX_NODES} parts")
    value = _evaluate(tree.body)
    return _tidy(value)


def format_number(value: int | float) -> str:
    """How a result is shown: integers plainly, other numbers with up to 10 significant digits."""
    if isinstance(value, int):
        return str(value)
    return f"{value:.10g}"


def _check_nesting(text: str) -> None:
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
            if depth > MAX_NESTING:
                raise CalculatorError(f"more than {MAX_NESTING} nested parentheses")
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise CalculatorError("unbalanced parentheses")
    if depth != 0:
        raise CalculatorError("unbalanced parentheses")


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant):
        # bool is an int subclass; True + 1 is not arithmetic the agent meant.
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise CalculatorError("only numbers and + - * / // % ** ( ) are allowed")
        return _bounded(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _bounded(_UNARY[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        elif isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod) and right == 0:
            raise CalculatorError("division by zero")
        try:
            return _bounded(_BINARY[type(node.op)](left, right))
        except (OverflowError, ZeroDivisionError, ValueError):
            raise CalculatorError("the result is out of range") from None
    raise CalculatorError("only numbers and + - * / // % ** ( ) are allowed")


def _check_power(base: float, exponent: float) -> None:
    if abs(exponent) > MAX_EXPONENT:
        raise CalculatorError(f"exponents are limited to {MAX_EXPONENT}")
    if base == 0 and exponent < 0:
        raise CalculatorError("division by zero")
    if base < 0 and not float(exponent).is_integer():
        raise CalculatorError("a negative number to a fractional power is not a real number")
    # Refuse before computing: 10**64 as an int would be exact and cheap, but 9**9**9 nested is not.
    if base != 0 and exponent * math.log10(abs(base)) > math.log10(MAX_MAGNITUDE):
        raise CalculatorError("the result is too large")


def _bounded(value: int | float) -> int | float:
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("the result is out of range")
    if abs(value) > MAX_MAGNITUDE:
        raise CalculatorError("the result is too large")
    return value


def _tidy(value: int | float) -> int | float:
    """Integral floats become ints so that 10/2 shows as 5, like a pocket calculator."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
