"""Cross-cutting work of every ThreadlineService call, done once here instead of in each handler.

`RequestInterceptor` builds the call's RequestContext (its RPC, deadline and request_id; tenant
and trace come from here too) before the handler runs, and ends the call with the status of any
error the handler raises (status_mapping says which). Handlers read the context through
`current_request()` and only convert between the contract's messages and the engine's.
Health and reflection calls pass through untouched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, cast

import grpc
from google.protobuf.message import Message

from threadline.engine.context import RequestContext
from threadline.transport.status_mapping import status_for
from threadline_client.v1 import threadline_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]
Behavior = Callable[[Any, Context], Awaitable[Any]]
"""A handler's behavior under grpc.aio: a coroutine (grpc's stubs type behaviors as synchronous)."""

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ThreadlineService"].full_name

_current: ContextVar[RequestContext] = ContextVar("threadline_request")


def current_request() -> RequestContext:
    """The RequestContext of the ThreadlineService call being served (set before its handler runs)."""
    return _current.get()


class RequestInterceptor(grpc.aio.ServerInterceptor):
    """Gives every ThreadlineService call its RequestContext and maps its errors to statuses."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        service, _, rpc = handler_call_details.method.lstrip("/").partition("/")
        if handler is None or service != SERVICE_NAME:
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _served(rpc, cast(Behavior, handler.unary_unary)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _served(rpc, cast(Behavior, handler.unary_stream)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        raise TypeError(f"{handler_call_details.method}: ThreadlineService has unary requests only")


def _served(rpc: str, behavior: Behavior) -> Behavior:
    """The handler's behavior inside its RequestContext and the error reporting of reported_errors.

    Streaming handlers are coroutines that write (not generators), so one wrapper serves both.
    """

    async def serve(request: Message, context: Context) -> Any:
        token = _current.set(_request_context(rpc, request, context))
        try:
            async with reported_errors(context):
                return await behavior(request, context)
        finally:
            _current.reset(token)

    return serve


def _request_context(rpc: str, request: Message, context: Context) -> RequestContext:
    remaining = context.time_remaining()
    deadline = None if remaining is None else time.monotonic() + remaining
    return RequestContext(rpc=rpc, request_id=getattr(request, "request_id", ""), deadline=deadline)


@asynccontextmanager
async def reported_errors(context: Context) -> AsyncIterator[None]:
    """Ends the call with the status of any error raised in the block.

    CancelledError is a BaseException and passes through untouched: swallowing it
    in a streaming handler leaks memory (grpc/grpc 43360).
    """
    try:
        yield
    except grpc.aio.AbortError:
        raise
    except Exception as exc:  # every failure is reported, none crashes the server
        remaining = context.time_remaining()  # None without a deadline; clamped to 0 once it passed
        if remaining is not None and remaining <= 0:
            # The call's deadline has passed: the caller has its DEADLINE_EXCEEDED already, and
            # gRPC's core may have ended the call, where sending a status fails (and grpc.aio
            # logs that as an error). End the handler the way an ended call ends.
            raise asyncio.CancelledError(f"the call's deadline passed: {exc}") from exc
        await context.abort_with_status(status_for(exc))
