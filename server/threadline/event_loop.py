"""The asyncio event loop a server process runs on (THREADLINE_EVENT_LOOP)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from threadline.errors import ConfigurationError

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(kind: str) -> LoopFactory | None:
    """uvloop's loop factory for "uvloop"; None (asyncio's own loop) for "asyncio".

    uvloop runs the loop in libuv (C): call_soon, futures, timers and socket I/O cost less.
    Every turn crosses the loop hundreds of times (gRPC's poller, psycopg, the model's HTTP
    stream, LangGraph's tasks), so the server spends less CPU per turn and per token on it
    (docs/performance.md). grpc.aio, psycopg, aiohttp and aiosqlite all run on it.
    """
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:  # not installable everywhere (no Windows wheels)
        raise ConfigurationError(
            f"THREADLINE_EVENT_LOOP=uvloop, but uvloop cannot be imported ({exc}); install it or set asyncio"
        ) from exc
    return uvloop.new_event_loop


def describe(loop: asyncio.AbstractEventLoop) -> str:
    """The loop's class, as logs show it: uvloop.Loop or asyncio's _UnixSelectorEventLoop."""
    kind = type(loop)
    return f"{kind.__module__.split('.')[0]}.{kind.__qualname__}"
