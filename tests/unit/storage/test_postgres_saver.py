"""Our PostgreSQL saver against a real PostgreSQL, where the conformance suite does not reach.

The conformance suite (test_conformance.py) does not exercise delta channels, stored values
holding NUL, or reads of rows as langgraph-checkpoint-postgres wrote them; these do.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import END, START, StateGraph

from threadline.storage import postgres_holds
from threadline.storage.contract import safe_serializer
from threadline.storage.postgres_pool import Pool, open_pool
from threadline.storage.postgres_saver import PostgresSaver


def _concatenated(value: list[str], writes: Sequence[list[str]]) -> list[str]:
    return [*value, *(item for write in writes for item in write)]


NUL = "\x00"


class _State(TypedDict):
    items: Annotated[list[str], DeltaChannel(_concatenated, snapshot_frequency=3)]
    note: str


def _graph(saver: BaseCheckpointSaver[str], *, nul: str = "\x00") -> Any:
    """One step a turn, adding to a delta channel; strings with NUL in both channels unless nul=""."""

    def step(state: _State) -> dict[str, Any]:
        return {"items": [f"item{len(state['items'])}{nul}"], "note": f"odd {nul}" if len(state["items"]) % 2 else "n"}

    builder = StateGraph(_State)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    builder.add_edge("step", END)
    return builder.compile(checkpointer=saver)


@pytest.fixture
async def pool(fresh_postgres_url: str) -> AsyncIterator[Pool]:
    opened = await open_pool(fresh_postgres_url, min_size=1, max_size=2, timeout_s=5, prepare_threshold=0)
    await postgres_holds.setup(opened)
    yield opened
    await opened.close()


async def _checkpoints(saver: BaseCheckpointSaver[str], thread: str) -> list[RunnableConfig]:
    return [t.config async for t in saver.alist({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})]


async def test_delta_history_is_what_langgraphs_own_walk_of_the_parent_chain_finds(pool: Pool) -> None:
    saver = PostgresSaver(pool, serde=safe_serializer())
    await saver.setup()
    graph = _graph(saver)
    thread = uuid.uuid4().hex
    config: RunnableConfig = {"configurable": {"thread_id": thread}}
    for turn in range(8):
        await graph.ainvoke({"items": [f"question{turn}"]}, config, durability="sync")
    # A fork from an early checkpoint: its chain is not the newest rows' chain.
    before_fork = await _checkpoints(saver, thread)
    main_head, early = before_fork[0], before_fork[-4]
    await graph.ainvoke({"items": ["forked"]}, early, durability="sync")

    checkpoints = await _checkpoints(saver, thread)
    assert len(checkpoints) > 20
    for checkpoint in checkpoints:
        ours = await saver.aget_delta_channel_history(config=checkpoint, channels=["items", "note"])
        walked = await BaseCheckpointSaver.aget_delta_channel_history(
            saver, config=checkpoint, channels=["items", "note"]
        )
        assert ours == walked, checkpoint
    forked = (await graph.aget_state(config)).values
    assert forked["items"][-2] == "forked" and forked["items"][-1].endswith(NUL)
    main_branch = (await graph.aget_state(main_head)).values
    assert main_branch["items"][-2:] == ["question7", f"item15{NUL}"]
    assert main_branch["note"] == f"odd {NUL}"


async def test_rows_written_by_langgraph_checkpoint_postgres_read_the_same(pool: Pool) -> None:
    async with pool.connection() as conn:
        stock = AsyncPostgresSaver(conn, serde=safe_serializer())
        await stock.setup()
        graph = _graph(stock, nul="")  # the stock saver cannot store a string with NUL
        thread = uuid.uuid4().hex
        config: RunnableConfig = {"configurable": {"thread_id": thread}}
        for turn in range(5):
            await graph.ainvoke({"items": [f"question{turn}"], "note": "plain"}, config, durability="sync")
        written = [t async for t in stock.alist(config)]
        stock_state = await graph.aget_state(config)

    ours = PostgresSaver(pool, serde=safe_serializer())
    await ours.setup()  # on tables the stock saver created: nothing to migrate but our own index
    read = [t async for t in ours.alist(config)]
    assert [(t.config, t.checkpoint, t.metadata, t.parent_config, t.pending_writes) for t in read] == [
        (t.config, t.checkpoint, t.metadata, t.parent_config, t.pending_writes) for t in written
    ]
    assert (await _graph(ours).aget_state(config)).values == stock_state.values
