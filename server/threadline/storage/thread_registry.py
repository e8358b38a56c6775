"""The thread registry: one row per thread with what ListThreads shows, newest activity first.

LangGraph's checkpoint tables can only list threads by scanning every checkpoint, so
each turn (and Rewind) also upserts a small row here, in the same database, through
the turn's hold (`ThreadHold.registry`): on PostgreSQL the row is fenced like the
checkpoints it summarizes, and goes with them.

A turn that wrote and did not finish (cancelled, cut by its deadline, failed) refreshes
its row before it lets the thread go (`refresh`); a process that starts lists the threads
whose row is missing or names another head than their newest checkpoint (`UNLISTED_THREADS_SQL`:
a crash, a version before rows were refreshed so), so every thread with a checkpoint is listed.

A title is any string the caller sent, NUL included. PostgreSQL's text type cannot hold
NUL, so there the title is stored as its UTF-8 bytes (bytea); SQLite's text holds any
string as it is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import aiosqlite

from threadline.storage.postgres_pool import Pool
from threadline.storage.postgres_writes import Statement
from threadline.storage.thread_keys import ThreadKey

if TYPE_CHECKING:
    from threadline.storage.postgres_holds import Hold


@dataclass(frozen=True)
class ThreadRow:
    """A thread's row: what ListThreads shows of it."""

    thread_id: str
    title: str
    turn_count: int
    created_at: dt.datetime
    updated_at: dt.datetime
    head_checkpoint_id: str


class UnlistedThread(NamedTuple):
    """A thread whose row is missing or names another head than its newest root checkpoint."""

    storage_id: str
    """The thread as the checkpoint tables name it ("tenant/thread_id")."""
    head_checkpoint_id: str
    first_checkpoint_id: str


Cursor = tuple[dt.datetime, str]
"""(updated_at, thread_id) of the last thread of a page: the next page starts after it."""


class ThreadRegistry(Protocol):
    """Keeps one summary row per thread."""

    async def setup(self) -> None:
        """Creates the table if it does not exist."""

    async def record(
        self, tenant: str, thread_id: str, *, title: str, turn_count: int, head_checkpoint_id: str
    ) -> None:
        """Notes activity on a thread (creating its row, with this title, on first sight)."""

    async def refresh(
        self,
        tenant: str,
        thread_id: str,
        *,
        title: str,
        turn_count: int,
        head_checkpoint_id: str,
        updated_at: dt.datetime,
        created_at: dt.datetime,
    ) -> None:
        """Makes the thread's row show this head, unless it shows it already (then the row is left as
        it is); a missing row is created with this title and created_at."""

    async def page(self, tenant: str, *, limit: int, after: Cursor | None) -> list[ThreadRow]:
        """The tenant's threads, newest activity first, starting after the cursor."""

    async def forget(self, tenant: str, thread_id: str) -> None:
        """Removes a thread's row."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_CREATE = """
CREATE TABLE IF NOT EXISTS threadline_threads (
    tenant text NOT NULL,
    thread_id text NOT NULL,
    title {title} NOT NULL,
    turn_count integer NOT NULL,
    created_at {stamp} NOT NULL,
    updated_at {stamp} NOT NULL,
    head_checkpoint_id text NOT NULL,
    PRIMARY KEY (tenant, thread_id)
);
CREATE INDEX IF NOT EXISTS threadline_threads_by_activity
    ON threadline_threads (tenant, updated_at DESC, thread_id);
"""
_CREATE_PG = _CREATE.format(title="bytea", stamp="timestamptz")
# Timestamps are ISO 8601 text in UTC with microseconds: they sort as they compare.
_CREATE_SQLITE = _CREATE.format(title="text", stamp="text")
# Tables created before titles were bytea hold them as text, which refuses NUL. Replicas may
# start together: the advisory lock makes the check and the change one step for all of them.
_TITLE_AS_BYTES_PG = """
DO $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('threadline_threads.title'));
    IF EXISTS (
        SELECT 1 FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'threadline_threads'
            AND column_name = 'title' AND data_type = 'text'
    ) THEN
        ALTER TABLE threadline_threads ALTER COLUMN title TYPE bytea USING convert_to(title, 'UTF8');
    END IF;
END $$
"""
_UPSERT = """
INSERT INTO threadline_threads (tenant, thread_id, title, turn_count, created_at, updated_at, head_checkpoint_id)
VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})
ON CONFLICT (tenant, thread_id) DO UPDATE SET
    turn_count = excluded.turn_count, updated_at = excluded.updated_at, head_checkpoint_id = excluded.head_checkpoint_id
"""
# The same upsert, leaving a row that names this head already untouched (its time too).
_REFRESH = _UPSERT + "WHERE threadline_threads.head_checkpoint_id <> excluded.head_checkpoint_id\n"
# Threads (storage ids "tenant/thread_id", after a keyset cursor) whose newest root checkpoint
# is not the head their row names, or that have no row: (thread_id, head, first checkpoint id).
UNLISTED_THREADS_SQL = """
SELECT c.thread_id, c.head, c.first FROM (
    SELECT thread_id, max(checkpoint_id) AS head, min(checkpoint_id) AS first FROM checkpoints
    WHERE checkpoint_ns = '' AND thread_id > {p} AND {find}(thread_id, '/') > 0
    GROUP BY thread_id
) c LEFT JOIN threadline_threads t
    ON t.tenant = substr(c.thread_id, 1, {find}(c.thread_id, '/') - 1)
    AND t.thread_id = substr(c.thread_id, {find}(c.thread_id, '/') + 1)
WHERE t.head_checkpoint_id IS NULL OR t.head_checkpoint_id <> c.head
ORDER BY c.thread_id LIMIT {p}
"""
UNLISTED_THREADS_PG = UNLISTED_THREADS_SQL.format(p="%s", find="strpos")
UNLISTED_THREADS_SQLITE = UNLISTED_THREADS_SQL.format(p="?", find="instr")
_PAGE = """
SELECT thread_id, title, turn_count, created_at, updated_at, head_checkpoint_id FROM threadline_threads
WHERE tenant = {p} AND ({p} OR updated_at < {p} OR (updated_at = {p} AND thread_id > {p}))
ORDER BY updated_at DESC, thread_id LIMIT {p}
"""
_FORGET = "DELETE FROM threadline_threads WHERE tenant = {p} AND thread_id = {p}"


class PostgresThreadRegistry:
    """The registry in PostgreSQL. Bound to a turn's hold (`bound_to`), its writes are fenced to the
    hold, and the turn's row goes with the turn's checkpoints; unbound, they go straight to the pool."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._hold: Hold | None = None

    def bound_to(self, hold: Hold) -> PostgresThreadRegistry:
        """The registry for the turn holding `hold`."""
        bound = PostgresThreadRegistry(self._pool)
        bound._hold = hold
        return bound

    async def setup(self) -> None:
        async with self._pool.connection() as conn:
            for statement in (*_CREATE_PG.split(";"), _TITLE_AS_BYTES_PG):
                if statement.strip():
                    await conn.execute(statement)

    async def record(
        self, tenant: str, thread_id: str, *, title: str, turn_count: int, head_checkpoint_id: str
    ) -> None:
        now = _now()
        row = (tenant, thread_id, title.encode(), turn_count, now, now, head_checkpoint_id)
        # Inside a turn the row goes with the turn's release, with what its run wrote, in one round trip.
        await self._write(tenant, thread_id, _UPSERT.format(p="%s"), row, may_wait=True)

    async def refresh(
        self,
        tenant: str,
        thread_id: str,
        *,
        title: str,
        turn_count: int,
        head_checkpoint_id: str,
        updated_at: dt.datetime,
        created_at: dt.datetime,
    ) -> None:
        row = (tenant, thread_id, title.encode(), turn_count, created_at, updated_at, head_checkpoint_id)
        # Sent now, with what the turn left waiting: a turn cut short refreshes its row as it ends,
        # and its caller may be cancelled again before the writes of its release are sent.
        await self._write(tenant, thread_id, _REFRESH.format(p="%s"), row, may_wait=False)

    async def page(self, tenant: str, *, limit: int, after: Cursor | None) -> list[ThreadRow]:
        at, last = after if after is not None else (_now(), "")
        async with self._pool.connection() as conn:
            cur = await conn.execute(_PAGE.format(p="%s"), (tenant, after is None, at, at, last, limit))
            return [_summary(row) for row in await cur.fetchall()]

    async def forget(self, tenant: str, thread_id: str) -> None:
        await self._write(tenant, thread_id, _FORGET.format(p="%s"), (tenant, thread_id), may_wait=False)

    async def _write(self, tenant: str, thread_id: str, query: str, row: tuple[Any, ...], *, may_wait: bool) -> None:
        if self._hold is None:
            async with self._pool.connection() as conn:
                await conn.execute(query, row)
        else:
            statement = Statement(query, [row], False)
            await self._hold.write(ThreadKey(tenant, thread_id).storage_id, [statement], may_wait=may_wait)


class SqliteThreadRegistry:
    """The registry in the SQLite file, next to the checkpoints."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def setup(self) -> None:
        await self._conn.executescript(_CREATE_SQLITE)
        await self._conn.commit()

    async def record(
        self, tenant: str, thread_id: str, *, title: str, turn_count: int, head_checkpoint_id: str
    ) -> None:
        now = _now().isoformat(timespec="microseconds")
        await self._write(_UPSERT.format(p="?"), (tenant, thread_id, title, turn_count, now, now, head_checkpoint_id))

    async def refresh(
        self,
        tenant: str,
        thread_id: str,
        *,
        title: str,
        turn_count: int,
        head_checkpoint_id: str,
        updated_at: dt.datetime,
        created_at: dt.datetime,
    ) -> None:
        row = (tenant, thread_id, title, turn_count, _stamp(created_at), _stamp(updated_at), head_checkpoint_id)
        await self._write(_REFRESH.format(p="?"), row)

    async def page(self, tenant: str, *, limit: int, after: Cursor | None) -> list[ThreadRow]:
        at, last = after if after is not None else (_now(), "")
        stamp = at.isoformat(timespec="microseconds")
        async with self._conn.execute(_PAGE.format(p="?"), (tenant, after is None, stamp, stamp, last, limit)) as cur:
            rows = await cur.fetchall()
        return [
            _summary(
                dict(
                    zip(
                        ("thread_id", "title", "turn_count", "created_at", "updated_at", "head_checkpoint_id"),
                        r,
                        strict=True,
                    )
                )
            )
            for r in rows
        ]

    async def forget(self, tenant: str, thread_id: str) -> None:
        await self._write(_FORGET.format(p="?"), (tenant, thread_id))

    async def _write(self, statement: str, row: tuple[Any, ...]) -> None:
        """One statement, committed whether or not it failed.

        A failed statement leaves the connection in its transaction, holding the file's write lock
        until the next commit; ending it at once lets other processes write. Commit, not roll back:
        the connection is the saver's too, and a rollback could undo a checkpoint the saver wrote
        and has not committed yet (the failed statement itself is undone by SQLite either way).
        """
        try:
            await self._conn.execute(statement, row)
        finally:
            await self._conn.commit()


class MemoryThreadRegistry:
    """The registry in a dict (memory://)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], ThreadRow] = {}

    async def setup(self) -> None:
        return None

    async def record(
        self, tenant: str, thread_id: str, *, title: str, turn_count: int, head_checkpoint_id: str
    ) -> None:
        now = _now()
        known = self._rows.get((tenant, thread_id))
        self._rows[(tenant, thread_id)] = ThreadRow(
            thread_id,
            known.title if known else title,
            turn_count,
            known.created_at if known else now,
            now,
            head_checkpoint_id,
        )

    async def refresh(
        self,
        tenant: str,
        thread_id: str,
        *,
        title: str,
        turn_count: int,
        head_checkpoint_id: str,
        updated_at: dt.datetime,
        created_at: dt.datetime,
    ) -> None:
        known = self._rows.get((tenant, thread_id))
        if known is not None and known.head_checkpoint_id == head_checkpoint_id:
            return
        self._rows[(tenant, thread_id)] = ThreadRow(
            thread_id,
            known.title if known else title,
            turn_count,
            known.created_at if known else created_at,
            updated_at,
            head_checkpoint_id,
        )

    def heads(self) -> dict[str, str]:
        """The head each row names, by storage thread id ("tenant/thread_id")."""
        return {
            ThreadKey(tenant, thread).storage_id: row.head_checkpoint_id for (tenant, thread), row in self._rows.items()
        }

    async def page(self, tenant: str, *, limit: int, after: Cursor | None) -> list[ThreadRow]:
        rows = sorted(
            (row for (owner, _), row in self._rows.items() if owner == tenant),
            key=lambda row: (-row.updated_at.timestamp(), row.thread_id),
        )
        if after is not None:
            at, last = after
            rows = [r for r in rows if r.updated_at < at or (r.updated_at == at and r.thread_id > last)]
        return rows[:limit]

    async def forget(self, tenant: str, thread_id: str) -> None:
        self._rows.pop((tenant, thread_id), None)


def _stamp(at: dt.datetime) -> str:
    """A time as the SQLite table holds it: ISO 8601 in UTC with microseconds (so text order is time order)."""
    return at.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _summary(row: dict[str, Any]) -> ThreadRow:
    return ThreadRow(
        thread_id=str(row["thread_id"]),
        title=_as_text(row["title"]),
        turn_count=int(row["turn_count"]),
        created_at=_as_datetime(row["created_at"]),
        updated_at=_as_datetime(row["updated_at"]),
        head_checkpoint_id=str(row["head_checkpoint_id"]),
    )


def _as_text(value: Any) -> str:
    """A title as stored: UTF-8 bytes (PostgreSQL) or text (SQLite)."""
    return bytes(value).decode() if isinstance(value, bytes | memoryview) else str(value)


def _as_datetime(value: Any) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
