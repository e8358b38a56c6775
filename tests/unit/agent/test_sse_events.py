"""Our SSE decoder reads the same events as the openai SDK's, however the bytes are cut into chunks."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Iterator

import pytest
from openai._streaming import ServerSentEvent, SSEDecoder

from threadline.agent.sse_events import SSEEvents

Event = tuple[str | None, str, str | None, int | None]

_TEXT = ["word", "é", "字", "🙂", ":", " ", "data", '{"a": 1}', "[DONE]", "\0"]
_LINE_ENDS = ["\n", "\r", "\r\n"]


def _line(rng: random.Random) -> str:
    text = "".join(rng.choice(_TEXT) for _ in range(rng.randrange(4)))
    return rng.choice(
        [
            f"data: {text}",
            f"data:{text}",
            "data",
            f"event: {text}",
            f"id: {text}",
            f"retry: {rng.choice(['100', ' 7', 'x', ''])}",
            f": {text}",
            f"{text}",
            "",
            "",
            "",
        ]
    )


def _stream(rng: random.Random) -> bytes:
    return "".join(_line(rng) + rng.choice(_LINE_ENDS) for _ in range(rng.randrange(1, 30))).encode()


def _cut(data: bytes, rng: random.Random) -> list[bytes]:
    """The bytes in chunks cut anywhere (inside a character, between CR and LF), some of them empty."""
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(6)))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def _fields(events: list[ServerSentEvent]) -> list[Event]:
    return [(e.event, e.data, e.id, e.retry) for e in events]


async def _chunks(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _read_async(decoder: SSEDecoder | SSEEvents, chunks: list[bytes]) -> list[Event]:
    return _fields([event async for event in decoder.aiter_bytes(_chunks(chunks))])


def _read(decoder: SSEDecoder | SSEEvents, chunks: list[bytes]) -> list[Event]:
    source: Iterator[bytes] = iter(chunks)
    return _fields(list(decoder.iter_bytes(source)))


def test_random_streams_cut_anywhere_give_the_sdks_events() -> None:
    rng = random.Random(20261123)
    for _ in range(400):
        data = _stream(rng)
        chunks = _cut(data, rng)
        expected = asyncio.run(_read_async(SSEDecoder(), [data]))
        assert asyncio.run(_read_async(SSEDecoder(), chunks)) == expected  # the oracle cuts freely too
        assert asyncio.run(_read_async(SSEEvents(), chunks)) == expected, (data, chunks)
        assert _read(SSEEvents(), chunks) == expected, (data, chunks)


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        # A CRLF cut between its CR and LF ends one line, also with an empty chunk between them.
        ([b"data: a\r", b"\ndata: b\r\n\r\n"], [(None, "a\nb", None, None)]),
        ([b"data: a\r", b"", b"\ndata: b\r\n\r\n"], [(None, "a\nb", None, None)]),
        # The LF that ended a CRLF alone in its chunk; the next LF is an empty line.
        ([b"data: a\r", b"\n", b"\ndata: b\n\n"], [(None, "a", None, None), (None, "b", None, None)]),
        # A line cut in three, inside a character; an LF after an LF is an empty line.
        ([b"data: \xe5", b"\xad", b"\x97\n", b"\n"], [(None, "字", None, None)]),
        # The chunks of a model's stream: one event each, then [DONE].
        ([b'data: {"x": 1}\n\n', b"data: [DONE]\n\n"], [(None, '{"x": 1}', None, None), (None, "[DONE]", None, None)]),
        # A comment, an event name, an id kept for the next event; a last line without its end is dropped.
        (
            [b": keep-alive\nevent: error\nid: 7\ndata: x\n\ndata: y\n\ndata: z"],
            [("error", "x", "7", None), (None, "y", "7", None)],
        ),
    ],
)
def test_cases_worth_naming(chunks: list[bytes], expected: list[Event]) -> None:
    assert asyncio.run(_read_async(SSEDecoder(), chunks)) == expected
    assert asyncio.run(_read_async(SSEEvents(), chunks)) == expected
