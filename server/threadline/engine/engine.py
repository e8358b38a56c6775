"""The engine: the RPCs of the contract over a LangGraph graph compiled with a checkpointer.

`Engine` is the one object the transport talks to. It builds the graph and opens the storage
(`Engine.open`), and each of its operations is the job of one part:

    thread_access.ThreadAccess   holds on threads, configs, the storage probe (everything uses it)
    turns.Turns                  Ask, StreamAsk, Resume, StreamResume
    thread_reads.ThreadReads     History, GetState, ListMessages, ListThreads
    thread_admin.ThreadAdmin     Rewind, DeleteThread, retention, the start-up listing repair
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from langgraph.graph.state import CompiledStateGraph

from threadline.agent.graphs import open_graph_builder
from threadline.engine.message_pages import RESPONSE_MARGIN_BYTES
from threadline.engine.observer import TurnObserver
from threadline.engine.settings import EngineSettings
from threadline.engine.thread_access import ThreadAccess
from threadline.engine.thread_admin import ThreadAdmin
from threadline.engine.thread_reads import ThreadReads
from threadline.engine.turn_starts import TurnStarts
from threadline.engine.turns import Turns
from threadline.storage.contract import Storage
from threadline.storage.urls import open_storage

DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024
HOLDS_END_TIMEOUT_S = 5.0
"""Longest the engine waits, as it closes, for holds still in use to end (cancelled turns let go of their
threads): well within the margin a worker's supervisor gives it past the grace (workers.WORKER_STOP_MARGIN_S)."""


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
        threads = ThreadAccess(
            graph,
            storage,
            wait_when_busy=wait_when_busy,
            starts=TurnStarts(max_starting_turns),
            traced=traced,
            observer=observer,
        )
        budget = max_response_bytes - RESPONSE_MARGIN_BYTES
        turns = Turns(
            threads,
            max_query_chars=max_query_chars,
            secrets=secrets,
            message_budget=budget,
            traced=traced,
            observer=observer,
        )
        reads = ThreadReads(threads, message_budget=budget)
        admin = ThreadAdmin(threads)
        self.replica = threads.replica
        """Who this process is in the audit trail."""
        # Turns
        self.ask = turns.ask
        self.stream_ask = turns.stream_ask
        self.resume = turns.resume
        self.stream_resume = turns.stream_resume
        # Reads
        self.history = reads.history
        self.get_state = reads.get_state
        self.list_messages = reads.list_messages
        self.list_threads = reads.list_threads
        # Moving and removing threads
        self.rewind = admin.rewind
        self.delete_thread = admin.delete_thread
        self.delete_idle_threads = admin.delete_idle_threads
        self.list_unlisted_threads = admin.list_unlisted_threads
        # The storage's state, for health, metrics and shutdown
        self.check_storage = threads.check_storage
        self.pool_stats = threads.pool_stats
        self.holds_ended = threads.holds_ended

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
