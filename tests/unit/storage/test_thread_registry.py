"""Every backend: the registry row of a thread follows its head (`refresh`), and the threads whose row is
missing or behind their checkpoints are found (`Storage.unlisted_threads`), for the start-up repair."""

from __future__ import annotations

import datetime as dt

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint

from threadline.storage.contract import Storage
from threadline.storage.thread_keys import ThreadKey
from threadline.storage.thread_registry import UnlistedThread

MISSING, LISTED, BEHIND = ThreadKey("tests", "missing"), ThreadKey("tests", "listed"), ThreadKey("tests", "behind")
T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)


async def _chain(storage: Storage, key: ThreadKey, length: int) -> list[str]:
    """Writes `length` root checkpoints of the thread, each after the last, through a hold; their ids."""
    config: RunnableConfig = {"configurable": {"thread_id": key.storage_id, "checkpoint_ns": ""}}
    ids = []
    async with storage.locks.hold(key, wait=False, deadline=None) as hold:
        assert not hold.wrote
        for step in range(length):
            config = await hold.saver.aput(config, empty_checkpoint(), {"source": "loop", "step": step}, {})
            ids.append(str(config["configurable"]["checkpoint_id"]))
        assert hold.wrote
    return ids


async def _row(storage: Storage, key: ThreadKey, title: str, turns: int, head: str, at: dt.datetime) -> None:
    await storage.registry.refresh(
        key.tenant, key.thread_id, title=title, turn_count=turns, head_checkpoint_id=head, updated_at=at, created_at=at
    )


async def test_threads_without_a_row_or_behind_their_checkpoints_are_found(storage: Storage) -> None:
    missing = await _chain(storage, MISSING, 2)
    listed = await _chain(storage, LISTED, 2)
    behind = await _chain(storage, BEHIND, 3)
    await _row(storage, LISTED, "listed", 1, listed[-1], T0)
    await _row(storage, BEHIND, "behind", 1, behind[0], T0)
    await storage.registry.record("tests", "no-checkpoints", title="", turn_count=1, head_checkpoint_id="x")

    expected = [
        UnlistedThread(BEHIND.storage_id, behind[-1], behind[0]),
        UnlistedThread(MISSING.storage_id, missing[-1], missing[0]),
    ]
    assert await storage.unlisted_threads("", 100) == expected
    assert await storage.unlisted_threads("", 1) == expected[:1]
    assert await storage.unlisted_threads(BEHIND.storage_id, 100) == expected[1:]

    await _row(storage, MISSING, "missing", 1, missing[-1], T0)
    await _row(storage, BEHIND, "behind", 2, behind[-1], T0)
    assert await storage.unlisted_threads("", 100) == []


async def test_a_refresh_moves_a_row_behind_and_leaves_one_at_that_head_as_it_is(storage: Storage) -> None:
    ids = await _chain(storage, LISTED, 2)
    await _row(storage, LISTED, "first title", 1, ids[0], T0)
    later = T0 + dt.timedelta(seconds=5)
    await _row(storage, LISTED, "another title", 2, ids[0], later)  # the same head: nothing changes
    (row,) = await storage.registry.page("tests", limit=10, after=None)
    assert (row.title, row.turn_count, row.head_checkpoint_id, row.updated_at, row.created_at) == (
        "first title",
        1,
        ids[0],
        T0,
        T0,
    )
    await _row(storage, LISTED, "another title", 2, ids[1], later)  # a new head: the row follows, title and birth kept
    (row,) = await storage.registry.page("tests", limit=10, after=None)
    assert (row.title, row.turn_count, row.head_checkpoint_id, row.updated_at, row.created_at) == (
        "first title",
        2,
        ids[1],
        later,
        T0,
    )
