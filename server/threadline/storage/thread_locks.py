"""One turn at a time per thread: the interface, and the locks within this process.

Two concurrent turns on one LangGraph thread would both start from the same head
and fork the chain (langgraph issue 8796). A turn holds its thread (`ThreadLocks.hold`)
and writes through what the hold gives it (`ThreadHold.saver`, `ThreadHold.registry`):
a write of a thread its writer does not hold is refused, never made. Within one process
an asyncio.Lock per thread is the hold (local_holds); across replicas postgres_holds adds
a hold in the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Protocol

from langgraph.checkpoint.base import BaseCheckpointSaver

from threadline.errors import ThreadBusy
from threadline.storage.thread_keys import ThreadKey
from threadline.storage.thread_registry import ThreadRegistry

StepAside = Callable[[], AbstractAsyncContextManager[None]]
"""Wraps a wait for a busy thread: what the waiting turn gives up meanwhile (its place among starting turns)."""


class StaleRunError(RuntimeError):
    """A write of a turn that no longer holds its thread (it ended, or another writer took it over)."""


class UnheldWriteError(RuntimeError):
    """A write, through a turn's hold, of a thread other than the one it holds."""


class ThreadHold(Protocol):
    """A turn's hold on its thread: what writes for the turn. Writes through it reach only
    its thread, only while it lasts; others raise UnheldWriteError or StaleRunError."""

    @property
    def thread_key(self) -> str:
        """The thread held, as the checkpoint tables name it."""
        ...

    @property
    def saver(self) -> BaseCheckpointSaver[str]:
        """The checkpointer the turn runs its graph with, and reads its thread through."""
        ...

    @property
    def registry(self) -> ThreadRegistry:
        """The thread registry, for the turn's row."""
        ...

    @property
    def wrote(self) -> bool:
        """Whether a checkpoint write went through this hold (the thread may have moved since it was taken)."""
        ...


class ThreadLocks(Protocol):
    """Serializes the turns of each thread."""

    def hold(
        self, key: ThreadKey, *, wait: bool, deadline: float | None, step_aside: StepAside = nullcontext
    ) -> AbstractAsyncContextManager[ThreadHold]:
        """An async context manager holding the thread; raises ThreadBusy when it cannot."""
        ...


class LocalThreadLocks:
    """Per-thread asyncio locks that exist only while someone holds or waits for them.

    Keyed by the thread's storage id: a ThreadKey's, or one as the checkpoint tables hold it.
    """

    def __init__(self, *, max_wait_s: float) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._max_wait_s = max_wait_s

    @asynccontextmanager
    async def hold(
        self, thread: ThreadKey | str, *, wait: bool, deadline: float | None, step_aside: StepAside = nullcontext
    ) -> AsyncIterator[None]:
        """Holds the thread's lock for the block, inside step_aside() while it waits for it.

        Raises:
            ThreadBusy: the thread is busy and wait is False, or it stayed busy until
                the deadline (or max_wait_s) passed.
        """
        key = str(thread)
        name = thread.thread_id if isinstance(thread, ThreadKey) else thread
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        if lock.locked() and not wait:
            raise ThreadBusy(f"thread {name!r} is running another turn")
        self._locks[key] = (lock, users + 1)
        try:
            budget = self._max_wait_s if deadline is None else min(self._max_wait_s, deadline - time.monotonic())
            acquired = False
            try:
                # Waiting for another turn of this thread needs no database.
                async with step_aside() if lock.locked() else nullcontext():
                    try:
                        async with asyncio.timeout(max(budget, 0.0)):
                            await lock.acquire()
                    except TimeoutError:
                        raise ThreadBusy(f"thread {name!r} stayed busy for {max(budget, 0.0):.1f}s") from None
                    acquired = True
            except BaseException:
                if acquired:  # taking its place back failed (deadline, cancel): the thread is let go
                    lock.release()
                raise
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
