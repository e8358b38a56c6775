"""One run at a time per thread, within this process.

Two concurrent turns on one LangGraph thread would both start from the same head
and fork the chain (langgraph issue 8796). Across replicas this needs a database
lock; within one process an asyncio.Lock per thread is enough.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ThreadLocks:
    """Per-thread locks that exist only while someone holds or waits for them."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, thread_key: str) -> AsyncIterator[None]:
        """Waits for the thread's lock and holds it for the block."""
        lock, users = self._locks.get(thread_key, (asyncio.Lock(), 0))
        self._locks[thread_key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[thread_key]
            if users == 1:
                del self._locks[thread_key]
            else:
                self._locks[thread_key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
