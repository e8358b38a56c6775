"""What the engine keeps its threads in, whatever the backend: the Storage it opens and its settings."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol, cast

import aiosqlite
import psycopg
import psycopg_pool
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from threadline.storage import audit
from threadline.storage.hot_states import HotStates, HotStatesSaverMixin
from threadline.storage.settings import StorageSettings
from threadline.storage.thread_locks import LocalThreadLocks, ThreadLocks
from threadline.storage.thread_registry import ThreadRegistry, UnlistedThread

STORAGE_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    # SQLSTATE 25006, an InternalError to psycopg: the server refuses writes (a primary demoted by a
    # failover, a hot standby, default_transaction_read_only), and a later connection can reach one that takes them.
    psycopg.errors.ReadOnlySqlTransaction,
    psycopg_pool.PoolTimeout,
    sqlite3.OperationalError,
    aiosqlite.Error,
)
"""Exceptions that mean the database cannot serve now (retrying later can work)."""


@dataclass(frozen=True)
class PoolStats:
    """A connection pool's state now, and its totals since it opened (from psycopg_pool's get_stats())."""

    max_size: int
    size: int
    """Connections open (idle or in use)."""
    idle: int
    waiting: int
    """Requests waiting for a connection now."""
    wait_s_total: float
    """Seconds requests have waited for a connection, summed."""
    errors_total: int
    """Requests that got no connection (pool timeout, or a pool closing)."""


class Storage(Protocol):
    """What the engine keeps its threads in: storage.memory, storage.sqlite and storage.postgres
    each implement it, and the engine knows no more of a backend than this."""

    @property
    def saver(self) -> BaseCheckpointSaver[str]:
        """The checkpointer the graph is compiled with, for reads outside a turn. A write through it
        holds its thread for that write alone: refused (ThreadBusy) while a turn holds the thread."""
        ...

    @property
    def locks(self) -> ThreadLocks:
        """One turn at a time per thread (across replicas, where the backend allows several). A turn
        writes through its hold (`ThreadHold.saver`, `ThreadHold.registry`), and nothing else."""
        ...

    @property
    def registry(self) -> ThreadRegistry:
        """One summary row per thread, for ListThreads (a turn writes its row through its hold)."""
        ...

    @property
    def hot(self) -> HotStates:
        """Messages at recent checkpoints of recently used threads; the saver reads them too."""
        ...

    async def ping(self) -> None:
        """Returns when the database can serve; raises one of STORAGE_ERRORS when it cannot."""
        ...

    def pool_stats(self) -> PoolStats | None:
        """The connection pool's state; None for a backend without a pool."""
        ...

    async def idle_threads(self, cutoff: str, limit: int) -> list[str]:
        """Storage thread ids (at most limit) whose newest checkpoint id is older than cutoff."""
        ...

    async def unlisted_threads(self, after: str, limit: int) -> list[UnlistedThread]:
        """Threads (at most limit, storage ids after `after`, in order) with a checkpoint but no registry
        row, or whose row names another head than their newest root checkpoint."""
        ...

    async def headers(self, config: RunnableConfig, before: RunnableConfig | None, limit: int) -> list[CheckpointTuple]:
        """The thread's newest checkpoints (before `before`), newest first; their channel values
        and pending writes may be left out (History reads neither)."""
        ...

    async def find_request(self, config: RunnableConfig, request_id: str) -> CheckpointTuple | None:
        """The newest checkpoint of the thread that the call with this request_id wrote, or None;
        its channel values and pending writes may be left out."""
        ...


@dataclass
class ListedBySaver:
    """Storage whose History headers and request lookups are the saver's own alist (memory, SQLite:
    there a listed row is all a checkpoint is, so listing costs no more than a header read)."""

    saver: BaseCheckpointSaver[str]
    locks: ThreadLocks
    registry: ThreadRegistry
    hot: HotStates

    def pool_stats(self) -> PoolStats | None:
        """None: memory and SQLite have no connection pool."""
        return None

    async def headers(self, config: RunnableConfig, before: RunnableConfig | None, limit: int) -> list[CheckpointTuple]:
        """The thread's newest checkpoints (before `before`), newest first."""
        return [t async for t in self.saver.alist(config, before=before, limit=limit)]

    async def find_request(self, config: RunnableConfig, request_id: str) -> CheckpointTuple | None:
        """The newest checkpoint the call with this request_id wrote, through the saver's metadata filter."""
        # The filter key is our constant, never caller input (CVE-2025-67644: SQLite filter keys).
        # Closed explicitly: SQLite's alist holds the saver's lock until its generator ends.
        found = cast(
            AsyncGenerator[CheckpointTuple, None],  # an async generator, typed as a plain AsyncIterator
            self.saver.alist(config, filter={audit.REQUEST_ID: request_id}, limit=1),
        )
        async with aclosing(found):
            async for item in found:
                return item
        return None


# Checkpoint ids are UUIDv6 (time first, hex), so comparing their text compares their times.
IDLE_THREADS_SQL = (
    "SELECT thread_id FROM checkpoints WHERE checkpoint_ns = '' "
    "GROUP BY thread_id HAVING max(checkpoint_id) < {param} LIMIT {param}"
)


def with_hot_states(saver: HotStatesSaverMixin, settings: StorageSettings) -> HotStates:
    saver.hot_states = HotStates(settings.hot_threads)
    return saver.hot_states


Serialized = Callable[[int], None]
"""Told the size in bytes of each value a saver serialized to write (a channel value, a task's write)."""


class MeasuredSerializer(JsonPlusSerializer):
    """JsonPlusSerializer telling `on_serialized` the size of everything it serializes.

    Savers serialize only to write (channel values, task writes; SQLite the whole checkpoint),
    so the sizes add up to the checkpoint bytes written, whatever the backend. LangGraph's
    `with_allowlist` clones the serializer with copy.copy: the clone keeps the callback.
    """

    def __init__(self, on_serialized: Serialized, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_serialized = on_serialized

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        kind, data = super().dumps_typed(obj)
        self.on_serialized(len(data))
        return kind, data


def safe_serializer(on_serialized: Serialized | None = None) -> JsonPlusSerializer:
    """A serializer that never unpickles and revives only LangGraph's allow-listed types.

    Without an explicit allowlist JsonPlusSerializer imports and calls any type named
    in a stored checkpoint (the CVE-2026-28277 class), so one write to the database
    would become code execution on every replica.

    Args:
        on_serialized: Told the size of every value serialized (checkpoint bytes written); None: nobody.
    """
    if on_serialized is None:
        return JsonPlusSerializer(pickle_fallback=False, allowed_msgpack_modules=None)
    return MeasuredSerializer(on_serialized, pickle_fallback=False, allowed_msgpack_modules=None)


def local_locks(settings: StorageSettings) -> LocalThreadLocks:
    """Thread locks of this process alone (SQLite and memory serve one process)."""
    return LocalThreadLocks(max_wait_s=settings.busy_wait_max_s)
