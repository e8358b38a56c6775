"""ThreadlineClient: the synchronous client."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any

import grpc

from . import _common
from ._errors import error_from_rpc_error
from .v1 import threadline_pb2 as pb
from .v1.threadline_pb2_grpc import ThreadlineServiceStub


class ThreadlineClient:
    """A synchronous client of threadline.v1.ThreadlineService.

    Every method raises ThreadlineError when the RPC fails. Use it as a context
    manager, or call close(), to release the channel.
    """

    def __init__(
        self,
        target: str = _common.DEFAULT_TARGET,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        max_message_bytes: int = _common.DEFAULT_MAX_MESSAGE_BYTES,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """Opens a channel to the server.

        Args:
            target: The server's address, "host:port".
            credentials: TLS credentials; None for a plaintext channel.
            metadata: Metadata sent with every call, e.g. an authorization header.
            max_message_bytes: The largest message sent or received.
            channel_options: More gRPC channel options, e.g. ("grpc.keepalive_time_ms", 30000).
        """
        options = _common.channel_options(max_message_bytes, channel_options)
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=options)
        self._stub = ThreadlineServiceStub(self._channel)
        self._metadata = tuple(metadata)

    def __enter__(self) -> ThreadlineClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel, cancelling the calls still running on it."""
        self._channel.close()

    def ask(
        self,
        query: str,
        *,
        thread_id: str = "",
        request_id: str = "",
        checkpoint_id: str = "",
        abandon_interrupt: bool = False,
        timeout: float | None = None,
    ) -> pb.Turn:
        """Runs one turn of the agent and returns it.

        Args:
            query: The caller's message.
            thread_id: The thread to continue; "" creates a new thread.
            request_id: An optional id of this call, recorded in the audit trail.
            checkpoint_id: Run from this checkpoint of the thread instead of its head (a fork).
            abandon_interrupt: On a thread waiting for a human, give up the pending tool calls.
            timeout: Seconds before the call fails with DEADLINE_EXCEEDED; None waits forever.

        Returns:
            The completed turn, with its thread_id, answer and new checkpoint_id.
        """
        request = _common.ask_request(query, thread_id, request_id, checkpoint_id, abandon_interrupt)
        try:
            response: pb.AskResponse = self._stub.Ask(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise error_from_rpc_error(err) from err
        return response.turn

    def stream_ask(
        self,
        query: str,
        *,
        thread_id: str = "",
        request_id: str = "",
        checkpoint_id: str = "",
        abandon_interrupt: bool = False,
        timeout: float | None = None,
    ) -> Iterator[pb.StreamAskResponse]:
        """Runs one turn like ask(), yielding its events as they happen.

        The call starts on the first next(); the last event carries the `final` Turn.
        Leaving the iteration early (break, or an exception) cancels the call once
        the iterator is closed or garbage-collected.

        Args:
            query: The caller's message.
            thread_id: The thread to continue; "" creates a new thread.
            request_id: An optional id of this call, recorded in the audit trail.
            checkpoint_id: Run from this checkpoint of the thread instead of its head (a fork).
            abandon_interrupt: On a thread waiting for a human, give up the pending tool calls.
            timeout: Seconds the whole stream may take; None waits forever.

        Yields:
            Token, tool call, tool result and (last) final events.
        """
        request = _common.stream_ask_request(query, thread_id, request_id, checkpoint_id, abandon_interrupt)
        call = self._stub.StreamAsk(request, timeout=timeout, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as err:
            raise error_from_rpc_error(err) from err
        finally:
            # A no-op once the stream has ended; stops the server's turn otherwise.
            call.cancel()

    def history(
        self,
        thread_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        message_limit: int = 0,
        timeout: float | None = None,
    ) -> pb.HistoryResponse:
        """Returns one page of a thread's checkpoints, and (on the first page) its conversation.

        Args:
            thread_id: The thread to read.
            page_size: Checkpoints per page; 0 lets the server choose (20), at most 100.
            page_token: The previous page's next_page_token; "" for the first page.
            message_limit: The conversation's newest messages to return with the first page;
                0 lets the server choose (100), at most 1000. `message_count` tells how many there are.
            timeout: Seconds before the call fails with DEADLINE_EXCEEDED; None waits forever.

        Returns:
            The page; its next_page_token is "" on the last page.
        """
        request = _common.history_request(thread_id, page_size, page_token, message_limit)
        try:
            response: pb.HistoryResponse = self._stub.History(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise error_from_rpc_error(err) from err
        return response

    def iter_checkpoints(
        self, thread_id: str, *, page_size: int = 0, timeout: float | None = None
    ) -> Iterator[pb.Checkpoint]:
        """Yields all of a thread's checkpoints, newest first, fetching page after page.

        Args:
            thread_id: The thread to read.
            page_size: Checkpoints per page; 0 lets the server choose.
            timeout: Seconds each page's call may take; None waits forever.

        Yields:
            The checkpoints of every branch, newest first.
        """
        page_token = ""
        while True:
            page = self.history(thread_id, page_size=page_size, page_token=page_token, timeout=timeout)
            yield from page.checkpoints
            page_token = page.next_page_token
            if not page_token:
                return

    def rewind(
        self,
        thread_id: str,
        *,
        steps_back: int | None = None,
        checkpoint_id: str | None = None,
        request_id: str = "",
        timeout: float | None = None,
    ) -> pb.RewindResponse:
        """Moves a thread's head back, to steps_back checkpoints ago or to checkpoint_id.

        Give exactly one of steps_back and checkpoint_id; with neither, the server
        answers INVALID_ARGUMENT.

        Args:
            thread_id: The thread to rewind.
            steps_back: How many checkpoints to go back along the current branch (>= 1).
            checkpoint_id: A checkpoint of this thread, on any branch.
            request_id: An optional id of this call, recorded on the new head.
            timeout: Seconds before the call fails with DEADLINE_EXCEEDED; None waits forever.

        Returns:
            The new head and the conversation as of it.

        Raises:
            ValueError: Both steps_back and checkpoint_id are given.
        """
        request = _common.rewind_request(thread_id, steps_back, checkpoint_id, request_id)
        try:
            response: pb.RewindResponse = self._stub.Rewind(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise error_from_rpc_error(err) from err
        return response

    def delete_thread(
        self, thread_id: str, *, allow_missing: bool = False, timeout: float | None = None
    ) -> pb.DeleteThreadResponse:
        """Deletes a thread's checkpoints; History and Rewind then answer NOT_FOUND.

        Args:
            thread_id: The thread to delete.
            allow_missing: Succeed (existed=False) when the thread does not exist.
            timeout: Seconds before the call fails with DEADLINE_EXCEEDED; None waits forever.

        Returns:
            The thread id and whether it existed.
        """
        request = pb.DeleteThreadRequest(thread_id=thread_id, allow_missing=allow_missing)
        try:
            response: pb.DeleteThreadResponse = self._stub.DeleteThread(
                request, timeout=timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise error_from_rpc_error(err) from err
        return response

    def get_state(
        self, thread_id: str, *, checkpoint_id: str = "", timeout: float | None = None
    ) -> pb.GetStateResponse:
        """Returns a thread's full state at checkpoint_id ("" for its head).

        Args:
            thread_id: The thread to read.
            checkpoint_id: A checkpoint of this thread; "" for the head.
            timeout: Seconds before the call fails with DEADLINE_EXCEEDED; None waits forever.

        Returns:
            The checkpoint, its conversation, the nodes that would run next, and its metadata.
        """
        request = pb.GetStateRequest(thread_id=thread_id, checkpoint_id=checkpoint_id)
        try:
            response: pb.GetStateResponse = self._stub.GetState(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise error_from_rpc_error(err) from err
        return response

    def list_threads(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> pb.ListThreadsResponse:
        """Returns one page of the caller's threads, most recently active first.

        Args:
            page_size: Threads per page; 0 lets the server choose (20), at most 100.
            page_token: next_page_token of the previous page; "" for the first.
            timeout: Seconds before the call fails with DEADLINE_EXCEEDED; None waits forever.

        Returns:
            The threads and the token of the next page ("" on the last).
        """
        request = pb.ListThreadsRequest(page_size=page_size, page_token=page_token)
        try:
            response: pb.ListThreadsResponse = self._stub.ListThreads(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise error_from_rpc_error(err) from err
        return response

    def resume(
        self,
        thread_id: str,
        interrupt_id: str,
        decision: pb.ResumeDecision,
        *,
        request_id: str = "",
        timeout: float | None = None,
    ) -> pb.Turn:
        """Continues a turn that paused for a human (Turn.interrupts) with a decision.

        Args:
            thread_id: The interrupted thread.
            interrupt_id: The Interrupt.interrupt_id to answer.
            decision: e.g. pb.ResumeDecision(approve=pb.Approval()) or reject=pb.Rejection(reason=...).
            request_id: An optional id of this call, recorded in the audit trail.
            timeout: Seconds before the call fails with DEADLINE_EXCEEDED; None waits forever.

        Returns:
            The continued turn (it may pause again).
        """
        request = pb.ResumeRequest(
            thread_id=thread_id, interrupt_id=interrupt_id, decision=decision, request_id=request_id
        )
        try:
            response: pb.ResumeResponse = self._stub.Resume(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise error_from_rpc_error(err) from err
        return response.turn

    def stream_resume(
        self,
        thread_id: str,
        interrupt_id: str,
        decision: pb.ResumeDecision,
        *,
        request_id: str = "",
        timeout: float | None = None,
    ) -> Iterator[pb.StreamResumeResponse]:
        """resume(), yielding its events as they happen; the last carries the `final` Turn."""
        request = pb.StreamResumeRequest(
            thread_id=thread_id, interrupt_id=interrupt_id, decision=decision, request_id=request_id
        )
        call = self._stub.StreamResume(request, timeout=timeout, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as err:
            raise error_from_rpc_error(err) from err
        finally:
            call.cancel()
