"""Cross-cutting work of every ThreadlineService call, done once here instead of in each handler.

`RequestInterceptor` authenticates the caller (transport.security's Authenticator), checks the
RPC's scope, admits turns within the tenant's quotas and builds the call's RequestContext (its
RPC, tenant, caller, deadline and request_id) before the handler runs, and ends the call with
the status of any error raised on the way (status_mapping says which). Handlers read the context
through `current_request()` and only convert between the contract's messages and the engine's.
Health calls pass through untouched; reflection calls too, unless it is served authenticated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, nullcontext
from contextvars import ContextVar
from typing import Any, cast

import grpc
from google.protobuf.message import Message

from threadline.auth.credentials import Authenticator
from threadline.auth.principals import Principal
from threadline.auth.quotas import TenantQuotas
from threadline.engine.context import RequestContext
from threadline.errors import PermissionDenied
from threadline.transport.overload import CallLimit
from threadline.transport.security import RPC_SCOPES, TURN_RPCS
from threadline.transport.status_mapping import status_for
from threadline.transport.telemetry import current_call
from threadline.transport.tracing import turn_span
from threadline_client.v1 import threadline_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]
Behavior = Callable[[Any, Context], Awaitable[Any]]
"""A handler's behavior under grpc.aio: a coroutine (grpc's stubs type behaviors as synchronous)."""
StreamBehavior = Callable[[AsyncIterator[Any], Context], AsyncIterator[Any]]
"""A stream-stream behavior under grpc.aio: an async generator of responses."""

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ThreadlineService"].full_name

_current: ContextVar[RequestContext] = ContextVar("threadline_request")


def current_request() -> RequestContext:
    """The RequestContext of the ThreadlineService call being served (set before its handler runs)."""
    return _current.get()


class RequestInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates and authorizes every ThreadlineService call, gives it its RequestContext, maps its errors."""

    def __init__(
        self,
        authenticator: Authenticator | None = None,
        quotas: TenantQuotas | None = None,
        *,
        authenticated_services: frozenset[str] = frozenset(),
        call_limit: CallLimit | None = None,
    ) -> None:
        """Args:
        authenticator: Verifies credentials; None: open mode.
        quotas: Per-tenant turn limits; None: none.
        authenticated_services: Other services (reflection) whose calls need valid credentials.
        call_limit: How many ThreadlineService calls run at once; None: no limit.
        """
        self._calls = call_limit
        self._authenticator = authenticator or Authenticator()
        self._quotas = quotas if quotas is not None and quotas.active else None
        self._authenticated_services = authenticated_services

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        service, _, rpc = handler_call_details.method.lstrip("/").partition("/")
        if handler is None:
            return handler
        if service == SERVICE_NAME:
            return self._served_handler(handler_call_details.method, rpc, handler)
        if service in self._authenticated_services and handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._authenticated_stream(cast(StreamBehavior, handler.stream_stream)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _served_handler(
        self, method: str, rpc: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._served(rpc, cast(Behavior, handler.unary_unary)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._served(rpc, cast(Behavior, handler.unary_stream)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        raise TypeError(f"{method}: ThreadlineService has unary requests only")

    def _served(self, rpc: str, behavior: Behavior) -> Behavior:
        """The handler's behavior behind authentication, scope and quota, inside its RequestContext.

        Streaming handlers are coroutines that write (not generators), so one wrapper serves both.
        """

        async def serve(request: Message, context: Context) -> Any:
            async with reported_errors(context):
                with self._calls.admitted() if self._calls is not None else nullcontext():
                    return await self._serve_admitted(rpc, behavior, request, context)

        return serve

    async def _serve_admitted(self, rpc: str, behavior: Behavior, request: Message, context: Context) -> Any:
        """One admitted call: authenticated, authorized, within its tenant's quota, in its RequestContext."""
        principal = await self._authenticator.authenticate(_authorization(context))
        if RPC_SCOPES[rpc] not in principal.scopes:
            raise PermissionDenied(RPC_SCOPES[rpc].value)
        request_context = _request_context(rpc, request, context, principal)
        call = current_call()
        if call is not None:
            call.tenant, call.request_id = request_context.tenant, request_context.request_id
        token = _current.set(request_context)
        try:
            if rpc not in TURN_RPCS:
                return await behavior(request, context)
            with turn_span(request_context, getattr(request, "thread_id", "")):
                if self._quotas is None:
                    return await behavior(request, context)
                self._quotas.admit(principal.tenant)
                try:
                    return await behavior(request, context)
                finally:
                    self._quotas.done(principal.tenant)
        finally:
            _current.reset(token)

    def _authenticated_stream(self, behavior: StreamBehavior) -> StreamBehavior:
        """A stream-stream behavior (reflection) that runs only for a caller with valid credentials."""

        async def serve(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            async with reported_errors(context):
                await self._authenticator.authenticate(_authorization(context))
            async for response in behavior(requests, context):
                yield response

        return serve


def _authorization(context: Context) -> str | None:
    """The call's `authorization` metadata value, if any."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else None
    return None


def _request_context(rpc: str, request: Message, context: Context, principal: Principal) -> RequestContext:
    remaining = context.time_remaining()
    deadline = None if remaining is None else time.monotonic() + remaining
    return RequestContext(
        rpc=rpc,
        tenant=principal.tenant,
        caller=principal.caller,
        request_id=getattr(request, "request_id", ""),
        deadline=deadline,
    )


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
        call = current_call()
        if call is not None:
            call.error = exc
        remaining = context.time_remaining()  # None without a deadline; clamped to 0 once it passed
        if (remaining is not None and remaining <= 0) or context.cancelled():
            # The caller is gone (its deadline passed, or it cancelled: a write to it then fails
            # with grpc's own error): it has its status already, and gRPC's core may have ended
            # the call, where sending a status fails (and grpc.aio logs that as an error). End the
            # handler the way an ended call ends; nothing went wrong on our side.
            raise asyncio.CancelledError(f"the caller is gone: {exc}") from exc
        await context.abort_with_status(status_for(exc))
