"""A graph run's astream parts, read in a task of its own, with its models' streamed messages when asked.

The task of its own: a turn ended early must have its run stopped before it lets the thread
go. LangGraph's astream, iterated in the turn's task, stops its run when that task is
cancelled, but a second cancellation while it stops (a passed deadline cancels the turn twice:
our own timeout and grpc.aio's) ends the wait early, and the turn moves on with its run still
stopping. Here the run is
cancelled once, by us, and waited for through any number of cancellations of the turn
(tests/unit/engine/test_streamed_run.py).

The messages: LangGraph's stream_mode="messages" hands every streamed token to the caller
through its own queue: a thread-safe wake-up of the event loop (`call_soon_threadsafe`), a new
asyncio task waiting on that queue, and an `asyncio.wait` over the step's running tasks, all
once a token. That was a tenth of a streaming server's instructions per token (callgrind:
758 k -> 674 k), and CPU per token is what sets a busy server's time to first token
(docs/performance.md). Here the run is streamed without "messages", and LangGraph's own handler
of that mode (`StreamMessagesHandler`, so which messages are streamed stays LangGraph's: the
same filters for tags, subgraphs and messages already seen) is put on the run's callbacks instead,
putting each message into one queue with the run's other parts. The parts come in the order
the run made them: a node's streamed messages before its update.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langgraph.pregel._messages import StreamMessagesHandler

Part = tuple[str, Any]
"""(mode, payload), as astream(stream_mode=[...]) yields them; "messages" parts are (message, metadata)."""


class _RootGraphMessages(StreamMessagesHandler):
    """LangGraph's messages handler as astream(stream_mode="messages", subgraphs=False) makes it, given as a callback.

    LangGraph makes its own handler once the run has started, and adds it to the run's
    callbacks. One given in the run's config is there before: at the start of every graph
    run not started as a task (the root run, and a graph invoked with a thread of its own
    inside a node) LangGraph drops a given handler that does not stream subgraphs
    (`_streams_only_its_graph`), taking it for an outer graph's. So this one says it
    streams subgraphs until the root run has started, which is the first chain start it
    sees, and from then on is LangGraph's handler with subgraphs=False: LangGraph's own
    checks filter out a subgraph's messages, and drop it from a graph invoked with a
    thread of its own, as they drop their own handler there.
    """

    def __init__(self, stream: Callable[[tuple[tuple[str, ...], str, Any]], None]) -> None:
        self._root_run_started = False
        super().__init__(stream, subgraphs=False)

    @property  # type: ignore[override]
    def subgraphs(self) -> bool:
        return not self._root_run_started

    @subgraphs.setter
    def subgraphs(self, value: bool) -> None:
        # StreamMessagesHandler.__init__ sets it: this handler is always subgraphs=False once started.
        assert not value, "a handler of the root graph's messages only"

    def on_chain_start(self, serialized: dict[str, Any], inputs: dict[str, Any], **kwargs: Any) -> Any:
        self._root_run_started = True
        return super().on_chain_start(serialized, inputs, **kwargs)


class _End:
    """The run ended; `failure` is what it raised, if anything."""

    def __init__(self, failure: BaseException | None = None) -> None:
        self.failure = failure


async def parts_of(
    run: Callable[[list[BaseCallbackHandler]], AsyncGenerator[Part, None]], *, messages: bool
) -> AsyncGenerator[Part, None]:
    """The parts of `run(callbacks)`; with `messages`, ("messages", (message, metadata)) parts too, as models stream.

    `run` starts the graph's astream with the given callbacks added to its config (with
    `messages` the models then stream; without, none is given). The run goes on in a task of
    its own, created here, so its context variables are this task's at the start. Closing this
    generator (or cancelling the task reading it, once or more) cancels that task and waits for
    the run to end: nothing of the run goes on after this generator is closed. What the run
    raises is raised here, a cancellation of its task by someone else too.
    """
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()
    queue: asyncio.Queue[Part | _End] = asyncio.Queue()

    def put_message(chunk: tuple[tuple[str, ...], str, Any]) -> None:
        _namespace, mode, payload = chunk
        if threading.get_ident() == loop_thread:
            queue.put_nowait((mode, payload))
        else:  # a sync node runs in an executor thread: its model's callbacks come from there
            loop.call_soon_threadsafe(queue.put_nowait, (mode, payload))

    callbacks: list[BaseCallbackHandler] = [_RootGraphMessages(put_message)] if messages else []

    async def read_run() -> None:
        end = _End()
        try:
            async with aclosing(run(callbacks)) as parts:
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
        await _until_done(reader)


async def _until_done(task: asyncio.Task[None]) -> None:
    """Waits for the task to end, even through cancellations of the waiting task (re-raised after)."""
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})  # which does not cancel what it waits for
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
