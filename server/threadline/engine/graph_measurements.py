"""Measurements of a graph run's model and tool calls, from LangChain's callbacks, for a TurnObserver.

A `GraphMeasurements` handler goes with one run's callbacks when metrics are on. It sees every
chat model run of the graph (the default agent's and a user graph's alike): its duration, its
outcome and the provider's usage (LangChain's `usage_metadata`: for a streamed OpenAI response,
the usage chunk that `stream_usage` asks for), and every tool run with its outcome. It reports
them as they end; it keeps nothing of a message, a tool's input or output.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import ToolMessage
from langchain_core.outputs import LLMResult
from langgraph.errors import GraphBubbleUp

from threadline.engine.graph_spans import model_name, usage_of
from threadline.engine.observer import ModelOutcome, ToolOutcome, TurnObserver


class GraphMeasurements(BaseCallbackHandler):
    """Reports each model request and tool call of one run (of one tenant's turn) to an observer."""

    run_inline = True

    # Only model and tool events are wanted: LangChain does not call this handler for the others
    # (every node and every runnable inside it is a chain run).
    @property
    def ignore_chain(self) -> bool:
        return True

    @property
    def ignore_retriever(self) -> bool:
        return True

    @property
    def ignore_retry(self) -> bool:
        return True

    @property
    def ignore_custom_event(self) -> bool:
        return True

    def __init__(self, observer: TurnObserver, tenant: str) -> None:
        self._observer = observer
        self._tenant = tenant
        self._models: dict[UUID, tuple[str, float]] = {}
        self._tools: dict[UUID, str] = {}

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._models[run_id] = (model_name(kwargs, metadata), time.perf_counter())

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self._model_ended(run_id, "ok", usage_of(response))

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._model_ended(run_id, "cancelled" if isinstance(error, asyncio.CancelledError) else "error", None)

    def _model_ended(self, run_id: UUID, outcome: ModelOutcome, usage: tuple[int, int] | None) -> None:
        started = self._models.pop(run_id, None)
        if started is None:
            return
        model, at = started
        self._observer.model_request(
            tenant=self._tenant,
            model=model,
            outcome=outcome,
            duration_s=time.perf_counter() - at,
            input_tokens=None if usage is None else usage[0],
            output_tokens=None if usage is None else usage[1],
        )

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._tools[run_id] = str(kwargs.get("name") or (serialized or {}).get("name") or "tool")

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        # A tool that handles its own error (handle_tool_error) ends with an error result.
        failed = isinstance(output, ToolMessage) and output.status == "error"
        self._tool_ended(run_id, "error" if failed else "ok")

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        outcome: ToolOutcome = "error"
        if isinstance(error, asyncio.CancelledError):
            outcome = "cancelled"
        elif isinstance(error, GraphBubbleUp):  # interrupt() inside the tool: it runs again on Resume
            outcome = "interrupted"
        self._tool_ended(run_id, outcome)

    def _tool_ended(self, run_id: UUID, outcome: ToolOutcome) -> None:
        tool = self._tools.pop(run_id, None)
        if tool is not None:
            self._observer.tool_call(tenant=self._tenant, tool=tool, outcome=outcome)
