"""Reads of a thread's checkpoints for History, GetState and Rewind: the head, steps back, a checkpoint's view."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.graph.state import CompiledStateGraph

from threadline.engine.messages import preview_of
from threadline.engine.snapshots import id_of, parse_ts, stored_messages, writers
from threadline.engine.views import CheckpointView
from threadline.errors import NotFound, OutOfRange
from threadline.storage import audit
from threadline.storage.hot_states import HotStates

# LangGraph's pseudo-node for copying a checkpoint: the copy gets the target's
# state and becomes the newest checkpoint of the thread, i.e. its head.
COPY_NODE = "__copy__"


def checkpoint_not_found(checkpoint_id: str, thread_id: str) -> NotFound:
    """NOT_FOUND for a checkpoint the thread does not have."""
    return NotFound(f"checkpoint {checkpoint_id} not found in thread {thread_id!r}", reason="CHECKPOINT_NOT_FOUND")


class CheckpointReads:
    """Reads one graph's checkpoints; conversations come from the replica's hot states where it has them."""

    def __init__(
        self, graph: CompiledStateGraph[Any, Any, Any, Any], saver: BaseCheckpointSaver[str], hot: HotStates
    ) -> None:
        self._graph = graph
        self._saver = saver
        self._hot = hot

    async def head(self, config: RunnableConfig, thread_id: str) -> CheckpointTuple:
        """The thread's newest checkpoint; NOT_FOUND if it has none."""
        head = await self._saver.aget_tuple(config)
        if head is None:
            raise NotFound(f"thread {thread_id!r} not found", reason="THREAD_NOT_FOUND")
        return head

    async def walk_back(self, head: CheckpointTuple, steps: int) -> CheckpointTuple:
        """The checkpoint `steps` parents before head; OUT_OF_RANGE past the first."""
        current = head
        for taken in range(steps):
            if current.parent_config is None:
                raise OutOfRange(
                    f"steps_back={steps} reaches past the thread's first checkpoint: "
                    f"the current branch has {taken} checkpoint{'s' if taken != 1 else ''} before its head",
                    reason="STEPS_OUT_OF_RANGE",
                )
            parent = await self._saver.aget_tuple(current.parent_config)
            if parent is None:  # the chain was cut (e.g. a partly deleted thread): nothing further back
                raise OutOfRange(
                    f"steps_back={steps} reaches past the thread's stored checkpoints", reason="STEPS_OUT_OF_RANGE"
                )
            current = parent
        return current

    async def view(self, item: CheckpointTuple, known: dict[str, CheckpointTuple]) -> CheckpointView:
        """What History shows of a checkpoint; `known` holds checkpoints already read (its parent, maybe)."""
        metadata: dict[str, Any] = dict(item.metadata or {})
        source = str(metadata.get("source", ""))
        parent_id = item.parent_config["configurable"]["checkpoint_id"] if item.parent_config else ""
        if source == "input":
            nodes: tuple[str, ...] = ("__input__",)
        elif source == "fork":
            nodes = (COPY_NODE,)
        else:
            parent = known.get(parent_id) if parent_id else None
            if parent is None and item.parent_config is not None:
                parent = await self._saver.aget_tuple(item.parent_config)
            nodes = writers(item, parent)
        messages = await self.messages_at(item)
        return CheckpointView(
            checkpoint_id=id_of(item),
            parent_checkpoint_id=parent_id,
            step=int(metadata.get("step", 0)),
            created_at=parse_ts(item.checkpoint["ts"]),
            nodes=nodes,
            source=source,
            preview=preview_of(messages),
            message_count=len(messages),
            rpc=str(metadata.get(audit.RPC, "")),
            request_id=str(metadata.get(audit.REQUEST_ID, "")),
            rewound_to_checkpoint_id=str(metadata.get(audit.REWOUND_TO, "")),
            replica=str(metadata.get(audit.REPLICA, "")),
        )

    async def messages_at(self, item: CheckpointTuple) -> list[BaseMessage]:
        """The conversation at a checkpoint: stored whole, known to this replica, or rebuilt by LangGraph."""
        stored = stored_messages(item)
        if stored is not None:
            return stored
        thread_key = str(item.config["configurable"]["thread_id"])
        known = self._hot.messages_at(thread_key, id_of(item))
        if known is not None:
            return known
        state = await self._graph.aget_state(item.config)
        messages: list[BaseMessage] = list(state.values.get("messages", []))
        self._hot.remember(thread_key, id_of(item), messages)
        return messages
