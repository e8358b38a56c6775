"""Turns the database drivers' failures into StorageUnavailable, the one error storage raises for them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg_pool

from threadline.errors import StorageUnavailable
from threadline.storage.contract import STORAGE_ERRORS
from threadline.storage.thread_locks import StaleRunError

log = logging.getLogger(__name__)


@contextmanager
def storage_failures() -> Iterator[None]:
    """Re-raises a database failure in the block as StorageUnavailable (UNAVAILABLE: retrying can work)."""
    try:
        yield
    except psycopg_pool.PoolTimeout as exc:
        log.warning("no free database connection: %s", exc)
        raise StorageUnavailable(
            f"the checkpoint database is unavailable: no connection in time ({_first_line(exc)}); either the "
            "database is unreachable or every pooled connection is busy with another statement "
            "(THREADLINE_DB_POOL_MAX_SIZE sets how many)"
        ) from exc
    except StaleRunError as exc:
        log.warning("turn fenced off its thread: %s", exc)
        raise StorageUnavailable(f"{exc}; retry with the same request_id", reason="THREAD_HOLD_LOST") from exc
    except STORAGE_ERRORS as exc:
        log.warning("storage unavailable: %s", exc)
        raise StorageUnavailable(f"the checkpoint database is unavailable: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 300 characters), or its type's name."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
