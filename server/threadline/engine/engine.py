"""The engine: Ask, StreamAsk, History and Rewind over a LangGraph graph compiled with a checkpointer."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, StateSnapshot, StreamMode

from threadline.agent.approval import Decision, approval_decision, is_approval_request, rejection_messages
from threadline.agent.graphs import open_graph_builder
from threadline.agent.message_text import text_of
from threadline.engine.checkpoint_reads import COPY_NODE, CheckpointReads, checkpoint_not_found
from threadline.engine.context import RequestContext
from threadline.engine.failures import translated_failures
from threadline.engine.graph_measurements import GraphMeasurements
from threadline.engine.graph_spans import GraphSpans
from threadline.engine.hold_waits import measured_wait
from threadline.engine.identifiers import (
    check_checkpoint_id,
    check_query,
    check_request_id,
    check_thread_id,
    checkpoint_id_at,
    checkpoint_time,
    decode_messages_token,
    decode_page_token,
    decode_threads_token,
    encode_messages_token,
    encode_page_token,
    encode_threads_token,
    new_thread_id,
)
from threadline.engine.message_pages import RESPONSE_MARGIN_BYTES, bounded_turn, newest_that_fit, page
from threadline.engine.messages import views_of
from threadline.engine.observer import TurnObserver
from threadline.engine.settings import EngineSettings
from threadline.engine.snapshots import (
    events_of,
    id_of,
    index_of,
    interrupt_view,
    parse_ts,
    snapshot_turn,
    turn_result,
)
from threadline.engine.streamed_run import Part, parts_of, until_done
from threadline.engine.turn_kinds import QUESTION_KINDS, RESUME_KINDS, TurnKind
from threadline.engine.turn_starts import Admission, TurnStarts
from threadline.engine.views import (
    HistoryPage,
    MessagesPage,
    RewindResult,
    StateView,
    ThreadsPage,
    ThreadSummary,
    TurnCompleted,
    TurnEvent,
    TurnResult,
)
from threadline.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    StorageUnavailable,
    ThreadBusy,
)
from threadline.storage import audit
from threadline.storage.audit import recording
from threadline.storage.contract import STORAGE_ERRORS, PoolStats, Storage
from threadline.storage.thread_keys import ThreadKey
from threadline.storage.thread_locks import StaleRunError, StepAside, ThreadHold
from threadline.storage.thread_registry import ThreadRegistry
from threadline.storage.urls import open_storage

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
DEFAULT_MESSAGE_LIMIT = 100
MAX_MESSAGE_LIMIT = 1000
MAX_MESSAGE_PAGE_SIZE = 1000
DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024
log = logging.getLogger(__name__)

RECURSION_LIMIT = 50
STORAGE_PROBE_TIMEOUT_S = 2.0
HOLDS_END_TIMEOUT_S = 5.0
"""Longest the engine waits, as it closes, for holds still in use to end (cancelled turns let go of their
threads): well within the margin a worker's supervisor gives it past the grace (workers.WORKER_STOP_MARGIN_S)."""
_PROBE_FAILURES: tuple[type[BaseException], ...] = (TimeoutError, *STORAGE_ERRORS)
_UNWRITABLE: tuple[type[BaseException], ...] = (StaleRunError, *STORAGE_ERRORS)
"""Failures after which a turn's hold cannot write (the database is down, or the hold was taken over)."""


class Engine:
    """Runs turns on threads and reads them back; one instance serves a whole process."""

    def __init__(
        self,
        graph: CompiledStateGraph[Any, Any, Any, Any],
        storage: Storage,
        *,
        max_query_chars: int,
        wait_when_busy: bool = True,
        secrets: tuple[str, ...] = (),
        max_starting_turns: int | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        traced: bool = False,
        observer: TurnObserver | None = None,
    ) -> None:
        self._graph = graph
        self._traced = traced
        self._observer = observer
        self._storage = storage
        self._saver = storage.saver
        self._reads = CheckpointReads(graph, storage.saver, storage.hot)
        self._max_query_chars = max_query_chars
        self._wait_when_busy = wait_when_busy
        self._secrets = secrets
        self._message_budget = max_response_bytes - RESPONSE_MARGIN_BYTES
        self._starts = TurnStarts(max_starting_turns)
        self._storage_down_since: float | None = None
        self._holds_in_use = 0
        self._no_holds_in_use = asyncio.Event()
        self._no_holds_in_use.set()
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        """Who this process is in the audit trail."""

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: EngineSettings, *, observer: TurnObserver | None = None) -> AsyncIterator[Engine]:
        """Builds the graph, opens the checkpointer, and closes both on exit.

        Args:
            settings: The engine's settings and its layers'.
            observer: What hears of the turns' model requests, tool calls, waits and interrupts
                (metrics), and of the bytes of checkpoints written; None: nobody.
        """
        async with (
            open_graph_builder(settings.agent) as builder,
            open_storage(
                settings.database_url,
                settings.storage,
                on_serialized=None if observer is None else observer.checkpoint_bytes_written,
            ) as storage,
        ):
            engine = cls(
                builder.compile(checkpointer=storage.saver),
                storage,
                max_query_chars=settings.max_query_chars,
                wait_when_busy=settings.wait_when_busy,
                secrets=(settings.agent.api_key,),
                max_starting_turns=settings.max_starting_turns,
                max_response_bytes=settings.max_response_bytes,
                traced=settings.traced,
                observer=observer,
            )
            try:
                yield engine
            finally:
                # Turns the server cancelled as it stopped may still be ending: their last writes and
                # the release of their threads need the storage, which closes after this.
                await engine.holds_ended(HOLDS_END_TIMEOUT_S)

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
    async def _holding(
        self, thread: ThreadKey, *, wait: bool, deadline: float | None, step_aside: StepAside = nullcontext
    ) -> AsyncIterator[ThreadHold]:
        """The storage's hold on the thread, counted from the wait for it to its release (holds_ended)."""
        self._holds_in_use += 1
        self._no_holds_in_use.clear()
        try:
            async with self._storage.locks.hold(thread, wait=wait, deadline=deadline, step_aside=step_aside) as hold:
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
                await self._storage.ping()
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
        return self._storage.pool_stats()

    def _check_storage_up(self) -> None:
        if self._storage_down_since is not None:
            raise StorageUnavailable(
                "the checkpoint database is unavailable: unreachable for "
                f"{time.monotonic() - self._storage_down_since:.1f}s; retry later"
            )

    # -- turns -------------------------------------------------------------------------------

    async def ask(
        self,
        ctx: RequestContext,
        thread_id: str,
        query: str,
        checkpoint_id: str = "",
        *,
        abandon_interrupt: bool = False,
    ) -> TurnResult:
        """Runs one turn and returns it; thread_id "" creates a thread; checkpoint_id forks from there."""
        turn = self._turn(ctx, thread_id, query, checkpoint_id, abandon_interrupt, stream_tokens=False)
        return await _completed(turn)

    def stream_ask(
        self,
        ctx: RequestContext,
        thread_id: str,
        query: str,
        checkpoint_id: str = "",
        *,
        abandon_interrupt: bool = False,
    ) -> AsyncGenerator[TurnEvent, None]:
        """Runs one turn, yielding tokens, tool calls and tool results as they happen, then TurnCompleted.

        The arguments are checked before the first event is produced.
        """
        return self._turn(ctx, thread_id, query, checkpoint_id, abandon_interrupt, stream_tokens=True)

    async def resume(self, ctx: RequestContext, thread_id: str, interrupt_id: str, decision: Decision) -> TurnResult:
        """Continues a paused turn with a human's decision and returns it."""
        return await _completed(self._resume(ctx, thread_id, interrupt_id, decision, stream_tokens=False))

    def stream_resume(
        self, ctx: RequestContext, thread_id: str, interrupt_id: str, decision: Decision
    ) -> AsyncGenerator[TurnEvent, None]:
        """Resume, yielding events as they happen, then TurnCompleted."""
        return self._resume(ctx, thread_id, interrupt_id, decision, stream_tokens=True)

    async def _turn(
        self,
        ctx: RequestContext,
        thread_id: str,
        query: str,
        fork_from: str,
        abandon_interrupt: bool,
        *,
        stream_tokens: bool,
    ) -> AsyncGenerator[TurnEvent, None]:
        if fork_from and not thread_id:
            raise InvalidArgument("thread_id", "thread_id is required with checkpoint_id")
        check_request_id(ctx.request_id)
        thread_id = check_thread_id(thread_id) if thread_id else new_thread_id(ctx.request_id)
        check_query(query, self._max_query_chars)
        if fork_from:
            fork_from = check_checkpoint_id(fork_from)
        self._check_storage_up()
        config = self._config(ctx, thread_id)
        human = HumanMessage(content=query, id=_human_message_id(config, ctx.request_id))
        query_digest = hashlib.sha256(query.encode()).hexdigest()
        # Forking: LangGraph runs from the named checkpoint and writes the new branch after it.
        start = self._config(ctx, thread_id, fork_from) if fork_from else config
        run_config: RunnableConfig = {**start, "recursion_limit": RECURSION_LIMIT}
        kind = TurnKind.of_question(streamed=stream_tokens, forked=bool(fork_from))
        with (
            translated_failures(secrets=self._secrets),
            recording(rpc=kind, query_sha256=query_digest, **self._caller(ctx)),
        ):
            completed: list[TurnCompleted] = []
            async with self._started(ctx, config, kind) as (admission, held):
                if fork_from:
                    if await held.saver.aget_tuple(start) is None:
                        raise checkpoint_not_found(fork_from, thread_id)
                    await self._refuse_mid_turn(held, start, thread_id, paused_only=False)
                prior = await self._prior_turn(held, config, ctx.request_id, query_digest) if ctx.request_id else None
                if prior is not None and not prior.next:
                    # The turn of this request_id finished before: the same result, no second run.
                    completed.append(TurnCompleted(snapshot_turn(thread_id, prior, human)))
                else:
                    if prior is None and not fork_from:
                        restart = await self._start_of_new_question(held, config, thread_id, abandon_interrupt)
                        run_config = {**restart, "recursion_limit": RECURSION_LIMIT} if restart else run_config
                    # A retry of a turn cut short (crash, cancel, model failure) resumes from its last
                    # checkpoint: its question is already in the thread and is not asked twice.
                    graph_input = None if prior is not None else {"messages": [human]}
                    run = self._run(
                        ctx, held, thread_id, config, run_config, graph_input, stream_tokens, human, admission
                    )
                    async with aclosing(_until_completed(run, completed)) as events:
                        async for event in events:
                            yield event
            yield TurnCompleted(bounded_turn(completed[0].turn, self._message_budget))  # once the thread is let go

    async def _resume(
        self, ctx: RequestContext, thread_id: str, interrupt_id: str, decision: Decision, *, stream_tokens: bool
    ) -> AsyncGenerator[TurnEvent, None]:
        check_thread_id(thread_id)
        check_request_id(ctx.request_id)
        if not interrupt_id:
            raise InvalidArgument("interrupt_id", "interrupt_id is required")
        value = decision.resume_value()
        self._check_storage_up()
        config = self._config(ctx, thread_id)
        run_config: RunnableConfig = {**config, "recursion_limit": RECURSION_LIMIT}
        kind = TurnKind.of_resume(streamed=stream_tokens)
        with (
            translated_failures(secrets=self._secrets),
            recording(rpc=kind, **self._caller(ctx)),
        ):
            completed: list[TurnCompleted] = []
            async with self._started(ctx, config, kind) as (admission, held):
                head = await held.reads.head(config, thread_id)
                prior = await self._prior_resume(held, head, ctx.request_id, thread_id) if ctx.request_id else None
                if prior is not None and (not prior[0].next or prior[0].interrupts):
                    # The Resume of this request_id finished (or paused again): the same result.
                    completed.append(TurnCompleted(_stored_turn(thread_id, *prior)))
                else:
                    # A Resume cut short (and still the head) goes on from its last step: its tools run.
                    graph_input, first_new = (
                        (None, prior[1])
                        if prior is not None
                        else await _resume_command(held, config, thread_id, interrupt_id, value)
                    )
                    run = self._run(
                        ctx, held, thread_id, config, run_config, graph_input, stream_tokens, first_new, admission
                    )
                    async with aclosing(_until_completed(run, completed)) as events:
                        async for event in events:
                            yield event
            yield TurnCompleted(bounded_turn(completed[0].turn, self._message_budget))  # once the thread is let go

    async def _run(
        self,
        ctx: RequestContext,
        held: _Held,
        thread_id: str,
        config: RunnableConfig,
        run_config: RunnableConfig,
        graph_input: Any,
        stream_tokens: bool,
        first_new: HumanMessage | int,
        admission: Admission,
    ) -> AsyncGenerator[TurnEvent, None]:
        """Runs the graph (the caller holds the thread) and ends with TurnCompleted."""
        if graph_input is None or isinstance(graph_input, Command):
            admission.release()  # nothing to store first: the run goes straight to a node (a model, a tool)
        thread_key = str(config["configurable"]["thread_id"])
        last: tuple[str, list[BaseMessage]] | None = None
        interrupted = False
        parts = self._graph_parts(ctx, held, run_config, graph_input, stream_tokens)
        # The call's deadline bounds the whole run: model requests and tools are cancelled
        # with it (their HTTP streams closed), not left running.
        async with _deadline(ctx), aclosing(parts):
            async for mode, payload in parts:
                admission.saw(mode, payload)
                if mode == "checkpoints":
                    last = self._remember(thread_key, payload) or last
                    continue
                if mode == "updates" and isinstance(payload, dict) and "__interrupt__" in payload:
                    interrupted = True
                    if self._observer is not None:
                        self._observer.interrupts_created(tenant=ctx.tenant, count=len(payload["__interrupt__"]))
                for event in events_of(mode, payload):
                    yield event
        if isinstance(graph_input, Command) and self._observer is not None:
            self._observer.interrupt_resumed(tenant=ctx.tenant)
        yield await self._finished_turn(ctx, held, thread_id, config, None if interrupted else last, first_new)

    def _graph_parts(
        self, ctx: RequestContext, held: _Held, run_config: RunnableConfig, graph_input: Any, stream_tokens: bool
    ) -> AsyncGenerator[Part, None]:
        """The run's (stream mode, payload) parts, in a task of its own (streamed_run).

        "checkpoints" parts carry the state at each checkpoint as the run makes it: the replica
        keeps them (hot states), so the next turn and History need not rebuild it.

        durability="sync": a turn's last checkpoint is written before the caller hears of the
        answer, so an answered turn survives a kill -9. (On PostgreSQL the saver bound to the
        turn's hold keeps the run's writes back to send them with the turn's release:
        postgres_writes. The caller hears of the answer after that: see _until_completed.)

        Every generator of a turn is closed explicitly (aclosing), here and by its callers: a
        turn ended early (cancelled, or its deadline passed, while the caller was writing an
        event) must stop its graph run before the thread is let go, not whenever the garbage
        collector finalizes an abandoned generator from another task (with the run's model
        stream still open and its writes no longer fenced by the lock). Closing the parts stops
        the run's task and waits for it, however often the caller is cancelled meanwhile.

        A streamed turn's tokens are LangGraph's stream_mode "messages" parts (without
        subgraphs: the root graph's models only). When traced, the run carries the callback that
        makes its spans (graph_spans); with an observer, the one that measures its model and tool
        calls (graph_measurements).
        """
        modes: list[StreamMode] = (
            ["updates", "checkpoints", "messages"] if stream_tokens else ["updates", "checkpoints"]
        )

        callbacks: list[BaseCallbackHandler] = [GraphSpans()] if self._traced else []
        if self._observer is not None:
            callbacks.append(GraphMeasurements(self._observer, ctx.tenant))

        def run() -> AsyncGenerator[Any, None]:
            config: RunnableConfig = {**run_config, "callbacks": callbacks} if callbacks else run_config
            # (astream is an async generator; it is typed as a plain AsyncIterator.)
            return cast(
                AsyncGenerator[Any, None],
                held.graph.astream(graph_input, config, stream_mode=modes, durability="sync"),
            )

        return parts_of(run)

    async def _finished_turn(
        self,
        ctx: RequestContext,
        held: _Held,
        thread_id: str,
        config: RunnableConfig,
        last: tuple[str, list[BaseMessage]] | None,
        first_new: HumanMessage | int,
    ) -> TurnCompleted:
        """The finished turn, from its last checkpoint (None: read the head, as for a pause)."""
        if last is None:
            # The pending interrupts are only known from a read of the head.
            state = await held.graph.aget_state(config)
            head_id = str(state.config["configurable"]["checkpoint_id"])
            messages: list[BaseMessage] = list(state.values.get("messages", []))
            interrupts = state.interrupts
        else:
            (head_id, messages), interrupts = last, ()
        await _note_activity(held, ctx, thread_id, messages, head_id)
        start = first_new if isinstance(first_new, int) else index_of(messages, first_new)
        return TurnCompleted(turn_result(thread_id, head_id, messages, interrupts, start))

    def _remember(self, thread_key: str, payload: Any) -> tuple[str, list[BaseMessage]] | None:
        """Keeps the messages at a checkpoint of the thread's root graph; returns (checkpoint id, messages)."""
        configurable = payload.get("config", {}).get("configurable", {})
        if configurable.get("checkpoint_ns") or "checkpoint_id" not in configurable:
            return None
        messages = payload.get("values", {}).get("messages")
        if not isinstance(messages, list):
            return None
        checkpoint_id = str(configurable["checkpoint_id"])
        self._storage.hot.remember(thread_key, checkpoint_id, messages)
        return checkpoint_id, messages

    async def _start_of_new_question(
        self, held: _Held, config: RunnableConfig, thread_id: str, abandon_interrupt: bool
    ) -> RunnableConfig | None:
        """Where a new question (not a retry) starts: None for the head, or another checkpoint.

        A thread waiting for a human is refused, or its pause given up (abandon_interrupt). A thread
        whose last turn was cut short (its head still has nodes to run: a model or tool failure, a
        cancel, a crash, a Rewind into a turn) is not continued: the new question starts from the
        checkpoint before the unfinished turn's question, on a new branch, so the model never sees
        that question nor a tool call it left unanswered. The unfinished turn stays in History as an
        abandoned branch, as after a Rewind.
        """
        head = await held.graph.aget_state(config)
        if head.interrupts:
            await self._settle_interrupts(held, head, config, thread_id, abandon_interrupt)
            return None
        if not head.next:
            return None
        return await _before_question(held.saver, head.config)

    async def _refuse_mid_turn(self, held: _Held, config: RunnableConfig, thread_id: str, *, paused_only: bool) -> None:
        """Refuses to move a thread to a checkpoint inside a turn where that would lose part of it.

        Rewind refuses a checkpoint where a turn paused for a human (the copy would drop the pause),
        a fork any checkpoint of an unfinished turn (the new question would follow a tool call left
        unanswered, or an unanswered question). Both name the checkpoint before that turn instead.
        """
        state = await held.graph.aget_state(config)
        if not (state.interrupts if paused_only else state.next):
            return
        checkpoint_id = config["configurable"]["checkpoint_id"]
        start = await _before_question(held.saver, config)
        found = await held.saver.aget_tuple(start) if start is not None else None
        parent = found.parent_config if found is not None else None
        before = str(parent["configurable"]["checkpoint_id"]) if parent else ""  # none before a first turn
        what = "a turn paused for a human" if state.interrupts else "an unfinished turn"
        hint = f"; use {before}, the checkpoint before that turn" if before else ""
        raise FailedPrecondition(
            f"checkpoint {checkpoint_id} of thread {thread_id!r} is inside {what}{hint}",
            reason="CHECKPOINT_MID_TURN",
            metadata={"before_checkpoint_id": before} if before else {},
        )

    async def _settle_interrupts(
        self, held: _Held, head: StateSnapshot, config: RunnableConfig, thread_id: str, abandon: bool
    ) -> None:
        """Refuses a turn on a thread that waits for a human, or gives up what it waits for."""
        if not abandon:
            raise FailedPrecondition(
                f"thread {thread_id!r} waits for a human (interrupts {[i.id for i in head.interrupts]}): "
                "Resume it, or Ask with abandon_interrupt",
                reason="THREAD_INTERRUPTED",
            )
        messages = head.values.get("messages", [])
        last = messages[-1] if messages else None
        answers = (
            {"messages": rejection_messages(last, "abandoned: the caller moved on to another question")}
            if isinstance(last, AIMessage) and last.tool_calls
            else None
        )
        for task in head.tasks:
            if task.interrupts:
                # As if the paused node had finished without running anything: nothing is left pending.
                await held.graph.aupdate_state(config, answers, as_node=task.name)
                answers = None

    async def _prior_resume(
        self, held: _Held, head: CheckpointTuple, request_id: str, thread_id: str
    ) -> tuple[StateSnapshot, int] | None:
        """The state after the last step of an earlier Resume with this request_id, and where its messages
        start; None when the request_id is new. A cut-short Resume the thread moved on from is superseded."""
        found = await self._storage.find_request(head.config, request_id)
        if found is None:
            return None
        kind = (found.metadata or {}).get(audit.RPC)
        if kind not in RESUME_KINDS:
            raise InvalidArgument("request_id", f"request_id {request_id!r} was used by a {kind} call")
        state = await held.graph.aget_state(found.config)
        if state.next and not state.interrupts and id_of(head) != id_of(found):
            raise FailedPrecondition(
                f"the Resume of request_id {request_id!r} was cut short and the thread has moved on since",
                reason="REQUEST_SUPERSEDED",
            )
        first = found
        while first.parent_config is not None:
            parent = await held.saver.aget_tuple(first.parent_config)
            if parent is None or (parent.metadata or {}).get(audit.REQUEST_ID) != request_id:
                return state, len(await held.reads.messages_at(parent)) if parent is not None else 0
            first = parent
        return state, 0

    async def _prior_turn(
        self, held: _Held, config: RunnableConfig, request_id: str, query_digest: str
    ) -> StateSnapshot | None:
        """The thread's state after the last step of an earlier call with this request_id, if any."""
        found = await self._storage.find_request(config, request_id)
        if found is None:
            return None
        metadata: dict[str, Any] = dict(found.metadata or {})
        if metadata.get(audit.RPC) not in QUESTION_KINDS:
            raise InvalidArgument(
                "request_id", f"request_id {request_id!r} was used by a {metadata.get(audit.RPC)} call"
            )
        if metadata.get(audit.QUERY_SHA256) != query_digest:
            raise InvalidArgument("request_id", f"request_id {request_id!r} was used with a different query")
        snapshot = await held.graph.aget_state(found.config)
        head = await held.saver.aget_tuple(config)
        if snapshot.next and head is not None and id_of(head) != id_of(found):
            raise FailedPrecondition(
                f"the turn of request_id {request_id!r} was cut short and the thread has moved on since; "
                "send the query again with a new request_id",
                reason="REQUEST_SUPERSEDED",
            )
        return snapshot

    # -- reading and rewinding ------------------------------------------------------------------

    async def history(
        self, ctx: RequestContext, thread_id: str, page_size: int, page_token: str, message_limit: int = 0
    ) -> HistoryPage:
        """One page of the thread's checkpoints (newest first), plus the conversation's newest messages on the first."""
        check_thread_id(thread_id)
        if page_size < 0:
            raise InvalidArgument("page_size", "page_size must not be negative")
        if message_limit < 0:
            raise InvalidArgument("message_limit", "message_limit must not be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        shown = min(message_limit or DEFAULT_MESSAGE_LIMIT, MAX_MESSAGE_LIMIT)
        before = decode_page_token(page_token, ctx.tenant, thread_id) if page_token else None
        self._check_storage_up()
        config = self._config(ctx, thread_id)
        with translated_failures():
            before_config = self._config(ctx, thread_id, before) if before else None
            # One more than the page: tells whether a next page exists, and is usually the
            # parent of the page's last checkpoint (needed to tell which nodes wrote it).
            tuples = await self._storage.headers(config, before_config, size + 1)
            # The first page starts at the head: reading (and decoding) it a second time would
            # cost a whole state, which grows with the thread.
            head = tuples[0] if tuples and before is None else await self._reads.head(config, thread_id)
            page = tuples[:size]
            known = {id_of(t): t for t in tuples}
            checkpoints = tuple([await self._reads.view(t, known) for t in page])
            conversation = [] if page_token else await self._reads.messages_at(head)
        more = len(tuples) > size
        return HistoryPage(
            thread_id=thread_id,
            messages=newest_that_fit(views_of(conversation[-shown:]), self._message_budget),
            checkpoints=checkpoints,
            next_page_token=encode_page_token(ctx.tenant, thread_id, id_of(page[-1])) if more else "",
            head_checkpoint_id=id_of(head),
            message_count=len(conversation),
        )

    async def rewind(
        self,
        ctx: RequestContext,
        thread_id: str,
        *,
        steps_back: int | None = None,
        checkpoint_id: str | None = None,
    ) -> RewindResult:
        """Makes an earlier checkpoint's state the thread's head, deleting nothing."""
        check_thread_id(thread_id)
        check_request_id(ctx.request_id)
        if (steps_back is None) == (checkpoint_id is None):
            raise InvalidArgument("target", "set exactly one of steps_back and checkpoint_id")
        if steps_back is not None and steps_back < 1:
            raise InvalidArgument("steps_back", f"steps_back must be at least 1, got {steps_back}")
        if checkpoint_id is not None:
            checkpoint_id = check_checkpoint_id(checkpoint_id)
        self._check_storage_up()
        config = self._config(ctx, thread_id)
        with translated_failures():
            async with self._hold(ctx, config) as held:
                head = await held.reads.head(config, thread_id)
                if checkpoint_id is not None:
                    target = await held.saver.aget_tuple(self._config(ctx, thread_id, checkpoint_id))
                    if target is None:
                        raise checkpoint_not_found(checkpoint_id, thread_id)
                else:
                    assert steps_back is not None
                    target = await held.reads.walk_back(head, steps_back)
                await self._refuse_mid_turn(held, target.config, thread_id, paused_only=True)
                with recording(rpc=TurnKind.REWIND, rewound_to=id_of(target), **self._caller(ctx)):
                    new_config = await held.graph.aupdate_state(target.config, None, as_node=COPY_NODE)
                new_head = await held.saver.aget_tuple(new_config)
                assert new_head is not None, "a checkpoint just written can be read"
                head_view = await held.reads.view(new_head, {})
                conversation = await held.reads.messages_at(new_head)
                await _note_activity(held, ctx, thread_id, conversation, id_of(new_head))
        return RewindResult(
            thread_id=thread_id,
            head=head_view,
            rewound_to_checkpoint_id=id_of(target),
            messages=views_of(conversation),
        )

    @asynccontextmanager
    async def _started(
        self, ctx: RequestContext, config: RunnableConfig, kind: TurnKind
    ) -> AsyncIterator[tuple[Admission, _Held]]:
        """A turn's place among those starting (turn_starts), then its hold on the thread.

        The wait for the hold is measured (hold_waits): a span when traced, and, for a turn that
        found its thread busy, how long it waited (the observer).
        """
        async with self._starts.admitted(deadline=ctx.deadline, rpc=kind) as admission:
            self._check_storage_up()  # the database may have gone down while the turn waited for its place
            async with measured_wait(
                admission.stepped_aside, traced=self._traced, observer=self._observer, tenant=ctx.tenant, rpc=ctx.rpc
            ) as wait:
                async with self._hold(ctx, config, step_aside=wait.step_aside) as held:
                    wait.held()
                    yield admission, held

    @asynccontextmanager
    async def _hold(
        self, ctx: RequestContext, config: RunnableConfig, *, step_aside: StepAside = nullcontext
    ) -> AsyncIterator[_Held]:
        """Holds the thread against other turns (on any replica) for the block: what the block
        reads and writes the thread through."""
        key = ThreadKey.parse(config["configurable"]["thread_id"])
        async with self._holding(key, wait=self._wait_when_busy, deadline=ctx.deadline, step_aside=step_aside) as hold:
            held = self._held(hold)
            try:
                yield held
            except BaseException as exc:
                if hold.wrote and not isinstance(exc, _UNWRITABLE):
                    # A block that wrote and did not finish (a cancel, a deadline, a failure) left the thread
                    # at a head its registry row may not name: the row follows it before the thread is let go,
                    # through any number of cancellations meanwhile. (With the database down or the hold lost,
                    # it cannot: the thread's next turn, or the next start-up, writes it.)
                    await until_done(asyncio.ensure_future(self._refresh_row(held, key)))
                raise

    async def _refresh_row(self, held: _Held, key: ThreadKey, created_at: dt.datetime | None = None) -> bool:
        """Makes the thread's registry row show its head (removes it if the thread has none); a failure is
        logged. Returns whether it got through."""
        config: RunnableConfig = {"configurable": {"thread_id": key.storage_id, "checkpoint_ns": ""}}
        try:
            head = await held.saver.aget_tuple(config)
            if head is None:
                await held.registry.forget(key.tenant, key.thread_id)
                return True
            title, turn_count = _title_and_turns(await held.reads.messages_at(head))
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

    async def list_unlisted_threads(self, batch: int = 500) -> int:
        """Lists every thread that has a checkpoint but no registry row, or a row naming another head
        (a process killed mid-turn; a version that did not refresh rows of unfinished turns).

        A thread busy with a turn is skipped: the turn writes its row as it ends.

        Returns:
            How many threads were brought up to date.
        """
        listed, after = 0, ""
        with translated_failures():
            while found := await self._storage.unlisted_threads(after, batch):
                for thread in found:
                    after = thread.storage_id
                    try:
                        key = ThreadKey.parse(thread.storage_id)
                        async with self._holding(key, wait=False, deadline=None) as hold:
                            created = checkpoint_time(thread.first_checkpoint_id)
                            listed += await self._refresh_row(self._held(hold), key, created)
                    except ThreadBusy:
                        continue
        return listed

    def _held(self, hold: ThreadHold) -> _Held:
        # LangGraph's public copy of a compiled graph, on the hold's saver: the run writes through the hold.
        graph = self._graph.copy(update={"checkpointer": hold.saver})
        return _Held(graph, hold.saver, CheckpointReads(graph, hold.saver, self._storage.hot), hold.registry)

    async def delete_thread(self, ctx: RequestContext, thread_id: str, *, allow_missing: bool) -> bool:
        """Deletes the thread's checkpoints and writes; returns whether it existed.

        Holding the thread first means a turn in flight (on any replica) finishes
        before the delete, and cannot write the thread back afterwards (langgraph
        issue 7206): its writes are fenced to the lock it no longer holds.
        """
        check_thread_id(thread_id)
        self._check_storage_up()
        config = self._config(ctx, thread_id)
        with translated_failures():
            async with self._hold(ctx, config) as held:
                if await held.saver.aget_tuple(config) is None:
                    if allow_missing:
                        return False
                    raise NotFound(f"thread {thread_id!r} not found", reason="THREAD_NOT_FOUND")
                await held.saver.adelete_thread(config["configurable"]["thread_id"])
                self._storage.hot.forget(config["configurable"]["thread_id"])
                await held.registry.forget(ctx.tenant, thread_id)
        log.info("deleted thread %s", config["configurable"]["thread_id"])
        return True

    async def delete_idle_threads(self, idle_for_s: float, limit: int = 100) -> int:
        """Deletes up to `limit` threads (of any tenant) whose last checkpoint is older than idle_for_s.

        A thread busy with a turn is skipped; one that got a turn since it was found is kept.

        Returns:
            How many threads were deleted.
        """
        cutoff = checkpoint_id_at(time.time() - idle_for_s)
        deleted = 0
        with translated_failures():
            for key in await self._storage.idle_threads(cutoff, limit):
                config: RunnableConfig = {"configurable": {"thread_id": key, "checkpoint_ns": ""}}
                try:
                    thread = ThreadKey.parse(key)
                    async with self._holding(thread, wait=False, deadline=None) as hold:
                        head = await hold.saver.aget_tuple(config)
                        if head is None or id_of(head) >= cutoff:
                            continue
                        await hold.saver.adelete_thread(key)
                        self._storage.hot.forget(key)
                        await hold.registry.forget(thread.tenant, thread.thread_id)
                        deleted += 1
                except ThreadBusy:
                    continue
        return deleted

    async def _head_and(
        self, ctx: RequestContext, config: RunnableConfig, thread_id: str, checkpoint_id: str
    ) -> tuple[CheckpointTuple, CheckpointTuple]:
        """The thread's head, and its checkpoint_id ("" for the head); NOT_FOUND for either missing."""
        head = await self._reads.head(config, thread_id)
        item = await self._saver.aget_tuple(self._config(ctx, thread_id, checkpoint_id)) if checkpoint_id else head
        if item is None:
            raise checkpoint_not_found(checkpoint_id, thread_id)
        return head, item

    async def get_state(self, ctx: RequestContext, thread_id: str, checkpoint_id: str = "") -> StateView:
        """The thread's full state at checkpoint_id ("" for the head)."""
        check_thread_id(thread_id)
        if checkpoint_id:
            checkpoint_id = check_checkpoint_id(checkpoint_id)
        self._check_storage_up()
        config = self._config(ctx, thread_id)
        with translated_failures():
            head, item = await self._head_and(ctx, config, thread_id, checkpoint_id)
            snapshot = await self._graph.aget_state(item.config)
            view = await self._reads.view(item, {})
        conversation = views_of(snapshot.values.get("messages", []))
        return StateView(
            thread_id=thread_id,
            checkpoint=view,
            messages=newest_that_fit(conversation, self._message_budget),
            message_count=len(conversation),
            next=tuple(snapshot.next),
            is_head=id_of(item) == id_of(head),
            metadata_json=json.dumps(dict(item.metadata or {}), default=str, sort_keys=True),
            interrupts=tuple(interrupt_view(i) for i in snapshot.interrupts),
        )

    async def list_messages(
        self,
        ctx: RequestContext,
        thread_id: str,
        checkpoint_id: str,
        page_size: int,
        page_token: str,
        *,
        newest_first: bool,
    ) -> MessagesPage:
        """One page of the conversation at checkpoint_id ("" for the head), oldest or newest first.

        A page token pins the checkpoint and the order of the first page: later pages read the
        same (immutable) conversation even when the thread moved on.
        """
        check_thread_id(thread_id)
        if page_size < 0:
            raise InvalidArgument("page_size", "page_size must not be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_MESSAGE_PAGE_SIZE)
        offset = 0
        if page_token:
            checkpoint_id, offset, newest_first = decode_messages_token(page_token, ctx.tenant, thread_id)
        elif checkpoint_id:
            checkpoint_id = check_checkpoint_id(checkpoint_id)
        self._check_storage_up()
        config = self._config(ctx, thread_id)
        with translated_failures():
            _, item = await self._head_and(ctx, config, thread_id, checkpoint_id)
            conversation = views_of(await self._reads.messages_at(item))
        ordered = conversation[::-1] if newest_first else conversation
        shown = page(ordered, offset, size, self._message_budget)
        end = offset + len(shown)
        return MessagesPage(
            thread_id=thread_id,
            checkpoint_id=id_of(item),
            messages=shown,
            next_page_token=(
                encode_messages_token(ctx.tenant, thread_id, id_of(item), end, newest_first)
                if end < len(ordered)
                else ""
            ),
            message_count=len(conversation),
        )

    async def list_threads(self, ctx: RequestContext, page_size: int, page_token: str) -> ThreadsPage:
        """The tenant's threads, most recently active first."""
        if page_size < 0:
            raise InvalidArgument("page_size", "page_size must not be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = decode_threads_token(page_token, ctx.tenant) if page_token else None
        self._check_storage_up()
        with translated_failures():
            found = await self._storage.registry.page(ctx.tenant, limit=size + 1, after=after)
        page = [
            ThreadSummary(r.thread_id, r.title, r.turn_count, r.created_at, r.updated_at, r.head_checkpoint_id)
            for r in found[:size]
        ]
        more = len(found) > size
        return ThreadsPage(
            threads=tuple(page),
            next_page_token=encode_threads_token(ctx.tenant, page[-1].updated_at, page[-1].thread_id) if more else "",
        )

    def _caller(self, ctx: RequestContext) -> dict[str, str]:
        """The audit fields naming the call: its request_id, tenant, caller and this replica."""
        return {"request_id": ctx.request_id, "tenant": ctx.tenant, "caller": ctx.caller, "replica": self.replica}

    def _config(self, ctx: RequestContext, thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
        configurable: dict[str, Any] = {
            "thread_id": ThreadKey(ctx.tenant, thread_id).storage_id,
            # Always name the root namespace: SQLite only uses its index when it is given.
            "checkpoint_ns": "",
        }
        if checkpoint_id is not None:
            configurable["checkpoint_id"] = checkpoint_id
        return {"configurable": configurable}


@dataclass(frozen=True)
class _Held:
    """What a block holding a thread reads and writes it through: the graph on the hold's saver
    (its writes fenced to the hold), that saver, reads over them, and the hold's registry."""

    graph: CompiledStateGraph[Any, Any, Any, Any]
    saver: BaseCheckpointSaver[str]
    reads: CheckpointReads
    registry: ThreadRegistry


def _title_and_turns(messages: list[BaseMessage]) -> tuple[str, int]:
    """A thread's title (its first question, whitespace folded, 80 characters) and turn count (its
    questions), as of the conversation at its head: a question cut short before it was stored counts
    no turn, one stored counts (the turn was asked), answered or not."""
    questions = [m for m in messages if isinstance(m, HumanMessage)]
    title = " ".join(text_of(questions[0]).split())[:80] if questions else ""
    return title, len(questions)


async def _note_activity(
    held: _Held, ctx: RequestContext, thread_id: str, messages: list[BaseMessage], head_checkpoint_id: str
) -> None:
    title, turn_count = _title_and_turns(messages)
    await held.registry.record(
        ctx.tenant,
        thread_id,
        title=title,
        turn_count=turn_count,
        head_checkpoint_id=head_checkpoint_id,
    )


async def _resume_command(
    held: _Held, config: RunnableConfig, thread_id: str, interrupt_id: str, value: Any
) -> tuple[Command[Any], int]:
    """The command answering a pending interrupt, and where the turn's new messages start."""
    paused = await held.graph.aget_state(config)
    pending = {item.id for item in paused.interrupts}
    if not pending:
        raise FailedPrecondition(f"thread {thread_id!r} is not waiting for a human", reason="NOT_INTERRUPTED")
    if interrupt_id not in pending:
        raise NotFound(
            f"interrupt {interrupt_id!r} is not pending on thread {thread_id!r} "
            f"(pending: {', '.join(sorted(pending))})",
            reason="INTERRUPT_NOT_FOUND",
        )
    if is_approval_request(next(i.value for i in paused.interrupts if i.id == interrupt_id)):
        value = approval_decision(value)
    return Command(resume={interrupt_id: value}), len(paused.values.get("messages", []))


async def _before_question(saver: BaseCheckpointSaver[str], config: RunnableConfig) -> RunnableConfig | None:
    """The input checkpoint of the turn config belongs to: its state is the conversation before
    the turn's question (LangGraph applies an input in the step after its "input" checkpoint).
    None when the chain has no input checkpoint."""
    found = await saver.aget_tuple(config)
    while found is not None and (found.metadata or {}).get("source") != "input":
        found = await saver.aget_tuple(found.parent_config) if found.parent_config else None
    return found.config if found is not None else None


@asynccontextmanager
async def _deadline(ctx: RequestContext) -> AsyncIterator[None]:
    if ctx.deadline is None:
        yield
        return
    try:
        async with asyncio.timeout_at(ctx.deadline):  # the loop's clock is time.monotonic()
            yield
    except TimeoutError:
        raise DeadlineExceeded(f"the turn did not finish within the call's deadline ({ctx.rpc})") from None


def _stored_turn(thread_id: str, state: StateSnapshot, start: int) -> TurnResult:
    """The turn whose messages start at `start`, as of a stored state."""
    messages = list(state.values.get("messages", []))
    checkpoint_id = str(state.config["configurable"]["checkpoint_id"])
    return turn_result(thread_id, checkpoint_id, messages, state.interrupts, start)


def _human_message_id(config: RunnableConfig, request_id: str) -> str:
    """The id of a turn's question: derived from its request_id, so a retry cannot add it twice."""
    if not request_id:
        return str(uuid.uuid4())
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"threadline:{config['configurable']['thread_id']}:{request_id}"))


async def _until_completed(
    run: AsyncGenerator[TurnEvent, None], completed: list[TurnCompleted]
) -> AsyncGenerator[TurnEvent, None]:
    """The run's events but its last, TurnCompleted, which goes into `completed` (the run is closed here).

    The caller yields it after letting go of the thread: on PostgreSQL the turn's last writes
    go with the release in one round trip (postgres_holds), and a caller that hears of the
    answer can start its next turn on the thread at once.
    """
    async with aclosing(run):
        async for event in run:
            if isinstance(event, TurnCompleted):
                completed.append(event)
            else:
                yield event


async def _completed(events: AsyncGenerator[TurnEvent, None]) -> TurnResult:
    """The TurnCompleted of a turn's events; the generator is closed here, in this task."""
    async with aclosing(events):
        async for event in events:
            if isinstance(event, TurnCompleted):
                return event.turn
    raise AssertionError("a turn always ends with TurnCompleted")
