"""Opens the storage named by a database URL: a checkpoint saver, per-thread locks, a health probe.

sqlite:///PATH       AsyncSqliteSaver on one aiosqlite connection (the embedded default;
                     sqlite:////abs/path for an absolute path); one process per file
postgresql://...     our pooled AsyncPostgresSaver on a psycopg pool, with fenced holds
                     on threads so that any number of replicas can share the database
memory://            InMemorySaver (tests; nothing survives the process)
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import aiosqlite
import psycopg
import psycopg_pool
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from threadline.config import redact
from threadline.engine import audit, postgres_holds
from threadline.engine.audit import AuditedSaverMixin
from threadline.engine.hot_states import HotStates, HotStatesSaverMixin
from threadline.engine.postgres import (
    IdleConnectionCheck,
    PooledPostgresSaver,
    open_pool,
)
from threadline.engine.thread_locks import LocalThreadLocks, ThreadLocks
from threadline.engine.thread_registry import (
    MemoryThreadRegistry,
    PostgresThreadRegistry,
    SqliteThreadRegistry,
    ThreadRegistry,
)
from threadline.errors import ConfigurationError, StorageUnavailable

log = logging.getLogger(__name__)

STORAGE_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    sqlite3.OperationalError,
    aiosqlite.Error,
)
"""Exceptions that mean the database cannot serve now (retrying later can work)."""


@dataclass(frozen=True)
class StorageSettings:
    """How storage behaves beyond its URL (PostgreSQL pool settings are ignored by the others)."""

    pool_min_size: int = 1
    pool_max_size: int = 10
    pool_timeout_s: float = 5.0
    """Longest wait for a connection; then the call fails (UNAVAILABLE) instead of hanging."""
    pool_max_lifetime_s: float = 3600.0
    pool_max_idle_s: float = 600.0
    pool_check: bool = True
    """Check each connection when it leaves the pool: a connection a database restart or a
    cloud idle-reaper killed is replaced instead of failing the call."""
    prepare_threshold: int | None = 0
    """psycopg's prepare_threshold: None disables prepared statements (PgBouncer in transaction mode)."""
    busy_wait_max_s: float = 30.0
    """Longest a turn waits for a busy thread when the call has no shorter deadline."""
    hot_threads: int = 256
    """Threads whose recent conversation states this replica keeps in memory (0: none)."""


@dataclass(frozen=True)
class Storage:
    """What the engine keeps its threads in."""

    saver: BaseCheckpointSaver[str]
    locks: ThreadLocks
    ping: Callable[[], Awaitable[None]]
    """Raises one of STORAGE_ERRORS when the database cannot serve."""
    idle_threads: Callable[[str, int], Awaitable[list[str]]]
    """(cutoff checkpoint id, limit): storage thread ids whose newest checkpoint is older."""
    registry: ThreadRegistry
    """One summary row per thread, for ListThreads."""
    hot: HotStates
    """Messages at recent checkpoints of recently used threads; the saver reads them too."""
    headers: Callable[[RunnableConfig, RunnableConfig | None, int], Awaitable[list[CheckpointTuple]]]
    """(thread config, before, limit): the newest checkpoints, newest first; their
    channel values and pending writes may be left out (History reads neither)."""
    find_request: Callable[[RunnableConfig, str], Awaitable[CheckpointTuple | None]]
    """(thread config, request_id): the newest checkpoint the call with that request_id
    wrote, or None; its channel values and pending writes may be left out."""


# Checkpoint ids are UUIDv6 (time first, hex), so comparing their text compares their times.
_IDLE_THREADS_SQL = (
    "SELECT thread_id FROM checkpoints WHERE checkpoint_ns = '' "
    "GROUP BY thread_id HAVING max(checkpoint_id) < {param} LIMIT {param}"
)


class AuditedMemorySaver(HotStatesSaverMixin, AuditedSaverMixin, InMemorySaver):
    """InMemorySaver with the audit trail and hot states."""


class AuditedSqliteSaver(HotStatesSaverMixin, AuditedSaverMixin, AsyncSqliteSaver):
    """AsyncSqliteSaver with the audit trail and hot states."""


def _with_hot_states(saver: HotStatesSaverMixin, settings: StorageSettings) -> HotStates:
    saver.hot_states = HotStates(settings.hot_threads)
    return saver.hot_states


def safe_serializer() -> JsonPlusSerializer:
    """A serializer that never unpickles and revives only LangGraph's allow-listed types.

    Without an explicit allowlist JsonPlusSerializer imports and calls any type named
    in a stored checkpoint (the CVE-2026-28277 class), so one write to the database
    would become code execution on every replica.
    """
    return JsonPlusSerializer(pickle_fallback=False, allowed_msgpack_modules=None)


@asynccontextmanager
async def open_storage(url: str, settings: StorageSettings = StorageSettings()) -> AsyncIterator[Storage]:
    """Opens (and sets up the tables of) the storage named by url; closes it on exit."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        memory = AuditedMemorySaver(serde=safe_serializer())

        async def idle_in_memory(cutoff: str, limit: int) -> list[str]:
            idle = [thread for thread, spaces in memory.storage.items() if spaces.get("") and max(spaces[""]) < cutoff]
            return idle[:limit]

        hot = _with_hot_states(memory, settings)
        yield Storage(
            memory,
            _local_locks(settings),
            _always_up,
            idle_in_memory,
            MemoryThreadRegistry(),
            hot,
            _listed(memory),
            _found_by_filter(memory),
        )
    elif scheme == "sqlite":
        async with _sqlite(url, settings) as storage:
            yield storage
    elif scheme in ("postgres", "postgresql"):
        async with _postgres(url, settings) as storage:
            yield storage
    else:
        raise ConfigurationError(
            f"THREADLINE_DATABASE_URL: unsupported scheme {scheme!r} in {redact(url)!r}; "
            "use sqlite:///PATH, postgresql://... or memory://"
        )


def _listed(
    saver: BaseCheckpointSaver[str],
) -> Callable[[RunnableConfig, RunnableConfig | None, int], Awaitable[list[CheckpointTuple]]]:
    """Checkpoint listing by the saver's own alist (cheap per row where the row is all there is, as in SQLite)."""

    async def headers(config: RunnableConfig, before: RunnableConfig | None, limit: int) -> list[CheckpointTuple]:
        return [t async for t in saver.alist(config, before=before, limit=limit)]

    return headers


def _found_by_filter(
    saver: BaseCheckpointSaver[str],
) -> Callable[[RunnableConfig, str], Awaitable[CheckpointTuple | None]]:
    """A request_id's newest checkpoint through the saver's own metadata filter."""

    async def find_request(config: RunnableConfig, request_id: str) -> CheckpointTuple | None:
        # The filter key is our constant, never caller input (CVE-2025-67644: SQLite filter keys).
        # Closed explicitly: SQLite's alist holds the saver's lock until its generator ends.
        found = cast(
            AsyncGenerator[CheckpointTuple, None],  # an async generator, typed as a plain AsyncIterator
            saver.alist(config, filter={audit.REQUEST_ID: request_id}, limit=1),
        )
        async with aclosing(found):
            async for item in found:
                return item
        return None

    return find_request


# The stock SQLite filter on a metadata key is `json_extract(CAST(metadata AS TEXT), '$.key') = ?`
# (LangGraph's search_where); an index on that very expression turns the request_id lookup of
# every turn from a scan of the thread into an index search. checkpoint_id last: the newest
# match comes off the index in order, so the planner prefers it to the primary key even
# before ANALYZE has run (measured: without it, SQLite scanned the thread by its primary key).
SQLITE_REQUEST_INDEX_SQL = (
    "CREATE INDEX IF NOT EXISTS threadline_checkpoints_by_request_id ON checkpoints "
    f"(thread_id, checkpoint_ns, json_extract(CAST(metadata AS TEXT), '$.{audit.REQUEST_ID}'), checkpoint_id)"
)


def _local_locks(settings: StorageSettings) -> LocalThreadLocks:
    return LocalThreadLocks(max_wait_s=settings.busy_wait_max_s)


async def _always_up() -> None:
    return None


@asynccontextmanager
async def _sqlite(url: str, settings: StorageSettings) -> AsyncIterator[Storage]:
    if not url.startswith("sqlite:///") or url == "sqlite:///":
        raise ConfigurationError(f"THREADLINE_DATABASE_URL: expected sqlite:///PATH, got {url!r}")
    path = Path(url.removeprefix("sqlite:///"))
    # Start-up only, before anything is served: a blocking stat is harmless here.
    if not path.absolute().parent.is_dir():  # noqa: ASYNC240
        raise ConfigurationError(f"THREADLINE_DATABASE_URL: folder {path.parent} does not exist")
    async with aiosqlite.connect(path) as conn:
        # WAL lets History read while a turn writes.
        await conn.execute("PRAGMA journal_mode=WAL")
        saver = AuditedSqliteSaver(conn, serde=safe_serializer())
        await saver.setup()
        await conn.execute(SQLITE_REQUEST_INDEX_SQL)
        await conn.commit()
        sqlite_registry = SqliteThreadRegistry(conn)
        await sqlite_registry.setup()
        log.info("checkpoints in SQLite file %s", url.removeprefix("sqlite:///"))

        async def ping() -> None:
            await conn.execute("SELECT 1")

        async def idle_threads(cutoff: str, limit: int) -> list[str]:
            async with conn.execute(_IDLE_THREADS_SQL.format(param="?"), (cutoff, limit)) as cursor:
                return [str(row[0]) for row in await cursor.fetchall()]

        hot = _with_hot_states(saver, settings)
        yield Storage(
            saver,
            _local_locks(settings),
            ping,
            idle_threads,
            sqlite_registry,
            hot,
            _listed(saver),
            _found_by_filter(saver),
        )


def _pool_check(settings: StorageSettings) -> dict[str, Any]:
    if not settings.pool_check:
        return {}
    check = IdleConnectionCheck()
    return {"check": check.check, "reset": check.returned}


@asynccontextmanager
async def _postgres(url: str, settings: StorageSettings) -> AsyncIterator[Storage]:
    try:
        pool = await open_pool(
            url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            timeout_s=settings.pool_timeout_s,
            max_lifetime=settings.pool_max_lifetime_s,
            max_idle=settings.pool_max_idle_s,
            **_pool_check(settings),
            prepare_threshold=settings.prepare_threshold,
        )
    except psycopg_pool.PoolTimeout:
        raise StorageUnavailable(
            f"cannot connect to PostgreSQL at {redact(url)} within {settings.pool_timeout_s:g}s"
        ) from None
    try:
        saver = PooledPostgresSaver(pool, serde=safe_serializer())
        await saver.setup()
        pg_registry = PostgresThreadRegistry(saver)
        await pg_registry.setup()
        log.info("checkpoints in PostgreSQL at %s", redact(url))

        await postgres_holds.setup(pool)
        owner = postgres_holds.OwnerSession(url, prepare_threshold=settings.prepare_threshold)

        async def idle_threads(cutoff: str, limit: int) -> list[str]:
            async with pool.connection() as conn:
                rows = await (await conn.execute(_IDLE_THREADS_SQL.format(param="%s"), (cutoff, limit))).fetchall()
                return [str(row["thread_id"]) for row in rows]

        locks = postgres_holds.PostgresThreadLocks(
            pool, owner, max_wait_s=settings.busy_wait_max_s, head_sql=saver.head_sql
        )
        hot = _with_hot_states(saver, settings)
        try:
            yield Storage(
                saver, locks, owner.ping, idle_threads, pg_registry, hot, saver.alist_headers, saver.afind_request
            )
        finally:
            await locks.close()
            await owner.close()
    finally:
        await pool.close()
