"""Spans of a graph run: each node, each model call and each tool call, from LangChain's callbacks.

A `GraphSpans` handler goes with one run's callbacks when tracing is set up (EngineSettings.traced).
Model calls follow the OpenTelemetry GenAI semantic conventions: `gen_ai.operation.name` "chat",
`gen_ai.request.model`, `gen_ai.provider.name`, and the provider's `gen_ai.usage.input_tokens`
and `gen_ai.usage.output_tokens` when it reports usage. Tool calls are `execute_tool` spans with
`gen_ai.tool.name`. No span carries a message, a tool's input or output, or a token.

The handler runs inline (in the run's task, whose context descends from the turn's span), so a
run's top spans are children of the turn.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import ChatGeneration, LLMResult
from langgraph.errors import GraphBubbleUp
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

_tracer = trace.get_tracer("threadline.engine")


class GraphSpans(BaseCallbackHandler):
    """Makes a span per graph node, model call and tool call of one run."""

    run_inline = True

    def __init__(self) -> None:
        self._spans: dict[UUID, Span] = {}
        # A run without a span of its own (the graph, a node's inner runnables) stands for its parent's.
        self._parents: dict[UUID, Span | None] = {}

    def _parent(self, parent_run_id: UUID | None) -> otel_context.Context | None:
        if parent_run_id is None:
            return None  # the current context: the turn's span
        span = self._spans.get(parent_run_id) or self._parents.get(parent_run_id)
        return trace.set_span_in_context(span) if span is not None else None

    def _start(self, run_id: UUID, parent_run_id: UUID | None, name: str, attributes: dict[str, Any]) -> None:
        kind = SpanKind.CLIENT if "gen_ai.request.model" in attributes else SpanKind.INTERNAL
        self._spans[run_id] = _tracer.start_span(
            name, context=self._parent(parent_run_id), kind=kind, attributes=attributes
        )

    def _pass_through(self, run_id: UUID, parent_run_id: UUID | None) -> None:
        if parent_run_id is not None:
            self._parents[run_id] = self._spans.get(parent_run_id) or self._parents.get(parent_run_id)

    def _end(self, run_id: UUID, error: BaseException | None = None) -> Span | None:
        self._parents.pop(run_id, None)
        span = self._spans.pop(run_id, None)
        if span is None:
            return None
        if error is not None and not isinstance(error, GraphBubbleUp):  # an interrupt is no failure
            span.set_attribute("error.type", type(error).__name__)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()
        return span

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        node = (metadata or {}).get("langgraph_node")
        if node is not None and kwargs.get("name") == node:
            attributes = {"langgraph.node": str(node), "langgraph.step": int((metadata or {}).get("langgraph_step", 0))}
            self._start(run_id, parent_run_id, f"node {node}", attributes)
        else:
            self._pass_through(run_id, parent_run_id)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

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
        model = model_name(kwargs, metadata)
        attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model}
        provider = (metadata or {}).get("ls_provider")
        if provider:
            attributes["gen_ai.provider.name"] = str(provider)
        self._start(run_id, parent_run_id, f"chat {model}".strip(), attributes)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        span = self._spans.get(run_id)
        if span is not None:
            usage = usage_of(response)
            if usage is not None:
                span.set_attribute("gen_ai.usage.input_tokens", usage[0])
                span.set_attribute("gen_ai.usage.output_tokens", usage[1])
        self._end(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

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
        name = str(kwargs.get("name") or (serialized or {}).get("name") or "tool")
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
        self._start(run_id, parent_run_id, f"execute_tool {name}", attributes)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)


def model_name(callback_kwargs: dict[str, Any], metadata: dict[str, Any] | None) -> str:
    """The model a chat model run calls, from its invocation parameters (or LangSmith's metadata)."""
    params = callback_kwargs.get("invocation_params") or {}
    named = params.get("model") or params.get("model_name") or (metadata or {}).get("ls_model_name")
    return str(named or params.get("_type") or "")  # a model without a name: its LangChain type


def usage_of(response: LLMResult) -> tuple[int, int] | None:
    """(input tokens, output tokens) of a model response, from LangChain's usage_metadata; None when the
    provider reported no usage (a stream without stream_options.include_usage, for one)."""
    for generations in response.generations:
        for generation in generations:
            if isinstance(generation, ChatGeneration):
                usage = getattr(generation.message, "usage_metadata", None)
                if usage:
                    return int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    return None
