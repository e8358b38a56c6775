"""The default agent's state: its conversation stored as deltas, not as the whole list at every step.

With LangGraph's stock `add_messages` channel every checkpoint stores the whole
message list again, so a thread's storage grows with the square of its length.
`DeltaChannel` (LangGraph >= 1.2, beta) stores only what each step wrote and rebuilds
the list from the nearest snapshot by replaying those writes (docs/performance.md has
the figures).

The merge is LangGraph's public `add_messages`, applied to a batch of writes at once
(`add_messages_batch`), so the stored conversation means what it means in LangGraph's
`MessagesState`: ids replace, `RemoveMessage` removes (an unknown id is an error),
`REMOVE_ALL_MESSAGES` clears. tests/e2e/test_delta_storage.py checks the rebuilt
conversation against the live one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, TypedDict, cast

from langchain_core.messages import AnyMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.graph.message import add_messages

SNAPSHOT_EVERY = 1000
"""Updates of the channel between two full snapshots of the list.

A snapshot bounds how many writes a cold read replays, but stores the whole list
again: at LangGraph's default of 100 (about 50 plain turns) the snapshots alone make
a long thread's bytes per turn grow with its length. Hot threads are read from the
replica's memory (storage.hot_states), so replay length matters only on a cold read.
"""


def add_messages_batch(state: list[AnyMessage], writes: Sequence[Any]) -> list[AnyMessage]:
    """`DeltaChannel` reducer: the writes (each a message-like or a list of them), in order, merged by `add_messages`.

    One `add_messages` call for the whole batch, so a cold read that replays a thousand
    writes indexes the conversation once, not once a write. That is batching-invariant,
    as `DeltaChannel` requires, for every write but one kind: a batch that removes an id
    and then writes that id again keeps the message where it was, where two batches move
    it to the end (`add_messages` on one list does the same). The default agent and the
    engine remove no message; a user's graph has a state of its own.
    """
    flat: list[Any] = []
    for write in writes:
        if isinstance(write, list):
            flat.extend(write)
        else:
            flat.append(write)
    # Typed for any message-like; given lists, it returns a list of messages.
    return cast("list[AnyMessage]", add_messages(cast("list[Any]", state), flat))


class AgentState(TypedDict):
    """What the default agent keeps per thread."""

    messages: Annotated[list[AnyMessage], DeltaChannel(add_messages_batch, snapshot_frequency=SNAPSHOT_EVERY)]
