"""Per-tenant limits on turns, so one busy tenant cannot take a replica from the others.

THREADLINE_TENANT_MAX_CONCURRENT_TURNS bounds a tenant's turns running at once, and
THREADLINE_TENANT_TURNS_PER_MINUTE the turns it starts per minute (a token bucket: a burst of
up to a minute's turns, then one every 60/N seconds). Both count in one server process: a
replica with N workers admits up to N times as much. 0 turns a limit off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from threadline.errors import QuotaExceeded

CONCURRENCY_RETRY_S = 1.0
"""What RetryInfo suggests to a tenant at its concurrency limit (a running turn's end cannot be known)."""


@dataclass
class _Usage:
    running: int = 0
    tokens: float = 0.0
    refilled_at: float = 0.0


class TenantQuotas:
    """Admits a tenant's turns within its limits; admit() raises QuotaExceeded beyond them."""

    def __init__(
        self, *, max_concurrent: int = 0, per_minute: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_concurrent = max_concurrent
        self._per_minute = per_minute
        self._clock = clock
        self._usage: dict[str, _Usage] = {}

    @property
    def active(self) -> bool:
        """True when any limit is set."""
        return bool(self._max_concurrent or self._per_minute)

    def admit(self, tenant: str) -> None:
        """Counts a turn of tenant as started; call done(tenant) when it ends. QuotaExceeded when over a limit."""
        usage = self._usage.setdefault(tenant, _Usage(tokens=float(self._per_minute), refilled_at=self._clock()))
        if self._max_concurrent and usage.running >= self._max_concurrent:
            raise QuotaExceeded(
                tenant,
                "concurrent_turns",
                self._max_concurrent,
                f"the tenant runs {usage.running} turns at once, its limit",
                CONCURRENCY_RETRY_S,
            )
        if self._per_minute:
            now = self._clock()
            usage.tokens = min(self._per_minute, usage.tokens + (now - usage.refilled_at) * self._per_minute / 60)
            usage.refilled_at = now
            if usage.tokens < 1:
                wait = (1 - usage.tokens) * 60 / self._per_minute
                raise QuotaExceeded(
                    tenant,
                    "turns_per_minute",
                    self._per_minute,
                    f"the tenant started {self._per_minute} turns a minute",
                    wait,
                )
            usage.tokens -= 1
        usage.running += 1

    def done(self, tenant: str) -> None:
        """Ends a turn admit() counted; forgets a tenant with nothing running and a full bucket."""
        usage = self._usage[tenant]
        usage.running -= 1
        full = usage.tokens + (self._clock() - usage.refilled_at) * self._per_minute / 60 >= self._per_minute
        if usage.running == 0 and full:
            del self._usage[tenant]
