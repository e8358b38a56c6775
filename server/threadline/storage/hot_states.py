"""The conversations of recently used threads, kept in the replica's memory by checkpoint.

Reading a thread's state decodes its whole conversation (and, for the default agent's
delta-stored messages, replays the writes since the last snapshot), so without this
every turn and every History call would cost time that grows with the thread.

Why this is safe: a checkpoint never changes once written, and its id is unique, so
the messages *at a checkpoint* can be kept and reused as long as the process likes.
Only the question "which checkpoint is the head" must go to the database, and it
always does. Entries come from the live run (LangGraph's "checkpoints" stream part,
the channel values at the moment each checkpoint was made), never from guesses.

Nothing here is copied: callers must not change the lists or messages they get.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import DeltaChannelHistory

MESSAGES = "messages"
CHECKPOINTS_PER_THREAD = 16
"""The newest checkpoints kept per thread: enough for a History page (a turn makes 3-4).

Newest by checkpoint id (UUIDv6, time first), not by when they were remembered: reading
an old page of a thread's History must not push its head out."""
MAX_MESSAGES = 200_000
"""Messages kept in all (counted by each thread's newest list: its checkpoints share them).

Bounds memory when the threads are long, whatever THREADLINE_HOT_THREADS says: at a
few KiB per message this is some hundreds of MiB at worst. The least recently used
threads go first; the thread just used stays, however long it is.
"""


class HotStates:
    """Messages at recent checkpoints of the most recently used threads (LRU over threads)."""

    def __init__(self, max_threads: int, max_messages: int = MAX_MESSAGES) -> None:
        self._max_threads = max_threads
        self._max_messages = max_messages
        self._threads: OrderedDict[str, dict[str, list[BaseMessage]]] = OrderedDict()
        self._weights: dict[str, int] = {}
        self._messages = 0

    def remember(self, thread_key: str, checkpoint_id: str, messages: list[BaseMessage]) -> None:
        """Keeps the messages at a checkpoint just made by a run of this process."""
        if self._max_threads <= 0:
            return
        checkpoints = self._threads.get(thread_key)
        if checkpoints is None:
            checkpoints = self._threads[thread_key] = {}
        else:
            self._threads.move_to_end(thread_key)
        checkpoints[checkpoint_id] = messages
        while len(checkpoints) > CHECKPOINTS_PER_THREAD:
            del checkpoints[min(checkpoints)]
        newest = len(checkpoints[max(checkpoints)])
        self._messages += newest - self._weights.get(thread_key, 0)
        self._weights[thread_key] = newest
        while len(self._threads) > 1 and (
            len(self._threads) > self._max_threads or self._messages > self._max_messages
        ):
            self.forget(next(iter(self._threads)))

    def messages_at(self, thread_key: str, checkpoint_id: str) -> list[BaseMessage] | None:
        """The messages at the checkpoint, if this process knows them."""
        checkpoints = self._threads.get(thread_key)
        if checkpoints is None:
            return None
        found = checkpoints.get(checkpoint_id)
        if found is not None:
            self._threads.move_to_end(thread_key)
        return found

    def forget(self, thread_key: str) -> None:
        """Drops a thread (deleted, or the least recently used)."""
        self._threads.pop(thread_key, None)
        self._messages -= self._weights.pop(thread_key, 0)

    def __len__(self) -> int:
        return len(self._threads)

    @property
    def message_count(self) -> int:
        """Messages kept, as counted against MAX_MESSAGES."""
        return self._messages


class HotStatesSaverMixin:
    """Put before a checkpoint saver class: rebuilds a hot thread's delta-stored messages from memory.

    LangGraph asks the saver for the writes to replay (`aget_delta_channel_history`) whenever
    it loads a checkpoint whose messages are delta-stored: at the start of every turn and in
    every state read. For a checkpoint this process knows, the answer is the list itself as
    the seed, with nothing to replay.
    """

    hot_states: HotStates = HotStates(0)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        configurable = config.get("configurable", {})
        checkpoint_id = configurable.get("checkpoint_id")
        if list(channels) == [MESSAGES] and checkpoint_id and not configurable.get("checkpoint_ns"):
            known = self.hot_states.messages_at(str(configurable["thread_id"]), str(checkpoint_id))
            if known is not None:
                seed: Any = known
                return {MESSAGES: {"writes": [], "seed": seed}}
        return await super().aget_delta_channel_history(config=config, channels=channels)  # type: ignore[misc,no-any-return]
