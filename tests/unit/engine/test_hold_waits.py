"""A turn's wait for its thread: measured only when the thread was busy, until it is held or the turn gives up."""

from __future__ import annotations

import asyncio
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import pytest

from threadline.engine.hold_waits import measured_wait
from threadline.errors import ThreadBusy
from threadline.storage.thread_locks import LocalThreadLocks


@dataclass
class Waits:
    """A TurnObserver keeping the busy waits it hears of (the other reports are not used here)."""

    seen: list[dict[str, Any]] = field(default_factory=list)

    def busy_wait(self, **wait: Any) -> None:
        self.seen.append(wait)

    def model_request(self, **kwargs: Any) -> None: ...
    def tool_call(self, **kwargs: Any) -> None: ...
    def interrupts_created(self, **kwargs: Any) -> None: ...
    def interrupt_resumed(self, **kwargs: Any) -> None: ...
    def checkpoint_bytes_written(self, nbytes: int) -> None: ...


async def _turn(locks: LocalThreadLocks, waits: Waits, *, run_s: float = 0.0) -> None:
    async with measured_wait(nullcontext, traced=False, observer=waits, tenant="acme", rpc="Ask") as wait:
        async with locks.hold("thread", wait=True, deadline=None, step_aside=wait.step_aside):
            wait.held()
            await asyncio.sleep(run_s)


async def test_a_free_thread_is_no_busy_wait() -> None:
    waits = Waits()
    await _turn(LocalThreadLocks(max_wait_s=5), waits)
    assert waits.seen == []


async def test_a_turn_behind_another_waits_for_it_and_is_measured_once() -> None:
    locks, waits = LocalThreadLocks(max_wait_s=5), Waits()
    first = asyncio.create_task(_turn(locks, waits, run_s=0.2))
    await asyncio.sleep(0.01)
    await _turn(locks, waits)
    await first
    [wait] = waits.seen
    assert wait["tenant"] == "acme" and wait["rpc"] == "Ask" and wait["outcome"] == "held"
    assert 0.15 <= wait["waited_s"] < 1.0


async def test_a_turn_that_gives_up_on_its_busy_thread_is_measured_as_such() -> None:
    locks, waits = LocalThreadLocks(max_wait_s=0.05), Waits()
    first = asyncio.create_task(_turn(locks, waits, run_s=0.3))
    await asyncio.sleep(0.01)
    with pytest.raises(ThreadBusy):
        await _turn(locks, waits)
    await first
    [wait] = waits.seen
    assert wait["outcome"] == "gave_up" and wait["waited_s"] >= 0.04


async def test_a_failure_after_the_hold_is_not_the_waits() -> None:
    locks, waits = LocalThreadLocks(max_wait_s=5), Waits()
    first = asyncio.create_task(_turn(locks, waits, run_s=0.1))
    await asyncio.sleep(0.01)
    with pytest.raises(RuntimeError):
        async with measured_wait(nullcontext, traced=False, observer=waits, tenant="acme", rpc="Ask") as wait:
            async with locks.hold("thread", wait=True, deadline=None, step_aside=wait.step_aside):
                wait.held()
                raise RuntimeError("the turn failed")
    await first
    assert [w["outcome"] for w in waits.seen] == ["held"]
