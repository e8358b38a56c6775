"""The request context: who is calling and within what limits.

One object flows from the transport (its interceptor) into the engine for every call, so tenancy,
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
    """The RPC's name ("Ask", "StreamAsk", ...), for what the engine logs and says in errors.

    What the audit trail records is the turn's engine.turn_kinds.TurnKind, which the engine
    decides (an Ask with a checkpoint_id is a Fork)."""
    tenant: str = DEFAULT_TENANT
    """The tenant whose threads the call may touch; threads are stored under it."""
    caller: str = ""
    """Who made the call, for the audit trail: an API key's label or a JWT's subject ("" in open mode)."""
    request_id: str = ""
    """The caller's optional id of this call (validated), recorded with what it writes."""
    deadline: float | None = None
    """time.monotonic() value by which the call must end; None: no deadline."""
