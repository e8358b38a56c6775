"""Request messages and channel options, shared by the sync and async clients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .v1 import threadline_pb2 as pb

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_MESSAGE_LIMIT_KEYS = ("grpc.max_send_message_length", "grpc.max_receive_message_length")


def channel_options(max_message_bytes: int, extra: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Returns `extra` plus the message size limit both ways, unless `extra` sets a limit itself."""
    given = {key for key, _ in extra}
    limits = [(key, max_message_bytes) for key in _MESSAGE_LIMIT_KEYS if key not in given]
    return [*limits, *extra]


def ask_request(
    query: str, thread_id: str, request_id: str, checkpoint_id: str, abandon_interrupt: bool
) -> pb.AskRequest:
    """Builds an AskRequest."""
    return pb.AskRequest(
        query=query,
        thread_id=thread_id,
        request_id=request_id,
        checkpoint_id=checkpoint_id,
        abandon_interrupt=abandon_interrupt,
    )


def stream_ask_request(
    query: str, thread_id: str, request_id: str, checkpoint_id: str, abandon_interrupt: bool
) -> pb.StreamAskRequest:
    """Builds a StreamAskRequest."""
    return pb.StreamAskRequest(
        query=query,
        thread_id=thread_id,
        request_id=request_id,
        checkpoint_id=checkpoint_id,
        abandon_interrupt=abandon_interrupt,
    )


def history_request(thread_id: str, page_size: int, page_token: str, message_limit: int) -> pb.HistoryRequest:
    """Builds a HistoryRequest."""
    return pb.HistoryRequest(
        thread_id=thread_id, page_size=page_size, page_token=page_token, message_limit=message_limit
    )


def rewind_request(
    thread_id: str, steps_back: int | None, checkpoint_id: str | None, request_id: str
) -> pb.RewindRequest:
    """Builds a RewindRequest, setting the `target` oneof to whichever of the two is given.

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
    return request
