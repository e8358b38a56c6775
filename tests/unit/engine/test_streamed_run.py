"""A turn's graph run is read in a task of its own, and its parts are LangGraph's own, in LangGraph's order.

`engine/streamed_run.py` reads the run in a task of its own. A caller must not be able to tell:
the parts must be exactly those of LangGraph's astream(stream_mode=[..., "messages"]), in the
same order, for a root graph's models, a subgraph's (not streamed, as without subgraphs=True),
a sync node's (its callbacks come from an executor thread) and a graph's invoked inside a node
on a thread of its own (not streamed either). A turn that ends early, or is cancelled again
while its run stops, must not leave its run going; what the run raises, a cancellation by
someone else included, must reach the turn.

These run the engine's module in process on LangGraph graphs with langchain-core's fake chat
model (not ours): what is checked is our handling of LangGraph's parts, against LangGraph's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, AnyMessage, BaseMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages

from threadline.engine.streamed_run import Part, parts_of

MODES: list[Any] = ["updates", "checkpoints"]
Run = Callable[[], AsyncGenerator[Part, None]]


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def _model(text: str) -> GenericFakeChatModel:
    """A chat model that streams `text` a word at a time (each chunk a word or a space), as often as asked."""

    class Forever:
        def __iter__(self) -> Forever:
            return self

        def __next__(self) -> AIMessage:
            return AIMessage(content=text)

    return GenericFakeChatModel(messages=Forever())


def _graph() -> Any:
    """root: an async model node, a node running a subgraph with a model of its own, a sync model node, and a
    node invoking another graph, with a model of its own, on a thread of its own."""
    sub_model, root_model, sync_model = _model("sub graph words"), _model("root model words"), _model("sync node words")
    other_model = _model("other thread words")

    async def sub_agent(state: State) -> dict[str, Any]:
        return {"messages": [await sub_model.ainvoke(state["messages"])]}

    sub = StateGraph(State)
    sub.add_node("sub_agent", sub_agent)
    sub.add_edge(START, "sub_agent")
    subgraph = sub.compile()

    async def other_agent(state: State) -> dict[str, Any]:
        return {"messages": [await other_model.ainvoke(state["messages"])]}

    other = StateGraph(State)
    other.add_node("other_agent", other_agent)
    other.add_edge(START, "other_agent")
    other_graph = other.compile(checkpointer=InMemorySaver())

    async def delegate(state: State) -> dict[str, Any]:
        # Not a subgraph: a graph run of its own, which LangGraph does not stream to this one's caller.
        done = await other_graph.ainvoke({"messages": state["messages"]}, {"configurable": {"thread_id": "other"}})
        return {"messages": [done["messages"][-1]]}

    async def agent(state: State) -> dict[str, Any]:
        return {"messages": [await root_model.ainvoke(state["messages"])]}

    def sync_agent(state: State) -> dict[str, Any]:  # LangGraph runs it in an executor thread
        return {"messages": [sync_model.invoke(state["messages"])]}

    builder = StateGraph(State)
    builder.add_node("agent", agent)
    builder.add_node("nested", subgraph)
    builder.add_node("sync_agent", sync_agent)
    builder.add_node("delegate", delegate)
    builder.add_edge(START, "agent")
    builder.add_edge("agent", "nested")
    builder.add_edge("nested", "sync_agent")
    builder.add_edge("sync_agent", "delegate")
    return builder.compile(checkpointer=InMemorySaver())


def _shape(part: Part) -> tuple[Any, ...]:
    """What a caller reads of a part: its mode and, for messages, the message's kind, text and node.

    Not its id: a streamed message's id is its model run's, new in every run.
    """
    mode, payload = part
    if mode == "messages":
        message: BaseMessage = payload[0]
        return (mode, type(message).__name__, message.content, payload[1].get("langgraph_node"))
    if mode == "checkpoints":
        return (mode, payload["metadata"]["source"], payload["metadata"]["step"])
    return (mode, sorted(payload))


def _run_of_one_node(node: Callable[[State], Awaitable[dict[str, Any]]]) -> Run:
    """What parts_of starts: a run of a graph of that one node."""
    builder = StateGraph(State)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    graph = builder.compile(checkpointer=InMemorySaver())

    def run() -> AsyncGenerator[Part, None]:
        config: Any = {"configurable": {"thread_id": "t"}}
        return graph.astream(  # type: ignore[no-any-return]
            {"messages": [("human", "hi")]}, config, stream_mode=[*MODES, "messages"]
        )

    return run


async def _read_all(node: Callable[[State], Awaitable[dict[str, Any]]]) -> None:
    """A turn that reads every part of a run of that one node."""
    async for _ in parts_of(_run_of_one_node(node)):
        pass


async def test_the_parts_are_langgraphs_own_messages_mode_in_the_same_order() -> None:
    graph = _graph()
    question = {"messages": [("human", "hello")]}

    stock_config: Any = {"configurable": {"thread_id": "stock"}}
    stock = [_shape(p) async for p in graph.astream(question, stock_config, stream_mode=[*MODES, "messages"])]

    def run() -> AsyncGenerator[Part, None]:
        config: Any = {"configurable": {"thread_id": "ours"}}
        return graph.astream(question, config, stream_mode=[*MODES, "messages"])  # type: ignore[no-any-return]

    ours = [_shape(p) async for p in parts_of(run)]

    assert ours == stock
    streamed = [s for s in ours if s[0] == "messages" and s[1] == AIMessageChunk.__name__]
    assert {s[3] for s in streamed} == {"agent", "sync_agent"}, "the root graph's models, async and sync"
    assert "".join(s[2] for s in streamed) == "root model wordssync node words"
    assert not any("sub" in str(s[2]) for s in streamed), "a subgraph's model is not streamed (subgraphs=False)"
    assert ("messages", AIMessage.__name__, "other thread words", "delegate") in ours, (
        "a graph invoked on a thread of its own: its model is not streamed, its answer is the delegating node's"
    )


async def test_a_turn_ended_early_ends_its_run_before_it_returns() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(state: State) -> dict[str, Any]:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    run = _run_of_one_node(slow)

    async with aclosing(parts_of(run)) as parts:
        first = await anext(parts)
        assert first[0] == "checkpoints"
        await asyncio.wait_for(started.wait(), 5)
    assert cancelled.is_set(), "the node was cancelled before closing returned"
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "threadline-graph-run"]

    # The same when the task reading the parts is cancelled.
    started.clear()
    cancelled.clear()

    reader = asyncio.create_task(_read_all(slow))
    await asyncio.wait_for(started.wait(), 5)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert cancelled.is_set()


async def test_what_the_run_raises_is_raised_to_the_turn() -> None:
    class ModelDown(Exception):
        pass

    async def failing(state: State) -> dict[str, Any]:
        raise ModelDown("the model endpoint is down")

    run = _run_of_one_node(failing)

    with pytest.raises(ModelDown, match="endpoint is down"):
        async for _ in parts_of(run):
            pass


async def test_a_second_cancellation_does_not_cut_the_wait_for_the_run() -> None:
    """A passed deadline cancels the turn twice (its own timeout and grpc.aio's): the run still ends first."""
    started, cleaning, cleaned = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow_to_stop(state: State) -> dict[str, Any]:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cleaning.set()
            await asyncio.sleep(0.05)  # closing a model's HTTP stream, say
            cleaned.set()
            raise
        return {}

    reader = asyncio.create_task(_read_all(slow_to_stop))
    await asyncio.wait_for(started.wait(), 5)
    reader.cancel()
    await asyncio.wait_for(cleaning.wait(), 5)
    reader.cancel()  # while the run is being stopped
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert cleaned.is_set(), "the turn ended before its run did"


async def test_a_run_cancelled_by_someone_else_ends_the_turn() -> None:
    """The turn does not wait forever for parts of a run that another task cancelled (a loop shutting down, say)."""

    started = asyncio.Event()

    async def forever(state: State) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(3600)
        return {}

    turn = asyncio.create_task(_read_all(forever))
    await asyncio.wait_for(started.wait(), 5)
    (run,) = [t for t in asyncio.all_tasks() if t.get_name() == "threadline-graph-run"]
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(turn, 5)
