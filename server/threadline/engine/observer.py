"""What the engine reports about the turns it runs, for metrics: the seam between the engine and the transport.

The engine knows no metrics library: it tells a `TurnObserver` what happened (a model request
and its usage, a tool call, a wait for a busy thread, an interrupt), and the transport's
implementation (transport.metrics) turns that into Prometheus series. Every call about a turn
carries its tenant; whether it becomes a label is the implementation's choice. Bytes written come
from the storage's serializer, which does not know whose thread it writes.
"""

from __future__ import annotations

from typing import Literal, Protocol

ModelOutcome = Literal["ok", "error", "cancelled"]
ToolOutcome = Literal["ok", "error", "cancelled", "interrupted"]
WaitOutcome = Literal["held", "gave_up"]


class TurnObserver(Protocol):
    """Receives what turns did; called on the event loop, so implementations must not block."""

    def model_request(
        self,
        *,
        tenant: str,
        model: str,
        outcome: ModelOutcome,
        duration_s: float,
        input_tokens: int | None,
        output_tokens: int | None,
    ) -> None:
        """One model request ended; the tokens are the provider's usage (None: it reported none)."""
        ...

    def tool_call(self, *, tenant: str, tool: str, outcome: ToolOutcome) -> None:
        """One tool call ended ("error": it raised, or returned an error result)."""
        ...

    def busy_wait(self, *, tenant: str, rpc: str, outcome: WaitOutcome, waited_s: float) -> None:
        """A turn found its thread busy and waited waited_s for its hold, until it held it or gave up."""
        ...

    def interrupts_created(self, *, tenant: str, count: int) -> None:
        """A turn paused for a human with count pending interrupts."""
        ...

    def interrupt_resumed(self, *, tenant: str) -> None:
        """A Resume answered a pending interrupt and its run finished."""
        ...

    def checkpoint_bytes_written(self, nbytes: int) -> None:
        """The checkpointer serialized nbytes to write (storage.contract.MeasuredSerializer)."""
        ...
