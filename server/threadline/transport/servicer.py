"""ThreadlineService over the engine: turn requests into engine calls, results into responses.

Validation lives in the engine (so every caller of it gets it); the request context and the
mapping of errors to statuses live in transport.interceptors. What is left here is conversion.
"""

from __future__ import annotations

from typing import Any

import grpc

from threadline.engine.engine import Engine
from threadline.transport import convert
from threadline.transport.interceptors import current_request
from threadline.transport.stream_writer import StreamLimits, write_turn
from threadline_client.v1 import threadline_pb2 as pb
from threadline_client.v1 import threadline_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class ThreadlineServicer(pb_grpc.ThreadlineServiceServicer):
    """The threadline.v1.ThreadlineService implementation (served behind transport.interceptors)."""

    def __init__(self, engine: Engine, streams: StreamLimits) -> None:
        self._engine = engine
        self._streams = streams

    async def Ask(self, request: pb.AskRequest, context: Context) -> pb.AskResponse:
        result = await self._engine.ask(
            current_request(),
            request.thread_id,
            request.query,
            request.checkpoint_id,
            abandon_interrupt=request.abandon_interrupt,
        )
        return pb.AskResponse(turn=convert.turn(result))

    # grpc.aio accepts a coroutine that writes; the generated stub only types the iterator style.
    async def StreamAsk(self, request: pb.StreamAskRequest, context: Context) -> None:  # type: ignore[override]
        # The turn runs inside this handler's task, so a client that goes away or a passed
        # deadline cancels the graph run itself (and its model stream): nothing is left running.
        # A slow reader does not slow it: stream_writer buffers, within limits, for the reader.
        turn = self._engine.stream_ask(
            current_request(),
            request.thread_id,
            request.query,
            request.checkpoint_id,
            abandon_interrupt=request.abandon_interrupt,
        )
        await write_turn(turn, context, pb.StreamAskResponse, self._streams)

    async def History(self, request: pb.HistoryRequest, context: Context) -> pb.HistoryResponse:
        page = await self._engine.history(
            current_request(), request.thread_id, request.page_size, request.page_token, request.message_limit
        )
        return convert.history(page)

    async def Rewind(self, request: pb.RewindRequest, context: Context) -> pb.RewindResponse:
        target = request.WhichOneof("target")
        result = await self._engine.rewind(
            current_request(),
            request.thread_id,
            steps_back=request.steps_back if target == "steps_back" else None,
            checkpoint_id=request.checkpoint_id if target == "checkpoint_id" else None,
        )
        return convert.rewind(result)

    async def DeleteThread(self, request: pb.DeleteThreadRequest, context: Context) -> pb.DeleteThreadResponse:
        existed = await self._engine.delete_thread(
            current_request(), request.thread_id, allow_missing=request.allow_missing
        )
        return pb.DeleteThreadResponse(thread_id=request.thread_id, existed=existed)

    async def GetState(self, request: pb.GetStateRequest, context: Context) -> pb.GetStateResponse:
        state = await self._engine.get_state(current_request(), request.thread_id, request.checkpoint_id)
        return convert.state(state)

    async def ListMessages(self, request: pb.ListMessagesRequest, context: Context) -> pb.ListMessagesResponse:
        page = await self._engine.list_messages(
            current_request(),
            request.thread_id,
            request.checkpoint_id,
            request.page_size,
            request.page_token,
            newest_first=request.newest_first,
        )
        return convert.messages_page(page)

    async def ListThreads(self, request: pb.ListThreadsRequest, context: Context) -> pb.ListThreadsResponse:
        page = await self._engine.list_threads(current_request(), request.page_size, request.page_token)
        return convert.threads(page)

    async def Resume(self, request: pb.ResumeRequest, context: Context) -> pb.ResumeResponse:
        decision = convert.decision(request.decision)
        result = await self._engine.resume(current_request(), request.thread_id, request.interrupt_id, decision)
        return pb.ResumeResponse(turn=convert.turn(result))

    # grpc.aio accepts a coroutine that writes; the generated stub only types the iterator style.
    async def StreamResume(self, request: pb.StreamResumeRequest, context: Context) -> None:  # type: ignore[override]
        decision = convert.decision(request.decision)
        turn = self._engine.stream_resume(current_request(), request.thread_id, request.interrupt_id, decision)
        await write_turn(turn, context, pb.StreamResumeResponse, self._streams)
