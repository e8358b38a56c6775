"""Errors of the Threadline engine. They know nothing of gRPC.

    ThreadlineError                  root; `reason` is an UPPER_SNAKE_CASE code
    ├── ConfigurationError           bad settings or user graph, found at start-up
    ├── InvalidArgument              the caller sent a bad value (`field` names it)
    ├── NotFound                     an unknown thread or checkpoint
    ├── OutOfRange                   a valid value past what the thread holds
    ├── FailedPrecondition           the thread's state does not allow the call
    ├── StorageUnavailable           the checkpoint database cannot be reached
    ├── DeadlineExceeded             the call's deadline passed before the turn finished
    ├── StepLimitExceeded            a turn ran more graph steps than allowed
    ├── ThreadBusy                   another turn holds the thread (policy reject, or the wait ran out)
    ├── Unauthenticated              no valid credentials (reason TOKEN_EXPIRED for an expired JWT)
    ├── PermissionDenied             valid credentials without the RPC's scope
    ├── QuotaExceeded                the tenant is at one of its limits (retry after `retry_after_s`)
    ├── Overloaded                   the server is at its concurrent-call limit (retry after `retry_after_s`)
    ├── StreamTooSlow                a stream's reader fell behind; the turn went on without it
    └── ModelError                   the model endpoint failed
        ├── ModelUnavailable         unreachable or 5xx: retry later
        ├── ModelRateLimited         429: slow down
        ├── ModelRejectedCredentials 401/403: fix the configuration
        └── ModelRejectedRequest     other 4xx (unknown model, bad parameters)

The transport maps each class to a status code in one place
(threadline.transport.status_mapping).
"""

from __future__ import annotations


class ThreadlineError(Exception):
    """Root of every error the engine raises on purpose."""

    reason = "THREADLINE_ERROR"

    def __init__(self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})


class ConfigurationError(ThreadlineError):
    """Settings or a user graph that cannot work; raised before the server starts."""

    reason = "CONFIGURATION"


class InvalidArgument(ThreadlineError):
    """A request field with a bad value."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str):
        super().__init__(message, metadata={"field": field})
        self.field = field


class NotFound(ThreadlineError):
    """A thread or checkpoint that does not exist (for this tenant)."""

    reason = "NOT_FOUND"


class OutOfRange(ThreadlineError):
    """A well-formed value that reaches past what the thread holds."""

    reason = "OUT_OF_RANGE"


class FailedPrecondition(ThreadlineError):
    """The call is valid but the thread's state does not allow it; fix the state first."""

    reason = "FAILED_PRECONDITION"


class StorageUnavailable(ThreadlineError):
    """The checkpoint database is unreachable; the call can be retried."""

    reason = "STORAGE_UNAVAILABLE"


class DeadlineExceeded(ThreadlineError):
    """The call's deadline passed before the turn finished."""

    reason = "DEADLINE_EXCEEDED"


class StepLimitExceeded(ThreadlineError):
    """A turn hit the graph's recursion limit (a model that keeps calling tools)."""

    reason = "STEP_LIMIT_EXCEEDED"


class ThreadBusy(ThreadlineError):
    """Another turn is running on the thread."""

    reason = "THREAD_BUSY"


class Unauthenticated(ThreadlineError):
    """The call carries no valid credentials. The message never says which tenants or keys exist."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(ThreadlineError):
    """The credentials are valid but lack the scope the RPC needs."""

    reason = "MISSING_SCOPE"

    def __init__(self, scope: str):
        super().__init__(f"the credentials lack the scope {scope!r} this call needs", metadata={"scope": scope})
        self.scope = scope


class QuotaExceeded(ThreadlineError):
    """The caller's tenant is at one of its limits; the call may be retried after `retry_after_s`."""

    reason = "TENANT_QUOTA_EXCEEDED"

    def __init__(self, tenant: str, limit: str, value: int, description: str, retry_after_s: float):
        super().__init__(f"{description}; retry in {retry_after_s:.1f}s", metadata={"limit": limit})
        self.tenant = tenant
        self.limit = limit
        self.value = value
        self.description = description
        self.retry_after_s = retry_after_s


class Overloaded(ThreadlineError):
    """The server runs as many calls as it admits (THREADLINE_MAX_CONCURRENT_RPCS); retry after `retry_after_s`."""

    reason = "SERVER_OVERLOADED"

    def __init__(self, limit: int, retry_after_s: float):
        super().__init__(
            f"the server is at its limit of {limit} concurrent calls; retry in {retry_after_s:.1f}s",
            metadata={"limit": str(limit)},
        )
        self.retry_after_s = retry_after_s


class StreamTooSlow(ThreadlineError):
    """A stream's reader fell behind its buffer or stopped reading; the turn ran on to its end without it."""

    reason = "STREAM_TOO_SLOW"


class ModelError(ThreadlineError):
    """The model endpoint failed."""

    reason = "MODEL_ERROR"


class ModelUnavailable(ModelError):
    """The model endpoint is unreachable or answered 5xx."""

    reason = "MODEL_UNAVAILABLE"


class ModelRateLimited(ModelError):
    """The model endpoint answered 429."""

    reason = "MODEL_RATE_LIMITED"


class ModelRejectedCredentials(ModelError):
    """The model endpoint refused the API key."""

    reason = "MODEL_REJECTED_CREDENTIALS"


class ModelRejectedRequest(ModelError):
    """The model endpoint refused the request itself (unknown model, bad parameters)."""

    reason = "MODEL_REJECTED_REQUEST"
