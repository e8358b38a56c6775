"""A turn's wait for its thread: measured only when the thread was busy, until it is held or the turn gives up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import pytest

from threadline.engine.hold_waits import measured_wait
from threadline.errors import ThreadBusy
from threadline.storage.thread_locks import LocalThreadLocks, StepAside


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


async def _turn(
    locks: LocalThreadLocks,
    waits: Waits,
    *,
    holding: asyncio.Event | None = None,
    release: asyncio.Event | None = None,
    stepped_aside: asyncio.Event | None = None,
) -> None:
    """A turn on "thread": sets holding once it holds it, and keeps it until release is set (None: lets go at once).

    stepped_aside is set when the turn waits for the thread because another holds it.
    """
    inner = nullcontext if stepped_aside is None else _signalling(stepped_aside)
    async with measured_wait(inner, traced=False, observer=waits, tenant="acme", rpc="Ask") as wait:
        async with locks.hold("thread", wait=True, deadline=None, step_aside=wait.step_aside):
            wait.held()
            if holding is not None:
                holding.set()
            if release is not None:
                await release.wait()


async def test_a_free_thread_is_no_busy_wait() -> None:
    waits = Waits()
    await _turn(LocalThreadLocks(max_wait_s=5), waits)
    assert waits.seen == []


async def test_a_turn_behind_another_waits_for_it_and_is_measured_once() -> None:
    locks, waits = LocalThreadLocks(max_wait_s=5), Waits()
    holding, release, stepped_aside = asyncio.Event(), asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(_turn(locks, waits, holding=holding, release=release))
    await holding.wait()
    asked = time.perf_counter()
    second = asyncio.create_task(_turn(locks, waits, stepped_aside=stepped_aside))
    await stepped_aside.wait()
    busy_since = time.perf_counter()
    await asyncio.sleep(0.2)  # how long the thread stays busy: the least the second turn can have waited
    released = time.perf_counter()
    release.set()
    await asyncio.gather(first, second)
    answered = time.perf_counter()
    [wait] = waits.seen
    assert wait["tenant"] == "acme" and wait["rpc"] == "Ask" and wait["outcome"] == "held"
    # The wait is measured from the second turn's start to its hold, and nothing else.
    assert released - busy_since <= wait["waited_s"] <= answered - asked


async def test_a_turn_that_gives_up_on_its_busy_thread_is_measured_as_such() -> None:
    locks, waits = LocalThreadLocks(max_wait_s=0.05), Waits()
    holding, release = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(_turn(locks, waits, holding=holding, release=release))
    await holding.wait()
    with pytest.raises(ThreadBusy):
        await _turn(locks, waits)
    release.set()
    await first
    [wait] = waits.seen
    assert wait["outcome"] == "gave_up" and wait["waited_s"] >= 0.04


async def test_a_failure_after_the_hold_is_not_the_waits() -> None:
    locks, waits = LocalThreadLocks(max_wait_s=5), Waits()
    holding, release, stepped_aside = asyncio.Event(), asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(_turn(locks, waits, holding=holding, release=release))
    await holding.wait()

    async def failing_turn() -> None:
        inner = _signalling(stepped_aside)
        async with measured_wait(inner, traced=False, observer=waits, tenant="acme", rpc="Ask") as wait:
            async with locks.hold("thread", wait=True, deadline=None, step_aside=wait.step_aside):
                wait.held()
                raise RuntimeError("the turn failed")

    failing = asyncio.create_task(failing_turn())
    await stepped_aside.wait()
    release.set()
    with pytest.raises(RuntimeError):
        await failing
    await first
    assert [w["outcome"] for w in waits.seen] == ["held"]


def _signalling(stepped_aside: asyncio.Event) -> StepAside:
    """A turn's step_aside that sets stepped_aside: the turn waits for its busy thread from then on."""

    @asynccontextmanager
    async def step_aside() -> AsyncIterator[None]:
        stepped_aside.set()
        yield

    return step_aside
