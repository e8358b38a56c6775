"""The default agent's messages reducer: LangGraph's batch `add_messages`, without a pass over the whole list per write.

LangGraph's `_messages_delta_reducer` builds an index of every message id in the
conversation on each call, in Python, and LangGraph calls it for every step's writes
and for every conditional edge's read. On a 1,000-turn thread that was the largest
part of what a turn costs more than on a 10-turn one (py-spy: 2.5 of 6.5 ms).

This reducer gives the same result (tests/unit/agent/test_messages_reducer.py checks it against
LangGraph's, call for call) and keeps the index it built with the list it returned,
so the next call on that list (or on a copy of it: LangGraph copies a channel's list
before a conditional edge reads it) only copies the index and adds the new writes.

What differs from LangGraph's: LangGraph recognizes its own reducer by identity and
turns message-likes written to the channel (strings, tuples, message dicts) into
messages with ids before they are stored; with this one it gives ids to message
objects only. The default agent and the engine write message objects only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, cast

from langchain_core.messages import AnyMessage, BaseMessage, RemoveMessage
from langchain_core.messages.utils import convert_to_messages

_REMEMBERED = 256
"""Lists whose index is kept: one per thread a replica runs at a time is enough (the
hot states keep 256 threads). An entry costs under 100 bytes a message (the index and
the list, which it keeps alive), so at most about 25 MB for 256 threads of 1,000 messages."""


class _Indexes:
    """The id index of recently returned lists, found by their length and last message."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # sync nodes run in executor threads
        self._entries: OrderedDict[tuple[int, int], tuple[list[AnyMessage], dict[str, int]]] = OrderedDict()

    def of(self, messages: Sequence[Any]) -> dict[str, int] | None:
        """The index of a list returned before, or of a copy of it; None if unknown.

        A list the reducer returned is never changed afterwards (LangGraph replaces a
        channel's value, it does not edit it), and appending is the only way the reducer
        moves a message to the end, so a list of the same length ending in the same
        message object holds the same ids in the same places. A list edited in place
        changes its length or its last message, and is not found.
        """
        if not messages:
            return None
        key = (len(messages), id(messages[-1]))
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0][-1] is not messages[-1]:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def remember(self, messages: list[AnyMessage], index: dict[str, int]) -> None:
        if not messages:
            return
        # The entry keeps the list, and so its last message, alive: the id in the key stays its own.
        key = (len(messages), id(messages[-1]))
        with self._lock:
            self._entries[key] = (messages, index)
            self._entries.move_to_end(key)
            while len(self._entries) > _REMEMBERED:
                self._entries.popitem(last=False)


_indexes = _Indexes()


def add_messages_batch(state: list[AnyMessage], writes: Sequence[Any]) -> list[AnyMessage]:
    """`DeltaChannel` reducer: every write (a message-like or a list of them) merged into `state` by id.

    As LangGraph's `_messages_delta_reducer`: a message with a new id (or none) is
    appended, one with a known id replaces that message in place, a `RemoveMessage`
    removes it (an unknown id is ignored). Batching-invariant, as `DeltaChannel` needs.
    """
    flat: list[Any] = []
    for write in writes:
        if isinstance(write, list):
            flat.extend(write)
        else:
            flat.append(write)
    incoming = cast("list[AnyMessage]", convert_to_messages(flat))

    known = _indexes.of(state)
    if known is not None:
        base = state
        index = dict(known)
    else:
        base = (
            state
            if state and isinstance(state[0], BaseMessage)
            else cast("list[AnyMessage]", convert_to_messages(state))
        )
        index = {m.id: i for i, m in enumerate(base) if m.id is not None}

    result: list[AnyMessage | None] = list(base)
    removed = False
    for message in incoming:
        message_id = message.id
        if message_id is None:
            result.append(message)
        elif isinstance(message, RemoveMessage):
            if message_id in index:
                result[index.pop(message_id)] = None
                removed = True
        elif message_id in index:
            result[index[message_id]] = message
        else:
            index[message_id] = len(result)
            result.append(message)
    if removed:  # positions moved: the next call indexes the list again
        return [m for m in result if m is not None]
    merged = cast("list[AnyMessage]", result)
    _indexes.remember(merged, index)
    return merged
