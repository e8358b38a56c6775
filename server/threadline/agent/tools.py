"""Tools of the default agent. They work offline and never execute caller text as code."""

from __future__ import annotations

import ast
import datetime as dt
import math
import operator
from collections.abc import Callable
from typing import Any, cast

from langchain_core.tools import BaseTool, StructuredTool

_MAX_EXPRESSION_CHARS = 200
_MAX_EXPONENT = 1000
_MAX_MAGNITUDE = 1e300

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


class CalculationError(ValueError):
    """An expression the calculator refuses or cannot evaluate."""


def evaluate(expression: str) -> float:
    """Evaluates + - * / // % ** and parentheses over numbers, nothing else.

    Walks the AST itself instead of calling eval(), and bounds exponents and
    magnitudes, so a hostile expression can neither run code nor burn CPU.
    """
    if len(expression) > _MAX_EXPRESSION_CHARS:
        raise CalculationError(f"expression longer than {_MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError:
        raise CalculationError(f"not an arithmetic expression: {expression!r}") from None
    return _eval(tree.body)


def _eval(node: ast.expr) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return cast(float, node.value)  # ints stay exact
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise CalculationError(f"exponent above {_MAX_EXPONENT}")
        try:
            result = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise CalculationError("division by zero") from None
        except OverflowError:
            raise CalculationError("result too large") from None
        if isinstance(result, complex) or (isinstance(result, float) and not math.isfinite(result)):
            raise CalculationError("result is not a finite real number")
        if abs(result) > _MAX_MAGNITUDE:
            raise CalculationError("result too large")
        return result
    raise CalculationError("only numbers, + - * / // % ** and parentheses are allowed")


def format_number(value: float) -> str:
    """Prints integers without a fraction and floats without float noise."""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:.12g}"


def _calculator(expression: str) -> str:
    """Evaluates an arithmetic expression such as "2 + 3 * (4 - 1)" or "2 ** 10"."""
    return format_number(evaluate(expression))


def _current_time() -> str:
    """Returns the current date and time in UTC, in ISO 8601."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def _on_the_loop(name: str, function: Callable[..., str]) -> BaseTool:
    """The function as the tool `name`, whose async call runs it on the event loop.

    langchain-core runs a plain function's async call on a worker thread: a thread hop, and a GIL
    hand-off each way, for work of microseconds (evaluate is bounded). docs/performance.md has
    what the hops cost a tool turn.
    """

    async def on_the_loop(**arguments: Any) -> str:
        return function(**arguments)

    return StructuredTool.from_function(function, name=name, coroutine=on_the_loop)


calculator = _on_the_loop("calculator", _calculator)
current_time = _on_the_loop("current_time", _current_time)


def default_tools() -> list[BaseTool]:
    """The tools the default agent can call."""
    return [calculator, current_time]
