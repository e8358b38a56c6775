"""Every backend: a checkpoint write reaches a thread only through a hold on it, and a refused write writes nothing.

A turn writes through its hold (`ThreadHold.saver`); the saver as opened (`Storage.saver`)
holds the thread for each of its writes alone. PostgreSQL's fence against a takeover by
another replica is in test_postgres_holds.py.
"""

from __future__ import annotations

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint

from threadline.errors import ThreadBusy
from threadline.storage.contract import Storage
from threadline.storage.thread_keys import ThreadKey
from threadline.storage.thread_locks import StaleRunError, UnheldWriteError

KEY, OTHER = ThreadKey("tests", "held"), ThreadKey("tests", "other")


def _root(key: ThreadKey) -> RunnableConfig:
    return {"configurable": {"thread_id": key.storage_id, "checkpoint_ns": ""}}


async def _put(saver: object, config: RunnableConfig) -> RunnableConfig:
    return await saver.aput(config, empty_checkpoint(), {"source": "input", "step": -1}, {})  # type: ignore[attr-defined,no-any-return]


async def _count(storage: Storage, key: ThreadKey) -> int:
    return len([t async for t in storage.saver.alist(_root(key))])


async def test_a_write_from_outside_a_turn_is_refused_while_a_turn_holds_the_thread(storage: Storage) -> None:
    first = await _put(storage.saver, _root(KEY))
    async with storage.locks.hold(KEY, wait=False, deadline=None):
        with pytest.raises(ThreadBusy):
            await _put(storage.saver, first)
        with pytest.raises(ThreadBusy):
            await storage.saver.aput_writes(first, [("messages", "a")], "task-1")
        with pytest.raises(ThreadBusy):
            await storage.saver.adelete_thread(KEY.storage_id)
        assert await _count(storage, KEY) == 1
    await _put(storage.saver, first)
    assert await _count(storage, KEY) == 2, "once the turn let go, a write from outside holds the thread itself"


async def test_a_turns_saver_writes_only_its_thread_and_only_while_it_holds_it(storage: Storage) -> None:
    async with storage.locks.hold(KEY, wait=False, deadline=None) as hold:
        with pytest.raises(UnheldWriteError):
            await _put(hold.saver, _root(OTHER))
        with pytest.raises(UnheldWriteError):
            await hold.saver.adelete_thread(OTHER.storage_id)
        first = await _put(hold.saver, _root(KEY))
    with pytest.raises(StaleRunError):
        await _put(hold.saver, first)
    with pytest.raises(StaleRunError):
        await hold.saver.aput_writes(first, [("messages", "late")], "task-1")
    with pytest.raises(StaleRunError):
        await hold.saver.adelete_thread(KEY.storage_id)
    assert await _count(storage, KEY) == 1, "only the write made while holding the thread landed"
    assert await _count(storage, OTHER) == 0
    head = await storage.saver.aget_tuple(_root(KEY))
    assert head is not None and not head.pending_writes
