"""Every saver we serve passes LangGraph's own checkpointer conformance suite, outside a turn's hold and inside one.

langgraph-checkpoint-conformance exercises a BaseCheckpointSaver through its public interface
(put, put_writes, get_tuple, list, delete_thread, and the extended capabilities a saver
overrides). Each backend's storage is opened exactly as the server opens it (storage.urls.
open_storage): memory and SQLite in a fresh store, PostgreSQL in a database of the test's own.

* Outside a hold: the suite runs on `storage.saver`, the saver the graph is compiled with,
  each of whose writes holds its thread for that write alone.
* Inside holds: the suite runs on `_ThroughHolds`, which does what the engine does for a
  turn: a call on a thread goes to the saver of a hold on that thread (`storage.locks.hold`,
  `ThreadHold.saver`), taken at the thread's first call and kept, as a turn keeps its hold
  for all of its writes. A call naming no thread (a listing across threads) first ends
  every hold, as turns end, so what they left waiting is sent (on PostgreSQL with the
  release: postgres_writes), then reads through `storage.saver`. So on PostgreSQL the
  suite sees writes deferred, fenced, read back through the hold (its own writes first) and
  the head read with the take.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.conformance import checkpointer_test, validate

from threadline.config import Settings
from threadline.storage.contract import Storage
from threadline.storage.thread_locks import ThreadHold
from threadline.storage.urls import open_storage


class _ThroughHolds(BaseCheckpointSaver[str]):
    """Each thread's calls through a hold on that thread, as a turn makes them (module docstring)."""

    def __init__(self, storage: Storage) -> None:
        super().__init__(serde=storage.saver.serde)
        self._storage = storage
        self._holds: dict[str, tuple[ThreadHold, AbstractAsyncContextManager[ThreadHold]]] = {}

    async def _saver_for(self, thread_id: Any) -> BaseCheckpointSaver[str]:
        if thread_id is None:
            await self.end_holds()
            return self._storage.saver
        thread = str(thread_id)
        if thread not in self._holds:
            # A thread id as the checkpoint tables hold it: the suite's are not a tenant's.
            taking = self._storage.locks.hold(thread, wait=False, deadline=None)  # type: ignore[arg-type]
            self._holds[thread] = (await taking.__aenter__(), taking)
        return self._holds[thread][0].saver

    async def end_holds(self) -> None:
        holds, self._holds = self._holds, {}
        for _, taking in holds.values():
            await taking.__aexit__(None, None, None)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await (await self._saver_for(config["configurable"]["thread_id"])).aget_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        thread_id = (config or {}).get("configurable", {}).get("thread_id")
        saver = await self._saver_for(thread_id)
        async for item in saver.alist(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        saver = await self._saver_for(config["configurable"]["thread_id"])
        return await saver.aput(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        saver = await self._saver_for(config["configurable"]["thread_id"])
        await saver.aput_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await (await self._saver_for(thread_id)).adelete_thread(thread_id)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        saver = await self._saver_for(config["configurable"]["thread_id"])
        return await saver.aget_delta_channel_history(config=config, channels=channels)

    def get_next_version(self, current: str | None, channel: None) -> str:
        return self._storage.saver.get_next_version(current, channel)


def _registered(url_of: Any, name: str, *, held: bool) -> Any:
    @checkpointer_test(name=name)
    async def saver() -> AsyncIterator[Any]:
        async with open_storage(url_of(), Settings().storage) as storage:
            if not held:
                yield storage.saver
                return
            through_holds = _ThroughHolds(storage)
            try:
                yield through_holds
            finally:
                await through_holds.end_holds()

    return saver


@pytest.mark.parametrize("held", [False, True], ids=["outside a hold", "inside holds"])
@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"])
async def test_the_saver_passes_langgraphs_conformance_suite(
    backend: str, held: bool, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    files = iter(range(1_000))
    urls = {
        "memory": lambda: "memory://",
        "sqlite": lambda: f"sqlite:///{tmp_path / f'conformance-{next(files)}.db'}",
        "postgres": lambda: request.getfixturevalue("fresh_postgres_url"),
    }
    report = await validate(_registered(urls[backend], f"threadline {backend} held={held}", held=held))
    failures = {name: result.failures for name, result in report.results.items() if result.failures}
    assert report.passed_all(), f"{report.conformance_level()}: {failures}"
    assert report.passed_all_base()
