"""Hot states: what a replica keeps in memory is bounded by threads, by checkpoints per thread and by messages."""

from __future__ import annotations

from langchain_core.messages import BaseMessage, HumanMessage

from threadline.storage.hot_states import CHECKPOINTS_PER_THREAD, HotStates


def _messages(n: int) -> list[BaseMessage]:
    return [HumanMessage(content=f"m{i}", id=f"m{i}") for i in range(n)]


def test_the_least_recently_used_thread_goes_first() -> None:
    hot = HotStates(max_threads=2)
    hot.remember("a", "1", _messages(1))
    hot.remember("b", "1", _messages(1))
    assert hot.messages_at("a", "1") is not None  # a is now the most recently used
    hot.remember("c", "1", _messages(1))
    assert hot.messages_at("b", "1") is None
    assert hot.messages_at("a", "1") is not None and hot.messages_at("c", "1") is not None
    assert len(hot) == 2


def test_a_thread_keeps_only_its_newest_checkpoints() -> None:
    hot = HotStates(max_threads=10)
    # Checkpoint ids are fixed-width and time-ordered (UUIDv6), like these.
    for checkpoint in range(CHECKPOINTS_PER_THREAD + 3):
        hot.remember("a", f"{checkpoint:04d}", _messages(checkpoint))
    assert hot.messages_at("a", "0000") is None and hot.messages_at("a", "0002") is None
    assert hot.messages_at("a", "0003") is not None
    newest = hot.messages_at("a", f"{CHECKPOINTS_PER_THREAD + 2:04d}")
    assert newest is not None and len(newest) == CHECKPOINTS_PER_THREAD + 2


def test_reading_an_old_checkpoint_does_not_push_out_the_newest() -> None:
    hot = HotStates(max_threads=10)
    for checkpoint in range(10, 10 + CHECKPOINTS_PER_THREAD):
        hot.remember("a", str(checkpoint), _messages(checkpoint))
    hot.remember("a", "05", _messages(5))  # an older page of History, read back cold
    assert hot.messages_at("a", "05") is None
    assert all(hot.messages_at("a", str(c)) is not None for c in range(10, 10 + CHECKPOINTS_PER_THREAD))
    assert hot.message_count == 10 + CHECKPOINTS_PER_THREAD - 1


def test_long_threads_are_bounded_by_messages_but_the_current_one_stays() -> None:
    hot = HotStates(max_threads=100, max_messages=250)
    hot.remember("a", "1", _messages(100))
    hot.remember("b", "1", _messages(100))
    assert hot.message_count == 200
    hot.remember("a", "2", _messages(120))  # a grows: counted once, by its newest list
    assert hot.message_count == 220 and len(hot) == 2
    hot.remember("c", "1", _messages(100))  # over 250: b, the least recently used, goes
    assert hot.messages_at("b", "1") is None and hot.message_count == 220
    hot.remember("d", "1", _messages(1000))  # longer than the bound alone: kept, all others go
    assert len(hot) == 1 and hot.messages_at("d", "1") is not None and hot.message_count == 1000


def test_forget_and_off() -> None:
    hot = HotStates(max_threads=10)
    hot.remember("a", "1", _messages(3))
    hot.forget("a")
    assert hot.messages_at("a", "1") is None and hot.message_count == 0
    off = HotStates(max_threads=0)
    off.remember("a", "1", _messages(3))
    assert off.messages_at("a", "1") is None and len(off) == 0
