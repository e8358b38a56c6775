"""ThreadlineService over the engine: turn requests into engine calls, results into responses.

Validation lives in the engine (so every caller of it gets it), error mapping in
status_mapping; what is left here is plumbing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import grpc

from threadline.engine import Engine
from threadline.engine.context import RequestContext
from threadline.engine.views import TurnEvent
from threadline.transport import convert
from threadline.transport.status_mapping import status_for
from threadline_client.v1 import threadline_pb2 as pb
from threadline_client.v1 import threadline_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ThreadlineService"].full_name


def request_context(rpc: str, request_id: str, context: Context) -> RequestContext:
    """The engine's view of this call. Tenancy will be read from call credentials here."""
    remaining = context.time_remaining()
    deadline = None if remaining is None else time.monotonic() + remaining
    return RequestContext(rpc=rpc, request_id=request_id, deadline=deadline)


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


async def _stream(
    turn: AsyncGenerator[TurnEvent, None], context: Context, message: type[convert.StreamMessage]
) -> None:
    """Writes a turn's events to a server-streaming call, reporting any error on it.

    A coroutine that writes, rather than an async generator that yields, so that a
    cancellation arrives in the handler's own task and aclosing() ends the turn in the
    task (and context) it started in; a suspended generator would be finalized later
    from another task, where the turn's context variables and locks are not its own.
    """
    async with reported_errors(context), aclosing(turn):
        async for event in turn:
            await context.write(convert.stream_event(event, message))


class ThreadlineServicer(pb_grpc.ThreadlineServiceServicer):
    """The threadline.v1.ThreadlineService implementation."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def Ask(self, request: pb.AskRequest, context: Context) -> pb.AskResponse:
        ctx = request_context("Ask", request.request_id, context)
        async with reported_errors(context):
            result = await self._engine.ask(
                ctx,
                request.thread_id,
                request.query,
                request.checkpoint_id,
                abandon_interrupt=request.abandon_interrupt,
            )
        return pb.AskResponse(turn=convert.turn(result))

    # grpc.aio accepts a coroutine that writes; the generated stub only types the iterator style.
    async def StreamAsk(self, request: pb.StreamAskRequest, context: Context) -> None:  # type: ignore[override]
        ctx = request_context("StreamAsk", request.request_id, context)
        # The turn runs inside this handler's task, so a client that goes away or a passed
        # deadline cancels the graph run itself (and its model stream): nothing is left running.
        turn = self._engine.stream_ask(
            ctx,
            request.thread_id,
            request.query,
            request.checkpoint_id,
            abandon_interrupt=request.abandon_interrupt,
        )
        await _stream(turn, context, pb.StreamAskResponse)

    async def History(self, request: pb.HistoryRequest, context: Context) -> pb.HistoryResponse:
        ctx = request_context("History", "", context)
        async with reported_errors(context):
            page = await self._engine.history(
                ctx, request.thread_id, request.page_size, request.page_token, request.message_limit
            )
        return convert.history(page)

    async def Rewind(self, request: pb.RewindRequest, context: Context) -> pb.RewindResponse:
        ctx = request_context("Rewind", request.request_id, context)
        target = request.WhichOneof("target")
        async with reported_errors(context):
            result = await self._engine.rewind(
                ctx,
                request.thread_id,
                steps_back=request.steps_back if target == "steps_back" else None,
                checkpoint_id=request.checkpoint_id if target == "checkpoint_id" else None,
            )
        return convert.rewind(result)

    async def DeleteThread(self, request: pb.DeleteThreadRequest, context: Context) -> pb.DeleteThreadResponse:
        ctx = request_context("DeleteThread", "", context)
        async with reported_errors(context):
            existed = await self._engine.delete_thread(ctx, request.thread_id, allow_missing=request.allow_missing)
        return pb.DeleteThreadResponse(thread_id=request.thread_id, existed=existed)

    async def GetState(self, request: pb.GetStateRequest, context: Context) -> pb.GetStateResponse:
        ctx = request_context("GetState", "", context)
        async with reported_errors(context):
            state = await self._engine.get_state(ctx, request.thread_id, request.checkpoint_id)
        return convert.state(state)

    async def ListThreads(self, request: pb.ListThreadsRequest, context: Context) -> pb.ListThreadsResponse:
        ctx = request_context("ListThreads", "", context)
        async with reported_errors(context):
            page = await self._engine.list_threads(ctx, request.page_size, request.page_token)
        return convert.threads(page)

    async def Resume(self, request: pb.ResumeRequest, context: Context) -> pb.ResumeResponse:
        ctx = request_context("Resume", request.request_id, context)
        async with reported_errors(context):
            decision = convert.decision(request.decision)
            result = await self._engine.resume(ctx, request.thread_id, request.interrupt_id, decision)
        return pb.ResumeResponse(turn=convert.turn(result))

    # grpc.aio accepts a coroutine that writes; the generated stub only types the iterator style.
    async def StreamResume(self, request: pb.StreamResumeRequest, context: Context) -> None:  # type: ignore[override]
        ctx = request_context("StreamResume", request.request_id, context)
        async with reported_errors(context):
            decision = convert.decision(request.decision)
        turn = self._engine.stream_resume(ctx, request.thread_id, request.interrupt_id, decision)
        await _stream(turn, context, pb.StreamResumeResponse)
