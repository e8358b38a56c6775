"""The checkpoint bytes written: every value a saver serializes, through LangGraph's public serializer interface."""

from __future__ import annotations

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver

from threadline.storage.contract import MeasuredSerializer, safe_serializer


def test_the_sizes_of_what_a_saver_serializes_to_write_are_told() -> None:
    sizes: list[int] = []
    saver = InMemorySaver(serde=safe_serializer(sizes.append))
    config: RunnableConfig = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"messages": ["hello"] * 100}
    saver.put(config, checkpoint, {}, {"messages": saver.get_next_version(None, None)})
    assert sizes and sum(sizes) > 500
    read = len(sizes)
    assert saver.get_tuple(config) is not None
    assert len(sizes) == read, "reading serializes nothing"


def test_a_clone_with_an_allowlist_still_measures_and_stays_strict() -> None:
    sizes: list[int] = []
    saver = InMemorySaver(serde=safe_serializer(sizes.append))
    clone = saver.with_allowlist([("tests", "unit", "storage", "Thing")])
    assert isinstance(clone.serde, MeasuredSerializer)
    clone.serde.dumps_typed({"a": 1})
    assert len(sizes) == 1
