"""Turns: Ask, StreamAsk, Resume and StreamResume, each one run of the graph on a held thread.

A turn takes its place among those starting (turn_starts), then its thread's hold
(thread_access), decides where it starts (the head, a fork, a retry of the same request_id, the
checkpoint before a question cut short), runs the graph in a task of its own (streamed_run) and
ends with TurnCompleted, yielded once the thread is let go.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any, cast

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.types import Command, StateSnapshot, StreamMode

from threadline.agent.approval import Decision, approval_decision, is_approval_request, rejection_messages
from threadline.engine.checkpoint_reads import checkpoint_not_found
from threadline.engine.context import RequestContext
from threadline.engine.failures import translated_failures
from threadline.engine.graph_measurements import GraphMeasurements
from threadline.engine.graph_spans import GraphSpans
from threadline.engine.identifiers import (
    check_checkpoint_id,
    check_query,
    check_request_id,
    check_thread_id,
    new_thread_id,
)
from threadline.engine.message_pages import bounded_turn
from threadline.engine.observer import TurnObserver
from threadline.engine.snapshots import events_of, id_of, index_of, snapshot_turn, turn_result
from threadline.engine.streamed_run import Part, parts_of
from threadline.engine.thread_access import Held, ThreadAccess, note_activity
from threadline.engine.turn_boundaries import before_question, refuse_mid_turn
from threadline.engine.turn_kinds import QUESTION_KINDS, RESUME_KINDS, TurnKind
from threadline.engine.turn_starts import Admission
from threadline.engine.views import TurnCompleted, TurnEvent, TurnResult
from threadline.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound
from threadline.storage import audit
from threadline.storage.audit import recording

RECURSION_LIMIT = 50


class Turns:
    """Runs turns on threads: questions (Ask, StreamAsk) and answers to pauses (Resume, StreamResume)."""

    def __init__(
        self,
        threads: ThreadAccess,
        *,
        max_query_chars: int,
        secrets: tuple[str, ...],
        message_budget: int,
        traced: bool,
        observer: TurnObserver | None,
    ) -> None:
        """Args:
        threads: The holds, configs and storage the turns go through.
        max_query_chars: The longest question accepted.
        secrets: What must never appear in an error message (the model's API key).
        message_budget: Bytes a turn's answer may take (the maximum message size, less a margin).
        traced: Whether runs carry the callback that makes their spans.
        observer: What hears of model requests, tool calls and interrupts; None: nobody.
        """
        self._threads = threads
        self._max_query_chars = max_query_chars
        self._secrets = secrets
        self._message_budget = message_budget
        self._traced = traced
        self._observer = observer

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
        self._threads.check_storage_up()
        config = self._threads.config(ctx, thread_id)
        human = HumanMessage(content=query, id=_human_message_id(config, ctx.request_id))
        query_digest = hashlib.sha256(query.encode()).hexdigest()
        # Forking: LangGraph runs from the named checkpoint and writes the new branch after it.
        start = self._threads.config(ctx, thread_id, fork_from) if fork_from else config
        run_config: RunnableConfig = {**start, "recursion_limit": RECURSION_LIMIT}
        kind = TurnKind.of_question(streamed=stream_tokens, forked=bool(fork_from))
        with (
            translated_failures(secrets=self._secrets),
            recording(rpc=kind, query_sha256=query_digest, **self._threads.caller(ctx)),
        ):
            completed: list[TurnCompleted] = []
            async with self._threads.started(ctx, config, kind) as (admission, held):
                if fork_from:
                    if await held.saver.aget_tuple(start) is None:
                        raise checkpoint_not_found(fork_from, thread_id)
                    await refuse_mid_turn(held, start, thread_id, paused_only=False)
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
        self._threads.check_storage_up()
        config = self._threads.config(ctx, thread_id)
        run_config: RunnableConfig = {**config, "recursion_limit": RECURSION_LIMIT}
        kind = TurnKind.of_resume(streamed=stream_tokens)
        with (
            translated_failures(secrets=self._secrets),
            recording(rpc=kind, **self._threads.caller(ctx)),
        ):
            completed: list[TurnCompleted] = []
            async with self._threads.started(ctx, config, kind) as (admission, held):
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
        held: Held,
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
        self, ctx: RequestContext, held: Held, run_config: RunnableConfig, graph_input: Any, stream_tokens: bool
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
        held: Held,
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
        await note_activity(held, ctx, thread_id, messages, head_id)
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
        self._threads.storage.hot.remember(thread_key, checkpoint_id, messages)
        return checkpoint_id, messages

    async def _start_of_new_question(
        self, held: Held, config: RunnableConfig, thread_id: str, abandon_interrupt: bool
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
        return await before_question(held.saver, head.config)

    async def _settle_interrupts(
        self, held: Held, head: StateSnapshot, config: RunnableConfig, thread_id: str, abandon: bool
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
        self, held: Held, head: CheckpointTuple, request_id: str, thread_id: str
    ) -> tuple[StateSnapshot, int] | None:
        """The state after the last step of an earlier Resume with this request_id, and where its messages
        start; None when the request_id is new. A cut-short Resume the thread moved on from is superseded."""
        found = await self._threads.storage.find_request(head.config, request_id)
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
        self, held: Held, config: RunnableConfig, request_id: str, query_digest: str
    ) -> StateSnapshot | None:
        """The thread's state after the last step of an earlier call with this request_id, if any."""
        found = await self._threads.storage.find_request(config, request_id)
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


async def _resume_command(
    held: Held, config: RunnableConfig, thread_id: str, interrupt_id: str, value: Any
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
