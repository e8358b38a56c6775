"""The order and the errors of a turn's waiting task writes (postgres_writes), apart from any database.

What they do on PostgreSQL (all or nothing with the checkpoint, read by the turn, sent
before the release) is in test_postgres_holds.py; here a send is a function that records
what it is given, so a send can be held in flight and made to fail at a chosen moment.
"""

from __future__ import annotations

import asyncio

import pytest

from threadline.storage import postgres_writes
from threadline.storage.postgres_writes import DeferredWrites, Statement, batched


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
    first = Statement("INSERT a", [("a",)], True)
    second = Statement("INSERT b", [("b",)], True)
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


CHECKPOINT = "INSERT INTO checkpoints"
WRITES = "INSERT INTO checkpoint_writes"
SPECIAL_WRITES = "INSERT INTO checkpoint_writes ... DO UPDATE"


def _checkpoint(n: int) -> Statement:
    return Statement(CHECKPOINT, [(f"c{n}",)], False, "checkpoints")


def _writes(n: int, query: str = WRITES) -> Statement:
    return Statement(query, [(f"w{n}a",), (f"w{n}b",)], True, "checkpoint_writes")


def test_a_turns_checkpoints_and_task_writes_go_as_one_statement_per_query() -> None:
    registry = Statement("INSERT INTO threadline_threads", [("row",)], False)
    statements = [_checkpoint(1), _writes(1), _checkpoint(2), _writes(2), _checkpoint(3), registry]

    assert batched(statements) == [
        Statement(CHECKPOINT, [("c1",), ("c2",), ("c3",)], True, "checkpoints"),
        Statement(WRITES, [("w1a",), ("w1b",), ("w2a",), ("w2b",)], True, "checkpoint_writes"),
        registry,
    ]


def test_a_statement_does_not_move_past_one_without_a_table_or_on_its_own_table() -> None:
    delete = Statement("DELETE FROM checkpoints WHERE thread_id = %s", [("t",)], False)
    assert batched([_checkpoint(1), delete, _checkpoint(2)]) == [_checkpoint(1), delete, _checkpoint(2)]

    # A task's special writes replace what an earlier insert stored: their order on the table stays.
    special = _writes(2, SPECIAL_WRITES)
    assert batched([_writes(1), special, _writes(3)]) == [_writes(1), special, _writes(3)]
