"""Arithmetic without `eval`: a small evaluator over Python's expression syntax tree."""

from __future__ import annotations

import ast
import math
import operator
import re

MAX_LENGTH = 200
MAX_EXPONENT = 64
MAX_MAGNITUDE = 1e100

BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
FUNCTIONS = {"sqrt": math.sqrt, "abs": abs, "round": round, "log": math.log10, "ln": math.log, "exp": math.exp}
CONSTANTS = {"pi": math.pi, "e": math.e}

# Spoken or typed forms a model may pass through: "3 times 4", "2^10", "15% of 80", "12 ÷ 4".
WORDS = [
    (r"(\d+(?:\.\d+)?)\s*(?:%|percent)\s*of\b", r"(\1/100)*"),
    (r"^(?:what is|what's|calculate|compute|how much is)\s+", ""),
    (r"\b(?:the )?square root of\s*(\d+(?:\.\d+)?)", r"sqrt(\1)"),
    (r"\b(?:multiplied by|times)\b|[×x](?=\s*[\d(])", "*"),
    (r"\bdivided by\b|÷", "/"),
    (r"\bplus\b", "+"),
    (r"\bminus\b", "-"),
    (r"\bto the power of\b|\^", "**"),
    (r"\bsquared\b", "**2"),
    (r"\bcubed\b", "**3"),
    (r"(?<=\d),(?=\d{3}\b)", ""),
]


class CalculationError(ValueError):
    pass


def normalise(expression: str) -> str:
    text = expression.strip().lower().rstrip("=?. ")
    for pattern, replacement in WORDS:
        text = re.sub(pattern, replacement, text)
    return text


def evaluate(expression: str) -> float | int:
    text = normalise(expression)
    if not text:
        raise CalculationError("there is no expression to calculate")
    if len(text) > MAX_LENGTH:
        raise CalculationError("the expression is too long")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalculationError(f"I can't read '{expression}' as arithmetic") from None
    return _eval(tree.body)


def _eval(node: ast.AST) -> float | int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id in CONSTANTS:
        return CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalculationError("that exponent is too large")
        try:
            result = BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise CalculationError("division by zero is undefined") from None
        if isinstance(result, complex) or abs(result) > MAX_MAGNITUDE:
            raise CalculationError("the result is out of range")
        return result
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in FUNCTIONS
        and not node.keywords
        and 1 <= len(node.args) <= 2
    ):
        try:
            return FUNCTIONS[node.func.id](*(_eval(a) for a in node.args))
        except (ValueError, OverflowError):
            raise CalculationError(f"{node.func.id} is undefined there") from None
    raise CalculationError("only numbers, + - * / ** %, parentheses and sqrt, abs, round, log, ln, exp are allowed")


def spoken_number(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    # Said aloud, every digit is a word: four significant digits (two decimals from 10 on), "about" when rounded.
    if value != 0 and not 1e-4 <= abs(value) < 1e15:
        mantissa, exponent = f"{value:.3e}".split("e")
        return f"about {float(mantissa):g} times ten to the power of {int(exponent)}"
    short = f"{value:.4g}" if abs(value) < 10 else f"{value:,.2f}".rstrip("0").rstrip(".")
    return short if math.isclose(float(short.replace(",", "")), value, rel_tol=1e-12) else f"about {short}"
