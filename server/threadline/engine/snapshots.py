"""Reading what LangGraph hands back (stream parts, state snapshots, checkpoint tuples) into views."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.types import Interrupt, StateSnapshot

from threadline.agent.message_text import text_of
from threadline.engine.messages import tool_call_views, views_of
from threadline.engine.views import (
    InterruptView,
    TokenEvent,
    ToolCallEvent,
    ToolCallView,
    ToolResultEvent,
    TurnEvent,
    TurnResult,
)

# Channels in versions_seen that are LangGraph's own bookkeeping, not nodes.
INTERNAL_CHANNELS = ("__input__", "__interrupt__")


def events_of(mode: str, payload: Any) -> Iterator[TurnEvent]:
    """The turn events in one part of astream(stream_mode=["messages", "updates"])."""
    if mode == "messages":
        chunk, _metadata = payload
        if isinstance(chunk, AIMessageChunk):
            text = text_of(chunk)
            if text:
                yield TokenEvent(text=text, message_id=chunk.id or "")
        return
    for update in (payload or {}).values():
        if not isinstance(update, dict):
            continue
        written = update.get("messages", [])
        for message in written if isinstance(written, list) else [written]:
            if isinstance(message, AIMessage):
                for call in tool_call_views(message):
                    yield ToolCallEvent(call)
            elif isinstance(message, ToolMessage):
                yield ToolResultEvent(
                    tool_call_id=message.tool_call_id,
                    name=message.name or "",
                    content=text_of(message),
                    is_error=message.status == "error",
                )


def index_of(messages: list[BaseMessage], human: HumanMessage) -> int:
    """Where the turn that asked `human` starts in the messages."""
    # From the end: the question is among the newest messages, and a thread can hold thousands.
    return next((i for i in range(len(messages) - 1, -1, -1) if messages[i].id == human.id), len(messages))


def turn_result(
    thread_id: str,
    checkpoint_id: str,
    messages: list[BaseMessage],
    interrupts: Iterable[Interrupt],
    start: int,
) -> TurnResult:
    """The turn whose messages start at `start`, as of a checkpoint with these messages and pending interrupts."""
    added = messages[start:]
    answer = next((text_of(m) for m in reversed(added) if isinstance(m, AIMessage)), "")
    return TurnResult(
        thread_id=thread_id,
        answer=answer,
        checkpoint_id=checkpoint_id,
        messages=views_of(added),
        interrupts=tuple(interrupt_view(item) for item in interrupts),
    )


def snapshot_turn(thread_id: str, state: StateSnapshot, human: HumanMessage) -> TurnResult:
    """The turn that asked `human`, as of a state snapshot."""
    messages: list[BaseMessage] = list(state.values.get("messages", []))
    start = index_of(messages, human)
    return turn_result(thread_id, str(state.config["configurable"]["checkpoint_id"]), messages, state.interrupts, start)


def interrupt_view(item: Interrupt) -> InterruptView:
    """A pending interrupt; the approval node's tool calls are spelled out."""
    value = item.value
    calls = value.get("tool_calls", []) if isinstance(value, dict) else []
    return InterruptView(
        interrupt_id=item.id,
        tool_calls=tuple(
            ToolCallView(id=c.get("id") or "", name=c.get("name", ""), arguments_json=json.dumps(c.get("args", {})))
            for c in calls
            if isinstance(c, dict)
        ),
        value_json=json.dumps(value, default=str),
    )


def writers(item: CheckpointTuple, parent: CheckpointTuple | None) -> tuple[str, ...]:
    """The nodes that ran in the step that wrote `item`."""
    # A node that ran in the step that wrote `item` has a newer versions_seen entry than in its parent.
    seen = item.checkpoint.get("versions_seen", {})
    before = parent.checkpoint.get("versions_seen", {}) if parent is not None else {}
    return tuple(
        sorted(
            node for node, versions in seen.items() if node not in INTERNAL_CHANNELS and before.get(node) != versions
        )
    )


def id_of(item: CheckpointTuple) -> str:
    """The checkpoint's id."""
    return str(item.config["configurable"]["checkpoint_id"])


def stored_messages(item: CheckpointTuple) -> list[BaseMessage] | None:
    """The messages stored whole in the checkpoint, or None where they are delta-stored (or absent)."""
    value = item.checkpoint.get("channel_values", {}).get("messages")
    return list(value) if isinstance(value, list) else None


def parse_ts(ts: str) -> dt.datetime:
    """A checkpoint's `ts`."""
    return dt.datetime.fromisoformat(ts)
