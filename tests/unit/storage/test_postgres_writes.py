"""The order and the errors of a turn's waiting task writes (postgres_writes), apart from any database.

What they do on PostgreSQL (all or nothing with the checkpoint, read by the turn, sent
before the release) is in test_postgres_holds.py; here a send is a function that records
what it is given, so a send can be held in flight and made to fail at a chosen moment.
"""

from __future__ import annotations

import asyncio

import pytest

from threadline.storage import postgres_writes
from threadline.storage.postgres_writes import DeferredWrites, Statement


async def test_a_send_alone_goes_before_the_next_write_and_its_error_reaches_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(postgres_writes, "SEND_AFTER_S", 0.01)
    sent: list[list[Statement]] = []
    started, in_flight = asyncio.Event(), asyncio.Event()

    async def send(statements: list[Statement]) -> None:
        sent.append(statements)
        started.set()
        await in_flight.wait()
        raise RuntimeError("the database is down")

    writes = DeferredWrites()
    first: Statement = ("INSERT a", [("a",)], True)
    second: Statement = ("INSERT b", [("b",)], True)
    writes.add([first], send)
    async with asyncio.timeout(5):
        await started.wait()
    assert sent == [[first]], "sent alone when no checkpoint came"

    writes.add([second], send)
    take = asyncio.ensure_future(writes.take())
    # take() may not end while a send is in flight: a window in which it must stay pending (the send
    # never ends by itself, so passing does not depend on the window's length).
    await asyncio.sleep(0.05)
    assert not take.done(), "the next write waits for the send in flight"
    assert sent == [[first]], "one send at a time"

    in_flight.set()
    with pytest.raises(RuntimeError, match="the database is down"):
        await take
    assert await writes.take() == [second], "what waited is still there, and the error was raised once"
