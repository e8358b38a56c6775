"""Reading LangChain messages: their plain views for the transport."""

from __future__ import annotations

import json
from collections.abc import Iterable

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from threadline.agent.message_text import text_of
from threadline.engine.views import MessageView, ToolCallView

PREVIEW_CHARS = 80


def role_of(message: BaseMessage) -> str:
    """ "human", "ai", "tool", "system", or LangChain's own type name for anything else."""
    if isinstance(message, HumanMessage):
        return "human"
    if isinstance(message, AIMessage):
        return "ai"
    if isinstance(message, ToolMessage):
        return "tool"
    if isinstance(message, SystemMessage):
        return "system"
    return message.type


def tool_call_views(message: AIMessage) -> tuple[ToolCallView, ...]:
    """The tool calls an AI message asks for."""
    return tuple(
        ToolCallView(id=call.get("id") or "", name=call["name"], arguments_json=json.dumps(call["args"]))
        for call in message.tool_calls
    )


def view_of(message: BaseMessage) -> MessageView:
    """A transport-neutral copy of one message."""
    return MessageView(
        id=message.id or "",
        role=role_of(message),
        text=text_of(message),
        tool_calls=tool_call_views(message) if isinstance(message, AIMessage) else (),
        tool_call_id=message.tool_call_id if isinstance(message, ToolMessage) else "",
        name=(message.name or "") if isinstance(message, ToolMessage) else "",
    )


def views_of(messages: Iterable[BaseMessage]) -> tuple[MessageView, ...]:
    """Views of many messages, in order."""
    return tuple(view_of(m) for m in messages)


def preview_of(messages: list[BaseMessage]) -> str:
    """The last message's role and the start of its text, on one line."""
    if not messages:
        return ""
    last = messages[-1]
    text = " ".join(text_of(last).split())
    if not text and isinstance(last, AIMessage) and last.tool_calls:
        text = "calls " + ", ".join(call["name"] for call in last.tool_calls)
    if len(text) > PREVIEW_CHARS:
        text = text[: PREVIEW_CHARS - 1] + "…"
    return f"{role_of(last)}: {text}"
