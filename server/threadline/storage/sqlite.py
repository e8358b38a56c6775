"""sqlite:///PATH storage: AsyncSqliteSaver on one aiosqlite connection, the embedded default.

One process per file (sqlite:////abs/path for an absolute path); WAL lets reads run while a turn writes.
Writes go through holds on their threads (local_holds), as with every backend.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from threadline.errors import ConfigurationError
from threadline.storage import audit
from threadline.storage.audit import AuditedSaverMixin
from threadline.storage.contract import (
    IDLE_THREADS_SQL,
    ListedBySaver,
    Serialized,
    Storage,
    local_locks,
    safe_serializer,
    with_hot_states,
)
from threadline.storage.hot_states import HotStatesSaverMixin
from threadline.storage.local_holds import LocalHolds, LocallyHeldSaver
from threadline.storage.settings import StorageSettings
from threadline.storage.thread_registry import UNLISTED_THREADS_SQLITE, SqliteThreadRegistry, UnlistedThread

log = logging.getLogger(__name__)


class AuditedSqliteSaver(HotStatesSaverMixin, AuditedSaverMixin, AsyncSqliteSaver):
    """AsyncSqliteSaver with the audit trail and hot states."""


# The stock SQLite filter on a metadata key is `json_extract(CAST(metadata AS TEXT), '$.key') = ?`
# (LangGraph's search_where); an index on that very expression turns the request_id lookup of
# every turn from a scan of the thread into an index search. checkpoint_id last: the newest
# match comes off the index in order, so the planner prefers it to the primary key even
# before ANALYZE has run (without it, SQLite scans the thread by its primary key).
SQLITE_REQUEST_INDEX_SQL = (
    "CREATE INDEX IF NOT EXISTS threadline_checkpoints_by_request_id ON checkpoints "
    f"(thread_id, checkpoint_ns, json_extract(CAST(metadata AS TEXT), '$.{audit.REQUEST_ID}'), checkpoint_id)"
)


@dataclass
class SqliteStorage(ListedBySaver):
    """Storage in one SQLite file, on one connection."""

    conn: aiosqlite.Connection

    async def ping(self) -> None:
        """Returns when the file answers a query."""
        await self.conn.execute("SELECT 1")

    async def idle_threads(self, cutoff: str, limit: int) -> list[str]:
        """Threads whose newest root checkpoint id is older than cutoff."""
        async with self.conn.execute(IDLE_THREADS_SQL.format(param="?"), (cutoff, limit)) as cursor:
            return [str(row[0]) for row in await cursor.fetchall()]

    async def unlisted_threads(self, after: str, limit: int) -> list[UnlistedThread]:
        """Threads whose registry row is missing or behind their newest root checkpoint."""
        async with self.conn.execute(UNLISTED_THREADS_SQLITE, (after, limit)) as cursor:
            return [UnlistedThread(str(row[0]), str(row[1]), str(row[2])) for row in await cursor.fetchall()]


@asynccontextmanager
async def open_sqlite(
    url: str, settings: StorageSettings, *, on_serialized: Serialized | None = None
) -> AsyncIterator[Storage]:
    if not url.startswith("sqlite:///") or url == "sqlite:///":
        raise ConfigurationError(f"THREADLINE_DATABASE_URL: expected sqlite:///PATH, got {url!r}")
    path = Path(url.removeprefix("sqlite:///"))
    # Start-up only, before anything is served: a blocking stat is harmless here.
    if not path.absolute().parent.is_dir():  # noqa: ASYNC240
        raise ConfigurationError(f"THREADLINE_DATABASE_URL: folder {path.parent} does not exist")
    async with aiosqlite.connect(path) as conn:
        # WAL lets History read while a turn writes.
        await conn.execute("PRAGMA journal_mode=WAL")
        sqlite_saver = AuditedSqliteSaver(conn, serde=safe_serializer(on_serialized))
        await sqlite_saver.setup()
        await conn.execute(SQLITE_REQUEST_INDEX_SQL)
        await conn.commit()
        sqlite_registry = SqliteThreadRegistry(conn)
        await sqlite_registry.setup()
        log.info("checkpoints in SQLite file %s", url.removeprefix("sqlite:///"))

        hot = with_hot_states(sqlite_saver, settings)
        locks = local_locks(settings)
        saver = LocallyHeldSaver(sqlite_saver, locks)
        yield SqliteStorage(saver, LocalHolds(locks, saver, sqlite_registry), sqlite_registry, hot, conn)
