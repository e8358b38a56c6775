"""Opens the checkpointer named by a database URL and recognises its outages.

sqlite:///PATH       AsyncSqliteSaver on one aiosqlite connection (the embedded default;
                     sqlite:////abs/path for an absolute path)
postgresql://...     AsyncPostgresSaver on a psycopg AsyncConnectionPool
memory://            InMemorySaver (tests; nothing survives the process)
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiosqlite
import psycopg
import psycopg_pool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from psycopg.rows import dict_row

from threadline.config import redact
from threadline.engine.audit import AuditedSaverMixin
from threadline.errors import ConfigurationError, StorageUnavailable

log = logging.getLogger(__name__)

POOL_OPEN_TIMEOUT_S = 10.0


class AuditedMemorySaver(AuditedSaverMixin, InMemorySaver):
    """InMemorySaver with the audit trail."""


class AuditedSqliteSaver(AuditedSaverMixin, AsyncSqliteSaver):
    """AsyncSqliteSaver with the audit trail."""


class AuditedPostgresSaver(AuditedSaverMixin, AsyncPostgresSaver):
    """AsyncPostgresSaver with the audit trail."""


def safe_serializer() -> JsonPlusSerializer:
    """A serializer that never unpickles and revives only LangGraph's allow-listed types.

    Without an explicit allowlist JsonPlusSerializer imports and calls any type named
    in a stored checkpoint (the CVE-2026-28277 class), so one write to the database
    would become code execution on every replica.
    """
    return JsonPlusSerializer(pickle_fallback=False, allowed_msgpack_modules=None)


@dataclass(frozen=True)
class PoolSettings:
    """How the PostgreSQL connection pool behaves."""

    min_size: int = 1
    max_size: int = 10
    timeout_s: float = 5.0
    """Longest wait for a connection; then the call fails (UNAVAILABLE) instead of hanging."""


@asynccontextmanager
async def open_checkpointer(url: str, pool: PoolSettings = PoolSettings()) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """Opens (and sets up the tables of) the checkpointer named by url; closes it on exit."""
    scheme = urlsplit(url).scheme
    serde = safe_serializer()
    if scheme == "memory":
        yield AuditedMemorySaver(serde=serde)
    elif scheme == "sqlite":
        async with _sqlite(url, serde) as saver:
            yield saver
    elif scheme in ("postgres", "postgresql"):
        async with _postgres(url, serde, pool) as pg_saver:
            yield pg_saver
    else:
        raise ConfigurationError(
            f"THREADLINE_DATABASE_URL: unsupported scheme {scheme!r} in {redact(url)!r}; "
            "use sqlite:///PATH, postgresql://... or memory://"
        )


@asynccontextmanager
async def _sqlite(url: str, serde: JsonPlusSerializer) -> AsyncIterator[AsyncSqliteSaver]:
    if not url.startswith("sqlite:///") or url == "sqlite:///":
        raise ConfigurationError(f"THREADLINE_DATABASE_URL: expected sqlite:///PATH, got {url!r}")
    path = Path(url.removeprefix("sqlite:///"))
    # Start-up only, before anything is served: a blocking stat is harmless here.
    if not path.absolute().parent.is_dir():  # noqa: ASYNC240
        raise ConfigurationError(f"THREADLINE_DATABASE_URL: folder {path.parent} does not exist")
    async with aiosqlite.connect(path) as conn:
        # WAL lets History read while a turn writes.
        await conn.execute("PRAGMA journal_mode=WAL")
        saver = AuditedSqliteSaver(conn, serde=serde)
        await saver.setup()
        log.info("checkpoints in SQLite file %s", url.removeprefix("sqlite:///"))
        yield saver


@asynccontextmanager
async def _postgres(url: str, serde: JsonPlusSerializer, settings: PoolSettings) -> AsyncIterator[AsyncPostgresSaver]:
    pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[dict[str, object]]] = (
        psycopg_pool.AsyncConnectionPool(
            url,
            min_size=settings.min_size,
            max_size=settings.max_size,
            timeout=settings.timeout_s,
            open=False,
            # The saver needs these on every connection (FIELD-NOTES: autocommit, dict rows,
            # no server-side prepared statements so PgBouncer in transaction mode works).
            kwargs={"autocommit": True, "row_factory": dict_row, "prepare_threshold": 0},
            check=psycopg_pool.AsyncConnectionPool.check_connection,
        )
    )
    try:
        await pool.open(wait=True, timeout=POOL_OPEN_TIMEOUT_S)
    except psycopg_pool.PoolTimeout:
        await pool.close()
        raise StorageUnavailable(
            f"cannot connect to PostgreSQL at {redact(url)} within {POOL_OPEN_TIMEOUT_S:g}s"
        ) from None
    try:
        saver = AuditedPostgresSaver(pool, serde=serde)  # type: ignore[arg-type]
        await saver.setup()
        log.info("checkpoints in PostgreSQL at %s", redact(url))
        yield saver
    finally:
        await pool.close()


STORAGE_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    sqlite3.OperationalError,
    aiosqlite.Error,
)
"""Exceptions that mean the database cannot serve now (retrying later can work)."""
