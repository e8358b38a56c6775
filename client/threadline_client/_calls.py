"""The client's calls, each defined once for both the sync and the async client.

Every public function here is the contract of the client method of the same
name: its parameters and docstring are the method's, and it turns the
arguments into a ready call (checking them, building the request, and saying
what of the response the caller gets). It does no I/O: ThreadlineClient and
AsyncThreadlineClient only differ in how they start a call and wait for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from .v1 import threadline_pb2 as pb

try:  # optional: with OpenTelemetry installed, every call carries the caller's active trace context
    from opentelemetry import propagate as _propagate
except ImportError:  # pragma: no cover - depends on the installation
    _propagate = None  # type: ignore[assignment]

ResultT = TypeVar("ResultT")
EventT = TypeVar("EventT", bound=Message)
ItemT = TypeVar("ItemT")
_ResponseT = TypeVar("_ResponseT", bound=Message)
_TurnRequestT = TypeVar("_TurnRequestT", pb.AskRequest, pb.StreamAskRequest)
_ResumeRequestT = TypeVar("_ResumeRequestT", pb.ResumeRequest, pb.StreamResumeRequest)


@dataclass(frozen=True)
class _Call:
    """One RPC with its request and deadline, ready to start on a sync or a grpc.aio stub."""

    rpc: str
    """The stub's method, e.g. "Ask"."""
    request: Message
    timeout: float | None

    def start(self, stub: Any, metadata: Sequence[tuple[str, str]]) -> Any:
        """Starts the call: what the stub's method returns (a response, a stream, or an awaitable of either).

        The metadata gains the active trace context (W3C `traceparent`, `tracestate`) when OpenTelemetry
        is installed and a span is active.
        """
        return getattr(stub, self.rpc)(self.request, timeout=self.timeout, metadata=(*metadata, *_trace_context()))


def _trace_context() -> list[tuple[str, str]]:
    """The active OpenTelemetry context as call metadata, by the globally configured propagator (W3C by default)."""
    if _propagate is None:
        return []
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    return list(carrier.items())


@dataclass(frozen=True)
class UnaryCall(_Call, Generic[ResultT]):
    """A unary RPC; `result` takes from its response what the caller gets."""

    result: Callable[[Any], ResultT]


@dataclass(frozen=True)
class StreamCall(_Call, Generic[EventT]):
    """A server-streaming RPC whose every message the caller gets, as it comes."""


@dataclass(frozen=True)
class Page(Generic[ItemT]):
    """One page of a paginated list, and the token of the next ("" on the last)."""

    items: Sequence[ItemT]
    next_page_token: str


@dataclass(frozen=True)
class PagedCall(Generic[ItemT]):
    """Unary calls that together list every item: `page` makes the call of the page a token names."""

    page: Callable[[str], UnaryCall[Page[ItemT]]]
    """Takes "" for the first page, then each page's next_page_token."""


def ask(
    query: str,
    *,
    thread_id: str = "",
    request_id: str = "",
    checkpoint_id: str = "",
    abandon_interrupt: bool = False,
    timeout: float | None = None,
) -> UnaryCall[pb.Turn]:
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
    request = _turn_request(pb.AskRequest, query, thread_id, request_id, checkpoint_id, abandon_interrupt)
    return UnaryCall("Ask", request, timeout, _turn_of)


def stream_ask(
    query: str,
    *,
    thread_id: str = "",
    request_id: str = "",
    checkpoint_id: str = "",
    abandon_interrupt: bool = False,
    timeout: float | None = None,
) -> StreamCall[pb.StreamAskResponse]:
    """Runs one turn like ask(), yielding its events as they happen; the last event carries the `final` Turn.

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
    request = _turn_request(pb.StreamAskRequest, query, thread_id, request_id, checkpoint_id, abandon_interrupt)
    return StreamCall("StreamAsk", request, timeout)


def history(
    thread_id: str,
    *,
    page_size: int = 0,
    page_token: str = "",
    message_limit: int = 0,
    timeout: float | None = None,
) -> UnaryCall[pb.HistoryResponse]:
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
    request = pb.HistoryRequest(
        thread_id=thread_id, page_size=page_size, page_token=page_token, message_limit=message_limit
    )
    return UnaryCall("History", request, timeout, _whole_response)


def iter_checkpoints(thread_id: str, *, page_size: int = 0, timeout: float | None = None) -> PagedCall[pb.Checkpoint]:
    """Yields all of a thread's checkpoints, newest first, fetching page after page.

    Args:
        thread_id: The thread to read.
        page_size: Checkpoints per page; 0 lets the server choose.
        timeout: Seconds each page's call may take; None waits forever.

    Yields:
        The checkpoints of every branch, newest first.
    """

    def page(page_token: str) -> UnaryCall[Page[pb.Checkpoint]]:
        request = pb.HistoryRequest(thread_id=thread_id, page_size=page_size, page_token=page_token)
        return UnaryCall("History", request, timeout, _checkpoints_page)

    return PagedCall(page)


def list_messages(
    thread_id: str,
    *,
    checkpoint_id: str = "",
    page_size: int = 0,
    page_token: str = "",
    newest_first: bool = False,
    timeout: float | None = None,
) -> UnaryCall[pb.ListMessagesResponse]:
    """Returns one page of the conversation at a checkpoint (the head by default).

    Args:
        thread_id: The thread to read.
        checkpoint_id: A checkpoint of this thread; "" for the head. Ignored with a page_token.
        page_size: Messages per page; 0 lets the server choose (20), at most 1000. A page also
            ends where the response would exceed the server's largest message.
        page_token: The previous page's next_page_token; "" for the first page.
        newest_first: Newest message first; default oldest first. Ignored with a page_token.
        timeout: Seconds before the call fails with DEADLINE_EXCEEDED; None waits forever.

    Returns:
        The page; its next_page_token is "" on the last page.
    """
    request = pb.ListMessagesRequest(
        thread_id=thread_id,
        checkpoint_id=checkpoint_id,
        page_size=page_size,
        page_token=page_token,
        newest_first=newest_first,
    )
    return UnaryCall("ListMessages", request, timeout, _whole_response)


def iter_messages(
    thread_id: str,
    *,
    checkpoint_id: str = "",
    newest_first: bool = False,
    page_size: int = 0,
    timeout: float | None = None,
) -> PagedCall[pb.Message]:
    """Yields the whole conversation at a checkpoint (the head by default), fetching page after page.

    Args:
        thread_id: The thread to read.
        checkpoint_id: A checkpoint of this thread; "" for the head (pinned by the first page).
        newest_first: Newest message first; default oldest first.
        page_size: Messages per page; 0 lets the server choose.
        timeout: Seconds each page's call may take; None waits forever.

    Yields:
        The messages, in the order asked for.
    """

    def page(page_token: str) -> UnaryCall[Page[pb.Message]]:
        request = pb.ListMessagesRequest(
            thread_id=thread_id,
            checkpoint_id=checkpoint_id,
            page_size=page_size,
            page_token=page_token,
            newest_first=newest_first,
        )
        return UnaryCall("ListMessages", request, timeout, _messages_page)

    return PagedCall(page)


def rewind(
    thread_id: str,
    *,
    steps_back: int | None = None,
    checkpoint_id: str | None = None,
    request_id: str = "",
    timeout: float | None = None,
) -> UnaryCall[pb.RewindResponse]:
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
    if steps_back is not None and checkpoint_id is not None:
        raise ValueError("give steps_back or checkpoint_id, not both")
    request = pb.RewindRequest(thread_id=thread_id, request_id=request_id)
    # Explicit values, even 0 or "", are sent as set (a oneof has presence), so the
    # server judges them; with neither, no target is sent and the server says so.
    if steps_back is not None:
        request.steps_back = steps_back
    elif checkpoint_id is not None:
        request.checkpoint_id = checkpoint_id
    return UnaryCall("Rewind", request, timeout, _whole_response)


def delete_thread(
    thread_id: str, *, allow_missing: bool = False, timeout: float | None = None
) -> UnaryCall[pb.DeleteThreadResponse]:
    """Deletes a thread's checkpoints; History and Rewind then answer NOT_FOUND.

    Args:
        thread_id: The thread to delete.
        allow_missing: Succeed (existed=False) when the thread does not exist.
        timeout: Seconds before the call fails with DEADLINE_EXCEEDED; None waits forever.

    Returns:
        The thread id and whether it existed.
    """
    request = pb.DeleteThreadRequest(thread_id=thread_id, allow_missing=allow_missing)
    return UnaryCall("DeleteThread", request, timeout, _whole_response)


def get_state(
    thread_id: str, *, checkpoint_id: str = "", timeout: float | None = None
) -> UnaryCall[pb.GetStateResponse]:
    """Returns a thread's full state at checkpoint_id ("" for its head).

    Args:
        thread_id: The thread to read.
        checkpoint_id: A checkpoint of this thread; "" for the head.
        timeout: Seconds before the call fails with DEADLINE_EXCEEDED; None waits forever.

    Returns:
        The checkpoint, its conversation, the nodes that would run next, and its metadata.
    """
    request = pb.GetStateRequest(thread_id=thread_id, checkpoint_id=checkpoint_id)
    return UnaryCall("GetState", request, timeout, _whole_response)


def list_threads(
    *, page_size: int = 0, page_token: str = "", timeout: float | None = None
) -> UnaryCall[pb.ListThreadsResponse]:
    """Returns one page of the caller's threads, most recently active first.

    Args:
        page_size: Threads per page; 0 lets the server choose (20), at most 100.
        page_token: next_page_token of the previous page; "" for the first.
        timeout: Seconds before the call fails with DEADLINE_EXCEEDED; None waits forever.

    Returns:
        The threads and the token of the next page ("" on the last).
    """
    request = pb.ListThreadsRequest(page_size=page_size, page_token=page_token)
    return UnaryCall("ListThreads", request, timeout, _whole_response)


def resume(
    thread_id: str,
    interrupt_id: str,
    decision: pb.ResumeDecision,
    *,
    request_id: str = "",
    timeout: float | None = None,
) -> UnaryCall[pb.Turn]:
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
    request = _resume_request(pb.ResumeRequest, thread_id, interrupt_id, decision, request_id)
    return UnaryCall("Resume", request, timeout, _turn_of)


def stream_resume(
    thread_id: str,
    interrupt_id: str,
    decision: pb.ResumeDecision,
    *,
    request_id: str = "",
    timeout: float | None = None,
) -> StreamCall[pb.StreamResumeResponse]:
    """resume(), yielding its events as they happen; the last carries the `final` Turn."""
    request = _resume_request(pb.StreamResumeRequest, thread_id, interrupt_id, decision, request_id)
    return StreamCall("StreamResume", request, timeout)


def _turn_request(
    kind: type[_TurnRequestT],
    query: str,
    thread_id: str,
    request_id: str,
    checkpoint_id: str,
    abandon_interrupt: bool,
) -> _TurnRequestT:
    """An AskRequest or a StreamAskRequest: the two carry the same fields."""
    return kind(
        query=query,
        thread_id=thread_id,
        request_id=request_id,
        checkpoint_id=checkpoint_id,
        abandon_interrupt=abandon_interrupt,
    )


def _resume_request(
    kind: type[_ResumeRequestT], thread_id: str, interrupt_id: str, decision: pb.ResumeDecision, request_id: str
) -> _ResumeRequestT:
    """A ResumeRequest or a StreamResumeRequest: the two carry the same fields."""
    return kind(thread_id=thread_id, interrupt_id=interrupt_id, decision=decision, request_id=request_id)


def _turn_of(response: pb.AskResponse | pb.ResumeResponse) -> pb.Turn:
    return response.turn


def _whole_response(response: _ResponseT) -> _ResponseT:
    return response


def _checkpoints_page(response: pb.HistoryResponse) -> Page[pb.Checkpoint]:
    return Page(response.checkpoints, response.next_page_token)


def _messages_page(response: pb.ListMessagesResponse) -> Page[pb.Message]:
    return Page(response.messages, response.next_page_token)
