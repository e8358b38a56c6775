"""JSON that callers send (page tokens, Resume values, edited tool arguments), parsed within bounds.

Checkpoints store values with msgpack, which holds integers of 64 bits only, and deeply nested
values exhaust the recursion of every layer that walks them (parsing, serialization, the model
SDK). So a caller's JSON may nest at most MAX_DEPTH levels, hold integers that fit 64 bits and no
NaN or Infinity; anything else is INVALID_ARGUMENT naming the field, never a failure later.
"""

from __future__ import annotations

import json
from typing import Any

from threadline.errors import InvalidArgument

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted."""
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(text: str, field: str) -> Any:
    """The value of a caller's JSON text; InvalidArgument (naming field) for bad or out-of-bounds JSON."""
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise InvalidArgument(field, f"{field} nests deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        raise InvalidArgument(field, f"{field} is not valid JSON") from None
    check(value, field)
    return value


def check(value: Any, field: str) -> None:
    """Raises InvalidArgument when a parsed value nests deeper than MAX_DEPTH or holds an integer over 64 bits."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise InvalidArgument(field, f"{field} nests deeper than {MAX_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
        elif isinstance(item, int) and not isinstance(item, bool) and not _INT_MIN <= item <= _INT_MAX:
            raise InvalidArgument(field, f"{field} holds an integer outside the 64-bit range")
