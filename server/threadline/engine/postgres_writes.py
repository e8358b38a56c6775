"""A turn's task writes go to PostgreSQL with its next checkpoint: one fenced round trip per step, not two.

LangGraph saves what each task of a step wrote (`aput_writes`) as soon as the task ends,
then the step's checkpoint (`aput`), which waits for writes to a DeltaChannel (our
messages) first. On PostgreSQL each is a fenced pipeline of its own: a tool turn made 9.
Inside a turn, the saver keeps a task's write statements here instead, and sends them in
front of the turn's next fenced write (the next checkpoint, or the thread's registry row),
in the same pipeline: one implicit transaction, so the checkpoint is still never stored
without the writes that produced it.

What that changes, and the bounds on it:

* A task's writes reach the database with its step's checkpoint rather than a round trip
  after the task. A step whose other tasks run on (parallel tool calls) does not hold them
  back for long: they are sent on their own `SEND_AFTER_S` after the first of them came.
* A read of the saver inside the turn sends them first, so the turn reads its own writes;
  the turn's end sends what is left before the thread is released (a task that failed or
  paused for a human writes no checkpoint after its writes).
* An error sending them (the fence refused: the thread was taken over; the database is
  down) is raised by whatever sends them: the next checkpoint, the read, or the turn's end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Params = Sequence[Any]
Statement = tuple[str, list[Params | None], bool]
"""(query, its rows of parameters, whether it runs once per row)."""

SEND_AFTER_S = 0.1
"""Longest a task's writes wait for their step's checkpoint before they are sent alone."""


@dataclass
class RecordedStatements:
    """Stands in for the cursor of a fenced write: keeps what the saver runs, to run it after the block.

    LangGraph's write methods only execute on that cursor, never read from it.
    """

    statements: list[Statement] = field(default_factory=list)

    async def execute(self, query: str, params: Params | None = None) -> None:
        """Records one statement."""
        self.statements.append((query, [params], False))

    async def executemany(self, query: str, params_seq: Sequence[Params]) -> None:
        """Records one statement run once per row."""
        self.statements.append((query, list(params_seq), True))


Send = Callable[[list[Statement]], Awaitable[None]]


class DeferredWrites:
    """The task writes of one turn that wait for its next checkpoint."""

    def __init__(self) -> None:
        self._waiting: list[Statement] = []
        self._send: Send | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._sending: asyncio.Future[None] | None = None

    def add(self, statements: list[Statement], send: Send) -> None:
        """Keeps a task's write statements; `send` sends them alone if no checkpoint comes in time."""
        self._waiting.extend(statements)
        self._send = send
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(SEND_AFTER_S, self._send_alone)

    async def take(self) -> list[Statement]:
        """The statements waiting, for the caller to send in front of its own.

        Waits for any sent alone before (a checkpoint must not commit before them), and
        raises what sending them raised.
        """
        await self._wait_for_send_in_flight()
        return self._pop()

    async def flush(self) -> None:
        """Sends what is waiting now, and raises what sending it raises."""
        await self._wait_for_send_in_flight()
        waiting = self._pop()
        if waiting:
            assert self._send is not None
            await self._send(waiting)

    def _pop(self) -> list[Statement]:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, []
        return waiting

    def _send_alone(self) -> None:
        self._timer = None
        if self._sending is not None:
            if not self._sending.done():
                # One send at a time, in order: these go after the one in flight.
                self._timer = asyncio.get_running_loop().call_later(SEND_AFTER_S, self._send_alone)
                return
            if self._sending.exception() is not None:
                return  # the next take or flush raises it; nothing more goes out meanwhile
            self._sending = None
        if self._waiting and self._send is not None:
            self._sending = asyncio.ensure_future(self._send(self._pop()))

    async def _wait_for_send_in_flight(self) -> None:
        sending = self._sending
        if sending is not None:
            try:
                await asyncio.shield(sending)
            finally:
                if sending.done():
                    self._sending = None
