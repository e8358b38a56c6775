"""Reads: History, GetState, ListMessages and ListThreads, none of which holds a thread.

Every answer stays within the message budget (message_pages): the newest messages that fit.
"""

from __future__ import annotations

import json

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple

from threadline.engine.checkpoint_reads import checkpoint_not_found
from threadline.engine.context import RequestContext
from threadline.engine.failures import translated_failures
from threadline.engine.identifiers import (
    check_checkpoint_id,
    check_thread_id,
    decode_messages_token,
    decode_page_token,
    decode_threads_token,
    encode_messages_token,
    encode_page_token,
    encode_threads_token,
)
from threadline.engine.message_pages import newest_that_fit, page
from threadline.engine.messages import views_of
from threadline.engine.snapshots import id_of, interrupt_view
from threadline.engine.thread_access import ThreadAccess
from threadline.engine.views import HistoryPage, MessagesPage, StateView, ThreadsPage, ThreadSummary
from threadline.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
DEFAULT_MESSAGE_LIMIT = 100
MAX_MESSAGE_LIMIT = 1000
MAX_MESSAGE_PAGE_SIZE = 1000


class ThreadReads:
    """Reads threads back: their checkpoints, states, conversations, and the tenant's list of them."""

    def __init__(self, threads: ThreadAccess, *, message_budget: int) -> None:
        self._threads = threads
        self._message_budget = message_budget

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
        self._threads.check_storage_up()
        config = self._threads.config(ctx, thread_id)
        with translated_failures():
            before_config = self._threads.config(ctx, thread_id, before) if before else None
            # One more than the page: tells whether a next page exists, and is usually the
            # parent of the page's last checkpoint (needed to tell which nodes wrote it).
            tuples = await self._threads.storage.headers(config, before_config, size + 1)
            # The first page starts at the head: reading (and decoding) it a second time would
            # cost a whole state, which grows with the thread.
            head = tuples[0] if tuples and before is None else await self._threads.reads.head(config, thread_id)
            page = tuples[:size]
            known = {id_of(t): t for t in tuples}
            checkpoints = tuple([await self._threads.reads.view(t, known) for t in page])
            conversation = [] if page_token else await self._threads.reads.messages_at(head)
        more = len(tuples) > size
        return HistoryPage(
            thread_id=thread_id,
            messages=newest_that_fit(views_of(conversation[-shown:]), self._message_budget),
            checkpoints=checkpoints,
            next_page_token=encode_page_token(ctx.tenant, thread_id, id_of(page[-1])) if more else "",
            head_checkpoint_id=id_of(head),
            message_count=len(conversation),
        )

    async def _head_and(
        self, ctx: RequestContext, config: RunnableConfig, thread_id: str, checkpoint_id: str
    ) -> tuple[CheckpointTuple, CheckpointTuple]:
        """The thread's head, and its checkpoint_id ("" for the head); NOT_FOUND for either missing."""
        head = await self._threads.reads.head(config, thread_id)
        item = (
            await self._threads.saver.aget_tuple(self._threads.config(ctx, thread_id, checkpoint_id))
            if checkpoint_id
            else head
        )
        if item is None:
            raise checkpoint_not_found(checkpoint_id, thread_id)
        return head, item

    async def get_state(self, ctx: RequestContext, thread_id: str, checkpoint_id: str = "") -> StateView:
        """The thread's full state at checkpoint_id ("" for the head)."""
        check_thread_id(thread_id)
        if checkpoint_id:
            checkpoint_id = check_checkpoint_id(checkpoint_id)
        self._threads.check_storage_up()
        config = self._threads.config(ctx, thread_id)
        with translated_failures():
            head, item = await self._head_and(ctx, config, thread_id, checkpoint_id)
            snapshot = await self._threads.graph.aget_state(item.config)
            view = await self._threads.reads.view(item, {})
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
        self._threads.check_storage_up()
        config = self._threads.config(ctx, thread_id)
        with translated_failures():
            _, item = await self._head_and(ctx, config, thread_id, checkpoint_id)
            conversation = views_of(await self._threads.reads.messages_at(item))
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
        self._threads.check_storage_up()
        with translated_failures():
            found = await self._threads.storage.registry.page(ctx.tenant, limit=size + 1, after=after)
        page = [
            ThreadSummary(r.thread_id, r.title, r.turn_count, r.created_at, r.updated_at, r.head_checkpoint_id)
            for r in found[:size]
        ]
        more = len(found) > size
        return ThreadsPage(
            threads=tuple(page),
            next_page_token=encode_threads_token(ctx.tenant, page[-1].updated_at, page[-1].thread_id) if more else "",
        )
