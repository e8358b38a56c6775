"""The stock PostgreSQL saver, with its serializing done on the event loop instead of a worker thread.

langgraph-checkpoint-postgres 3.2 hands three pieces of work to `asyncio.to_thread`: serializing a
task's writes, serializing a checkpoint's blobs, and loading a checkpoint's pending writes. A tool
turn makes five or six such hops. The work itself is small: a step's writes and, with delta
storage, the turn's new messages. It also holds the GIL all along (ormsgpack, and Python code for
LangChain's objects), so a hop runs nothing in parallel. What it does cost is a worker thread's
wake-up and a GIL hand-off each way, and on a busy loop the thread waits for the GIL.
Measured with the hop patched out of the stock methods in the server (1 process on PostgreSQL, Ask
at c=32, two alternating pairs): 58.7 and 59.4 -> 62.4 and 62.2 turns a second, server CPU 17.3 ->
16.2 ms a turn.

The three methods are the stock ones (langgraph-checkpoint-postgres 3.2.0, pinned) with the hop
taken out and one fix (a string channel value holding NUL is stored as a blob, since JSONB cannot
hold NUL; the stock saver fails the write), and nothing else changed: `tests/unit/storage/test_postgres_serde.py`
holds them to the stock saver's rows and reads. The stock in-process baseline of `bench/` keeps its hops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb


class SerdeOnLoopPostgresSaver(AsyncPostgresSaver):
    """AsyncPostgresSaver whose writes and reads serialize on the caller's event loop."""

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        configurable = config["configurable"].copy()
        thread_id = configurable.pop("thread_id")
        checkpoint_ns = configurable.pop("checkpoint_ns")
        checkpoint_id = configurable.pop("checkpoint_id", None)

        copy = checkpoint.copy()
        copy["channel_values"] = copy["channel_values"].copy()
        next_config: RunnableConfig = {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": checkpoint["id"],
            }
        }
        # Primitive values are stored inline in the checkpoint's row, the rest in the blobs table.
        # Unlike the stock saver, a string holding NUL goes to the blobs table: JSONB refuses it.
        blob_values = {}
        for k, v in checkpoint["channel_values"].items():
            if isinstance(v, _DeltaSnapshot):
                blob_values[k] = copy["channel_values"].pop(k)
                copy["channel_values"][k] = True
            elif v is None or isinstance(v, (int, float, bool)) or (isinstance(v, str) and "\x00" not in v):
                pass
            else:
                blob_values[k] = copy["channel_values"].pop(k)

        async with self._cursor(pipeline=True) as cur:
            if blob_versions := {k: v for k, v in new_versions.items() if k in blob_values}:
                await cur.executemany(
                    self.UPSERT_CHECKPOINT_BLOBS_SQL,
                    self._dump_blobs(thread_id, checkpoint_ns, blob_values, blob_versions),
                )
            await cur.execute(
                self.UPSERT_CHECKPOINTS_SQL,
                (
                    thread_id,
                    checkpoint_ns,
                    checkpoint["id"],
                    checkpoint_id,
                    Jsonb(copy),
                    Jsonb(get_serializable_checkpoint_metadata(config, metadata)),
                ),
            )
        return next_config

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        query = (
            self.UPSERT_CHECKPOINT_WRITES_SQL
            if all(w[0] in WRITES_IDX_MAP for w in writes)
            else self.INSERT_CHECKPOINT_WRITES_SQL
        )
        configurable = config["configurable"]
        params = self._dump_writes(
            configurable["thread_id"],
            configurable["checkpoint_ns"],
            configurable["checkpoint_id"],
            task_id,
            task_path,
            writes,
        )
        async with self._cursor(pipeline=True) as cur:
            await cur.executemany(query, params)

    async def _load_checkpoint_tuple(self, value: DictRow) -> CheckpointTuple:
        parent = value["parent_checkpoint_id"]
        return CheckpointTuple(
            {
                "configurable": {
                    "thread_id": value["thread_id"],
                    "checkpoint_ns": value["checkpoint_ns"],
                    "checkpoint_id": value["checkpoint_id"],
                }
            },
            cast(
                Checkpoint,
                {
                    **value["checkpoint"],
                    "channel_values": {
                        **(value["checkpoint"].get("channel_values") or {}),
                        **self._load_blobs(value["channel_values"]),
                    },
                },
            ),
            value["metadata"],
            (
                {
                    "configurable": {
                        "thread_id": value["thread_id"],
                        "checkpoint_ns": value["checkpoint_ns"],
                        "checkpoint_id": parent,
                    }
                }
                if parent
                else None
            ),
            self._load_writes(value["pending_writes"]),
        )
