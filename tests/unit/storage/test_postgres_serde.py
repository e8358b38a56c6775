"""Our saver's serializing on the event loop stores and reads exactly what the stock saver does (real PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.base import Checkpoint, CheckpointTuple, empty_checkpoint
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row

from tests.support import CountingExecutor
from threadline.storage.postgres_serde import SerdeOnLoopPostgresSaver

_TABLES = {
    "checkpoints": "checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata",
    "checkpoint_blobs": "checkpoint_ns, channel, version, type, blob",
    "checkpoint_writes": "checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob",
}


def _checkpoint(checkpoint_id: str, values: dict[str, Any], versions: dict[str, str]) -> Checkpoint:
    checkpoint = empty_checkpoint()
    checkpoint.update(id=checkpoint_id, ts="2026-11-23T00:00:00+00:00", channel_values=values)
    checkpoint["channel_versions"] = versions
    return checkpoint


async def _exercise(saver: AsyncPostgresSaver, thread: str) -> list[CheckpointTuple | None]:
    """Two checkpoints with inline values, blobs and a delta snapshot; writes of both kinds; every read."""
    root: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    first = await saver.aput(
        root,
        _checkpoint(
            "1f0c0000-0000-6000-8000-000000000001",
            {"messages": [HumanMessage("What is 2+3?", id="h1")], "count": 1, "note": "x", "nothing": None},
            {"messages": "1", "count": "1", "note": "1", "nothing": "1"},
        ),
        {"source": "input", "step": -1, "parents": {}},
        {"messages": "1", "count": "1", "note": "1", "nothing": "1"},
    )
    await saver.aput_writes(first, [("messages", [AIMessage("", id="a1")]), ("count", 2)], "task-1", "path-1")
    await saver.aput_writes(first, [("__error__", ValueError("boom")), ("__interrupt__", ["why"])], "task-2")
    await saver.aput_writes(first, [("__error__", ValueError("again"))], "task-2")  # replaces (an upsert)
    second = await saver.aput(
        first,
        _checkpoint(
            "1f0c0000-0000-6000-8000-000000000002",
            {"messages": _DeltaSnapshot([ToolMessage("5", tool_call_id="c1", id="t1")]), "count": 2},
            {"messages": "2", "count": "2", "note": "1", "nothing": "1"},
        ),
        {"source": "loop", "step": 0, "parents": {}},
        {"messages": "2", "count": "2"},
    )
    await saver.aput_writes(second, [("messages", [AIMessage("5", id="a2")])], "task-3")
    return [
        await saver.aget_tuple(root),
        await saver.aget_tuple(first),
        *[t async for t in saver.alist(root)],
    ]


def _as_of(tuples: list[CheckpointTuple | None], thread: str) -> str:
    return repr(tuples).replace(thread, "THREAD")


async def _rows(conn: AsyncConnection[DictRow], thread: str) -> dict[str, list[DictRow]]:
    rows = {}
    for table, columns in _TABLES.items():
        cursor = await conn.execute(f"SELECT {columns} FROM {table} WHERE thread_id = %s ORDER BY {columns}", (thread,))
        rows[table] = await cursor.fetchall()
    return rows


def test_the_stock_savers_rows_and_reads_without_a_thread_hop(fresh_postgres_url: str) -> None:
    async def main() -> None:
        executor = CountingExecutor(max_workers=1)
        asyncio.get_running_loop().set_default_executor(executor)
        async with await AsyncConnection.connect(
            fresh_postgres_url, autocommit=True, prepare_threshold=0, row_factory=dict_row
        ) as conn:
            stock, ours = AsyncPostgresSaver(conn), SerdeOnLoopPostgresSaver(conn)
            await stock.setup()
            stock_reads = await _exercise(stock, "stock")
            assert executor.handed >= 5, "the stock saver hops to a thread: the count sees it"
            executor.handed = 0
            our_reads = await _exercise(ours, "ours")
            assert executor.handed == 0
            assert _as_of(our_reads, "ours") == _as_of(stock_reads, "stock")
            assert await _rows(conn, "ours") == await _rows(conn, "stock")
            assert (
                len((await _rows(conn, "ours"))["checkpoint_blobs"]) == 2
            )  # messages at both versions, the rest inline

    asyncio.run(main())
