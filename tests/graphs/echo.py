"""User graphs for the --graph tests."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode


def _echo(state: MessagesState) -> dict[str, Any]:
    return {"messages": [AIMessage(content=f"echo #{len(state['messages'])}: {state['messages'][-1].content}")]}


def build() -> StateGraph[Any]:
    """A factory: the server calls it and compiles the result with its checkpointer."""
    builder: StateGraph[Any] = StateGraph(MessagesState)
    builder.add_node("echo", _echo)
    builder.add_edge(START, "echo")
    return builder


builder = build()
not_a_graph = 42


class _ToolEchoState(MessagesState):
    previous_query: str
    """The query of the turn before, as a plain string channel (stored inline where the saver stores primitives)."""


@tool
def echo(text: str) -> str:
    """Returns its argument unchanged."""
    return text


def _call_echo(state: _ToolEchoState) -> dict[str, Any]:
    query = state["messages"][-1].content
    call = {"name": "echo", "args": {"text": query}, "id": f"call-{len(state['messages'])}"}
    return {"messages": [AIMessage(content="", tool_calls=[call])]}


def _answer(state: _ToolEchoState) -> dict[str, Any]:
    echoed = state["messages"][-1].content
    before = state.get("previous_query", "")
    return {"messages": [AIMessage(content=f"{echoed}|{before}")], "previous_query": echoed}


def tool_echo() -> StateGraph[Any]:
    """Each turn calls the echo tool with the query, then answers "<tool result>|<previous turn's query>"."""
    builder: StateGraph[Any] = StateGraph(_ToolEchoState)
    builder.add_node("call_echo", _call_echo)
    builder.add_node("tools", ToolNode([echo]))
    builder.add_node("answer", _answer)
    builder.add_edge(START, "call_echo")
    builder.add_edge("call_echo", "tools")
    builder.add_edge("tools", "answer")
    return builder
