"""The fence of a turn's writes, against a real PostgreSQL: atomic with the writes, and a takeover waits for them.

The end-to-end behaviour (a replica that lost its session loses its thread and writes
nothing more) is in test_replicas_and_locking.py; these pin the two database facts it
rests on, which a change of psycopg's pipeline handling could break silently, how a
turn's checkpoints and task writes wait for its next write (postgres_writes), and that
a write not through a hold on its thread is refused and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint

from threadline.config import Settings
from threadline.engine.context import DEFAULT_TENANT, RequestContext
from threadline.engine.engine import Engine
from threadline.engine.views import TurnCompleted
from threadline.errors import ThreadBusy
from threadline.storage import postgres_holds, postgres_writes
from threadline.storage.contract import safe_serializer
from threadline.storage.postgres_holds import Hold, PostgresThreadLocks, fenced_cursor
from threadline.storage.postgres_pool import Pool, open_pool
from threadline.storage.postgres_saver import HEAD_SQL, PostgresSaver
from threadline.storage.thread_keys import ThreadKey
from threadline.storage.thread_locks import StaleRunError, UnheldWriteError
from threadline.storage.thread_registry import PostgresThreadRegistry

_TAKE_OVER = "UPDATE threadline_thread_holders SET token = %s WHERE thread_key = %s"


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[Pool]:
    opened = await open_pool(postgres_url, min_size=2, max_size=2, timeout_s=5, prepare_threshold=0)
    await postgres_holds.setup(opened)
    async with opened.connection() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS fence_probe (thread_key text, step int)")
    yield opened
    await opened.close()


async def _held(pool: Pool) -> Hold:
    hold = Hold(ThreadKey("tests", uuid.uuid4().hex), uuid.uuid4(), pool)
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO threadline_thread_holders (thread_key, owner_key, token) VALUES (%s, 0, %s)",
            (hold.thread_key, hold.token),
        )
    return hold


async def _steps(pool: Pool, hold: Hold) -> list[int]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT step FROM fence_probe WHERE thread_key = %s", (hold.thread_key,))
        ).fetchall()
    return sorted(row["step"] for row in rows)


async def test_a_fenced_write_lands_whole_or_not_at_all(pool: Pool) -> None:
    hold = await _held(pool)
    async with pool.connection() as conn:
        async with fenced_cursor(conn, hold) as cur:
            await cur.executemany(
                "INSERT INTO fence_probe VALUES (%s, %s)", [(hold.thread_key, 1), (hold.thread_key, 2)]
            )
        await conn.execute(_TAKE_OVER, (uuid.uuid4(), hold.thread_key))
        with pytest.raises(StaleRunError, match="lost its hold"):
            async with fenced_cursor(conn, hold) as cur:
                await cur.executemany(
                    "INSERT INTO fence_probe VALUES (%s, %s)", [(hold.thread_key, 3), (hold.thread_key, 4)]
                )
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE, "the connection is reusable"
    assert await _steps(pool, hold) == [1, 2]


async def test_a_takeover_waits_for_a_fenced_write_in_flight(pool: Pool, postgres_url: str) -> None:
    hold = await _held(pool)
    async with pool.connection() as conn, fenced_cursor(conn, hold) as cur:
        await cur.execute("INSERT INTO fence_probe VALUES (%s, %s)", (hold.thread_key, 1))
        with psycopg.connect(postgres_url, autocommit=True) as other:
            _wait_until_written(other, conn.info.backend_pid)
            # The server ran the fence and the insert; the block has not ended (no Sync, no commit).
            other.execute("SET lock_timeout = '300ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute(_TAKE_OVER, (uuid.uuid4(), hold.thread_key))
    assert await _steps(pool, hold) == [1]


def _wait_until_written(conn: psycopg.Connection[tuple[object, ...]], pid: int) -> None:
    """Until the backend's transaction has written (an xid is assigned only on its first write)."""
    deadline = time.monotonic() + 5
    row = None
    while time.monotonic() < deadline:
        row = conn.execute("SELECT state, backend_xid FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        if row is not None and row[1] is not None:
            return
        time.sleep(0.01)
    raise AssertionError(f"backend {pid} never wrote inside its pipeline: {row}")


# -- a turn's checkpoints and task writes go with its next write (postgres_writes) ---------------


@pytest.fixture
async def saver(pool: Pool) -> PostgresSaver:
    saver = PostgresSaver(pool, serde=safe_serializer())
    await saver.setup()
    return saver


def _locks(pool: Pool, owner: postgres_holds.OwnerSession, saver: PostgresSaver, **options: str) -> PostgresThreadLocks:
    return PostgresThreadLocks(pool, owner, saver=saver, registry=PostgresThreadRegistry(pool), max_wait_s=5, **options)


def _config(thread: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


async def _stored(pool: Pool, thread: str) -> tuple[int, int]:
    """(checkpoints, task writes) of the thread in the database, read on a connection of its own."""
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT (SELECT count(*) FROM checkpoints WHERE thread_id = %s) AS checkpoints, "
                "(SELECT count(*) FROM checkpoint_writes WHERE thread_id = %s) AS writes",
                (thread, thread),
            )
        ).fetchone()
    assert row is not None
    return row["checkpoints"], row["writes"]


async def _first_checkpoint(saver: PostgresSaver, thread: str) -> RunnableConfig:
    return await saver.aput(_config(thread), empty_checkpoint(), {"source": "input", "step": -1}, {})


async def _next_checkpoint(saver: PostgresSaver, config: RunnableConfig) -> RunnableConfig:
    return await saver.aput(config, empty_checkpoint(), {"source": "loop", "step": 0}, {})


async def _write_that_cannot_wait(hold: Hold, step: int, *, may_wait: bool = False) -> None:
    """A fenced write of the turn that is not a checkpoint's (may_wait: as the thread registry's row)."""
    statement = postgres_writes.Statement("INSERT INTO fence_probe VALUES (%s, %s)", [(hold.thread_key, step)], False)
    await hold.write(hold.thread_key, [statement], may_wait=may_wait)


async def test_a_turns_writes_go_with_its_next_write_all_or_nothing(
    pool: Pool, saver: PostgresSaver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_writes, "SEND_AFTER_S", 30)  # no send on their own during the test
    hold = await _held(pool)
    thread = hold.thread_key
    held = saver.bound_to(hold)
    first = await _first_checkpoint(held, thread)
    await held.aput_writes(first, [("messages", "a"), ("other", "b")], "task-1")
    second = await _next_checkpoint(held, first)
    assert await _stored(pool, thread) == (0, 0), "the checkpoints and task writes wait for the turn's next write"
    await _write_that_cannot_wait(hold, 1)
    assert await _stored(pool, thread) == (2, 2)
    assert await _steps(pool, hold) == [1]

    await held.aput_writes(second, [("messages", "c")], "task-2")
    await _next_checkpoint(held, second)
    async with pool.connection() as conn:
        await conn.execute(_TAKE_OVER, (uuid.uuid4(), thread))
    with pytest.raises(StaleRunError, match="lost its hold"):
        await _write_that_cannot_wait(hold, 2)
    assert await _stored(pool, thread) == (2, 2), "neither the refused write nor what waited for it landed"
    assert await _steps(pool, hold) == [1]


async def test_a_turn_reads_its_own_task_writes(pool: Pool, saver: PostgresSaver) -> None:
    hold = await _held(pool)
    held = saver.bound_to(hold)
    first = await _first_checkpoint(held, hold.thread_key)
    await held.aput_writes(first, [("messages", "a")], "task-1")
    read = await held.aget_tuple(first)
    assert read is not None and [(w[0], w[1], w[2]) for w in read.pending_writes or []] == [("task-1", "messages", "a")]


async def test_a_turns_writes_are_sent_on_their_own_when_no_write_comes(
    pool: Pool, saver: PostgresSaver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_writes, "SEND_AFTER_S", 0.05)
    hold = await _held(pool)
    held = saver.bound_to(hold)
    first = await _first_checkpoint(held, hold.thread_key)
    await held.aput_writes(first, [("messages", "a")], "task-1")
    await held.aput_writes(first, [("messages", "b")], "task-2")
    deadline = time.monotonic() + 5
    while await _stored(pool, hold.thread_key) != (1, 2):
        assert time.monotonic() < deadline, "the writes were never sent on their own"
        await asyncio.sleep(0.01)
    await _next_checkpoint(held, first)
    await _write_that_cannot_wait(hold, 1)
    assert await _stored(pool, hold.thread_key) == (2, 2)


async def test_what_waits_at_a_turns_end_goes_with_its_release_all_or_nothing(
    pool: Pool, saver: PostgresSaver, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_writes, "SEND_AFTER_S", 30)  # no send on their own during the test
    owner = postgres_holds.OwnerSession(postgres_url, prepare_threshold=0)
    locks = _locks(pool, owner, saver)
    holders = "SELECT token FROM threadline_thread_holders WHERE thread_key = %s"
    try:
        key = ThreadKey("tests", uuid.uuid4().hex)
        thread = key.storage_id
        async with locks.hold(key, wait=False, deadline=None) as hold:
            await _first_checkpoint(hold.saver, thread)
            await _write_that_cannot_wait(hold, 1, may_wait=True)
            assert await _stored(pool, thread) == (0, 0), "a write that may wait waits, with LangGraph's"
            requests = pool.get_stats().get("requests_num", 0)
        assert pool.get_stats().get("requests_num", 0) - requests == 1, "the writes and the release: one round trip"
        assert await _stored(pool, thread) == (1, 0)
        assert await _steps(pool, Hold(key, uuid.uuid4(), pool)) == [1]
        async with pool.connection() as conn:
            assert await (await conn.execute(holders, (thread,))).fetchone() is None, "released with them"

        # Taken over before the end: neither what waited nor the release lands.
        key = ThreadKey("tests", uuid.uuid4().hex)
        thread = key.storage_id
        taker = uuid.uuid4()
        with pytest.raises(StaleRunError, match="lost its hold"):
            async with locks.hold(key, wait=False, deadline=None) as hold:
                await _first_checkpoint(hold.saver, thread)
                async with pool.connection() as conn:
                    await conn.execute(_TAKE_OVER, (taker, thread))
        assert await _stored(pool, thread) == (0, 0)
        async with pool.connection() as conn:
            row = await (await conn.execute(holders, (thread,))).fetchone()
        assert row is not None and row["token"] == taker, "the new holder keeps the thread"
    finally:
        await owner.close()


async def test_a_turns_reads_of_its_head_are_the_row_read_with_its_take(
    pool: Pool, saver: PostgresSaver, postgres_url: str
) -> None:
    owner = postgres_holds.OwnerSession(postgres_url, prepare_threshold=0)
    locks = _locks(pool, owner, saver, head_sql=HEAD_SQL)
    key = ThreadKey("tests", uuid.uuid4().hex)
    thread = key.storage_id
    try:
        async with locks.hold(key, wait=False, deadline=None) as hold:
            requests = pool.get_stats().get("requests_num", 0)
            assert await hold.saver.aget_tuple(_config(thread)) is None, "a new thread has no head"
            assert pool.get_stats().get("requests_num", 0) == requests, "read with the take"
            first = await _first_checkpoint(hold.saver, thread)

        async with locks.hold(key, wait=False, deadline=None) as hold:
            requests = pool.get_stats().get("requests_num", 0)
            head = await hold.saver.aget_tuple(_config(thread))
            assert pool.get_stats().get("requests_num", 0) == requests, "read with the take"
            assert head is not None and head.config == first and head.metadata["step"] == -1
            versions = dict(head.checkpoint["channel_versions"])
            head.checkpoint["channel_versions"]["changed by the graph"] = 1  # LangGraph changes what it read
            again = await hold.saver.aget_tuple(_config(thread))
            assert pool.get_stats().get("requests_num", 0) == requests, "every read until a write is served so"
            assert again is not None and again.config == first, "the same head"
            assert again.checkpoint["channel_versions"] == versions, "each read gets its own copy"

        async with locks.hold(key, wait=False, deadline=None) as hold:
            second = await _next_checkpoint(hold.saver, first)
            head = await hold.saver.aget_tuple(_config(thread))
            assert head is not None and head.config == second, "after a write of the turn, the head is read again"
    finally:
        await owner.close()


@pytest.mark.parametrize("ends", ["normally", "with an error"])
async def test_what_a_turn_wrote_last_is_sent_before_its_thread_is_released(
    pool: Pool, saver: PostgresSaver, postgres_url: str, ends: str
) -> None:
    key = ThreadKey("tests", uuid.uuid4().hex)
    thread = key.storage_id
    owner = postgres_holds.OwnerSession(postgres_url, prepare_threshold=0)
    locks = _locks(pool, owner, saver)
    try:
        with contextlib.suppress(RuntimeError):
            async with locks.hold(key, wait=False, deadline=None) as hold:
                first = await _first_checkpoint(hold.saver, thread)
                # A task that failed or paused for a human: its writes, then no checkpoint.
                await hold.saver.aput_writes(first, [("__error__", "the tool failed")], "task-1")
                if ends == "with an error":
                    raise RuntimeError("the turn failed")
        assert await _stored(pool, thread) == (1, 1)
        async with pool.connection() as conn:
            holders = "SELECT count(*) AS n FROM threadline_thread_holders WHERE thread_key = %s"
            row = await (await conn.execute(holders, (thread,))).fetchone()
        assert row is not None and row["n"] == 0, "released after the writes"
    finally:
        await owner.close()


async def test_a_turns_answer_is_stored_and_its_thread_let_go_before_the_caller_hears_of_it(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_writes, "SEND_AFTER_S", 30)  # nothing is sent on its own during the test
    async with Engine.open(Settings(database_url=postgres_url).engine) as engine:
        events = engine.stream_ask(RequestContext(rpc="StreamAsk"), "", "What is 2+3?")
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, TurnCompleted):
                    break
            else:
                raise AssertionError("the turn ended without its final event")
            # The run is paused at its final event: what the caller is told now must already be
            # in the database, and the thread free for the caller's next turn.
            async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
                stored = await (
                    await conn.execute(
                        "SELECT (SELECT count(*) FROM checkpoints WHERE checkpoint_id = %s), "
                        "(SELECT count(*) FROM threadline_threads WHERE thread_id = %s), "
                        "(SELECT count(*) FROM threadline_thread_holders WHERE thread_key = %s)",
                        (
                            event.turn.checkpoint_id,
                            event.turn.thread_id,
                            ThreadKey(DEFAULT_TENANT, event.turn.thread_id).storage_id,
                        ),
                    )
                ).fetchone()
            assert stored == (1, 1, 0), "the answer's checkpoint and the thread's row are stored, the thread let go"


# -- a write not through a hold on its thread is refused, and writes nothing -------------------


async def test_a_write_outside_a_turn_is_refused_while_a_turn_holds_the_thread(
    pool: Pool, saver: PostgresSaver, postgres_url: str
) -> None:
    owner = postgres_holds.OwnerSession(postgres_url, prepare_threshold=0)
    locks = _locks(pool, owner, saver)
    key = ThreadKey("tests", uuid.uuid4().hex)
    thread = key.storage_id
    try:
        first = await _first_checkpoint(saver, thread)  # no turn holds it: the write holds it for itself
        assert await _stored(pool, thread) == (1, 0)
        async with locks.hold(key, wait=False, deadline=None):
            with pytest.raises(ThreadBusy, match="held by a turn"):
                await saver.aput_writes(first, [("messages", "a")], "task-1")
            with pytest.raises(ThreadBusy):
                await _next_checkpoint(saver, first)
            with pytest.raises(ThreadBusy):
                await saver.adelete_thread(thread)
            assert await _stored(pool, thread) == (1, 0), "nothing of the refused writes landed"
        await saver.aput_writes(first, [("messages", "a")], "task-1")
        assert await _stored(pool, thread) == (1, 1), "once the turn let go, the thread is free again"
        async with pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT count(*) AS n FROM threadline_thread_holders WHERE thread_key = %s", (thread,)
                )
            ).fetchone()
        assert row is not None and row["n"] == 0, "a write outside a turn leaves no hold behind"
    finally:
        await owner.close()


async def test_a_turn_cannot_write_a_thread_it_does_not_hold_nor_after_its_hold_ends(
    pool: Pool, saver: PostgresSaver, postgres_url: str
) -> None:
    owner = postgres_holds.OwnerSession(postgres_url, prepare_threshold=0)
    locks = _locks(pool, owner, saver)
    key, other = ThreadKey("tests", uuid.uuid4().hex), ThreadKey("tests", uuid.uuid4().hex)
    try:
        async with locks.hold(key, wait=False, deadline=None) as hold:
            with pytest.raises(UnheldWriteError):
                await _first_checkpoint(hold.saver, other.storage_id)
            with pytest.raises(UnheldWriteError):
                await hold.registry.record("tests", other.thread_id, title="", turn_count=1, head_checkpoint_id="x")
            first = await _first_checkpoint(hold.saver, key.storage_id)
        with pytest.raises(StaleRunError, match="has ended"):
            await hold.saver.aput_writes(first, [("messages", "late")], "task-1")
        with pytest.raises(StaleRunError, match="has ended"):
            await _next_checkpoint(hold.saver, first)
        assert await _stored(pool, key.storage_id) == (1, 0), "only the write made while holding the thread landed"
        assert await _stored(pool, other.storage_id) == (0, 0)
    finally:
        await owner.close()
