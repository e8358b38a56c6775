"""Holds on threads within this process (memory and SQLite storage), and the saver that writes through them.

Memory and SQLite serve one process, so a local lock per thread is the hold (thread_locks).
What writes for a turn is `LocallyHeldSaver` bound to the turn's hold: it writes only the
hold's thread, only while the hold lasts. The saver as opened (no hold) holds the thread for
each write it makes: while a turn holds the thread, such a write is refused with ThreadBusy.
The interface is the one PostgreSQL storage gives (postgres_holds), with local locks.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Collection, Iterator, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)

from threadline.storage.thread_keys import ThreadKey
from threadline.storage.thread_locks import LocalThreadLocks, StaleRunError, StepAside, UnheldWriteError
from threadline.storage.thread_registry import ThreadRegistry


@dataclass(eq=False)
class LocalHold:
    """A turn's hold on its thread within this process; `saver` writes only its thread while it lasts."""

    thread: ThreadKey | str
    """The thread held: a tenant's, or one named as the checkpoint tables name it."""
    registry: ThreadRegistry
    released: bool = False
    wrote: bool = False
    """Whether a checkpoint write went through the hold."""
    saver: LocallyHeldSaver = field(init=False)

    @property
    def thread_key(self) -> str:
        """The thread as the checkpoint tables name it."""
        return str(self.thread)


class LocalHolds:
    """One turn at a time per thread in this process; each hold gives the turn a saver bound to it."""

    def __init__(self, locks: LocalThreadLocks, saver: LocallyHeldSaver, registry: ThreadRegistry) -> None:
        self._locks = locks
        self._saver = saver
        self._registry = registry

    @asynccontextmanager
    async def hold(
        self, key: ThreadKey | str, *, wait: bool, deadline: float | None, step_aside: StepAside = nullcontext
    ) -> AsyncIterator[LocalHold]:
        """Holds the thread for the block; ThreadBusy if it is busy and wait is False (or the wait ends)."""
        async with self._locks.hold(key, wait=wait, deadline=deadline, step_aside=step_aside):
            hold = LocalHold(key, self._registry)
            hold.saver = self._saver.bound_to(hold)
            try:
                yield hold
            finally:
                hold.released = True


class LocallyHeldSaver(BaseCheckpointSaver[str]):
    """A saver of this process (memory, SQLite) whose writes go through a hold on their thread.

    Reads and versions are the inner saver's. Writes: bound to a hold (`bound_to`), only the
    hold's thread while it lasts (UnheldWriteError, StaleRunError otherwise); unbound, each
    write holds its thread for itself, refused with ThreadBusy while a turn holds it.
    The sync methods read; they do not write (a sync write could not wait for the thread).
    """

    def __init__(self, inner: BaseCheckpointSaver[str], locks: LocalThreadLocks) -> None:
        super().__init__(serde=inner.serde)
        self.inner = inner
        self._locks = locks
        self._hold: LocalHold | None = None

    def bound_to(self, hold: LocalHold) -> LocallyHeldSaver:
        """This saver for the turn holding `hold`."""
        bound = LocallyHeldSaver(self.inner, self._locks)
        bound._hold = hold
        return bound

    @asynccontextmanager
    async def _writing(self, thread_id: str) -> AsyncIterator[None]:
        hold = self._hold
        if hold is None:
            async with self._locks.hold(str(thread_id), wait=False, deadline=None):
                yield
            return
        if hold.released:
            raise StaleRunError(f"the turn's hold on thread {hold.thread_key!r} has ended; its write is refused")
        if str(thread_id) != hold.thread_key:
            raise UnheldWriteError(f"a turn holding {hold.thread_key!r} wrote thread {thread_id!r}; refused")
        hold.wrote = True
        yield

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        async with self._writing(config["configurable"]["thread_id"]):
            return await self.inner.aput(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        async with self._writing(config["configurable"]["thread_id"]):
            await self.inner.aput_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        async with self._writing(thread_id):
            await self.inner.adelete_thread(thread_id)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self.inner.aget_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        # Closed explicitly: SQLite's alist holds its connection's lock until its generator ends.
        listed = cast(
            AsyncGenerator[CheckpointTuple, None], self.inner.alist(config, filter=filter, before=before, limit=limit)
        )
        async with aclosing(listed):
            async for item in listed:
                yield item

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await self.inner.aget_delta_channel_history(config=config, channels=channels)

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.inner.get_tuple(config)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        return self.inner.list(config, filter=filter, before=before, limit=limit)

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return self.inner.get_delta_channel_history(config=config, channels=channels)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        raise _sync_write_refused("aput")

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        raise _sync_write_refused("aput_writes")

    def delete_thread(self, thread_id: str) -> None:
        raise _sync_write_refused("adelete_thread")

    def get_next_version(self, current: str | None, channel: None) -> str:
        return self.inner.get_next_version(current, channel)

    def with_allowlist(self, extra_allowlist: Collection[tuple[str, ...]]) -> LocallyHeldSaver:
        """This saver over the inner saver with the derived msgpack allowlist (LangGraph asks at compile time)."""
        inner = self.inner.with_allowlist(extra_allowlist)
        if inner is self.inner:
            return self
        clone = LocallyHeldSaver(inner, self._locks)
        clone._hold = self._hold
        return clone


def _sync_write_refused(instead: str) -> NotImplementedError:
    return NotImplementedError(f"writes go through the async interface ({instead}), which can wait for the thread")
