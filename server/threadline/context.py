"""The request context: who is calling and within what limits.

One object flows from the servicer into the engine for every call, so tenancy,
auth and tracing can be added by filling fields here, without changing the
engine's signatures or teaching it about gRPC.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class RequestContext:
    """What the engine knows about the call it serves."""

    rpc: str
    """The RPC's name ("Ask", "StreamAsk", ...), recorded in the audit trail."""
    tenant: str = DEFAULT_TENANT
    """The tenant whose threads the call may touch; threads are stored under it."""
    request_id: str = ""
    """The caller's optional id of this call (validated), recorded with what it writes."""
    deadline: float | None = None
    """time.monotonic() value by which the call must end; None: no deadline."""
    started_at: float = field(default_factory=time.monotonic)

    def remaining(self) -> float | None:
        """Seconds left before the deadline, never negative; None without a deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())
