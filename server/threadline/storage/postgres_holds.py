"""One turn at a time per thread across every replica on a PostgreSQL database, with fenced writes.

A turn holds its thread through a row of `threadline_thread_holders`: the thread's key,
the turn's random token and the owner key of the process running it. Three rules make
that row a lock:

* Taking. A turn inserts the row. If one is there, it takes the row over only when the
  owner of that row is gone: each process keeps one connection (`OwnerSession`) holding
  a session advisory lock on its owner key, and `pg_try_advisory_xact_lock(owner_key)`
  succeeds only once that session has ended (process killed, host gone, connection
  dropped). PostgreSQL decides; no clock or lease expiry is involved. The same round trip
  reads the thread's head, which the turn's reads use until it writes (Hold.head).
* Fencing. Every checkpoint write of the turn goes through the hold (`Hold.saver`,
  `Hold.registry`: what the turn writes with) and runs in a transaction that first calls
  `threadline_fence_v1(thread, token)`: it share-locks the row if it still names this
  turn and raises SQLSTATE TL409 otherwise. A takeover waits for a write in flight to
  commit, and every later write of the old turn is refused (UNAVAILABLE, THREAD_HOLD_LOST:
  a retry with the same request_id finishes the turn, or says the thread moved on).
* Releasing. The turn deletes its row when it ends, in one fenced transaction with the
  writes it left waiting (postgres_writes), or alone if none wait or that failed (then on
  the owner session if the pool is exhausted). If it cannot, the process drops its owner
  session, which frees every row it owns for the next taker.

A write outside any turn (the saver as opened) holds the thread for its own transaction
only (`write_alone`), so no checkpoint is ever written while a turn holds its thread but
through that turn's hold.

The table is UNLOGGED on purpose: a row means something only while its owner's session
lives, and after a crash or a failover every session is gone, as the rows then are.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import psycopg
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import DictRow, dict_row

from threadline.errors import ThreadBusy
from threadline.storage.postgres_pool import Pool
from threadline.storage.postgres_writes import DeferredWrites, Params, Statement, batched
from threadline.storage.thread_keys import ThreadKey
from threadline.storage.thread_locks import LocalThreadLocks, StaleRunError, StepAside, UnheldWriteError

if TYPE_CHECKING:
    from threadline.storage.postgres_saver import PostgresSaver
    from threadline.storage.thread_registry import PostgresThreadRegistry

log = logging.getLogger(__name__)

# How long a waiting turn sleeps between two tries of a busy thread. Short: a turn that
# finishes hands the thread on within this; a try costs one cheap statement.
_RETRY_INTERVAL_S = 0.02

FENCE_SQLSTATE = "TL409"

# Serializes the schema statements of replicas starting together: CREATE OR REPLACE
# FUNCTION run at the same instant fails with "tuple concurrently updated".
_SETUP_LOCK_KEY = 0x7468726561646C6E  # "threadln"

SCHEMA_SQL = (
    f"SELECT pg_advisory_xact_lock({_SETUP_LOCK_KEY})",
    """CREATE UNLOGGED TABLE IF NOT EXISTS threadline_thread_holders (
        thread_key text PRIMARY KEY,
        owner_key bigint NOT NULL,
        token uuid NOT NULL,
        since timestamptz NOT NULL DEFAULT now()
    )""",
    f"""CREATE OR REPLACE FUNCTION threadline_fence_v1(p_thread_key text, p_token uuid) RETURNS void
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM 1 FROM threadline_thread_holders
            WHERE thread_key = p_thread_key AND token = p_token FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'thread % is no longer held by this turn', p_thread_key
                USING ERRCODE = '{FENCE_SQLSTATE}',
                      HINT = 'taken over after this process lost its owner session, or the database restarted';
        END IF;
    END $$""",
)

# Takes a free thread, or one whose owner's session has ended; no row back means busy.
_TAKE_SQL = """
INSERT INTO threadline_thread_holders AS held (thread_key, owner_key, token) VALUES (%s, %s, %s)
ON CONFLICT (thread_key) DO UPDATE SET owner_key = excluded.owner_key, token = excluded.token, since = now()
    WHERE pg_try_advisory_xact_lock(held.owner_key)
RETURNING token"""
_RELEASE_SQL = "DELETE FROM threadline_thread_holders WHERE thread_key = %s AND token = %s"
# A write outside any turn holds the thread for its own transaction only (write_alone). Owner
# key 0 is no process's: the row never outlives the transaction that inserts it.
_TAKE_FOR_ONE_WRITE_SQL = "INSERT INTO threadline_thread_holders (thread_key, owner_key, token) VALUES (%s, 0, %s)"
_HOLDERS_KEY = "threadline_thread_holders_pkey"
_FENCE_SQL = "SELECT threadline_fence_v1(%s, %s)"
# Rows left by processes that died before releasing them (the volatile call is not pushed
# below DISTINCT, so it runs once per owner, not once per row).
_SWEEP_SQL = """
DELETE FROM threadline_thread_holders WHERE owner_key IN (
    SELECT owner_key FROM (SELECT DISTINCT owner_key FROM threadline_thread_holders) owners
    WHERE pg_try_advisory_xact_lock(owners.owner_key))"""


@dataclass(eq=False)
class Hold:
    """A turn's hold on its thread, and what writes for the turn: `saver` and `registry`, bound to it.

    A write through them for another thread, or once the hold has ended, raises
    UnheldWriteError or StaleRunError and writes nothing; one the database refuses (the thread
    was taken over) raises StaleRunError. Nothing else of the turn's writes goes to the thread.
    """

    thread: ThreadKey | str
    """The thread held: a tenant's, or one named as the checkpoint tables name it."""
    token: uuid.UUID
    pool: Pool
    released: bool = False
    wrote: bool = False
    """Whether a write of the turn went through the hold."""
    # Whether the row may exist: from sending the take until it is known not taken or deleted.
    maybe_taken: bool = False
    writes: DeferredWrites = field(default_factory=DeferredWrites)
    """The turn's writes not sent yet (postgres_writes); all are sent before or with the release."""
    head: list[DictRow] | None = None
    """The thread's newest root checkpoint row (none: []), read with the take for the turn's reads
    of its head; None once the turn writes."""
    saver: PostgresSaver = field(init=False)
    """The checkpointer of the turn: the storage's saver bound to this hold."""
    registry: PostgresThreadRegistry = field(init=False)
    """The thread registry, its rows written with the turn's checkpoints."""

    @property
    def thread_key(self) -> str:
        """The thread as the holders and checkpoint tables name it."""
        return str(self.thread)

    @property
    def name(self) -> str:
        """The thread as its callers name it, for messages."""
        return self.thread.thread_id if isinstance(self.thread, ThreadKey) else self.thread

    def take_head(self, thread_id: str) -> list[DictRow] | None:
        """The head row read with the take, if the turn has not written since (else None).

        Good for every read until then (the engine's and the graph's own at the start of a turn):
        while the hold is ours, only the turn's writes, which all pass here, can move its head
        (after a takeover every write of the turn is refused by the fence).
        Each read gets a copy: a checkpoint read is the graph's to change (its versions, in place).
        """
        if thread_id != self.thread_key or self.head is None:
            return None
        return copy.deepcopy(self.head)

    async def write(self, thread_id: str, statements: list[Statement], *, may_wait: bool) -> None:
        """Writes statements of the turn, fenced to this hold.

        may_wait: they may wait to go with the turn's next write or its release, as its
        checkpoints do (postgres_writes); otherwise they go now, after what waits.
        """
        if self.released:
            raise StaleRunError(f"the turn's hold on thread {self.name!r} has ended; its write is refused")
        if thread_id != self.thread_key:
            raise UnheldWriteError(f"a turn holding {self.thread_key!r} wrote thread {thread_id!r}; refused")
        self.head = None  # the turn writes: the head read with its take may be outdated
        self.wrote = True
        if may_wait:
            self.writes.add(statements, self._send)
        else:
            await self._send([*await self.writes.take(), *statements])

    async def before_read(self) -> None:
        """Sends the turn's waiting writes: a turn reads its own writes."""
        if not self.released:
            await self.writes.flush()

    async def _send(self, statements: list[Statement]) -> None:
        async with self.pool.connection() as conn, fenced_cursor(conn, self) as cur:
            await _run(cur, statements)


async def _run(cur: AsyncCursor[DictRow], statements: list[Statement]) -> None:
    for statement in batched(statements):
        if statement.many:
            await cur.executemany(statement.query, cast(list[Params], statement.rows))
        else:
            await cur.execute(statement.query, statement.rows[0])


async def write_alone(pool: Pool, thread_key: str, statements: list[Statement]) -> None:
    """Runs a write outside any turn, holding the thread for itself in the write's own transaction.

    The holders row is inserted before the statements and deleted after them, in one
    implicit transaction (one pipeline on an autocommit connection): a turn's take waits for
    it, and while a turn holds the thread the insert fails and nothing is written.

    Raises:
        ThreadBusy: a turn (on any replica) holds the thread.
    """
    token = uuid.uuid4()
    try:
        async with pool.connection() as conn, conn.pipeline(), conn.cursor(binary=True, row_factory=dict_row) as cur:
            await cur.execute(_TAKE_FOR_ONE_WRITE_SQL, (thread_key, token))
            await _run(cur, statements)
            await cur.execute(_RELEASE_SQL, (thread_key, token))
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name != _HOLDERS_KEY:
            raise
        raise ThreadBusy(f"thread {thread_key!r} is held by a turn; a write from outside it is refused") from exc


@asynccontextmanager
async def fenced_cursor(conn: AsyncConnection[DictRow], hold: Hold) -> AsyncIterator[AsyncCursor[DictRow]]:
    """A cursor in one pipeline that writes only if the hold is still this turn's.

    On an autocommit connection PostgreSQL runs everything up to a pipeline's Sync in one
    implicit transaction, and psycopg sends the Sync when the block ends: the fence's
    share lock is held until the caller's statements commit, and if the fence fails they
    are skipped. One round trip per send. (psycopg's transaction()
    inside a pipeline would add two syncs to every write.) The caller must not fetch
    results inside the block: that would sync early.
    """
    try:
        async with conn.pipeline(), conn.cursor(binary=True, row_factory=dict_row) as cur:
            await cur.execute(_FENCE_SQL, (hold.thread_key, hold.token))
            yield cur
    except psycopg.DatabaseError as exc:
        if exc.sqlstate == FENCE_SQLSTATE:
            thread = hold.name
            raise StaleRunError(
                f"this turn lost its hold on thread {thread!r} (this replica lost its database session, or the "
                "database restarted, while the turn ran); nothing more of it is written"
            ) from exc
        raise


async def setup(pool: Pool) -> None:
    """Creates the holders table and the fence function (idempotent; safe from many replicas at once)."""
    async with pool.connection() as conn, conn.transaction():
        for statement in SCHEMA_SQL:
            await conn.execute(statement)


class OwnerSession:
    """This process's presence on the database: one connection of its own, holding its owner key's lock.

    The same connection answers the storage health probe. It is not a pooled one: under
    load every pooled connection can be busy, and a probe that waited for one would call
    a busy replica a database outage.
    """

    # Server-side TCP keepalives: if this host vanishes without closing the socket,
    # PostgreSQL ends the session, and frees our threads, in about 25 s, not the OS's 2 h.
    _KEEPALIVES = ("SET tcp_keepalives_idle = 10", "SET tcp_keepalives_interval = 5", "SET tcp_keepalives_count = 3")

    def __init__(self, url: str, *, prepare_threshold: int | None) -> None:
        self._url = url
        self._prepare_threshold = prepare_threshold
        self._conn: AsyncConnection[Any] | None = None
        self._key = 0
        self._connecting = asyncio.Lock()
        self._swept = False

    async def key(self) -> int:
        """The owner key of this process, connecting (with a new key) if the session is gone."""
        if self._conn is not None and not self._conn.closed:
            return self._key
        async with self._connecting:
            if self._conn is None or self._conn.closed:
                await self._connect()
            return self._key

    async def _connect(self) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self._url,
            autocommit=True,
            prepare_threshold=self._prepare_threshold,
            application_name=f"threadline owner pid={os.getpid()}",
        )
        try:
            for statement in self._KEEPALIVES:
                await conn.execute(statement)
            while True:
                key = secrets.randbits(63)
                row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))).fetchone()
                if row is not None and row[0]:
                    break
            if not self._swept:
                # At start-up, clear rows of owners that died without releasing them. Only then:
                # on a reconnect, the rows of the lost session are this process's turns in flight.
                await conn.execute(_SWEEP_SQL)
                self._swept = True
        except BaseException:
            await conn.close()
            raise
        self._conn, self._key = conn, key
        log.info("owner session open (owner key %x)", key)

    async def ping(self) -> None:
        """Runs SELECT 1 on the owner session; raises what psycopg raises when the database does not answer.

        A session that dropped while the database stays up (a restarted pooler, an idle
        reaper, pg_terminate_backend) is replaced at once, not reported as an outage.
        """
        try:
            try:
                await self._select_1()
            except psycopg.OperationalError as exc:
                log.warning("owner session lost (%s); opening a new one", str(exc).strip() or type(exc).__name__)
                await self.close()
                await self._select_1()
        except BaseException:
            # Failed or interrupted (the caller's timeout): the next use starts a new session.
            await self.close()
            raise

    async def _select_1(self) -> None:
        await self.key()
        assert self._conn is not None
        await self._conn.execute("SELECT 1")

    async def execute(self, sql: str, params: tuple[Any, ...]) -> None:
        """Runs a statement on the owner session, which never waits for the pool."""
        await self.key()
        assert self._conn is not None
        await self._conn.execute(sql, params)

    async def close(self) -> None:
        """Ends the session: PostgreSQL frees every thread this process holds for the next taker."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


class PostgresThreadLocks:
    """One turn at a time per thread across every replica on the database."""

    def __init__(
        self,
        pool: Pool,
        owner: OwnerSession,
        *,
        saver: PostgresSaver,
        registry: PostgresThreadRegistry,
        max_wait_s: float,
        head_sql: str | None = None,
    ) -> None:
        """saver, registry: what each hold binds to itself for its turn's writes (Hold.saver, Hold.registry).

        head_sql: a query of the thread's newest root checkpoint (parameters: thread key, "")
        to run in the take's round trip, for the turn's reads of its head (Hold.head)."""
        self._pool = pool
        self._owner = owner
        self._saver = saver
        self._registry = registry
        self._head_sql = head_sql
        self._local = LocalThreadLocks(max_wait_s=max_wait_s)
        self._max_wait_s = max_wait_s
        self._releasing: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def hold(
        self, key: ThreadKey | str, *, wait: bool, deadline: float | None, step_aside: StepAside = nullcontext
    ) -> AsyncIterator[Hold]:
        """Holds the thread for the block; ThreadBusy if it is busy and wait is False (or the wait ends).

        The hold's saver and registry are what writes for the block's turn. Turns of this
        replica queue on a local lock first, so only one of them at a time asks the database.
        Waits for a busy thread run inside step_aside().
        """
        async with self._local.hold(key, wait=wait, deadline=deadline, step_aside=step_aside):
            hold = Hold(key, uuid.uuid4(), self._pool)
            hold.saver = self._saver.bound_to(hold)
            hold.registry = self._registry.bound_to(hold)
            try:
                await self._take(hold, wait=wait, deadline=deadline, step_aside=step_aside)
                try:
                    yield hold
                except BaseException:
                    await _send_what_a_failed_turn_wrote(hold)
                    raise
                else:
                    # What the turn left waiting (its last checkpoints, its registry row) and the
                    # release in one fenced round trip; if nothing waits, the release goes below.
                    if await hold.writes.flush(then=[Statement(_RELEASE_SQL, [(hold.thread_key, hold.token)], False)]):
                        hold.maybe_taken = False
            finally:
                hold.released = True
                if hold.maybe_taken:
                    # Shielded: a turn cancelled now must still free its thread.
                    release = asyncio.ensure_future(self._release(hold))
                    self._releasing.add(release)
                    release.add_done_callback(self._releasing.discard)
                    await asyncio.shield(release)

    async def _take(self, hold: Hold, *, wait: bool, deadline: float | None, step_aside: StepAside) -> None:
        give_up = time.monotonic() + self._max_wait_s
        if deadline is not None:
            give_up = min(give_up, deadline)
        while True:
            owner_key = await self._owner.key()
            async with self._pool.connection() as conn, conn.cursor(binary=True) as head:
                hold.maybe_taken = True  # from here, a take cut short may still have landed
                async with conn.pipeline():
                    cur = await conn.execute(_TAKE_SQL, (hold.thread_key, owner_key, hold.token))
                    if self._head_sql is not None:
                        # Read after the take, in the same implicit transaction: once taken, nobody
                        # else writes the thread, so the row stays the head until the turn writes.
                        await head.execute(self._head_sql, (hold.thread_key, ""))
                taken = await cur.fetchone() is not None
                if taken and self._head_sql is not None:
                    hold.head = await head.fetchall()
            if taken:
                return
            hold.maybe_taken = False
            if not wait or time.monotonic() + _RETRY_INTERVAL_S >= give_up:
                raise ThreadBusy(f"thread {hold.name!r} is running another turn")
            async with step_aside():  # the thread is busy on another replica: no database needed meanwhile
                await asyncio.sleep(_RETRY_INTERVAL_S)

    async def _release(self, hold: Hold) -> None:
        params = (hold.thread_key, hold.token)
        try:
            async with self._pool.connection() as conn:
                await conn.execute(_RELEASE_SQL, params)
            return
        except Exception as exc:
            log.warning(
                "could not release thread %r on a pooled connection (%s); trying the owner session",
                hold.thread_key,
                exc,
            )
        try:
            await self._owner.execute(_RELEASE_SQL, params)  # a busy pool must not keep the thread held
        except Exception as exc:
            # Never leave a row of a live owner behind: the thread would stay held for as long
            # as this process lives. Ending the owner session frees all of this process's rows;
            # the next turn here opens a new one.
            log.warning("could not release thread %r; ending this process's owner session: %s", hold.thread_key, exc)
            await self._owner.close()

    async def close(self) -> None:
        """Waits for releases still in flight (shutdown)."""
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)


async def _send_what_a_failed_turn_wrote(hold: Hold) -> None:
    # A task that failed or paused wrote its error or interrupt, and no checkpoint came after.
    # The turn's own error is what its caller must see, so a failure here is only logged.
    try:
        await hold.writes.flush()
    except Exception as exc:
        log.warning("could not write what a failed turn on thread %r wrote last: %s", hold.thread_key, exc)
