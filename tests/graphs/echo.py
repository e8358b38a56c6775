"""User graphs for the --graph tests."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage
from langgraph.graph import START, MessagesState, StateGraph


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
