"""Measurements of a graph's model and tool calls, from LangChain's callbacks, for a TurnObserver.

A `GraphMeasurements` handler sees chat model runs (their duration, outcome and the provider's
usage: LangChain's `usage_metadata`; for a streamed OpenAI response, the usage chunk that
`stream_usage` asks for) and tool runs (their outcome), and reports them as they end; it keeps
nothing of a message, a tool's input or output. The turn's tenant is the one `measure_for` named
in the task that runs its graph.

Where it is attached decides its cost. The default agent's model and tools carry it themselves
(agent.graphs), so the rest of the graph runs without callbacks: with any handler in a run's
config, LangChain builds a run manager for every runnable of the graph, about a tenth of a
turn's throughput. A user graph's model and tools are unknown to us, so there it goes with each
run's config.
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import ToolMessage
from langchain_core.outputs import LLMResult
from langgraph.errors import GraphBubbleUp

from threadline.engine.graph_spans import model_name, usage_of
from threadline.engine.observer import ModelOutcome, ToolOutcome, TurnObserver

_measured_tenant: ContextVar[str] = ContextVar("threadline_measured_tenant", default="")


def measure_for(tenant: str) -> None:
    """Names the tenant whose model and tool calls this task (and the tasks it starts) makes."""
    _measured_tenant.set(tenant)


class GraphMeasurements(BaseCallbackHandler):
    """Reports each model request and tool call it sees to an observer, under the current turn's tenant.

    One handler may serve every turn of the process: what it keeps between a run's start and end
    is keyed by the run's id.
    """

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

    def __init__(self, observer: TurnObserver) -> None:
        self._observer = observer
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
            tenant=_measured_tenant.get(),
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
            self._observer.tool_call(tenant=_measured_tenant.get(), tool=tool, outcome=outcome)
