"""What every call of the server tells operators: RPC and turn metrics, and one access-log line.

`TelemetryInterceptor` is the outermost interceptor: it sees every call of the server (health
and reflection too), including those the RequestInterceptor ends early (UNAUTHENTICATED,
PERMISSION_DENIED), and reads the status each call ends with from its context. It keeps the
call's `Call` record in a context variable while the call runs; the RequestInterceptor fills in
the tenant and request_id once it knows them, and log lines written inside the call carry them
(transport.log_format).

Access-log lines name the method, status code, duration, peer, tenant, thread id and request id:
never a query, an answer, a token or a key.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from threadline.errors import ThreadBusy
from threadline.transport.metrics import GRPC_CODE_NAMES, Metrics, RpcMetrics
from threadline.transport.security import TURN_RPCS
from threadline_client.v1 import threadline_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]

access_log = logging.getLogger("threadline.access")

_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ThreadlineService"].full_name
_STREAM_RESPONSES = (pb.StreamAskResponse, pb.StreamResumeResponse)
_TURN_RESPONSES = (pb.AskResponse, pb.ResumeResponse)


@dataclass
class Call:
    """One call of the server, as telemetry and log lines describe it."""

    service: str
    method: str
    grpc_type: str
    """go-grpc-prometheus's kind of RPC: unary, server_stream, client_stream or bidi_stream."""
    peer: str
    thread_id: str = ""
    """The thread the call names (a new thread's id once a turn reports it); "" for none."""
    tenant: str = ""
    """The caller's tenant, once authenticated; "" before that and for health and reflection."""
    request_id: str = ""
    error: BaseException | None = None
    """The error the call failed with, when the RequestInterceptor reported one."""
    started_at: float = 0.0
    """time.perf_counter() at the call's start."""
    first_token_s: float | None = None
    """Seconds from the start to the first token a streamed turn sent; None: none sent."""
    trace_id: str = ""
    """The call's trace (32 hex digits), when traced."""
    series: RpcMetrics | None = None
    """The method's RPC metrics, when metrics are on."""

    @property
    def is_turn(self) -> bool:
        return self.service == _SERVICE_NAME and self.method in TURN_RPCS


_current_call: ContextVar[Call | None] = ContextVar("threadline_call", default=None)


def current_call() -> Call | None:
    """The Call being served in this context, when telemetry is on; None otherwise."""
    return _current_call.get()


def _grpc_type(handler: grpc.RpcMethodHandler[Any, Any]) -> str:
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


class _CountingContext:
    """A servicer context whose writes are counted; everything else is the call's own context's."""

    def __init__(self, context: Context, sent: Callable[[Any], None]) -> None:
        self._context = context
        self._sent = sent

    async def write(self, message: Any) -> None:
        await self._context.write(message)
        self._sent(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class TelemetryInterceptor(grpc.aio.ServerInterceptor):
    """Records every call's metrics (when on) and writes its access-log line (when on)."""

    def __init__(self, metrics: Metrics | None, *, access_log: bool, tracer: Tracer | None = None) -> None:
        self._metrics = metrics
        self._access_log = access_log
        self._tracer = tracer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        service, _, method = handler_call_details.method.lstrip("/").partition("/")
        kind = _grpc_type(handler)
        observe = self._observer(service, method, kind)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(observe, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._unary_stream(observe, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._stream_unary(observe, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream_stream(observe, handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _observer(self, service: str, method: str, kind: str) -> Callable[[Context], Any]:
        def observe(context: Context) -> Any:
            return self._observed(Call(service, method, kind, peer=context.peer()), context)

        return observe

    # Each wrapper keeps its behavior's kind (coroutine or async generator): grpc.aio serves them differently.

    def _unary(self, observe: Callable[[Context], Any], behavior: Any) -> Any:
        async def unary(request: Any, context: Context) -> Any:
            with observe(context) as call:
                self._received(call, request)
                response = await behavior(request, context)
                self._sent(call, response)
                return response

        return unary

    def _unary_stream(self, observe: Callable[[Context], Any], behavior: Any) -> Any:
        if inspect.isasyncgenfunction(behavior):

            async def generated(request: Any, context: Context) -> AsyncIterator[Any]:
                with observe(context) as call:
                    self._received(call, request)
                    async for response in behavior(request, context):
                        yield response
                        self._sent(call, response)

            return generated

        async def written(request: Any, context: Context) -> None:
            with observe(context) as call:
                self._received(call, request)
                counting = _CountingContext(context, lambda message: self._sent(call, message))
                await behavior(request, cast(Context, counting))

        return written

    def _stream_unary(self, observe: Callable[[Context], Any], behavior: Any) -> Any:
        async def stream_unary(requests: AsyncIterator[Any], context: Context) -> Any:
            with observe(context) as call:
                response = await behavior(self._counted(call, requests), context)
                self._sent(call, response)
                return response

        return stream_unary

    def _stream_stream(self, observe: Callable[[Context], Any], behavior: Any) -> Any:
        async def stream_stream(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            with observe(context) as call:
                async for response in behavior(self._counted(call, requests), context):
                    yield response
                    self._sent(call, response)

        return stream_stream

    async def _counted(self, call: Call, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            self._received(call, request)
            yield request

    def _received(self, call: Call, request: Any) -> None:
        if not call.thread_id:
            call.thread_id = str(getattr(request, "thread_id", ""))
        if call.series is not None:
            call.series.received.inc()

    def _sent(self, call: Call, response: Any) -> None:
        if isinstance(response, _STREAM_RESPONSES):
            event = response.WhichOneof("event")
            if event == "token" and call.first_token_s is None:
                call.first_token_s = time.perf_counter() - call.started_at
            elif event == "final" and not call.thread_id:
                call.thread_id = response.final.thread_id
        elif not call.thread_id and isinstance(response, _TURN_RESPONSES):
            call.thread_id = response.turn.thread_id
        if call.series is not None:
            call.series.sent.inc()

    @contextmanager
    def _observed(self, call: Call, context: Context) -> Iterator[Call]:
        """The call in progress: counted as started now and as handled (with its status code) when it ends."""
        metrics = self._metrics
        streaming_turn = call.is_turn and call.grpc_type == "server_stream"
        if metrics is not None:
            call.series = metrics.rpc(call.grpc_type, call.service, call.method)
            call.series.started.inc()
            if call.is_turn:
                metrics.turns_in_flight.inc()
            if streaming_turn:
                metrics.open_streams.inc()
        token = _current_call.set(call)
        span = None if self._tracer is None else self._server_span(call, context)
        traced = None if span is None else otel_context.attach(trace.set_span_in_context(span))
        call.started_at = time.perf_counter()
        failure: BaseException | None = None
        try:
            yield call
        except BaseException as exc:
            failure = exc
            raise
        finally:
            duration = time.perf_counter() - call.started_at
            code = _code_of(failure, context)
            if span is not None and traced is not None:
                _end_span(span, call, code)
                otel_context.detach(traced)
            if metrics is not None:
                if call.is_turn:
                    metrics.turns_in_flight.dec()
                if streaming_turn:
                    metrics.open_streams.dec()
                self._record(metrics, call, code, duration)
            if self._access_log:
                _log_access(call, code, duration)
            _current_call.reset(token)

    def _server_span(self, call: Call, context: Context) -> Span:
        """The call's server span, continuing the caller's trace (W3C traceparent in its metadata)."""
        assert self._tracer is not None
        carrier = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        span = self._tracer.start_span(
            f"{call.service}/{call.method}",
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": call.service, "rpc.method": call.method},
        )
        call.trace_id = trace.format_trace_id(span.get_span_context().trace_id)
        return span

    def _record(self, metrics: Metrics, call: Call, code: grpc.StatusCode, duration: float) -> None:
        outcome = GRPC_CODE_NAMES.get(code, "Unknown")
        tenant = (call.tenant,) if metrics.tenant_label else ()
        metrics.handled.labels(call.grpc_type, call.service, call.method, outcome, *tenant).inc()
        if call.series is not None:
            call.series.handling.observe(duration)
        if call.is_turn:
            metrics.turn_duration.labels(call.method, outcome, *tenant).observe(duration)
            if call.first_token_s is not None:
                metrics.time_to_first_token.labels(call.method, outcome, *tenant).observe(call.first_token_s)
            if isinstance(call.error, ThreadBusy):
                metrics.busy_rejections.labels(call.method, *tenant).inc()


def _code_of(failure: BaseException | None, context: Context) -> grpc.StatusCode:
    """The status code a call ends with, given what its behavior raised (None: nothing)."""
    if failure is None or isinstance(failure, grpc.aio.AbortError):
        # Set by abort()/abort_with_status()/set_code(); grpc.aio leaves it None for an OK call.
        code = context.code()
        return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK
    if isinstance(failure, BaseException) and not isinstance(failure, Exception):  # CancelledError
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _end_span(span: Span, call: Call, code: grpc.StatusCode) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if call.tenant:
        span.set_attribute("threadline.tenant", call.tenant)
    if call.thread_id:
        span.set_attribute("threadline.thread_id", call.thread_id)
    if code != grpc.StatusCode.OK:
        if call.error is not None:
            span.set_attribute("error.type", type(call.error).__name__)
        span.set_status(Status(StatusCode.ERROR, GRPC_CODE_NAMES.get(code, "Unknown")))
    span.end()


def _log_access(call: Call, code: grpc.StatusCode, duration: float) -> None:
    name = GRPC_CODE_NAMES.get(code, "Unknown")
    access_log.info(
        "/%s/%s %s %.1fms peer=%s tenant=%s thread_id=%s request_id=%s trace_id=%s",
        call.service,
        call.method,
        name,
        duration * 1000,
        call.peer,
        call.tenant or "-",
        call.thread_id or "-",
        call.request_id or "-",
        call.trace_id or "-",
        extra={
            "grpc_method": f"/{call.service}/{call.method}",
            "grpc_code": name,
            "duration_ms": round(duration * 1000, 3),
            "peer": call.peer,
        },
    )
