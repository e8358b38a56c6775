"""A turn's writes wait on its hold and go to PostgreSQL together, in as few round trips as they can.

LangGraph saves what each task of a step wrote (`aput_writes`) as soon as the task ends,
and each step's checkpoint (`aput`) before the next step starts (durability "sync"). Sent
one by one, a tool turn's five checkpoints and four task writes would make nine fenced
round trips, and the thread registry's row a tenth. The saver bound to a turn's hold
(postgres_saver) and the registry bound to it put those statements here instead and return
at once. They are sent in one pipeline (one implicit transaction) with the turn's release
when it ends (postgres_holds), or in front of any other write of the turn, which cannot wait;
in order, except that upserts of one query join into one executemany (`batched`). So a
checkpoint is never stored without the writes that produced it, nor a registry row
without its checkpoints, and the caller hears of the answer only after all of it is stored
(the engine yields a turn's last event once its thread is let go).

What that changes, and the bounds on it:

* Nothing waits longer than `SEND_AFTER_S`: what came first is sent on its own that long
  after it came, with whatever came since. A turn whose steps take longer than that (any
  real model) sends each step's checkpoint with the task writes before it, a moment late.
* A replica killed in that window loses that much of a turn's progress: the turn was not
  answered yet, and its retry reruns those steps (docs/architecture.md, "What survives a
  crash"). The step after a checkpoint starts before the checkpoint is stored, as with
  LangGraph's durability "async".
* A read of the saver inside the turn sends them first, so the turn reads its own writes.
  A turn that failed or was cancelled sends what is left before its release; if that fails
  too, it is only logged (the caller sees the turn's own error).
* An error sending them (the fence refused: the thread was taken over; the database is
  down) is raised by whatever sends them next: a write, a read, or the turn's end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

Params = Sequence[Any]


class Statement(NamedTuple):
    """One write statement of a send."""

    query: str
    rows: list[Params | None]
    """Its parameters: one row, or one per run when `many`."""
    many: bool
    """Whether it runs once per row (executemany)."""
    table: str | None = None
    """The one table it only inserts or upserts keyed rows into, if so. Inside one transaction it
    may then run before statements on other tables: `batched` joins it to an earlier statement of
    the same query. None: it keeps its place among the statements."""


def batched(statements: Sequence[Statement]) -> list[Statement]:
    """The statements with each one that has a table joined to the last earlier one of the same query.

    A statement moves up only past statements that have tables other than its own, so the
    result does what the statements did, in one transaction, with fewer statements: a tool
    turn's five checkpoints go as one executemany, and so do its task writes of one query.
    """
    out: list[Statement] = []
    for statement in statements:
        target = _joinable(out, statement) if statement.table is not None else None
        if target is None:
            out.append(statement)
        else:
            joined = out[target]
            out[target] = joined._replace(rows=[*joined.rows, *statement.rows], many=True)
    return out


def _joinable(out: list[Statement], statement: Statement) -> int | None:
    """The index in `out` of the statement `statement` can join, if any."""
    for index in range(len(out) - 1, -1, -1):
        earlier = out[index]
        if earlier.query == statement.query:
            return index
        if earlier.table is None or earlier.table == statement.table:
            return None
    return None


SEND_AFTER_S = 0.1
"""Longest a turn's writes wait for its next write before they are sent on their own."""


Send = Callable[[list[Statement]], Awaitable[None]]


class DeferredWrites:
    """A turn's writes (LangGraph's, its registry row) that wait to be sent with its next write or its release."""

    def __init__(self) -> None:
        self._waiting: list[Statement] = []
        self._send: Send | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._sending: asyncio.Future[None] | None = None

    def add(self, statements: list[Statement], send: Send) -> None:
        """Keeps write statements; `send` sends them on their own if no write takes them in time."""
        self._waiting.extend(statements)
        self._send = send
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(SEND_AFTER_S, self._send_alone)

    async def take(self) -> list[Statement]:
        """The statements waiting, for the caller to send in front of its own.

        Waits for any sent on their own before (the caller's must not commit before them),
        and raises what sending them raised.
        """
        await self._wait_for_send_in_flight()
        return self._pop()

    async def flush(self, *, then: Sequence[Statement] = ()) -> bool:
        """Sends what is waiting now, with `then` after it in the same send; raises what sending raises.

        Returns:
            Whether anything was waiting (if not, nothing is sent, `then` included).
        """
        await self._wait_for_send_in_flight()
        waiting = self._pop()
        if not waiting:
            return False
        assert self._send is not None
        await self._send([*waiting, *then])
        return True

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
