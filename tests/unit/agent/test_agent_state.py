"""The default agent's messages reducer is LangGraph's `add_messages`, over `DeltaChannel`'s batches of writes.

`DeltaChannel` replays a thread's writes in batches other than those the steps made, so the
reducer must give the same list however the writes are cut into batches, and the same list
as `add_messages` applied write by write, as a `MessagesState` graph would.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, RemoveMessage, ToolMessage
from langgraph.graph.message import REMOVE_ALL_MESSAGES, add_messages

from threadline.agent.state import add_messages_batch


def _shape(messages: list[AnyMessage]) -> list[tuple[str, str | None, Any]]:
    return [(type(m).__name__, m.id, m.content) for m in messages]


def _writes(rng: random.Random, count: int) -> list[Any]:
    """Writes as the agent and the engine make them: new messages (alone or in lists), and replacements by id."""
    known: list[str] = []
    serial = itertools.count(1)
    writes: list[Any] = []
    for _ in range(count):
        write: list[Any] = []
        for _ in range(rng.randint(1, 3)):
            n = next(serial)
            if known and rng.random() < 0.3:
                write.append(AIMessage(content=f"edited {n}", id=rng.choice(known)))
            else:
                known.append(f"m{n}")
                kind = rng.choice([HumanMessage, AIMessage])
                message = (
                    ToolMessage(content=f"result {n}", tool_call_id=f"c{n}", id=f"m{n}")
                    if rng.random() < 0.2
                    else kind(content=f"text {n}", id=f"m{n}")
                )
                write.append(message)
        writes.append(write if len(write) > 1 or rng.random() < 0.5 else write[0])
    return writes


def test_any_cut_into_batches_gives_add_messages_write_by_write() -> None:
    rng = random.Random(20261205)
    for _ in range(30):
        writes = _writes(rng, 40)
        one_by_one: list[AnyMessage] = []
        for write in writes:
            one_by_one = add_messages(one_by_one, write)  # type: ignore[assignment]
        batched: list[AnyMessage] = []
        start = 0
        while start < len(writes):
            end = start + rng.randint(1, 12)
            batched = add_messages_batch(batched, writes[start:end])
            start = end
        assert _shape(batched) == _shape(one_by_one)
        assert _shape(add_messages_batch([], writes)) == _shape(one_by_one)


def test_removals_are_langgraphs() -> None:
    state = add_messages_batch([], [[HumanMessage(content="hi", id="a"), AIMessage(content="hello", id="b")]])
    assert _shape(add_messages_batch(state, [RemoveMessage(id="a")])) == [("AIMessage", "b", "hello")]
    cleared = add_messages_batch(state, [[RemoveMessage(id=REMOVE_ALL_MESSAGES), HumanMessage(content="anew", id="c")]])
    assert _shape(cleared) == [("HumanMessage", "c", "anew")]
    with pytest.raises(ValueError, match="doesn't exist"):
        add_messages_batch(state, [RemoveMessage(id="never-written")])
