"""postgresql://... storage: our own saver on a psycopg pool (postgres_saver), with fenced holds on
threads (postgres_holds), so that any number of replicas can share the database."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg_pool
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple

from threadline.errors import StorageUnavailable
from threadline.redaction import redact
from threadline.storage import postgres_holds
from threadline.storage.audit import AuditedSaverMixin
from threadline.storage.contract import (
    IDLE_THREADS_SQL,
    PoolStats,
    Serialized,
    Storage,
    safe_serializer,
    with_hot_states,
)
from threadline.storage.hot_states import HotStates, HotStatesSaverMixin
from threadline.storage.postgres_pool import IdleConnectionCheck, Pool, open_pool
from threadline.storage.postgres_saver import HEAD_SQL, PostgresSaver
from threadline.storage.settings import StorageSettings
from threadline.storage.thread_registry import UNLISTED_THREADS_PG, PostgresThreadRegistry, UnlistedThread

log = logging.getLogger(__name__)


class PooledPostgresSaver(HotStatesSaverMixin, AuditedSaverMixin, PostgresSaver):
    """Our PostgreSQL saver with the audit trail and hot states."""


def _pool_check(settings: StorageSettings) -> dict[str, Any]:
    if not settings.pool_check:
        return {}
    check = IdleConnectionCheck()
    return {"check": check.check, "reset": check.returned}


@dataclass
class PostgresStorage:
    """Storage in a PostgreSQL database that any number of replicas share."""

    saver: PooledPostgresSaver
    locks: postgres_holds.PostgresThreadLocks
    registry: PostgresThreadRegistry
    hot: HotStates
    pool: Pool
    owner: postgres_holds.OwnerSession

    async def ping(self) -> None:
        """Returns when this replica's owner session answers (holds need it)."""
        await self.owner.ping()

    def pool_stats(self) -> PoolStats:
        """The pool's connections and waits (psycopg_pool's documented stats keys)."""
        stats = self.pool.get_stats()
        return PoolStats(
            max_size=stats.get("pool_max", 0),
            size=stats.get("pool_size", 0),
            idle=stats.get("pool_available", 0),
            waiting=stats.get("requests_waiting", 0),
            wait_s_total=stats.get("requests_wait_ms", 0) / 1000,
            errors_total=stats.get("requests_errors", 0),
        )

    async def idle_threads(self, cutoff: str, limit: int) -> list[str]:
        """Threads whose newest root checkpoint id is older than cutoff."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(IDLE_THREADS_SQL.format(param="%s"), (cutoff, limit))).fetchall()
            return [str(row["thread_id"]) for row in rows]

    async def unlisted_threads(self, after: str, limit: int) -> list[UnlistedThread]:
        """Threads whose registry row is missing or behind their newest root checkpoint."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(UNLISTED_THREADS_PG, (after, limit))).fetchall()
            return [UnlistedThread(str(row["thread_id"]), str(row["head"]), str(row["first"])) for row in rows]

    async def headers(self, config: RunnableConfig, before: RunnableConfig | None, limit: int) -> list[CheckpointTuple]:
        """The thread's newest checkpoints without their blobs or pending writes."""
        return await self.saver.alist_headers(config, before, limit)

    async def find_request(self, config: RunnableConfig, request_id: str) -> CheckpointTuple | None:
        """The newest checkpoint the call with this request_id wrote, by our index of request ids."""
        return await self.saver.afind_request(config, request_id)


@asynccontextmanager
async def open_postgres(
    url: str, settings: StorageSettings, *, on_serialized: Serialized | None = None
) -> AsyncIterator[Storage]:
    """Storage in the PostgreSQL database at url: tables set up, pool and owner session open until exit."""
    async with _pool(url, settings) as pool:
        saver = PooledPostgresSaver(pool, serde=safe_serializer(on_serialized))
        await saver.setup()
        registry = PostgresThreadRegistry(pool)
        await registry.setup()
        await postgres_holds.setup(pool)
        log.info("checkpoints in PostgreSQL at %s", redact(url))
        owner = postgres_holds.OwnerSession(url, prepare_threshold=settings.prepare_threshold)
        locks = postgres_holds.PostgresThreadLocks(
            pool, owner, saver=saver, registry=registry, max_wait_s=settings.busy_wait_max_s, head_sql=HEAD_SQL
        )
        hot = with_hot_states(saver, settings)
        try:
            yield PostgresStorage(saver, locks, registry, hot, pool, owner)
        finally:
            await locks.close()
            await owner.close()


@asynccontextmanager
async def _pool(url: str, settings: StorageSettings) -> AsyncIterator[Pool]:
    """The connection pool, open for the block; StorageUnavailable when no connection comes in time."""
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
        yield pool
    finally:
        await pool.close()
