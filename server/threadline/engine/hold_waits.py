"""A turn's wait for the hold on its thread: its span, and how long a turn that found its thread busy waited.

Holding a thread (storage.thread_locks) takes a moment when it is free, and as long as the turn
ahead of it runs when it is busy: locks call the turn's `step_aside()` exactly when they wait for
a busy thread (locally, or on another replica), which is how a busy wait is told from a free one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from threadline.engine.observer import TurnObserver
from threadline.storage.thread_locks import StepAside

HOLD_WAIT_SPAN = "threadline.hold_wait"

_tracer = trace.get_tracer("threadline.engine")


class HoldWait:
    """One turn's wait for its hold: give the locks `step_aside`, and call `held()` once the hold is taken."""

    def __init__(
        self, step_aside: StepAside, span: Span | None, observer: TurnObserver | None, tenant: str, rpc: str
    ) -> None:
        self._inner = step_aside
        self._span = span
        self._observer = observer
        self._tenant = tenant
        self._rpc = rpc
        self._started = time.perf_counter()
        self._ended = False
        # The wait's span is the current one until it ends: the statements taking the hold are its children.
        self._token = None if span is None else otel_context.attach(trace.set_span_in_context(span))
        self.busy = False
        """Whether the thread was busy (the turn stepped aside to wait for it)."""

    @asynccontextmanager
    async def step_aside(self) -> AsyncIterator[None]:
        """The turn's step_aside, noting that the thread was busy."""
        self.busy = True
        async with self._inner():
            yield

    def held(self) -> None:
        """The hold is taken: the wait ends here."""
        self.end(None)

    def end(self, error: BaseException | None) -> None:
        """Ends the wait (once; later calls do nothing): with the hold taken, or with the error that ended it."""
        if self._ended:
            return
        self._ended = True
        if self._token is not None:
            otel_context.detach(self._token)
        waited_s = time.perf_counter() - self._started
        if self.busy and self._observer is not None:
            self._observer.busy_wait(
                tenant=self._tenant, rpc=self._rpc, outcome="gave_up" if error else "held", waited_s=waited_s
            )
        if self._span is not None:
            self._span.set_attribute("threadline.thread_busy", self.busy)
            if error is not None:
                self._span.set_attribute("error.type", type(error).__name__)
                self._span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            self._span.end()


@asynccontextmanager
async def measured_wait(
    step_aside: StepAside, *, traced: bool, observer: TurnObserver | None, tenant: str, rpc: str
) -> AsyncIterator[HoldWait]:
    """The block takes the hold and calls `held()`; what it does after that is not part of the wait."""
    wait = HoldWait(step_aside, _tracer.start_span(HOLD_WAIT_SPAN) if traced else None, observer, tenant, rpc)
    try:
        yield wait
    except BaseException as exc:
        wait.end(exc)  # nothing once held: a failure of the turn is not the wait's
        raise
    finally:
        wait.end(None)
