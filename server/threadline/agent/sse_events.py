"""The server-sent events of a streamed model response, read from its bytes a chunk at a time.

The openai SDK's own decoder (`openai._streaming.SSEDecoder`) was about 7% of the CPU of a
streamed token (py-spy of the in-process graph at 32 streams; the server runs the same model
client): every line goes through a regex scan, a bytearray copy and three generators. This one
splits a chunk with one `bytes.splitlines` and reads its lines in one loop, at less than half the
cost (docs/performance.md). It reads the same events as the SDK's: `tests/unit/agent/test_sse_events.py` holds
the two to the same events on random streams cut at random places. The SDK keeps everything around
it: its stream (`AsyncStream`) still turns error events into APIError and transport failures into
its connection and timeout errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from openai._streaming import ServerSentEvent

_CR, _LF = 13, 10


class SSEEvents:
    """An SSE decoder for the openai SDK's streams (its `SSEBytesDecoder` protocol).

    Lines end at CR, LF or CRLF, also when a CRLF is split between two chunks. Fields follow the SDK's
    decoder, which follows the WHATWG spec but for one choice kept here: an empty line dispatches an
    event whenever any field was set, also with no data.
    """

    def iter_bytes(self, iterator: Iterator[bytes]) -> Iterator[ServerSentEvent]:
        """Every event in the bytes, as soon as the empty line that ends it has arrived."""
        lines = _Lines()
        for chunk in iterator:
            yield from lines.events_in(chunk)

    async def aiter_bytes(self, iterator: AsyncIterator[bytes]) -> AsyncIterator[ServerSentEvent]:
        """Every event in the bytes, as soon as the empty line that ends it has arrived."""
        lines = _Lines()
        async for chunk in iterator:
            for event in lines.events_in(chunk):
                yield event


class _Lines:
    """The lines of one stream, read a chunk at a time."""

    def __init__(self) -> None:
        self._fields = _Fields()
        self._unended: list[bytes] = []  # the start of a line whose end has not arrived
        self._after_cr = False  # the last chunk ended with CR: an LF starting the next one ends no new line

    def events_in(self, chunk: bytes) -> Iterator[ServerSentEvent]:
        """The events that the chunk's lines end. A stream's last line that never ends could set a field
        at most, and no empty line after it dispatches an event: it is left unread, and the SDK's decoder
        yields nothing for it either."""
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
            self._after_cr = False
        if not chunk:
            return
        self._after_cr = chunk[-1] == _CR
        lines = chunk.splitlines()  # bytes split at CR, LF and CRLF only
        if self._unended:
            self._unended.append(lines[0])
            lines[0] = b"".join(self._unended)
            self._unended.clear()
        if chunk[-1] != _LF and not self._after_cr:
            self._unended.append(lines.pop())
        take = self._fields.take
        for line in lines:
            event = take(line.decode("utf-8"))
            if event is not None:
                yield event


class _Fields:
    """The fields of the event being read (the SDK's `SSEDecoder.decode`, line for line)."""

    __slots__ = ("data", "event", "last_id", "retry")

    def __init__(self) -> None:
        self.event: str | None = None
        self.data: list[str] = []
        self.last_id: str | None = None  # kept from event to event, as the spec says
        self.retry: int | None = None

    def take(self, line: str) -> ServerSentEvent | None:
        """Reads one line; returns the event it ended, if any."""
        if not line:
            if not self.event and not self.data and not self.last_id and self.retry is None:
                return None
            sse = ServerSentEvent(event=self.event, data="\n".join(self.data), id=self.last_id, retry=self.retry)
            self.event, self.data, self.retry = None, [], None
            return sse
        if line[0] == ":":  # a comment
            return None
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        elif name == "id":
            if "\0" not in value:
                self.last_id = value
        elif name == "retry":
            try:
                self.retry = int(value)
            except ValueError:
                pass
        return None
