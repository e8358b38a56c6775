"""The graph a server runs: the default tool-calling agent, or a user's graph named by --graph."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Collection, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from pydantic import SecretStr

from threadline.config import Settings
from threadline.engine.agent_state import AgentState
from threadline.engine.approval import APPROVAL_NODE, approval_node, route_after_agent
from threadline.engine.offline_model import OfflineChatModel
from threadline.engine.tools import default_tools
from threadline.errors import ConfigurationError

log = logging.getLogger(__name__)

OFFLINE_BANNER = """
************************************************************************
*  OFFLINE MODEL: no OPENAI_API_KEY is set (or --offline-model is on). *
*  Answers come from Threadline's built-in deterministic model, not an *
*  LLM. Set OPENAI_API_KEY (and OPENAI_BASE_URL, THREADLINE_MODEL for  *
*  vLLM, Ollama, llama.cpp, ...) to talk to a real model.              *
************************************************************************"""


def chat_model(settings: Settings) -> BaseChatModel:
    """The model the default agent calls: the offline model, or ChatOpenAI."""
    if settings.uses_offline_model:
        log.warning(OFFLINE_BANNER)
        return OfflineChatModel(token_delay_s=settings.offline_token_delay_ms / 1000)
    from langchain_openai import ChatOpenAI

    log.info("model %s at %s", settings.model, settings.openai_base_url or "the OpenAI API")
    return ChatOpenAI(
        model=settings.model,
        api_key=SecretStr(settings.openai_api_key),
        base_url=settings.openai_base_url or None,
        timeout=settings.model_timeout_s,
        max_retries=settings.model_max_retries,
        **_stream_chunk_timeout(),
    )


def _stream_chunk_timeout() -> dict[str, Any]:
    """langchain-openai's per-chunk stream timeout, where it does not break cancellation.

    It wraps every chunk read in asyncio.wait_for, which before Python 3.12 loses a cancellation that
    arrives as a chunk does (CPython gh-86296): a cancelled turn's model stream then runs on to its end.
    On 3.11 it is off; a silent stream is still bounded by the HTTP read timeout (model_timeout_s).
    """
    return {"stream_chunk_timeout": None} if sys.version_info < (3, 12) else {}


def default_agent(
    model: BaseChatModel, tools: Sequence[BaseTool], needs_approval: Collection[str] = ()
) -> StateGraph[Any]:
    """agent -> tools -> agent until the model answers without calling a tool.

    Calls to tools named in needs_approval go through the approval node first, which
    pauses the turn until a human approves, edits or rejects them.
    """
    bound = model.bind_tools(tools)
    unknown = set(needs_approval) - {t.name for t in tools}
    if unknown:
        raise ConfigurationError(f"THREADLINE_APPROVAL_TOOLS: no such tool: {', '.join(sorted(unknown))}")

    async def agent(state: AgentState) -> dict[str, Any]:
        return {"messages": [await bound.ainvoke(state["messages"])]}

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
        builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder


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


def graph_builder(settings: Settings) -> StateGraph[Any]:
    """The graph the settings ask for, not yet compiled."""
    if settings.graph:
        log.info("serving user graph %s", settings.graph)
        return load_user_graph(settings.graph)
    needs_approval = [name.strip() for name in settings.approval_tools.split(",") if name.strip()]
    return default_agent(chat_model(settings), default_tools(), needs_approval)
