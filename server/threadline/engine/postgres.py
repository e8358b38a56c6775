"""PostgreSQL storage: a checkpoint saver without a global lock, and one writer per thread across replicas.

Two things the stock AsyncPostgresSaver does not give us:

* Concurrency. It runs every operation of one saver behind one asyncio.Lock, even on
  a pool (langgraph issue 7259), so a replica checkpoints one turn at a time. Our
  subclass keeps its SQL and schema and takes connections from the pool directly.

* One writer per thread. LangGraph does not stop two runs on one thread; across
  replicas they fork the chain (langgraph issue 8796). A turn therefore holds a
  session-level advisory lock on the thread for its whole run, on a connection it
  keeps for that run, and *every checkpoint write of the run goes through that same
  connection*. If the replica dies, its connection closes and PostgreSQL drops the
  lock; if the connection breaks, the lock is gone but so is the only way the run
  could write, so a run that lost its lock can never write (fencing).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg_pool
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import DictRow, dict_row

from threadline.engine.audit import AuditedSaverMixin
from threadline.engine.hot_states import HotStatesSaverMixin
from threadline.engine.thread_locks import LocalThreadLocks
from threadline.errors import ThreadBusy

log = logging.getLogger(__name__)

Pool = psycopg_pool.AsyncConnectionPool[AsyncConnection[DictRow]]

# How long a waiting turn sleeps between two tries of a busy thread's lock. Short: a
# turn that finishes hands the thread on within this; polling costs one cheap query.
_RETRY_INTERVAL_S = 0.02


class StaleRunError(RuntimeError):
    """A write of a turn that no longer holds its thread (it ended, or lost the lock)."""


@dataclass
class _RunConnection:
    """The connection a turn holds its thread's lock on; the run's writes go through it."""

    conn: AsyncConnection[DictRow]
    # One psycopg connection runs one statement at a time; a run may write from parallel tasks.
    use: asyncio.Lock = field(default_factory=asyncio.Lock)
    released: bool = False


_run_connection: ContextVar[_RunConnection | None] = ContextVar("threadline_run_connection", default=None)


def advisory_key(thread_key: str) -> int:
    """A stable signed 64-bit lock key for a thread (collisions only serialize two threads)."""
    return int.from_bytes(hashlib.sha256(thread_key.encode()).digest()[:8], "big", signed=True)


class PooledPostgresSaver(HotStatesSaverMixin, AuditedSaverMixin, AsyncPostgresSaver):
    """AsyncPostgresSaver with concurrent pool use and the run's own connection for its writes."""

    def cursor(self) -> AbstractAsyncContextManager[AsyncCursor[DictRow]]:
        """A cursor on the connection this saver would use now (the run's, inside a locked run)."""
        return self._cursor()

    @asynccontextmanager
    async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[AsyncCursor[DictRow]]:
        run = _run_connection.get()
        if run is None:
            assert isinstance(self.conn, psycopg_pool.AsyncConnectionPool)
            async with self.conn.connection() as conn:
                async with _cursor_on(conn, pipeline=pipeline) as cur:
                    yield cur
            return
        async with run.use:
            if run.released:
                raise StaleRunError("this turn no longer holds its thread; its write is refused")
            async with _cursor_on(run.conn, pipeline=pipeline) as cur:
                yield cur


@asynccontextmanager
async def _cursor_on(conn: AsyncConnection[DictRow], *, pipeline: bool) -> AsyncIterator[AsyncCursor[DictRow]]:
    if pipeline:
        async with conn.pipeline(), conn.cursor(binary=True, row_factory=dict_row) as cur:
            yield cur
    else:
        async with conn.cursor(binary=True, row_factory=dict_row) as cur:
            yield cur


class PostgresThreadLocks:
    """One turn at a time per thread across every replica on the database."""

    def __init__(self, pool: Pool, *, max_wait_s: float) -> None:
        self._pool = pool
        self._local = LocalThreadLocks(max_wait_s=max_wait_s)
        self._max_wait_s = max_wait_s

    @asynccontextmanager
    async def hold(self, thread_key: str, *, wait: bool, deadline: float | None) -> AsyncIterator[None]:
        """Holds the thread for the block; ThreadBusy if it is busy and wait is False (or the wait ends).

        Turns of this replica queue on a local lock first, so only one of them at a
        time asks the database.
        """
        async with self._local.hold(thread_key, wait=wait, deadline=deadline):
            conn = await self._pool.getconn()
            run = _RunConnection(conn)
            try:
                await self._lock(conn, thread_key, wait=wait, deadline=deadline)
                token = _run_connection.set(run)
                try:
                    yield
                finally:
                    _run_connection.reset(token)
            finally:
                async with run.use:
                    run.released = True
                    await self._give_back(conn)

    async def _lock(
        self, conn: AsyncConnection[DictRow], thread_key: str, *, wait: bool, deadline: float | None
    ) -> None:
        key = advisory_key(thread_key)
        give_up = time.monotonic() + self._max_wait_s
        if deadline is not None:
            give_up = min(give_up, deadline)
        while True:
            row = await (await conn.execute("SELECT pg_try_advisory_lock(%s) AS held", (key,))).fetchone()
            if row is not None and row["held"]:
                return
            if not wait or time.monotonic() + _RETRY_INTERVAL_S >= give_up:
                raise ThreadBusy(f"thread {thread_key.partition('/')[2]!r} is running another turn")
            await asyncio.sleep(_RETRY_INTERVAL_S)

    async def _give_back(self, conn: AsyncConnection[DictRow]) -> None:
        # Never return a connection to the pool while it might still hold a lock: a
        # thread would stay locked for as long as the pool keeps that connection.
        # A connection that cannot be unlocked is closed, which drops its locks.
        try:
            await conn.execute("SELECT pg_advisory_unlock_all()")
        except BaseException as exc:
            await conn.close()
            if not isinstance(exc, psycopg.Error):
                raise
            log.warning("closed a connection that could not release its thread locks: %s", exc)
        finally:
            await self._pool.putconn(conn)


async def open_pool(
    url: str, *, min_size: int, max_size: int, timeout_s: float, prepare_threshold: int | None, **options: Any
) -> Pool:
    """An open pool of connections configured the way the saver needs them."""
    pool: Pool = psycopg_pool.AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout_s,
        open=False,
        # autocommit and dict rows are what the saver's SQL expects (FIELD-NOTES).
        kwargs={"autocommit": True, "row_factory": dict_row, "prepare_threshold": prepare_threshold},
        **options,
    )
    await pool.open(wait=True, timeout=timeout_s)
    return pool
