"""The request context: who is calling and within what limits.

One object flows from the servicer into the engine for every call, so tenancy,
auth and tracing can be added by filling fields here, without changing the
engine's signatures or teaching it about gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass

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
