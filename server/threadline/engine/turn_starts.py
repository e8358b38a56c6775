"""How many turns of this process may be starting at once: the rest wait their turn, in order.

A turn's start is database work: it takes its thread, reads the head and checkpoints the
question (on PostgreSQL one round trip before the model is asked, the take with the head
read, and the question's checkpoints with the turn's later writes). When far more turns
arrive at once than the pool has connections (1,000 StreamAsk calls on a pool of 10),
psycopg's pool serves their statements first come, first served, so every turn's next
statement queues behind every other turn's: all of them start slowly together, and the
later statements wait longer than the pool timeout (5 s) and fail with UNAVAILABLE on a
database that is up. Letting at most `limit` turns start at once keeps that queue short:
the others wait here, where waiting is not a database failure, and the turns that came
first are the first to reach the model.

A turn stops counting as starting once its question is checkpointed (the run's first part
after the checkpoint of its input; on PostgreSQL that checkpoint may still wait to be sent
with the turn's next writes, postgres_writes), or as its run begins when it has no input to store (a resumed
or retried turn); not when it ends: a turn spends most of its time on the model and its
tools, which need no connection. A turn waiting for a busy thread steps aside meanwhile
(`Admission.stepped_aside`, which the engine hands to the thread's lock), so turns queued on
one thread cannot hold up the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from threadline.errors import DeadlineExceeded


class Admission:
    """One starting turn's place among the `limit`."""

    def __init__(self, starts: TurnStarts, *, deadline: float | None, rpc: str) -> None:
        self._starts = starts
        self._deadline = deadline
        self._rpc = rpc
        self.held = False
        self.started = False
        """The question is checkpointed: the turn no longer counts, and does not take a place again."""

    async def acquire(self) -> None:
        """Waits for a place, in arrival order, until the call's deadline.

        Raises:
            DeadlineExceeded: the deadline passed first.
        """
        if self._starts.slots is None:
            return
        try:
            # Without a deadline the wait still ends: every admitted turn gives its place back
            # after a bounded amount of database work (each statement bounded by the pool timeout).
            async with asyncio.timeout_at(self._deadline):
                await self._starts.slots.acquire()
        except TimeoutError:
            raise DeadlineExceeded(
                f"the call's deadline passed while its turn waited to start behind {self._starts.limit} "
                f"others ({self._rpc})"
            ) from None
        self.held = True

    def saw(self, mode: str, payload: Any) -> None:
        """A part of the turn's run (LangGraph's astream): releases the place once the question is checkpointed.

        A run with input writes a checkpoint of it (source "input"), the input node's writes,
        then the checkpoint after them (source "loop"); the model is asked after that. Parts
        of other modes come from nodes, so the question was checkpointed before them too.
        """
        if not self.started and (mode != "checkpoints" or payload.get("metadata", {}).get("source") != "input"):
            self.release()

    def release(self) -> None:
        """The turn is past its start: the place goes back for good (again: nothing)."""
        self.started = True
        self.give_back_for_now()

    def give_back_for_now(self) -> None:
        """Frees the place while the turn waits for something else; acquire() takes one again."""
        if self.held and self._starts.slots is not None:
            self.held = False
            self._starts.slots.release()

    @asynccontextmanager
    async def stepped_aside(self) -> AsyncIterator[None]:
        """For a wait that needs no database (a busy thread): the turn's place is free meanwhile.

        Raises:
            DeadlineExceeded: the deadline passed while the turn waited for its place again.
        """
        if not self.held:
            yield
            return
        self.give_back_for_now()
        try:
            yield
        finally:
            if not self.started:
                await self.acquire()


class TurnStarts:
    """At most `limit` turns starting at once in this process (None: any number); later ones wait in arrival order."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1")
        self.slots = None if limit is None else asyncio.Semaphore(limit)
        self.limit = limit

    @asynccontextmanager
    async def admitted(self, *, deadline: float | None, rpc: str) -> AsyncIterator[Admission]:
        """Holds a place for the block, or until the admission is released.

        Raises:
            DeadlineExceeded: the deadline passed while the turn waited to start.
        """
        admission = Admission(self, deadline=deadline, rpc=rpc)
        await admission.acquire()
        try:
            yield admission
        finally:
            admission.release()
