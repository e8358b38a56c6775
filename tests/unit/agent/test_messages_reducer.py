"""The default agent's messages reducer gives exactly what LangGraph's batch reducer gives, call for call.

`agent/messages_reducer.py` keeps the id index of the lists it returned, so that a long
conversation is not indexed again on every write. These hold it to LangGraph's own
`_messages_delta_reducer` over random sequences of appends, replacements, removals,
id-less messages and batches, called on the lists it returned, on copies of them (as
LangGraph copies a channel before a conditional edge reads it), on older lists, and on
lists edited in place after it returned them (whose index must not be used).
"""

from __future__ import annotations

import copy
import itertools
import random
from collections.abc import Iterator
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, RemoveMessage, ToolMessage
from langgraph.graph.message import _messages_delta_reducer

from threadline.agent.messages_reducer import _indexes, add_messages_batch


def _shape(messages: list[AnyMessage]) -> list[tuple[str, str | None, Any]]:
    return [(type(m).__name__, m.id, m.content) for m in messages]


def _write(rng: random.Random, known: list[str], serial: Iterator[int]) -> list[Any]:
    """One write: a few messages, each new, replacing a known id, removing one, or without an id."""
    write: list[Any] = []
    for _ in range(rng.randint(1, 3)):
        n = next(serial)
        kind = rng.random()
        if kind < 0.55 or not known:
            message_id = f"m{n}"
            known.append(message_id)
            write.append(rng.choice([HumanMessage, AIMessage])(content=f"text {n}", id=message_id))
        elif kind < 0.75:
            write.append(AIMessage(content=f"edited {n}", id=rng.choice(known)))
        elif kind < 0.88:
            write.append(RemoveMessage(id=rng.choice([*known, "never-written"])))
        else:
            write.append(ToolMessage(content=f"no id {n}", tool_call_id=f"call{n}"))
    return write


def test_it_gives_what_langgraphs_reducer_gives_on_every_kind_of_list() -> None:
    rng = random.Random(20261123)
    for _ in range(40):
        ours: list[AnyMessage] = []
        stock: list[AnyMessage] = []
        history: list[tuple[list[AnyMessage], list[AnyMessage]]] = []
        known: list[str] = []
        serial = itertools.count(1)
        for _ in range(60):
            writes = [_write(rng, known, serial) for _ in range(rng.randint(1, 2))]
            how = rng.random()
            if how < 0.2:  # a copy of the current list, as a channel copy makes
                base_ours, base_stock = copy.copy(ours), copy.copy(stock)
            elif how < 0.3 and history:  # an older list (a fork, a rewind)
                base_ours, base_stock = rng.choice(history)
            elif how < 0.4 and ours:  # the current list, edited in place after it was returned
                extra = AIMessage(content="appended in place", id=f"inplace{next(serial)}")
                ours.append(extra)
                stock.append(extra)
                base_ours, base_stock = ours, stock
            else:
                base_ours, base_stock = ours, stock
            ours = add_messages_batch(base_ours, writes)
            stock = _messages_delta_reducer(base_stock, writes)
            assert _shape(ours) == _shape(stock)
            history.append((ours, stock))


def test_the_index_of_a_returned_list_is_reused_and_not_after_an_edit() -> None:
    first = add_messages_batch([], [[HumanMessage(content="hi", id="a"), AIMessage(content="hello", id="b")]])
    assert _indexes.of(first) == {"a": 0, "b": 1}
    assert _indexes.of(copy.copy(first)) == {"a": 0, "b": 1}, "a channel's copy finds the index"
    second = add_messages_batch(first, [[AIMessage(content="hello again", id="b"), HumanMessage(content="x", id="c")]])
    assert _indexes.of(second) == {"a": 0, "b": 1, "c": 2}
    assert _indexes.of(first) == {"a": 0, "b": 1}, "the older list keeps its own index"
    second.append(AIMessage(content="edited in place", id="d"))
    assert _indexes.of(second) is None, "a list edited in place is indexed again"
    third = add_messages_batch(second, [[RemoveMessage(id="a")]])
    assert _shape(third) == _shape(_messages_delta_reducer(second, [[RemoveMessage(id="a")]]))
    assert _indexes.of(third) is None, "after a removal positions moved: the next call indexes again"
