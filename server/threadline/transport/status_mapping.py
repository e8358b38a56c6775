"""The one place where errors become gRPC statuses.

Each ThreadlineError class has a canonical status code; its `reason` and metadata
travel as a google.rpc.ErrorInfo detail so callers can branch on them without
parsing messages. Anything else is a bug: it is logged with a traceback and
answered INTERNAL with an incident id, never with its text.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from threadline import errors
from threadline_client.constants import ERROR_DOMAIN

log = logging.getLogger(__name__)

DOMAIN = ERROR_DOMAIN

# Most specific class first: the first isinstance match wins.
_CODES: tuple[tuple[type[errors.ThreadlineError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.StorageUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.StepLimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.ThreadBusy, grpc.StatusCode.ABORTED),
    (errors.ModelUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.ModelRateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.ModelRejectedCredentials, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ModelRejectedRequest, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ModelError, grpc.StatusCode.UNAVAILABLE),
    (errors.ConfigurationError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.StreamTooSlow, grpc.StatusCode.RESOURCE_EXHAUSTED),
)


def code_for(error: errors.ThreadlineError) -> grpc.StatusCode:
    """The status code of an engine error."""
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.UNKNOWN


def status_for(exc: BaseException) -> grpc.Status:
    """The gRPC status (code, message, ErrorInfo detail) that reports exc to the caller."""
    if isinstance(exc, errors.ThreadlineError):
        code, message, reason, metadata = code_for(exc), exc.message, exc.reason, exc.metadata
    else:
        incident = uuid.uuid4().hex[:12]
        log.error("unexpected error (incident %s)", incident, exc_info=exc)
        code, message = grpc.StatusCode.INTERNAL, f"internal error; incident {incident} is logged"
        reason, metadata = "INTERNAL", {"incident": incident}
    details = [_packed(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))]
    if isinstance(exc, errors.QuotaExceeded):
        details += _quota_details(exc)
    if isinstance(exc, errors.Overloaded):
        details.append(_retry_info(exc.retry_after_s))
    status = status_pb2.Status(code=code.value[0], message=message, details=details)
    return rpc_status.to_status(status)


def _packed(message: Message) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


def _quota_details(exc: errors.QuotaExceeded) -> list[any_pb2.Any]:
    """google.rpc.QuotaFailure (which limit) and RetryInfo (when to retry) of a tenant at its limit."""
    violation = error_details_pb2.QuotaFailure.Violation(
        subject=f"tenant:{exc.tenant}", description=exc.description, quota_id=exc.limit, quota_value=exc.value
    )
    return [_packed(error_details_pb2.QuotaFailure(violations=[violation])), _retry_info(exc.retry_after_s)]


def _retry_info(after_s: float) -> any_pb2.Any:
    """google.rpc.RetryInfo: when the call may be retried."""
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromTimedelta(dt.timedelta(seconds=after_s))
    return _packed(retry)
