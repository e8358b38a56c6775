"""Human approval of tool calls: the default agent pauses before tools that need it.

When the model asks for a tool named in THREADLINE_APPROVAL_TOOLS, the `approval`
node calls LangGraph's `interrupt()` with the pending calls; the turn ends there,
checkpointed, so the pause survives restarts. A Resume call answers the interrupt
with a decision, which this node turns into the next step:

    {"action": "approve"}                          -> the tools run as asked
    {"action": "edit", "arguments": {call_id: {...}}} -> the tools run with these arguments
    {"action": "reject", "reason": "..."}          -> no tool runs; the model is told why

A Resume's `value_json` on such a pause must be one of these shapes (approval_decision checks it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import AIMessage, ToolMessage
from langgraph.graph import END
from langgraph.types import Command, interrupt

from threadline import caller_json
from threadline.agent.state import AgentState
from threadline.errors import InvalidArgument

APPROVAL_NODE = "approval"
MAX_DECISION_CHARS = 64 * 1024
"""Longest Rejection.reason, value_json, and edit arguments_json (all values together) a Resume may carry."""


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
        decision = approval_decision(interrupt({"tool_calls": calls_needing_approval(last, tools)}))
        if decision["action"] == "approve":
            return Command(goto="tools")
        if decision["action"] == "edit":
            edited = decision.get("arguments", {})
            calls = [{**call, "args": edited.get(call.get("id"), call["args"])} for call in last.tool_calls]
            replacement = AIMessage(content=last.content, tool_calls=calls, id=last.id)
            return Command(goto="tools", update={"messages": [replacement]})
        return Command(goto="agent", update={"messages": rejection_messages(last, decision.get("reason", ""))})

    return approval


def is_approval_request(interrupt_value: Any) -> bool:
    """True for the value of an approval node's interrupt (what the decision must then look like)."""
    return isinstance(interrupt_value, dict) and set(interrupt_value) == {"tool_calls"}


def approval_decision(value: Any, field_name: str = "decision.value_json") -> dict[str, Any]:
    """value when it is a decision the approval node understands; InvalidArgument otherwise."""
    action = value.get("action") if isinstance(value, dict) else None
    if action not in ("approve", "reject", "edit"):
        raise InvalidArgument(
            field_name, f'{field_name} must be {{"action": "approve" | "reject" | "edit", ...}} to answer an approval'
        )
    if not isinstance(value.get("reason", ""), str):
        raise InvalidArgument(field_name, f"{field_name}: reason must be a string")
    arguments = value.get("arguments", {})
    if not isinstance(arguments, dict) or not all(isinstance(args, dict) for args in arguments.values()):
        raise InvalidArgument(field_name, f"{field_name}: arguments must map tool call ids to JSON objects")
    return dict(value)


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
        """What interrupt() returns in the graph; InvalidArgument for bad, oversized or out-of-bounds JSON."""
        self._check_sizes()
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
        return caller_json.parse(self.value_json, "decision.value_json")

    def _check_sizes(self) -> None:
        sizes = {
            "decision.reject.reason": len(self.reason),
            "decision.value_json": len(self.value_json),
            "decision.edit.arguments_json": sum(len(k) + len(v) for k, v in self.arguments_json.items()),
        }
        for field_name, size in sizes.items():
            if size > MAX_DECISION_CHARS:
                raise InvalidArgument(
                    field_name, f"{field_name} is {size} characters long; the limit is {MAX_DECISION_CHARS}"
                )


def _json_object(text: str, field_name: str) -> dict[str, Any]:
    value = caller_json.parse(text, field_name)
    if not isinstance(value, dict):
        raise InvalidArgument(field_name, f"{field_name} values must be JSON objects, got {text[:60]!r}")
    return value
