"""PostgreSQL storage: a checkpoint saver without a global lock, and one writer per thread across replicas.

Two things the stock AsyncPostgresSaver does not give us:

* Concurrency. It runs every operation of one saver behind one asyncio.Lock, even on
  a pool (langgraph issue 7259), so a replica checkpoints one turn at a time. Our
  subclass keeps its SQL and schema and takes connections from the pool directly.

* One writer per thread. LangGraph does not stop two runs on one thread; across
  replicas they fork the chain (langgraph issue 8796). A turn holds its thread
  (postgres_holds), and the saver runs each of the turn's writes in a transaction
  fenced to that hold: a turn whose thread was taken over can never write again.
  The turn's writes (LangGraph's checkpoints and task writes, the registry row) wait
  on the turn's hold and go together in one such transaction, with the release
  where they can (postgres_writes). With the head read in the take's round trip
  (postgres_holds), a fast tool turn makes 2 round trips, not 13.

It also serializes on the event loop, where the stock saver hops to a worker thread (postgres_serde).
"""

from __future__ import annotations

import functools
import logging
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, cast

import psycopg
import psycopg_pool
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple, get_checkpoint_id
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import DictRow, dict_row

from threadline.storage import audit
from threadline.storage.audit import AuditedSaverMixin
from threadline.storage.hot_states import HotStatesSaverMixin
from threadline.storage.postgres_holds import Hold, Pool, check_current_hold, fenced_cursor
from threadline.storage.postgres_serde import SerdeOnLoopPostgresSaver
from threadline.storage.postgres_writes import Params, RecordedStatements, Statement

log = logging.getLogger(__name__)

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


class PooledPostgresSaver(HotStatesSaverMixin, AuditedSaverMixin, SerdeOnLoopPostgresSaver):
    """AsyncPostgresSaver with concurrent pool use, and a turn's writes fenced to its hold on the thread."""

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

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The stock read, but a turn's first read of its thread's head uses the row read with its take."""
        hold = check_current_hold()
        if hold is not None and hold.head is not None and _is_head_of(config, hold.thread_key):
            rows, hold.head = hold.head, None
            if not rows:
                return None
            # Rows of checkpoint format < 4 may need the stock read's migration of pending sends.
            if rows[0]["checkpoint"]["v"] >= 4 or not rows[0]["parent_checkpoint_id"]:
                return await self._load_checkpoint_tuple(rows[0])
        return await super().aget_tuple(config)

    @property
    def head_sql(self) -> str:
        """The stock read of a thread's newest checkpoint in a namespace (parameters: thread, namespace)."""
        return self.SELECT_SQL + "WHERE thread_id = %s AND checkpoint_ns = %s ORDER BY checkpoint_id DESC LIMIT 1"

    def cursor(self) -> AbstractAsyncContextManager[AsyncCursor[DictRow]]:
        """A cursor for reads, on a pooled connection."""
        return self._cursor()

    def write_cursor(self, *, may_wait: bool = False) -> AbstractAsyncContextManager[AsyncCursor[DictRow]]:
        """A cursor for writes: inside a turn, fenced to the turn's hold on its thread.

        may_wait: inside a turn, the writes may wait to go with the turn's next write or its
        release, as LangGraph's own do (postgres_writes); a read of the turn sends them first.
        """
        return self._cursor(pipeline=True, may_wait=may_wait)

    @asynccontextmanager
    async def _cursor(self, *, pipeline: bool = False, may_wait: bool = False) -> AsyncIterator[AsyncCursor[DictRow]]:
        # The stock saver asks for a pipeline exactly for its writes (aput, aput_writes,
        # adelete_thread): those are the statements a turn that lost its thread must not run.
        hold = check_current_hold()
        if hold is not None and pipeline:
            hold.head = None  # the turn writes: the head read with its take may be outdated
            # Recorded, then sent fenced: LangGraph's own writes wait to go with the turn's next
            # write that cannot wait, or its release (postgres_writes); any other write takes them with it.
            recorded = RecordedStatements()
            yield cast(AsyncCursor[DictRow], recorded)
            if may_wait or self._are_langgraph_writes(recorded.statements):
                hold.writes.add(recorded.statements, functools.partial(self._send_fenced, hold))
            else:
                await self._send_fenced(hold, [*await hold.writes.take(), *recorded.statements])
            return
        if hold is not None:
            await hold.writes.flush()  # a turn reads its own writes
        assert isinstance(self.conn, psycopg_pool.AsyncConnectionPool)
        async with self.conn.connection() as conn, _cursor_on(conn, pipeline=pipeline) as cur:
            yield cur

    def _are_langgraph_writes(self, statements: list[Statement]) -> bool:
        """Whether the statements are exactly what the stock aput_writes or aput runs."""
        match statements:
            case [(query, _, True)]:  # aput_writes
                return query in (self.UPSERT_CHECKPOINT_WRITES_SQL, self.INSERT_CHECKPOINT_WRITES_SQL)
            case [(query, _, False)]:  # aput of a checkpoint whose values are all stored inline
                return query == self.UPSERT_CHECKPOINTS_SQL
            case [(blobs, _, True), (query, _, False)]:  # aput
                return blobs == self.UPSERT_CHECKPOINT_BLOBS_SQL and query == self.UPSERT_CHECKPOINTS_SQL
        return False

    async def _send_fenced(self, hold: Hold, statements: list[Statement]) -> None:
        assert isinstance(self.conn, psycopg_pool.AsyncConnectionPool)
        async with self.conn.connection() as conn, fenced_cursor(conn, hold) as cur:
            for query, rows, many in statements:
                if many:
                    await cur.executemany(query, cast(list[Params], rows))
                else:
                    await cur.execute(query, rows[0])


def _is_head_of(config: RunnableConfig, thread_key: str) -> bool:
    """Whether config asks for the newest root checkpoint of the thread."""
    configurable = config["configurable"]
    return (
        configurable["thread_id"] == thread_key
        and not configurable.get("checkpoint_ns")
        and not get_checkpoint_id(config)
    )


@asynccontextmanager
async def _cursor_on(conn: AsyncConnection[DictRow], *, pipeline: bool) -> AsyncIterator[AsyncCursor[DictRow]]:
    if pipeline:
        async with conn.pipeline(), conn.cursor(binary=True, row_factory=dict_row) as cur:
            yield cur
    else:
        async with conn.cursor(binary=True, row_factory=dict_row) as cur:
            yield cur


class IdleConnectionCheck:
    """The pool's `check`: a connection idle for more than a moment is checked before use; a busy one is not.

    The check is one round trip per checkout, a share of every turn's server CPU
    (docs/performance.md). What it is for is connections that died while idle (a
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
