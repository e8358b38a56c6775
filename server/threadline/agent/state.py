"""The default agent's state: its conversation stored as deltas, not as the whole list at every step.

With LangGraph's stock `add_messages` channel every checkpoint stores the whole
message list again, so a thread's storage grows with the square of its length
(FIELD-NOTES: 375 MiB at 500 turns). `DeltaChannel` (LangGraph >= 1.2, beta) stores
only what each step wrote and rebuilds the list from the nearest snapshot by
replaying those writes (docs/performance.md has the figures).

The reducer is LangGraph's batch form of `add_messages`
(`langgraph.graph.message._messages_delta_reducer`, as LangGraph's docs show it) in a
form that does not index the whole conversation on every write
(engine.messages_reducer, which says what it gives up: LangGraph stamps ids on
message-likes written to the channel only for its own reducer; message objects get
theirs with any reducer, and the default agent and the engine write only those). It
does not implement `REMOVE_ALL_MESSAGES` or the error for removing an unknown id; the
default agent writes neither. The langgraph version is pinned (constraints.txt),
tests/unit/agent/test_messages_reducer.py holds the reducer to LangGraph's, and
tests/e2e/test_delta_storage.py checks the rebuilt conversation against the live one.
"""

from __future__ import annotations

from typing import Annotated, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.channels.delta import DeltaChannel

from threadline.agent.messages_reducer import add_messages_batch

SNAPSHOT_EVERY = 1000
"""Updates of the channel between two full snapshots of the list.

A snapshot bounds how many writes a cold read replays, but stores the whole list
again: at LangGraph's default of 100 (about 50 plain turns) the snapshots alone make
a long thread's bytes per turn grow with its length. Hot threads are read from the
replica's memory (engine.hot_states), so replay length matters only on a cold read.
"""


class AgentState(TypedDict):
    """What the default agent keeps per thread."""

    messages: Annotated[list[AnyMessage], DeltaChannel(add_messages_batch, snapshot_frequency=SNAPSHOT_EVERY)]
