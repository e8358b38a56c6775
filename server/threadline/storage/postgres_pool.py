"""The PostgreSQL connection pool: connections configured as storage needs them, checked only after idling."""

from __future__ import annotations

import time
import weakref
from typing import Any

import psycopg_pool
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row

Pool = psycopg_pool.AsyncConnectionPool[AsyncConnection[DictRow]]


class IdleConnectionCheck:
    """The pool's `check`: a connection idle for more than a moment is checked before use; a busy one is not.

    The check is one round trip per checkout, a share of every turn's server CPU
    (docs/performance.md). What it is for is connections that died while idle (a
    database restart, a cloud idle reaper); one returned to the pool less than
    `idle_s` ago was just working. If it died in that moment anyway, the call fails
    with UNAVAILABLE and psycopg drops the broken connection, as it would without a check.
    """

    def __init__(self, idle_s: float = 1.0) -> None:
        self._idle_s = idle_s
        self._returned_at: weakref.WeakKeyDictionary[AsyncConnection[Any], float] = weakref.WeakKeyDictionary()

    async def check(self, conn: AsyncConnection[Any]) -> None:
        """Raises if a connection idle for longer than idle_s does not answer."""
        returned_at = self._returned_at.get(conn)
        if returned_at is None or time.monotonic() - returned_at > self._idle_s:
            await psycopg_pool.AsyncConnectionPool.check_connection(conn)

    async def returned(self, conn: AsyncConnection[Any]) -> None:
        """The pool's `reset`: notes when the connection came back."""
        self._returned_at[conn] = time.monotonic()


async def open_pool(
    url: str, *, min_size: int, max_size: int, timeout_s: float, prepare_threshold: int | None, **options: Any
) -> Pool:
    """An open pool of connections configured the way storage needs them."""
    pool: Pool = psycopg_pool.AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout_s,
        open=False,
        # Autocommit: a statement, or a pipeline up to its Sync, is one transaction (postgres_holds).
        kwargs={"autocommit": True, "row_factory": dict_row, "prepare_threshold": prepare_threshold},
        **options,
    )
    await pool.open(wait=True, timeout=timeout_s)
    return pool
