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
import weakref
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg_pool
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import DictRow, dict_row

from threadline.engine import audit
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


_HEADERS_SQL = """
select thread_id, checkpoint, checkpoint_ns, checkpoint_id, parent_checkpoint_id, metadata from checkpoints """


def _header(row: DictRow) -> CheckpointTuple:
    """A listed checkpoint: its own JSON (with only the values stored inline) and metadata."""

    def config(checkpoint_id: str) -> RunnableConfig:
        return {
            "configurable": {
                "thread_id": row["thread_id"],
                "checkpoint_ns": row["checkpoint_ns"],
                "checkpoint_id": checkpoint_id,
            }
        }

    parent = row["parent_checkpoint_id"]
    parent_config = config(parent) if parent else None
    return CheckpointTuple(config(row["checkpoint_id"]), row["checkpoint"], row["metadata"], parent_config)


# Finding the checkpoint of an earlier call's request_id (idempotent retries) must not scan
# the thread: the stock filter (`metadata @> ...`) reads every checkpoint of a thread with
# no such request (+4 ms per turn at 2,000 turns). A partial expression index on our own
# metadata key serves this query only (checkpoint_id last: the newest match is read off the
# index, no sort); rows written without a request_id are not in it.
# The key is our constant, never caller input.
_REQUEST_INDEX = "threadline_checkpoints_by_request_id"
_REQUEST_EXPR = f"(metadata->>'{audit.REQUEST_ID}')"
REQUEST_INDEX_SQL = (
    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {_REQUEST_INDEX} "
    f"ON checkpoints (thread_id, checkpoint_ns, {_REQUEST_EXPR}, checkpoint_id) WHERE {_REQUEST_EXPR} IS NOT NULL"
)
REQUEST_SQL = (
    _HEADERS_SQL + f"WHERE thread_id = %s AND checkpoint_ns = %s AND {_REQUEST_EXPR} = %s "
    "ORDER BY checkpoint_id DESC LIMIT 1"
)


_run_connection: ContextVar[_RunConnection | None] = ContextVar("threadline_run_connection", default=None)


def advisory_key(thread_key: str) -> int:
    """A stable signed 64-bit lock key for a thread (collisions only serialize two threads)."""
    return int.from_bytes(hashlib.sha256(thread_key.encode()).digest()[:8], "big", signed=True)


class PooledPostgresSaver(HotStatesSaverMixin, AuditedSaverMixin, AsyncPostgresSaver):
    """AsyncPostgresSaver with concurrent pool use and the run's own connection for its writes."""

    async def alist_headers(
        self, config: RunnableConfig, before: RunnableConfig | None, limit: int
    ) -> list[CheckpointTuple]:
        """The newest checkpoints of a thread (before `before`) without their blobs or pending writes.

        The stock `alist` joins every row with the thread's blobs through a hash join that
        reads all of the thread's blobs once per row, so a History page cost grew with the
        thread (4 ms for 11 rows at 500 turns here). History needs only the checkpoint's own
        JSON and metadata: conversations come from the replica's hot states or a state read.
        """
        where, args = self._search_where(config, None, before)
        query = _HEADERS_SQL + where + " ORDER BY checkpoint_id DESC LIMIT %s"
        async with self._cursor() as cur:
            await cur.execute(query, [*args, limit], binary=True)
            return [_header(row) for row in await cur.fetchall()]

    async def afind_request(self, config: RunnableConfig, request_id: str) -> CheckpointTuple | None:
        """The newest checkpoint of the thread written by the call with this request_id, without its blobs."""
        configurable = config["configurable"]
        async with self._cursor() as cur:
            await cur.execute(REQUEST_SQL, (configurable["thread_id"], configurable["checkpoint_ns"], request_id))
            row = await cur.fetchone()
        return None if row is None else _header(row)

    async def setup(self) -> None:
        """LangGraph's tables and migrations, then the index of request ids."""
        await super().setup()
        async with self._cursor() as cur:
            try:
                await cur.execute(REQUEST_INDEX_SQL)
            except psycopg.errors.UniqueViolation:
                # Another replica created it at the same instant (IF NOT EXISTS does not cover the race).
                log.info("index %s was created by another replica", _REQUEST_INDEX)

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


class IdleConnectionCheck:
    """The pool's `check`: a connection idle for more than a moment is checked before use; a busy one is not.

    The check is one round trip per checkout (7% of a turn's server CPU, measured with
    bench/ask_throughput.py). What it is for is connections that died while idle (a
    database restart, a cloud idle reaper); one returned to the pool less than
    `idle_s` ago was just working. If it died in that moment anyway, the call fails
    with UNAVAILABLE and psycopg drops the broken connection, as it would without a check.
    """

    def __init__(self, idle_s: float = 1.0) -> None:
        self._idle_s = idle_s
        self._returned_at: weakref.WeakKeyDictionary[AsyncConnection[Any], float] = weakref.WeakKeyDictionary()

    async def check(self, conn: AsyncConnection[Any]) -> None:
        """Raises if a connection idle for longer than idle_s does not answer."""
        returned_at = self._returned_at.get(conn)
        if returned_at is None or time.monotonic() - returned_at > self._idle_s:
            await psycopg_pool.AsyncConnectionPool.check_connection(conn)

    async def returned(self, conn: AsyncConnection[Any]) -> None:
        """The pool's `reset`: notes when the connection came back."""
        self._returned_at[conn] = time.monotonic()


class DatabaseProbe:
    """Asks PostgreSQL whether it answers, on a connection of its own, not one from the pool.

    Under load every pooled connection can be held by a turn in flight (a turn holds one for
    its whole run, model stream included). A probe that waited for one would call a busy
    replica a database outage: health NOT_SERVING and every new call refused at once
    (measured: 32 concurrent streams on the default pool of 10 turned thousands of calls
    into UNAVAILABLE). Waiting for the pool is load, and turns queue for it.
    """

    def __init__(self, url: str, *, prepare_threshold: int | None) -> None:
        self._url = url
        self._prepare_threshold = prepare_threshold
        self._conn: AsyncConnection[Any] | None = None

    async def ping(self) -> None:
        """Runs SELECT 1, connecting first if needed; raises what psycopg raises when it cannot."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, prepare_threshold=self._prepare_threshold
                )
            await self._conn.execute("SELECT 1")
        except BaseException:
            # Failed or interrupted (the caller's timeout): the next probe starts on a new connection.
            await self.close()
            raise

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


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
