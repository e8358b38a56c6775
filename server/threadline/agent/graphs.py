"""The graph a server runs: the default tool-calling agent, or a user's graph named by --graph."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from threadline.agent.approval import APPROVAL_NODE, approval_node, route_after_agent
from threadline.agent.context_window import model_view
from threadline.agent.model_client import open_chat_model
from threadline.agent.settings import AgentSettings
from threadline.agent.state import AgentState
from threadline.agent.tools import default_tools
from threadline.errors import ConfigurationError

log = logging.getLogger(__name__)


def default_agent(
    model: BaseChatModel,
    tools: Sequence[BaseTool],
    needs_approval: Collection[str] = (),
    *,
    system_prompt: str = "",
    context_max_tokens: int = 0,
) -> StateGraph[Any]:
    """agent -> tools -> agent until the model answers without calling a tool.

    Calls to tools named in needs_approval go through the approval node first, which
    pauses the turn until a human approves, edits or rejects them. The model sees the
    system prompt and the newest context_max_tokens of the conversation (0: all of it;
    context_window says how it is cut).
    """
    bound = model.bind_tools(tools)
    unknown = set(needs_approval) - {t.name for t in tools}
    if unknown:
        raise ConfigurationError(f"THREADLINE_APPROVAL_TOOLS: no such tool: {', '.join(sorted(unknown))}")

    async def agent(state: AgentState) -> dict[str, Any]:
        view = model_view(state["messages"], system_prompt=system_prompt, max_tokens=context_max_tokens)
        return {"messages": [await bound.ainvoke(view)]}

    builder: StateGraph[Any] = StateGraph(AgentState)
    builder.add_node("agent", agent)
    # A failing tool becomes an error result the model can read, not a failed turn.
    builder.add_node("tools", ToolNode(tools, handle_tool_errors=True))
    builder.add_edge(START, "agent")
    if needs_approval:
        node: Any = approval_node(needs_approval)  # its Command[...] return names where it goes next
        builder.add_node(APPROVAL_NODE, node, destinations=("tools", "agent"))
        builder.add_conditional_edges("agent", route_after_agent(needs_approval), ["tools", APPROVAL_NODE, END])
    else:
        builder.add_conditional_edges("agent", _tools_or_end)
    builder.add_edge("tools", "agent")
    return builder


# A coroutine because LangGraph runs a plain function given as a conditional edge on a worker thread:
# a thread hop every turn, for a look at the last message (tools.py has what the hops cost).
async def _tools_or_end(state: AgentState) -> Literal["tools", "__end__"]:
    return tools_condition(cast(dict[str, Any], state))  # a TypedDict is the dict it asks for


def load_user_graph(spec: str) -> StateGraph[Any]:
    """Imports package.module:attr naming a StateGraph, a compiled graph, or a factory of either."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"THREADLINE_GRAPH: expected package.module:attr, got {spec!r}")
    try:
        target: Any = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"THREADLINE_GRAPH: cannot load {spec!r}: {exc}") from exc
    if callable(target) and not isinstance(target, (StateGraph, CompiledStateGraph)):
        target = target()
    if isinstance(target, CompiledStateGraph):
        target = target.builder
    if not isinstance(target, StateGraph):
        raise ConfigurationError(f"THREADLINE_GRAPH: {spec!r} is {type(target).__name__}, not a StateGraph")
    if "messages" not in target.channels:
        raise ConfigurationError(f"THREADLINE_GRAPH: the state of {spec!r} has no 'messages' key")
    return target


@asynccontextmanager
async def open_graph_builder(settings: AgentSettings) -> AsyncIterator[StateGraph[Any]]:
    """The graph the settings ask for, not yet compiled; its model's connections close on exit."""
    if settings.graph:
        log.info("serving user graph %s", settings.graph)
        yield load_user_graph(settings.graph)
        return
    async with open_chat_model(settings) as model:
        yield default_agent(
            model,
            default_tools(),
            list(settings.approval_tools),
            system_prompt=settings.system_prompt,
            context_max_tokens=settings.context_max_tokens,
        )
