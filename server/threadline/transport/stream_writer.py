"""Writes a turn's events to a server-streaming call without letting the reader slow the turn.

The turn is read in the handler's task as fast as it produces events; a writer task of the
call's own sends them to the caller as fast as the caller reads (grpc.aio's write waits for
HTTP/2 flow control). Between the two sits an outbox bounded in bytes. While the reader is
behind (COALESCE_AFTER events wait), consecutive tokens of one message wait there as one
TokenDelta (their text joined), so a long answer costs its own size, not an object per token.

A reader that falls more than `buffer_bytes` behind, or lets one write wait longer than
`stall_timeout_s`, is given up on: the outbox is dropped, the turn runs on to its end (it is
stored as usual and a retry with its request_id returns it) and the call ends with
StreamTooSlow. The thread is therefore never held longer than the turn itself runs.

A caller that goes away (cancels, its deadline passes) cancels the handler's task as before,
which ends the turn in the task it started in.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Generic

import grpc

from threadline.engine.views import TokenEvent, TurnCompleted, TurnEvent
from threadline.errors import StreamTooSlow
from threadline.transport import convert
from threadline.transport.convert import StreamMessage
from threadline_client.v1 import threadline_pb2 as pb

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class StreamLimits:
    """How far a stream's reader may fall behind (THREADLINE_STREAM_BUFFER_BYTES, ..._STALL_TIMEOUT_S)."""

    buffer_bytes: int
    stall_timeout_s: float


COALESCE_AFTER = 64
"""Tokens are sent one by one until this many events wait for the reader; then they are joined."""


class _Tokens:
    """Consecutive tokens of one message, waiting to be sent as one TokenDelta."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.text = bytearray()
        """Their text, UTF-8 encoded: a byte per ASCII character, not a string object per token."""


class _Outbox(Generic[StreamMessage]):
    """The events waiting for the reader, at most about `limit` bytes of them.

    A single event larger than the limit is still taken when nothing else waits, and the final
    event always is: the limit measures how far the reader is behind while the turn runs; the
    final turn is bounded by the maximum message size on its own, and once it is queued the
    turn is over and only the stall timeout still applies.
    """

    def __init__(self, limit: int, message: type[StreamMessage]) -> None:
        self._limit = limit
        self._message: type[StreamMessage] = message
        self._items: deque[_Tokens | StreamMessage] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self.closed = False

    def put(self, event: TurnEvent) -> bool:
        """Queues the event; False when the reader is now too far behind (the event is queued anyway)."""
        if isinstance(event, TokenEvent):
            last = self._items[-1] if len(self._items) >= COALESCE_AFTER else None
            if not isinstance(last, _Tokens) or last.message_id != event.message_id:
                last = _Tokens(event.message_id)
                self._items.append(last)
                self._bytes += len(event.message_id) + 8
            piece = event.text.encode()
            last.text += piece
            self._bytes += len(piece)
        else:
            message = convert.stream_event(event, self._message)
            self._items.append(message)
            self._bytes += message.ByteSize()
        self._ready.set()
        return self._bytes <= self._limit or len(self._items) == 1 or isinstance(event, TurnCompleted)

    def drop(self) -> None:
        """Forgets what waits: its reader is given up on, and the turn goes on without it."""
        self._items.clear()
        self._bytes = 0

    def close(self) -> None:
        """No more events: the writer ends once the outbox is empty."""
        self.closed = True
        self._ready.set()

    async def take(self) -> StreamMessage | None:
        """The next message to send, None once closed and empty."""
        while not self._items:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if not isinstance(item, _Tokens):
            self._bytes -= item.ByteSize()
            return item
        self._bytes -= len(item.text) + len(item.message_id) + 8
        return self._message(token=pb.TokenDelta(text=item.text.decode(), message_id=item.message_id))


class _CallerGone(Exception):
    """A write failed: the call is over on grpc's side (the caller cancelled or went away)."""


async def _write_all(outbox: _Outbox[Any], context: Context, stall_timeout_s: float) -> None:
    """Sends the outbox's messages in order; TimeoutError when one write waits longer than the stall timeout."""
    while (message := await outbox.take()) is not None:
        try:
            async with asyncio.timeout(stall_timeout_s):
                await context.write(message)
        except TimeoutError:
            raise
        except Exception as exc:
            # grpc.aio fails a write (with an error type of its own) once the call is over.
            raise _CallerGone from exc


async def write_turn(
    turn: AsyncGenerator[TurnEvent, None],
    context: Context,
    message: type[StreamMessage],
    limits: StreamLimits,
) -> None:
    """Streams the turn's events to the call; StreamTooSlow once the turn ended if the reader fell behind.

    A coroutine that writes, rather than an async generator that yields, so that a
    cancellation arrives in the handler's own task and aclosing() ends the turn in the
    task (and context) it started in; a suspended generator would be finalized later
    from another task, where the turn's context variables and locks are not its own.
    A turn that fails still has the events before its failure sent (within the stall
    timeout) before the call ends with the failure's status.
    """
    outbox = _Outbox(limits.buffer_bytes, message)
    writer = asyncio.create_task(_write_all(outbox, context, limits.stall_timeout_s), name="threadline-stream-writer")
    too_slow = ""
    try:
        try:
            async with aclosing(turn):
                async for event in turn:
                    if too_slow:
                        continue  # the reader is given up on: the turn runs on, unread
                    if writer.done():
                        too_slow = _why_stopped(writer, limits)
                    elif not outbox.put(event):
                        too_slow = f"the reader fell more than {limits.buffer_bytes} bytes behind"
                        writer.cancel()
                    if too_slow:
                        outbox.drop()
        except Exception:
            await _flushed(outbox, writer)  # the events before the failure, then its status
            raise
        await _flushed(outbox, writer)
        too_slow = too_slow or _why_stopped(writer, limits)
    finally:
        await _stopped(writer)
    if too_slow:
        log.info("stream ended: %s", too_slow)
        raise StreamTooSlow(
            f"{too_slow}; the turn ran to its end without it and is stored: retry with the same request_id to get it"
        )


async def _stopped(writer: asyncio.Task[None]) -> None:
    """Stops the writer (when the caller is gone, it may still wait on a write) and collects its end."""
    if not writer.done():
        writer.cancel()
        await asyncio.wait({writer})
    if not writer.cancelled():
        writer.exception()  # seen: asyncio would log an unretrieved failure as an error


async def _flushed(outbox: _Outbox[Any], writer: asyncio.Task[None]) -> None:
    """Waits for the writer to send what the outbox holds (each write within the stall timeout)."""
    outbox.close()
    if not writer.done():
        await asyncio.wait({writer})


def _why_stopped(writer: asyncio.Task[None], limits: StreamLimits) -> str:
    """Why the writer ended early ("" when it wrote everything); CancelledError when the caller is gone."""
    if writer.cancelled():
        return f"the reader fell more than {limits.buffer_bytes} bytes behind"
    failure = writer.exception()
    if failure is None:
        return ""
    if isinstance(failure, TimeoutError):
        return f"the reader read nothing for {limits.stall_timeout_s:g}s"
    # Nobody is left to tell; the turn ends as cancelled.
    raise asyncio.CancelledError("the stream's caller is gone") from failure
