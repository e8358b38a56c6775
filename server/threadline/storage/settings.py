"""How storage behaves beyond its URL; config.py fills it. Kept free of drivers, so reading settings stays cheap."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StorageSettings:
    """How storage behaves beyond its URL (PostgreSQL pool settings are ignored by the others).

    Defaults live in config.py, where each setting is declared once.
    """

    pool_min_size: int
    pool_max_size: int
    pool_timeout_s: float
    """Longest wait for a connection; then the call fails (UNAVAILABLE) instead of hanging."""
    pool_max_lifetime_s: float
    pool_max_idle_s: float
    pool_check: bool
    """Check each connection when it leaves the pool: a connection a database restart or a
    cloud idle-reaper killed is replaced instead of failing the call."""
    prepare_threshold: int | None
    """psycopg's prepare_threshold: None disables prepared statements (PgBouncer in transaction mode)."""
    busy_wait_max_s: float
    """Longest a turn waits for a busy thread when the call has no shorter deadline."""
    hot_threads: int
    """Threads whose recent conversation states this replica keeps in memory (0: none)."""
