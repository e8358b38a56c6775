"""The fence of a turn's writes, against a real PostgreSQL: atomic with the writes, and a takeover waits for them.

The end-to-end behaviour (a replica that lost its session loses its thread and writes
nothing more) is in test_replicas_and_locking.py; these pin the two database facts it
rests on, which a change of psycopg's pipeline handling could break silently.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from threadline.engine import postgres_holds
from threadline.engine.postgres import open_pool
from threadline.engine.postgres_holds import Hold, Pool, StaleRunError, fenced_cursor

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
    hold = Hold(f"tests/{uuid.uuid4().hex}", uuid.uuid4())
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
