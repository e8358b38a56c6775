"""Explicit overload: a bounded number of calls at once, the rest refused with a reason and a retry delay.

grpc.aio's own limit (`maximum_concurrent_rpcs`) answers RESOURCE_EXHAUSTED without
google.rpc.RetryInfo or ErrorInfo, and gRPC core cancels calls it has queued but the
application has not picked up yet (`grpc.server.max_pending_requests`, 1000 by default) with a
bare CANCELLED that clients do not retry. The server therefore raises core's queue limits
(server.py) and refuses here, cheaply and first, with Overloaded: RESOURCE_EXHAUSTED,
SERVER_OVERLOADED, RetryInfo.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from threadline.errors import Overloaded

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1.0
"""The retry delay a refused caller is given: about how long a burst takes to drain."""

LOG_INTERVAL_S = 1.0
"""Refusals are logged as one line per interval at most, with their count."""


class CallLimit:
    """Admits at most `limit` calls at once; refusals are counted and logged at most once a second."""

    def __init__(self, limit: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.running = 0
        self._clock = clock
        self._refused_unlogged = 0
        self._logged_at = -LOG_INTERVAL_S

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Counts the block as one running call; Overloaded (nothing run) when `limit` already run."""
        if self.running >= self.limit:
            self._refused()
            raise Overloaded(self.limit, RETRY_AFTER_S)
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1

    def _refused(self) -> None:
        self._refused_unlogged += 1
        now = self._clock()
        if now - self._logged_at >= LOG_INTERVAL_S:
            log.warning(
                "overloaded: refused %d call(s) over the limit of %d concurrent calls (THREADLINE_MAX_CONCURRENT_RPCS)",
                self._refused_unlogged,
                self.limit,
            )
            self._logged_at = now
            self._refused_unlogged = 0
