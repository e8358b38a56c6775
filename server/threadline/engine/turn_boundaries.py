"""Where a turn begins: the checkpoint before a turn's question, and moves into the middle of a turn."""

from __future__ import annotations

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver

from threadline.engine.thread_access import Held
from threadline.errors import FailedPrecondition


async def refuse_mid_turn(held: Held, config: RunnableConfig, thread_id: str, *, paused_only: bool) -> None:
    """Refuses to move a thread to a checkpoint inside a turn where that would lose part of it.

    Rewind refuses a checkpoint where a turn paused for a human (the copy would drop the pause),
    a fork any checkpoint of an unfinished turn (the new question would follow a tool call left
    unanswered, or an unanswered question). Both name the checkpoint before that turn instead.
    """
    state = await held.graph.aget_state(config)
    if not (state.interrupts if paused_only else state.next):
        return
    checkpoint_id = config["configurable"]["checkpoint_id"]
    start = await before_question(held.saver, config)
    found = await held.saver.aget_tuple(start) if start is not None else None
    parent = found.parent_config if found is not None else None
    before = str(parent["configurable"]["checkpoint_id"]) if parent else ""  # none before a first turn
    what = "a turn paused for a human" if state.interrupts else "an unfinished turn"
    hint = f"; use {before}, the checkpoint before that turn" if before else ""
    raise FailedPrecondition(
        f"checkpoint {checkpoint_id} of thread {thread_id!r} is inside {what}{hint}",
        reason="CHECKPOINT_MID_TURN",
        metadata={"before_checkpoint_id": before} if before else {},
    )


async def before_question(saver: BaseCheckpointSaver[str], config: RunnableConfig) -> RunnableConfig | None:
    """The input checkpoint of the turn config belongs to: its state is the conversation before
    the turn's question (LangGraph applies an input in the step after its "input" checkpoint).
    None when the chain has no input checkpoint."""
    found = await saver.aget_tuple(config)
    while found is not None and (found.metadata or {}).get("source") != "input":
        found = await saver.aget_tuple(found.parent_config) if found.parent_config else None
    return found.config if found is not None else None
