"""The default agent's state: its conversation stored as deltas, not as the whole list at every step.

With LangGraph's stock `add_messages` channel every checkpoint stores the whole
message list again, so a thread's storage grows with the square of its length
(FIELD-NOTES: 375 MiB at 500 turns). `DeltaChannel` (LangGraph >= 1.2, beta) stores
only what each step wrote and rebuilds the list from the nearest snapshot by
replaying those writes (docs/performance.md has the figures).

The reducer is LangGraph's own batch form of `add_messages`, as its docs show it
(`langgraph.graph.message._messages_delta_reducer`; underscored, but re-exported for
this use). LangGraph recognizes it and gives every message written to the channel a
stable id before the write is stored (`ensure_message_ids`): with any other reducer a
message written without an id would get a new random id on every replay. It does not
implement `REMOVE_ALL_MESSAGES` or the error for removing an unknown id; the default
agent writes neither. The langgraph version is pinned (constraints.txt) and
tests/test_delta_storage.py checks the rebuilt conversation against the live one.
"""

from __future__ import annotations

from typing import Annotated, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.graph.message import _messages_delta_reducer

SNAPSHOT_EVERY = 1000
"""Updates of the channel between two full snapshots of the list.

A snapshot bounds how many writes a cold read replays, but stores the whole list
again: at LangGraph's default of 100 (about 50 plain turns) the snapshots alone make
a long thread's bytes per turn grow with its length. Hot threads are read from the
replica's memory (engine.hot_states), so replay length matters only on a cold read.
"""


class AgentState(TypedDict):
    """What the default agent keeps per thread."""

    messages: Annotated[list[AnyMessage], DeltaChannel(_messages_delta_reducer, snapshot_frequency=SNAPSHOT_EVERY)]
