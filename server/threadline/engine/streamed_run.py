"""A graph run's astream parts, read in a task of its own.

The task of its own: a turn ended early must have its run stopped before it lets the thread
go. LangGraph's astream, iterated in the turn's task, stops its run when that task is
cancelled, but a second cancellation while it stops (a passed deadline cancels the turn twice:
our own timeout and grpc.aio's) ends the wait early, and the turn moves on with its run still
stopping. Here the run is cancelled once, by us, and waited for through any number of
cancellations of the turn (tests/unit/engine/test_streamed_run.py).

The parts are LangGraph's own, as its astream yields them: a streamed turn asks for its
models' tokens with LangGraph's public stream_mode "messages" (without subgraphs, so
LangGraph streams the root graph's models only), in the order the run made them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

Part = tuple[str, Any]
"""(mode, payload), as astream(stream_mode=[...]) yields them; "messages" parts are (message, metadata)."""


class _End:
    """The run ended; `failure` is what it raised, if anything."""

    def __init__(self, failure: BaseException | None = None) -> None:
        self.failure = failure


async def parts_of(run: Callable[[], AsyncGenerator[Part, None]]) -> AsyncGenerator[Part, None]:
    """The parts of `run()`, a graph's astream, as it yields them.

    The run goes on in a task of its own, created here, so its context variables are this
    task's at the start. Closing this generator (or cancelling the task reading it, once or
    more) cancels that task and waits for the run to end: nothing of the run goes on after this
    generator is closed. What the run raises is raised here, a cancellation of its task by
    someone else too.
    """
    queue: asyncio.Queue[Part | _End] = asyncio.Queue()

    async def read_run() -> None:
        end = _End()
        try:
            async with aclosing(run()) as parts:
                async for part in parts:
                    queue.put_nowait(part)
        except Exception as exc:  # the turn raises it, in its own task
            end = _End(exc)
        except BaseException as exc:  # cancelled: by us as the turn ends, or by someone else (the turn raises it)
            end = _End(exc)
            raise
        finally:
            queue.put_nowait(end)

    reader = asyncio.create_task(read_run(), name="threadline-graph-run")
    try:
        while True:
            item = await queue.get()
            if isinstance(item, _End):
                if item.failure is not None:
                    raise item.failure
                return
            yield item
    finally:
        reader.cancel()
        await until_done(reader)


async def until_done(task: asyncio.Task[Any]) -> None:
    """Waits for the task to end, even through cancellations of the waiting task (re-raised after)."""
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})  # which does not cancel what it waits for
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
