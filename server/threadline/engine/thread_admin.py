"""Moving and removing threads: Rewind, DeleteThread, retention, and the start-up listing repair."""

from __future__ import annotations

import logging
import time

from langchain_core.runnables import RunnableConfig

from threadline.engine.checkpoint_reads import COPY_NODE, checkpoint_not_found
from threadline.engine.context import RequestContext
from threadline.engine.failures import translated_failures
from threadline.engine.identifiers import (
    check_checkpoint_id,
    check_request_id,
    check_thread_id,
    checkpoint_id_at,
    checkpoint_time,
)
from threadline.engine.messages import views_of
from threadline.engine.snapshots import id_of
from threadline.engine.thread_access import ThreadAccess, note_activity
from threadline.engine.turn_boundaries import refuse_mid_turn
from threadline.engine.turn_kinds import TurnKind
from threadline.engine.views import RewindResult
from threadline.errors import InvalidArgument, NotFound, ThreadBusy
from threadline.storage.audit import recording
from threadline.storage.thread_keys import ThreadKey

log = logging.getLogger(__name__)


class ThreadAdmin:
    """Moves a thread's head back (Rewind), deletes threads, and repairs the thread list."""

    def __init__(self, threads: ThreadAccess) -> None:
        self._threads = threads

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
        self._threads.check_storage_up()
        config = self._threads.config(ctx, thread_id)
        with translated_failures():
            async with self._threads.hold(ctx, config) as held:
                head = await held.reads.head(config, thread_id)
                if checkpoint_id is not None:
                    target = await held.saver.aget_tuple(self._threads.config(ctx, thread_id, checkpoint_id))
                    if target is None:
                        raise checkpoint_not_found(checkpoint_id, thread_id)
                else:
                    assert steps_back is not None
                    target = await held.reads.walk_back(head, steps_back)
                await refuse_mid_turn(held, target.config, thread_id, paused_only=True)
                with recording(rpc=TurnKind.REWIND, rewound_to=id_of(target), **self._threads.caller(ctx)):
                    new_config = await held.graph.aupdate_state(target.config, None, as_node=COPY_NODE)
                new_head = await held.saver.aget_tuple(new_config)
                assert new_head is not None, "a checkpoint just written can be read"
                head_view = await held.reads.view(new_head, {})
                conversation = await held.reads.messages_at(new_head)
                await note_activity(held, ctx, thread_id, conversation, id_of(new_head))
        return RewindResult(
            thread_id=thread_id,
            head=head_view,
            rewound_to_checkpoint_id=id_of(target),
            messages=views_of(conversation),
        )

    async def delete_thread(self, ctx: RequestContext, thread_id: str, *, allow_missing: bool) -> bool:
        """Deletes the thread's checkpoints and writes; returns whether it existed.

        Holding the thread first means a turn in flight (on any replica) finishes
        before the delete, and cannot write the thread back afterwards (langgraph
        issue 7206): its writes are fenced to the lock it no longer holds.
        """
        check_thread_id(thread_id)
        self._threads.check_storage_up()
        config = self._threads.config(ctx, thread_id)
        with translated_failures():
            async with self._threads.hold(ctx, config) as held:
                if await held.saver.aget_tuple(config) is None:
                    if allow_missing:
                        return False
                    raise NotFound(f"thread {thread_id!r} not found", reason="THREAD_NOT_FOUND")
                await held.saver.adelete_thread(config["configurable"]["thread_id"])
                self._threads.storage.hot.forget(config["configurable"]["thread_id"])
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
            for key in await self._threads.storage.idle_threads(cutoff, limit):
                config: RunnableConfig = {"configurable": {"thread_id": key, "checkpoint_ns": ""}}
                try:
                    thread = ThreadKey.parse(key)
                    async with self._threads.holding(thread, wait=False, deadline=None) as hold:
                        head = await hold.saver.aget_tuple(config)
                        if head is None or id_of(head) >= cutoff:
                            continue
                        await hold.saver.adelete_thread(key)
                        self._threads.storage.hot.forget(key)
                        await hold.registry.forget(thread.tenant, thread.thread_id)
                        deleted += 1
                except ThreadBusy:
                    continue
        return deleted

    async def list_unlisted_threads(self, batch: int = 500) -> int:
        """Lists every thread that has a checkpoint but no registry row, or a row naming another head
        (a process killed mid-turn; a version that did not refresh rows of unfinished turns).

        A thread busy with a turn is skipped: the turn writes its row as it ends.

        Returns:
            How many threads were brought up to date.
        """
        listed, after = 0, ""
        with translated_failures():
            while found := await self._threads.storage.unlisted_threads(after, batch):
                for thread in found:
                    after = thread.storage_id
                    try:
                        key = ThreadKey.parse(thread.storage_id)
                        async with self._threads.holding(key, wait=False, deadline=None) as hold:
                            created = checkpoint_time(thread.first_checkpoint_id)
                            listed += await self._threads.refresh_row(self._threads.held(hold), key, created)
                    except ThreadBusy:
                        continue
        return listed
