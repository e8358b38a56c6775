"""What every engine operation on a thread goes through: its hold, its config, the storage probe.

`ThreadAccess` owns the engine's graph and storage. It gives a block its hold on a thread (a
`Held`: the graph on the hold's saver, so whatever the block writes is fenced to the hold), counts
the holds in use so that closing waits for them, keeps a turn's registry row following its head
when the turn is cut short, and refuses work at once while the database is known to be down.
Turns, reads and thread administration (turns.py, thread_reads.py, thread_admin.py) build on it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from threadline.agent.message_text import text_of
from threadline.engine.checkpoint_reads import CheckpointReads
from threadline.engine.context import RequestContext
from threadline.engine.hold_waits import measured_wait
from threadline.engine.observer import TurnObserver
from threadline.engine.snapshots import id_of, parse_ts
from threadline.engine.streamed_run import until_done
from threadline.engine.turn_kinds import TurnKind
from threadline.engine.turn_starts import Admission, TurnStarts
from threadline.errors import StorageUnavailable
from threadline.storage.contract import STORAGE_ERRORS, PoolStats, Storage
from threadline.storage.thread_keys import ThreadKey
from threadline.storage.thread_locks import StaleRunError, StepAside, ThreadHold
from threadline.storage.thread_registry import ThreadRegistry

log = logging.getLogger(__name__)

STORAGE_PROBE_TIMEOUT_S = 2.0
_PROBE_FAILURES: tuple[type[BaseException], ...] = (TimeoutError, *STORAGE_ERRORS)
_UNWRITABLE: tuple[type[BaseException], ...] = (StaleRunError, *STORAGE_ERRORS)
"""Failures after which a turn's hold cannot write (the database is down, or the hold was taken over)."""


class ThreadAccess:
    """The engine's graph and storage, and the holds on threads that every operation takes."""

    def __init__(
        self,
        graph: CompiledStateGraph[Any, Any, Any, Any],
        storage: Storage,
        *,
        wait_when_busy: bool,
        starts: TurnStarts,
        traced: bool,
        observer: TurnObserver | None,
    ) -> None:
        self.graph = graph
        self.storage = storage
        self.saver = storage.saver
        self.reads = CheckpointReads(graph, storage.saver, storage.hot)
        self._wait_when_busy = wait_when_busy
        self._starts = starts
        self._traced = traced
        self._observer = observer
        self._storage_down_since: float | None = None
        self._holds_in_use = 0
        self._no_holds_in_use = asyncio.Event()
        self._no_holds_in_use.set()
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        """Who this process is in the audit trail."""

    async def holds_ended(self, timeout_s: float) -> bool:
        """Waits (at most timeout_s) until no turn, Rewind, delete or repair holds or waits for a thread.

        Returns:
            Whether none does (False: the wait timed out, which is logged).
        """
        try:
            async with asyncio.timeout(timeout_s):
                await self._no_holds_in_use.wait()
        except TimeoutError:
            log.warning(
                "%d hold(s) on threads still in use after %gs; closing storage anyway", self._holds_in_use, timeout_s
            )
            return False
        return True

    @asynccontextmanager
    async def holding(
        self, thread: ThreadKey, *, wait: bool, deadline: float | None, step_aside: StepAside = nullcontext
    ) -> AsyncIterator[ThreadHold]:
        """The storage's hold on the thread, counted from the wait for it to its release (holds_ended)."""
        self._holds_in_use += 1
        self._no_holds_in_use.clear()
        try:
            async with self.storage.locks.hold(thread, wait=wait, deadline=deadline, step_aside=step_aside) as hold:
                yield hold
        finally:
            self._holds_in_use -= 1
            if not self._holds_in_use:
                self._no_holds_in_use.set()

    async def check_storage(self) -> bool:
        """Probes the database; while it is down, calls fail at once instead of waiting on it.

        Returns:
            Whether the database answered.
        """
        try:
            async with asyncio.timeout(STORAGE_PROBE_TIMEOUT_S):
                await self.storage.ping()
        except _PROBE_FAILURES as exc:
            if self._storage_down_since is None:
                self._storage_down_since = time.monotonic()
                log.warning("checkpoint database unreachable: %s", str(exc) or type(exc).__name__)
            return False
        if self._storage_down_since is not None:
            log.info("checkpoint database reachable again after %.1fs", time.monotonic() - self._storage_down_since)
            self._storage_down_since = None
        return True

    def pool_stats(self) -> PoolStats | None:
        """The database connection pool's state; None for a backend without one."""
        return self.storage.pool_stats()

    def check_storage_up(self) -> None:
        """StorageUnavailable at once while the probe finds the database down (no call waits on it)."""
        if self._storage_down_since is not None:
            raise StorageUnavailable(
                "the checkpoint database is unavailable: unreachable for "
                f"{time.monotonic() - self._storage_down_since:.1f}s; retry later"
            )

    @asynccontextmanager
    async def started(
        self, ctx: RequestContext, config: RunnableConfig, kind: TurnKind
    ) -> AsyncIterator[tuple[Admission, Held]]:
        """A turn's place among those starting (turn_starts), then its hold on the thread.

        The wait for the hold is measured (hold_waits): a span when traced, and, for a turn that
        found its thread busy, how long it waited (the observer).
        """
        async with self._starts.admitted(deadline=ctx.deadline, rpc=kind) as admission:
            self.check_storage_up()  # the database may have gone down while the turn waited for its place
            async with measured_wait(
                admission.stepped_aside, traced=self._traced, observer=self._observer, tenant=ctx.tenant, rpc=ctx.rpc
            ) as wait:
                async with self.hold(ctx, config, step_aside=wait.step_aside) as held:
                    wait.held()
                    yield admission, held

    @asynccontextmanager
    async def hold(
        self, ctx: RequestContext, config: RunnableConfig, *, step_aside: StepAside = nullcontext
    ) -> AsyncIterator[Held]:
        """Holds the thread against other turns (on any replica) for the block: what the block
        reads and writes the thread through."""
        key = ThreadKey.parse(config["configurable"]["thread_id"])
        async with self.holding(key, wait=self._wait_when_busy, deadline=ctx.deadline, step_aside=step_aside) as hold:
            held = self.held(hold)
            try:
                yield held
            except BaseException as exc:
                if hold.wrote and not isinstance(exc, _UNWRITABLE):
                    # A block that wrote and did not finish (a cancel, a deadline, a failure) left the thread
                    # at a head its registry row may not name: the row follows it before the thread is let go,
                    # through any number of cancellations meanwhile. (With the database down or the hold lost,
                    # it cannot: the thread's next turn, or the next start-up, writes it.)
                    await until_done(asyncio.ensure_future(self.refresh_row(held, key)))
                raise

    async def refresh_row(self, held: Held, key: ThreadKey, created_at: dt.datetime | None = None) -> bool:
        """Makes the thread's registry row show its head (removes it if the thread has none); a failure is
        logged. Returns whether it got through."""
        config: RunnableConfig = {"configurable": {"thread_id": key.storage_id, "checkpoint_ns": ""}}
        try:
            head = await held.saver.aget_tuple(config)
            if head is None:
                await held.registry.forget(key.tenant, key.thread_id)
                return True
            title, turn_count = title_and_turns(await held.reads.messages_at(head))
            at = parse_ts(head.checkpoint["ts"])
            await held.registry.refresh(
                key.tenant,
                key.thread_id,
                title=title,
                turn_count=turn_count,
                head_checkpoint_id=id_of(head),
                updated_at=at,
                created_at=created_at or at,
            )
        except Exception as exc:
            log.warning("could not bring thread %s's row in the thread list up to date: %s", key, exc)
            return False
        return True

    def held(self, hold: ThreadHold) -> Held:
        # LangGraph's public copy of a compiled graph, on the hold's saver: the run writes through the hold.
        graph = self.graph.copy(update={"checkpointer": hold.saver})
        return Held(graph, hold.saver, CheckpointReads(graph, hold.saver, self.storage.hot), hold.registry)

    def caller(self, ctx: RequestContext) -> dict[str, str]:
        """The audit fields naming the call: its request_id, tenant, caller and this replica."""
        return {"request_id": ctx.request_id, "tenant": ctx.tenant, "caller": ctx.caller, "replica": self.replica}

    def config(self, ctx: RequestContext, thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
        """LangGraph's config naming the caller's tenant's thread (and one of its checkpoints)."""
        configurable: dict[str, Any] = {
            "thread_id": ThreadKey(ctx.tenant, thread_id).storage_id,
            # Always name the root namespace: SQLite only uses its index when it is given.
            "checkpoint_ns": "",
        }
        if checkpoint_id is not None:
            configurable["checkpoint_id"] = checkpoint_id
        return {"configurable": configurable}


@dataclass(frozen=True)
class Held:
    """What a block holding a thread reads and writes it through: the graph on the hold's saver
    (its writes fenced to the hold), that saver, reads over them, and the hold's registry."""

    graph: CompiledStateGraph[Any, Any, Any, Any]
    saver: BaseCheckpointSaver[str]
    reads: CheckpointReads
    registry: ThreadRegistry


def title_and_turns(messages: list[BaseMessage]) -> tuple[str, int]:
    """A thread's title (its first question, whitespace folded, 80 characters) and turn count (its
    questions), as of the conversation at its head: a question cut short before it was stored counts
    no turn, one stored counts (the turn was asked), answered or not."""
    questions = [m for m in messages if isinstance(m, HumanMessage)]
    title = " ".join(text_of(questions[0]).split())[:80] if questions else ""
    return title, len(questions)


async def note_activity(
    held: Held, ctx: RequestContext, thread_id: str, messages: list[BaseMessage], head_checkpoint_id: str
) -> None:
    title, turn_count = title_and_turns(messages)
    await held.registry.record(
        ctx.tenant,
        thread_id,
        title=title,
        turn_count=turn_count,
        head_checkpoint_id=head_checkpoint_id,
    )
