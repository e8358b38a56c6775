"""Human approval of tool calls: the default agent pauses before tools that need it.

When the model asks for a tool named in THREADLINE_APPROVAL_TOOLS, the `approval`
node calls LangGraph's `interrupt()` with the pending calls; the turn ends there,
checkpointed, so the pause survives restarts. A Resume call answers the interrupt
with a decision, which this node turns into the next step:

    {"action": "approve"}                          -> the tools run as asked
    {"action": "edit", "arguments": {call_id: {...}}} -> the tools run with these arguments
    {"action": "reject", "reason": "..."}          -> no tool runs; the model is told why
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import AIMessage, ToolMessage
from langgraph.graph import END
from langgraph.types import Command, interrupt

from threadline.agent.state import AgentState
from threadline.errors import InvalidArgument

APPROVAL_NODE = "approval"


def calls_needing_approval(message: Any, tools: Collection[str]) -> list[dict[str, Any]]:
    """The tool calls of an AI message whose tools need a human's approval."""
    if not isinstance(message, AIMessage):
        return []
    return [dict(call) for call in message.tool_calls if call["name"] in tools]


def rejection_messages(message: AIMessage, reason: str) -> list[ToolMessage]:
    """One error result per tool call of message: what the model reads when a human says no."""
    return [
        ToolMessage(
            content=f"A human rejected this call: {reason or 'no reason given'}",
            tool_call_id=call.get("id") or "",
            name=call["name"],
            status="error",
        )
        for call in message.tool_calls
    ]


def route_after_agent(tools: Collection[str]) -> Callable[[AgentState], Awaitable[str]]:
    """agent -> approval (a call needs approval), tools (calls that do not), or the end.

    A coroutine, so that LangGraph calls it on the event loop, not on a worker thread (graphs.py)."""

    async def route(state: AgentState) -> str:
        last = state["messages"][-1]
        if not isinstance(last, AIMessage) or not last.tool_calls:
            return END
        return APPROVAL_NODE if calls_needing_approval(last, tools) else "tools"

    return route


def approval_node(tools: Collection[str]) -> Callable[[AgentState], Awaitable[Command[Literal["tools", "agent"]]]]:
    """The node that pauses for a human and carries out the decision (a coroutine, like the route)."""

    async def approval(state: AgentState) -> Command[Literal["tools", "agent"]]:
        last = state["messages"][-1]
        assert isinstance(last, AIMessage)
        decision = interrupt({"tool_calls": calls_needing_approval(last, tools)})
        action = decision.get("action") if isinstance(decision, dict) else None
        if action == "approve":
            return Command(goto="tools")
        if action == "edit":
            edited = decision.get("arguments") or {}
            calls = [{**call, "args": edited.get(call.get("id"), call["args"])} for call in last.tool_calls]
            replacement = AIMessage(content=last.content, tool_calls=calls, id=last.id)
            return Command(goto="tools", update={"messages": [replacement]})
        reason = str(decision.get("reason", "")) if isinstance(decision, dict) else json.dumps(decision)
        return Command(goto="agent", update={"messages": rejection_messages(last, reason)})

    return approval


@dataclass(frozen=True)
class Decision:
    """A human's answer to an interrupt, as Resume carries it."""

    action: Literal["approve", "reject", "edit", "value"]
    reason: str = ""
    arguments_json: Mapping[str, str] = field(default_factory=dict)
    """For edit: new arguments (JSON objects) by tool call id."""
    value_json: str = ""
    """For value: the JSON answer to a user graph's own interrupt()."""

    def resume_value(self) -> Any:
        """What interrupt() returns in the graph; InvalidArgument for bad JSON."""
        if self.action == "approve":
            return {"action": "approve"}
        if self.action == "reject":
            return {"action": "reject", "reason": self.reason}
        if self.action == "edit":
            arguments = {
                call_id: _json_object(text, "decision.edit.arguments_json")
                for call_id, text in self.arguments_json.items()
            }
            return {"action": "edit", "arguments": arguments}
        try:
            return json.loads(self.value_json)
        except ValueError:
            raise InvalidArgument("decision.value_json", "decision.value_json is not valid JSON") from None


def _json_object(text: str, field_name: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise InvalidArgument(field_name, f"{field_name} values must be JSON objects, got {text[:60]!r}")
    return value
