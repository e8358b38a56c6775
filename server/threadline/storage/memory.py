"""memory:// storage: InMemorySaver for tests and demos; nothing survives the process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from langgraph.checkpoint.memory import InMemorySaver

from threadline.storage.audit import AuditedSaverMixin
from threadline.storage.contract import (
    Storage,
    StorageSettings,
    always_up,
    found_by_filter,
    listed,
    local_locks,
    safe_serializer,
    with_hot_states,
)
from threadline.storage.hot_states import HotStatesSaverMixin
from threadline.storage.thread_registry import MemoryThreadRegistry


class AuditedMemorySaver(HotStatesSaverMixin, AuditedSaverMixin, InMemorySaver):
    """InMemorySaver with the audit trail and hot states."""


@asynccontextmanager
async def open_memory(settings: StorageSettings) -> AsyncIterator[Storage]:
    """Storage in this process's memory."""
    memory = AuditedMemorySaver(serde=safe_serializer())

    async def idle_in_memory(cutoff: str, limit: int) -> list[str]:
        idle = [thread for thread, spaces in memory.storage.items() if spaces.get("") and max(spaces[""]) < cutoff]
        return idle[:limit]

    hot = with_hot_states(memory, settings)
    yield Storage(
        memory,
        local_locks(settings),
        always_up,
        idle_in_memory,
        MemoryThreadRegistry(),
        hot,
        listed(memory),
        found_by_filter(memory),
    )
