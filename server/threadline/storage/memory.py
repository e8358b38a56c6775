"""memory:// storage: InMemorySaver for tests and demos; nothing survives the process.

Writes go through holds on their threads (local_holds), as with every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from langgraph.checkpoint.memory import InMemorySaver

from threadline.storage.audit import AuditedSaverMixin
from threadline.storage.contract import (
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
from threadline.storage.thread_registry import MemoryThreadRegistry, UnlistedThread


class AuditedMemorySaver(HotStatesSaverMixin, AuditedSaverMixin, InMemorySaver):
    """InMemorySaver with the audit trail and hot states."""


@dataclass
class MemoryStorage(ListedBySaver):
    """Storage in this process's memory."""

    memory: AuditedMemorySaver
    rows: MemoryThreadRegistry

    async def ping(self) -> None:
        """Memory is up while the process is."""

    async def idle_threads(self, cutoff: str, limit: int) -> list[str]:
        """Threads whose newest root checkpoint id is older than cutoff."""
        spaces_of = self.memory.storage.items()
        return [thread for thread, spaces in spaces_of if spaces.get("") and max(spaces[""]) < cutoff][:limit]

    async def unlisted_threads(self, after: str, limit: int) -> list[UnlistedThread]:
        """Threads whose registry row is missing or behind their newest root checkpoint."""
        listed = self.rows.heads()
        found = [
            UnlistedThread(thread, max(spaces[""]), min(spaces[""]))
            for thread, spaces in sorted(self.memory.storage.items())
            if thread > after and "/" in thread and spaces.get("") and listed.get(thread) != max(spaces[""])
        ]
        return found[:limit]


@asynccontextmanager
async def open_memory(settings: StorageSettings, *, on_serialized: Serialized | None = None) -> AsyncIterator[Storage]:
    """Storage in this process's memory."""
    memory = AuditedMemorySaver(serde=safe_serializer(on_serialized))
    hot = with_hot_states(memory, settings)
    locks = local_locks(settings)
    saver = LocallyHeldSaver(memory, locks)
    registry = MemoryThreadRegistry()
    yield MemoryStorage(saver, LocalHolds(locks, saver, registry), registry, hot, memory, registry)
