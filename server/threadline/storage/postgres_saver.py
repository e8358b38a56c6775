"""PostgreSQL checkpoints: our own saver over LangGraph's public `BaseCheckpointSaver`, with fenced writes.

The tables are the ones langgraph-checkpoint-postgres 3.x created (`checkpoints`,
`checkpoint_blobs`, `checkpoint_writes`, versioned in `checkpoint_migrations`), read and
written the same way, so databases written by earlier versions of Threadline stay readable
and replicas of either version can share one: a checkpoint's JSON holds its primitive
channel values (None, bool, int, float, and strings without NUL, which JSONB cannot hold);
every other value is a row of `checkpoint_blobs` per channel version, and a task's writes
are rows of `checkpoint_writes`, all serialized by the saver's serializer (`serde`).

What it gives that the stock saver does not:

* No global lock: each operation takes a connection of the pool for itself.
* Every write is fenced to a hold on its thread (postgres_holds), never written unfenced:
  - `saver.bound_to(hold)`, the saver a turn runs its graph with, writes only the hold's
    thread, only while the hold is the turn's. Its checkpoints and task writes wait in the
    hold and go in one fenced transaction with the turn's next write or its release
    (postgres_writes); its reads send them first, and its first read of the thread's head
    is the row read with the take. A write for another thread, or after the hold was lost
    or ended, raises StaleRunError and writes nothing.
  - The saver as opened (no hold) takes the thread for each write, in that write's own
    transaction: while a turn holds the thread, the write is refused with ThreadBusy.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import logging
import random
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    PendingWrite,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.types import TASKS
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from threadline.storage import audit
from threadline.storage.postgres_holds import Hold, write_alone
from threadline.storage.postgres_pool import Pool
from threadline.storage.postgres_writes import Statement

log = logging.getLogger(__name__)

# Append-only: a migration's place in the list is its version in `checkpoint_migrations`.
# 0-9 are the schema langgraph-checkpoint-postgres 3.x created (existing databases have them
# recorded, so they are not run again); ours follow.
MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS checkpoint_migrations (v INTEGER PRIMARY KEY)",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        thread_id TEXT NOT NULL,
        checkpoint_ns TEXT NOT NULL DEFAULT '',
        checkpoint_id TEXT NOT NULL,
        parent_checkpoint_id TEXT,
        type TEXT,
        checkpoint JSONB NOT NULL,
        metadata JSONB NOT NULL DEFAULT '{}',
        PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
    )""",
    """CREATE TABLE IF NOT EXISTS checkpoint_blobs (
        thread_id TEXT NOT NULL,
        checkpoint_ns TEXT NOT NULL DEFAULT '',
        channel TEXT NOT NULL,
        version TEXT NOT NULL,
        type TEXT NOT NULL,
        blob BYTEA,
        PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
    )""",
    """CREATE TABLE IF NOT EXISTS checkpoint_writes (
        thread_id TEXT NOT NULL,
        checkpoint_ns TEXT NOT NULL DEFAULT '',
        checkpoint_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        channel TEXT NOT NULL,
        type TEXT,
        blob BYTEA NOT NULL,
        PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
    )""",
    "ALTER TABLE checkpoint_blobs ALTER COLUMN blob DROP NOT NULL",
    "SELECT 1",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS checkpoints_thread_id_idx ON checkpoints(thread_id)",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS checkpoint_blobs_thread_id_idx ON checkpoint_blobs(thread_id)",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS checkpoint_writes_thread_id_idx ON checkpoint_writes(thread_id)",
    "ALTER TABLE checkpoint_writes ADD COLUMN IF NOT EXISTS task_path TEXT NOT NULL DEFAULT ''",
    # Finding the checkpoint of an earlier call's request_id (idempotent retries) must not scan
    # the thread: a partial expression index on our own metadata key serves REQUEST_SQL only
    # (checkpoint_id last: the newest match is read off the index, no sort). The key is our
    # constant, never caller input.
    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS threadline_checkpoints_by_request_id ON checkpoints "
    f"(thread_id, checkpoint_ns, (metadata->>'{audit.REQUEST_ID}'), checkpoint_id) "
    f"WHERE (metadata->>'{audit.REQUEST_ID}') IS NOT NULL",
)
_MIGRATED_SQL = "SELECT coalesce(max(v), -1) AS v FROM checkpoint_migrations"
_RECORD_MIGRATION_SQL = "INSERT INTO checkpoint_migrations (v) VALUES (%s) ON CONFLICT DO NOTHING"
# Replicas starting together run the migrations one at a time (a session lock, tried rather
# than waited for: CREATE INDEX CONCURRENTLY waits for every open statement, a waiting lock too).
_SETUP_LOCK_SQL = "SELECT pg_try_advisory_lock(hashtext('threadline checkpoint migrations')) AS taken"
_SETUP_UNLOCK_SQL = "SELECT pg_advisory_unlock(hashtext('threadline checkpoint migrations'))"

_HEADER_COLUMNS = "c.thread_id, c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id, c.checkpoint, c.metadata"
HEADERS_SQL = f"SELECT {_HEADER_COLUMNS} FROM checkpoints c "
"""A checkpoint's own row (its JSON with the values stored inline, and metadata): no blobs, no writes."""

SELECT_SQL = f"""SELECT {_HEADER_COLUMNS},
    (SELECT array_agg(array[convert_to(b.channel, 'UTF8'), convert_to(b.type, 'UTF8'), b.blob])
        FROM jsonb_each_text(c.checkpoint -> 'channel_versions') AS v
        JOIN checkpoint_blobs b ON b.thread_id = c.thread_id AND b.checkpoint_ns = c.checkpoint_ns
            AND b.channel = v.key AND b.version = v.value) AS blobs,
    (SELECT array_agg(array[convert_to(w.task_id, 'UTF8'), convert_to(w.channel, 'UTF8'), convert_to(w.type, 'UTF8'),
                            w.blob, convert_to(w.task_path, 'UTF8'), convert_to(w.idx::text, 'UTF8')])
        FROM checkpoint_writes w
        WHERE w.thread_id = c.thread_id AND w.checkpoint_ns = c.checkpoint_ns AND w.checkpoint_id = c.checkpoint_id
    ) AS writes
FROM checkpoints c """
"""A checkpoint with its blobs (at its channel versions) and its pending writes."""

HEAD_SQL = SELECT_SQL + "WHERE c.thread_id = %s AND c.checkpoint_ns = %s ORDER BY c.checkpoint_id DESC LIMIT 1"
"""The newest checkpoint of a thread in a namespace (parameters: thread, namespace)."""
_BY_ID_SQL = SELECT_SQL + "WHERE c.thread_id = %s AND c.checkpoint_ns = %s AND c.checkpoint_id = %s"

REQUEST_SQL = (
    HEADERS_SQL + f"WHERE c.thread_id = %s AND c.checkpoint_ns = %s AND (c.metadata->>'{audit.REQUEST_ID}') = %s "
    "ORDER BY c.checkpoint_id DESC LIMIT 1"
)
"""The newest checkpoint a call with this request_id wrote (served by threadline_checkpoints_by_request_id)."""

# Checkpoints of format < 4 kept a step's Send packets as writes of the parent's tasks channel;
# a read moves them into the checkpoint's values, as LangGraph expects of later formats.
_PENDING_SENDS_SQL = """SELECT checkpoint_id, array_agg(array[convert_to(type, 'UTF8'), blob]
        ORDER BY task_path, task_id, idx) AS sends
    FROM checkpoint_writes WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id = ANY(%s) AND channel = %s
    GROUP BY checkpoint_id"""

UPSERT_BLOBS_SQL = """INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING"""
UPSERT_CHECKPOINT_SQL = """INSERT INTO checkpoints
    (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, metadata)
    VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id)
    DO UPDATE SET checkpoint = EXCLUDED.checkpoint, metadata = EXCLUDED.metadata"""
_WRITES_COLUMNS = "(thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob)"
UPSERT_WRITES_SQL = f"""INSERT INTO checkpoint_writes {_WRITES_COLUMNS} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
    DO UPDATE SET channel = EXCLUDED.channel, type = EXCLUDED.type, blob = EXCLUDED.blob"""
"""A task's special writes (error, interrupt, ...: WRITES_IDX_MAP) replace the ones it wrote before."""
INSERT_WRITES_SQL = f"""INSERT INTO checkpoint_writes {_WRITES_COLUMNS} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO NOTHING"""
"""A task's regular writes are stored once: a retried task's second save changes nothing."""
DELETE_THREAD_SQL = (
    "DELETE FROM checkpoints WHERE thread_id = %s",
    "DELETE FROM checkpoint_blobs WHERE thread_id = %s",
    "DELETE FROM checkpoint_writes WHERE thread_id = %s",
)

# Delta channels (langgraph.channels.delta) store a value only now and then; a read replays
# the writes since. Walking a chain of checkpoints reads pages of the thread's rows, newest
# first, with what the walk needs of each: its parent, whether it stores each channel (a blob
# at its version, or a value inline) and that version.
_DELTA_FIRST_PAGE = 128
"""Rows of a walk's first page: a channel's stored value is usually near; later pages grow to _DELTA_MAX_PAGE."""
_DELTA_MAX_PAGE = 1024
_DELTA_CHAIN_SQL = """SELECT c.checkpoint_id, c.parent_checkpoint_id{columns} FROM checkpoints c
WHERE c.thread_id = %(thread)s AND c.checkpoint_ns = %(ns)s AND c.checkpoint_id <= %(upto)s
ORDER BY c.checkpoint_id DESC LIMIT %(limit)s"""
# Per channel i (its name the parameter ch{i}): its version, whether a blob stores it at that
# version (the blobs' primary key, looked up per row), and its value inline if there is one.
_DELTA_CHANNEL_COLUMNS = """,
    c.checkpoint -> 'channel_versions' ->> %(ch{i})s AS version_{i},
    EXISTS (SELECT 1 FROM checkpoint_blobs b WHERE b.thread_id = c.thread_id AND b.checkpoint_ns = c.checkpoint_ns
        AND b.channel = %(ch{i})s AND b.version = c.checkpoint -> 'channel_versions' ->> %(ch{i})s
        AND b.type <> 'empty') AS stored_{i},
    c.checkpoint -> 'channel_values' ? %(ch{i})s AS has_inline_{i},
    c.checkpoint -> 'channel_values' -> %(ch{i})s AS inline_{i}"""
_DELTA_WRITES_SQL = """SELECT checkpoint_id, channel, type, blob, task_id, task_path, idx FROM checkpoint_writes
WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id = ANY(%s) AND channel = ANY(%s)"""
_DELTA_SEEDS_SQL = """SELECT b.channel, b.type, b.blob FROM checkpoint_blobs b
JOIN unnest(%s::text[], %s::text[]) AS s(channel, version) ON b.channel = s.channel AND b.version = s.version
WHERE b.thread_id = %s AND b.checkpoint_ns = %s"""


def _stored_inline(value: Any) -> bool:
    """Whether a channel value goes in the checkpoint's JSON rather than a blob."""
    return value is None or isinstance(value, bool | int | float) or (isinstance(value, str) and "\x00" not in value)


def _config(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": checkpoint_id}}


def header(row: DictRow) -> CheckpointTuple:
    """A checkpoint read without its blobs or pending writes: its JSON holds only the values stored inline."""
    parent = row["parent_checkpoint_id"]
    return CheckpointTuple(
        _config(row["thread_id"], row["checkpoint_ns"], row["checkpoint_id"]),
        row["checkpoint"],
        row["metadata"],
        _config(row["thread_id"], row["checkpoint_ns"], parent) if parent else None,
    )


class PostgresSaver(BaseCheckpointSaver[str]):
    """Checkpoints in PostgreSQL on a connection pool; writes fenced to a hold on their thread (module docstring).

    The async methods are the interface; the sync ones raise (the server runs on one event loop,
    which a blocking call would stall).
    """

    def __init__(self, pool: Pool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool = pool
        self.hold: Hold | None = None
        """The hold this saver's writes are fenced to (bound_to); None for the saver as opened."""

    def bound_to(self, hold: Hold) -> PostgresSaver:
        """This saver for the turn holding `hold`: it writes only the hold's thread, fenced to the hold."""
        bound = copy.copy(self)
        bound.hold = hold
        return bound

    async def setup(self) -> None:
        """Creates the tables and indexes (the migrations not recorded yet); safe from many replicas at once."""
        async with self.pool.connection() as conn:
            while not (await (await conn.execute(_SETUP_LOCK_SQL)).fetchone() or {}).get("taken"):  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # another replica migrates: no event to wait on across processes
            try:
                await conn.execute(MIGRATIONS[0])
                row = await (await conn.execute(_MIGRATED_SQL)).fetchone()
                done = -1 if row is None else int(row["v"])
                for version in range(done + 1, len(MIGRATIONS)):
                    await conn.execute(MIGRATIONS[version])
                    await conn.execute(_RECORD_MIGRATION_SQL, (version,))
            finally:
                await conn.execute(_SETUP_UNLOCK_SQL)

    # -- reads -----------------------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint config names, or the newest of its thread and namespace; None if there is none."""
        configurable = config["configurable"]
        thread_id, checkpoint_ns = str(configurable["thread_id"]), str(configurable.get("checkpoint_ns", ""))
        checkpoint_id = get_checkpoint_id(config)
        if self.hold is not None:
            if checkpoint_id is None and not checkpoint_ns and (head := self.hold.take_head(thread_id)) is not None:
                return (await self._tuples(head))[0] if head else None
            await self.hold.before_read()
        if checkpoint_id:
            rows = await self._fetch(_BY_ID_SQL, (thread_id, checkpoint_ns, checkpoint_id))
        else:
            rows = await self._fetch(HEAD_SQL, (thread_id, checkpoint_ns))
        return (await self._tuples(rows))[0] if rows else None

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints matching config, filter (metadata fields equal) and before, newest first.

        Filter keys are compared as JSON containment (`metadata @> filter`): no key becomes SQL.
        """
        if self.hold is not None:
            await self.hold.before_read()
        where, params = _where(config, filter, before)
        query = SELECT_SQL + where + " ORDER BY c.checkpoint_id DESC"
        if limit is not None:
            query += " LIMIT %s"
            params.append(int(limit))
        for item in await self._tuples(await self._fetch(query, params)):
            yield item

    async def alist_headers(
        self, config: RunnableConfig, before: RunnableConfig | None, limit: int
    ) -> builtins.list[CheckpointTuple]:
        """The newest checkpoints of a thread (before `before`) without their blobs or pending writes.

        History needs only each checkpoint's own JSON and metadata (conversations come from the
        replica's hot states or a state read); joining the blobs would cost more as the thread grows.
        """
        where, params = _where(config, None, before)
        rows = await self._fetch(HEADERS_SQL + where + " ORDER BY c.checkpoint_id DESC LIMIT %s", [*params, limit])
        return [header(row) for row in rows]

    async def afind_request(self, config: RunnableConfig, request_id: str) -> CheckpointTuple | None:
        """The newest checkpoint of the thread written by the call with this request_id, without its blobs."""
        configurable = config["configurable"]
        rows = await self._fetch(
            REQUEST_SQL, (configurable["thread_id"], configurable.get("checkpoint_ns", ""), request_id)
        )
        return header(rows[0]) if rows else None

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Per channel: the writes on the path to the checkpoint since the nearest ancestor storing it, and that value.

        The contract is BaseCheckpointSaver's; this walks the parent chain in pages of rows
        (_DELTA_CHAIN_SQL) and reads the writes and seeds it found in one query each, rather
        than one read of a whole checkpoint per ancestor.
        """
        if not channels:
            return {}
        channels = list(channels)
        if self.hold is not None:
            await self.hold.before_read()
        configurable = config["configurable"]
        thread_id, checkpoint_ns = str(configurable["thread_id"]), str(configurable.get("checkpoint_ns", ""))
        target = get_checkpoint_id(config)
        if not target:
            head = await self.aget_tuple(config)
            if head is None:
                return {ch: {"writes": []} for ch in channels}
            target = str(head.config["configurable"]["checkpoint_id"])
        walks = await self._delta_walks(thread_id, checkpoint_ns, target, channels)
        return await self._delta_histories(thread_id, checkpoint_ns, walks)

    async def _delta_walks(
        self, thread_id: str, checkpoint_ns: str, target: str, channels: builtins.list[str]
    ) -> builtins.list[_Walk]:
        walks = [_Walk(ch, i) for i, ch in enumerate(channels)]
        query = _DELTA_CHAIN_SQL.format(
            columns="".join(_DELTA_CHANNEL_COLUMNS.format(i=i) for i in range(len(channels)))
        )
        named = {f"ch{i}": ch for i, ch in enumerate(channels)}
        rows: dict[str, DictRow] = {}
        upto, size = target, _DELTA_FIRST_PAGE
        while True:
            params = {**named, "thread": thread_id, "ns": checkpoint_ns, "upto": upto, "limit": size}
            page = await self._fetch(query, params)
            rows.update((row["checkpoint_id"], row) for row in page)
            if target not in rows:
                return walks  # no such checkpoint: nothing to replay
            for walk in walks:
                walk.advance(rows, start=rows[target]["parent_checkpoint_id"])
            if all(walk.done for walk in walks) or len(page) < size:
                return walks
            upto, size = page[-1]["checkpoint_id"], min(size * 4, _DELTA_MAX_PAGE)

    async def _delta_histories(
        self, thread_id: str, checkpoint_ns: str, walks: builtins.list[_Walk]
    ) -> dict[str, DeltaChannelHistory]:
        on_path = sorted({cid for walk in walks for cid in walk.chain})
        writes = await self._fetch(
            _DELTA_WRITES_SQL, (thread_id, checkpoint_ns, on_path, [walk.channel for walk in walks])
        )
        seeded = [walk for walk in walks if walk.seed_version is not None]
        seeds = await self._fetch(
            _DELTA_SEEDS_SQL,
            ([w.channel for w in seeded], [w.seed_version for w in seeded], thread_id, checkpoint_ns),
        )
        seed_of = {row["channel"]: row for row in seeds}
        histories: dict[str, DeltaChannelHistory] = {}
        for walk in walks:
            chain = set(walk.chain)
            mine = [w for w in writes if w["channel"] == walk.channel and w["checkpoint_id"] in chain]
            order = {cid: n for n, cid in enumerate(reversed(walk.chain))}  # oldest first
            mine.sort(
                key=lambda w: (order[w["checkpoint_id"]], writes_sort_key(w["task_path"], w["task_id"], w["idx"]))
            )
            history: DeltaChannelHistory = {
                "writes": [
                    (w["task_id"], walk.channel, self.serde.loads_typed((w["type"], bytes(w["blob"])))) for w in mine
                ]
            }
            seed = seed_of.get(walk.channel)
            if seed is not None and seed["type"] != "empty":
                history["seed"] = self.serde.loads_typed((seed["type"], bytes(seed["blob"])))
            elif walk.inline_seed is not _NOTHING:
                history["seed"] = walk.inline_seed
            histories[walk.channel] = history
        return histories

    # -- writes ----------------------------------------------------------------------------------

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Stores a checkpoint (after config's checkpoint, its parent) with its new channel versions' values."""
        configurable = config["configurable"]
        thread_id, checkpoint_ns = str(configurable["thread_id"]), str(configurable.get("checkpoint_ns", ""))
        inline = {k: v for k, v in checkpoint["channel_values"].items() if _stored_inline(v)}
        blob_values = {k: v for k, v in checkpoint["channel_values"].items() if k not in inline}
        blobs = [
            (thread_id, checkpoint_ns, channel, str(version), *self.serde.dumps_typed(blob_values[channel]))
            for channel, version in new_versions.items()
            if channel in blob_values
        ]
        statements = [Statement(UPSERT_BLOBS_SQL, list(blobs), True, "checkpoint_blobs")] if blobs else []
        row = (
            thread_id,
            checkpoint_ns,
            checkpoint["id"],
            configurable.get("checkpoint_id"),
            Jsonb({**checkpoint, "channel_values": inline}),
            Jsonb(get_serializable_checkpoint_metadata(config, metadata)),
        )
        statements.append(Statement(UPSERT_CHECKPOINT_SQL, [row], False, "checkpoints"))
        await self._write(thread_id, statements, may_wait=True)
        return _config(thread_id, checkpoint_ns, checkpoint["id"])

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Stores what a task wrote, pending for the checkpoint config names."""
        if not writes:
            return
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        query = UPSERT_WRITES_SQL if all(channel in WRITES_IDX_MAP for channel, _ in writes) else INSERT_WRITES_SQL
        rows = [
            (
                thread_id,
                str(configurable.get("checkpoint_ns", "")),
                str(configurable["checkpoint_id"]),
                task_id,
                task_path,
                WRITES_IDX_MAP.get(channel, idx),
                channel,
                *self.serde.dumps_typed(value),
            )
            for idx, (channel, value) in enumerate(writes)
        ]
        await self._write(thread_id, [Statement(query, list(rows), True, "checkpoint_writes")], may_wait=True)

    async def adelete_thread(self, thread_id: str) -> None:
        """Deletes every checkpoint, blob and write of the thread, in one transaction."""
        thread_id = str(thread_id)
        statements = [Statement(query, [(thread_id,)], False) for query in DELETE_THREAD_SQL]
        await self._write(thread_id, statements, may_wait=False)

    def get_next_version(self, current: str | None, channel: None) -> str:
        """A version after current: its counter, zero-padded so versions sort as text, plus a random fraction.

        The format is langgraph-checkpoint-postgres's, which stored versions are in.
        """
        counter = 0 if current is None else int(str(current).split(".")[0])
        return f"{counter + 1:032}.{random.random():016}"

    # -- the sync interface ----------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        raise _sync_refused("aget_tuple")

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        raise _sync_refused("alist")

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        raise _sync_refused("aput")

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        raise _sync_refused("aput_writes")

    def delete_thread(self, thread_id: str) -> None:
        raise _sync_refused("adelete_thread")

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        raise _sync_refused("aget_delta_channel_history")

    # -- plumbing --------------------------------------------------------------------------------

    async def _write(self, thread_id: str, statements: builtins.list[Statement], *, may_wait: bool) -> None:
        if self.hold is None:
            await write_alone(self.pool, thread_id, statements)
        else:
            await self.hold.write(thread_id, statements, may_wait=may_wait)

    async def _fetch(self, query: str, params: Sequence[Any] | Mapping[str, Any]) -> builtins.list[DictRow]:
        async with self.pool.connection() as conn, conn.cursor(binary=True) as cur:
            await cur.execute(query, params)
            return await cur.fetchall()

    async def _tuples(self, rows: builtins.list[DictRow]) -> builtins.list[CheckpointTuple]:
        """Checkpoint tuples of SELECT_SQL rows, their blobs and writes decoded by the serializer."""
        old = [row for row in rows if row["checkpoint"].get("v", 4) < 4 and row["parent_checkpoint_id"]]
        sends = await self._pending_sends(old) if old else {}
        tuples: builtins.list[CheckpointTuple] = []
        for row in rows:
            checkpoint = dict(row["checkpoint"])
            values = dict(checkpoint.get("channel_values") or {})
            for channel, type_, blob in row["blobs"] or ():
                if type_ != b"empty":
                    values[channel.decode()] = self.serde.loads_typed((type_.decode(), blob))
            if (moved := sends.get(row["parent_checkpoint_id"])) is not None:
                versions = checkpoint["channel_versions"] = dict(checkpoint["channel_versions"])
                values[TASKS] = moved
                versions[TASKS] = max(versions.values()) if versions else self.get_next_version(None, None)
            checkpoint["channel_values"] = values
            writes = sorted(row["writes"] or (), key=lambda w: writes_sort_key(w[4].decode(), w[0].decode(), int(w[5])))
            pending: builtins.list[PendingWrite] = [
                (w[0].decode(), w[1].decode(), self.serde.loads_typed((w[2].decode(), w[3]))) for w in writes
            ]
            parent = row["parent_checkpoint_id"]
            tuples.append(
                CheckpointTuple(
                    _config(row["thread_id"], row["checkpoint_ns"], row["checkpoint_id"]),
                    cast(Checkpoint, checkpoint),
                    row["metadata"],
                    _config(row["thread_id"], row["checkpoint_ns"], parent) if parent else None,
                    pending,
                )
            )
        return tuples

    async def _pending_sends(self, rows: builtins.list[DictRow]) -> dict[str, builtins.list[Any]]:
        first = rows[0]
        found = await self._fetch(
            _PENDING_SENDS_SQL,
            (first["thread_id"], first["checkpoint_ns"], [r["parent_checkpoint_id"] for r in rows], TASKS),
        )
        return {
            row["checkpoint_id"]: [self.serde.loads_typed((t.decode(), blob)) for t, blob in row["sends"]]
            for row in found
        }


_NOTHING: Any = object()


class _Walk:
    """One channel's walk up the parent chain: the checkpoints whose writes replay, and where it stops."""

    def __init__(self, channel: str, index: int) -> None:
        self.channel = channel
        self._columns = (f"stored_{index}", f"version_{index}", f"has_inline_{index}", f"inline_{index}")
        self.chain: list[str] = []
        """Checkpoints on the path whose writes of the channel replay, newest first."""
        self.seed_version: str | None = None
        self.inline_seed: Any = _NOTHING
        self.done = False
        self._next: str | None = None
        self._started = False

    def advance(self, rows: Mapping[str, DictRow], *, start: str | None) -> None:
        """Walks on through the rows read so far; stops at a checkpoint storing the channel or at the root."""
        if not self._started:
            self._started, self._next = True, start
        while not self.done and self._next is not None and self._next in rows:
            row = rows[self._next]
            stored, version, has_inline, inline = self._columns
            self.chain.append(self._next)
            if row[stored]:
                self.seed_version = row[version]
                self.done = True
            elif row[has_inline]:
                self.inline_seed = row[inline]
                self.done = True
            self._next = row["parent_checkpoint_id"]
        if self._next is None:
            self.done = True


def _where(
    config: RunnableConfig | None, filter: dict[str, Any] | None, before: RunnableConfig | None
) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) of a listing."""
    wheres: list[str] = []
    params: list[Any] = []
    if config:
        configurable = config["configurable"]
        wheres.append("c.thread_id = %s")
        params.append(configurable["thread_id"])
        if (checkpoint_ns := configurable.get("checkpoint_ns")) is not None:
            wheres.append("c.checkpoint_ns = %s")
            params.append(checkpoint_ns)
        if checkpoint_id := get_checkpoint_id(config):
            wheres.append("c.checkpoint_id = %s")
            params.append(checkpoint_id)
    if filter:
        wheres.append("c.metadata @> %s")
        params.append(Jsonb(filter))
    if before is not None:
        wheres.append("c.checkpoint_id < %s")
        params.append(get_checkpoint_id(before))
    return ("WHERE " + " AND ".join(wheres) + " " if wheres else ""), params


def _sync_refused(instead: str) -> NotImplementedError:
    return NotImplementedError(f"the PostgreSQL saver is async only: use {instead} (a blocking call stalls the loop)")
