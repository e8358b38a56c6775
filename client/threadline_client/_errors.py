"""ThreadlineError, and its construction from the errors grpcio raises."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import grpc
import grpc.aio
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped, unused-ignore]
from grpc_status import rpc_status

from .constants import ERROR_DOMAIN

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class ThreadlineError(Exception):
    """A Threadline RPC failed.

    Attributes:
        code: The canonical gRPC status code.
        message: The status message sent by the server.
        reason: The UPPER_SNAKE_CASE `google.rpc.ErrorInfo` reason of domain
            "threadline.dev" (e.g. "THREAD_NOT_FOUND"), or "" when the status
            carries none.
        metadata: The ErrorInfo metadata (e.g. {"field": "thread_id"}), empty when none.
        retry_after: Seconds to wait before retrying, from a `google.rpc.RetryInfo` detail
            (e.g. a tenant at its quota); None when the status carries none.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.retry_after = retry_after
        # All go to args so that the error survives pickling (cls(*args)).
        super().__init__(code, message, reason, self.metadata, retry_after)

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}" if self.message else self.code.name
        return f"{text} ({self.reason})" if self.reason else text


def error_from_rpc_error(err: grpc.RpcError) -> ThreadlineError:
    """Builds a ThreadlineError from an error raised by a synchronous stub call."""
    if not isinstance(err, grpc.Call):
        # Every error a sync stub raises is also its Call; anything else has no status to read.
        return ThreadlineError(grpc.StatusCode.UNKNOWN, str(err))
    try:
        status = rpc_status.from_call(err)
    except (ValueError, DecodeError):
        # A trailer that contradicts the status, or is garbled, only loses the details.
        status = None
    return _build(err.code(), err.details() or "", status)


def error_from_aio_rpc_error(err: grpc.aio.AioRpcError) -> ThreadlineError:
    """Builds a ThreadlineError from an error raised by a grpc.aio stub call.

    grpc_status's async from_call needs the live aio Call and awaits it; an
    AioRpcError already holds the final trailers, so they are read directly.
    """
    return _build(err.code(), err.details() or "", _status_from_trailers(err.trailing_metadata() or ()))


def _status_from_trailers(trailers: Iterable[tuple[str, str | bytes]]) -> status_pb2.Status | None:
    for key, value in trailers:
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None


def _build(code: grpc.StatusCode, message: str, status: status_pb2.Status | None) -> ThreadlineError:
    reason, metadata, retry_after = "", {}, None
    for detail in status.details if status is not None else ():
        info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        # A reason is only meaningful within its domain: ErrorInfo of other domains is ignored.
        if detail.Unpack(info) and info.domain == ERROR_DOMAIN and not reason:
            reason = str(info.reason)
            metadata = {str(key): str(value) for key, value in info.metadata.items()}
        elif detail.Unpack(retry):
            retry_after = retry.retry_delay.ToTimedelta().total_seconds()
    return ThreadlineError(code, message, reason, metadata, retry_after)
