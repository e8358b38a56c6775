"""Turns the failures of our dependencies into Threadline errors, in one place.

The database drivers, openai and LangGraph each raise their own exceptions; the
engine wraps every operation in `translated_failures()` so that what leaves it is
a ThreadlineError the transport knows how to report.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import openai
import psycopg_pool
from langgraph.errors import GraphRecursionError

from threadline.engine.postgres_holds import StaleRunError
from threadline.engine.storage import STORAGE_ERRORS
from threadline.errors import (
    ModelError,
    ModelRateLimited,
    ModelRejectedCredentials,
    ModelRejectedRequest,
    ModelUnavailable,
    StepLimitExceeded,
    StorageUnavailable,
)

log = logging.getLogger(__name__)


@contextmanager
def translated_failures(*, secrets: tuple[str, ...] = ()) -> Iterator[None]:
    """Re-raises storage, model and graph failures as ThreadlineErrors; secrets never reach a message."""
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
    except openai.APIError as exc:
        error = model_error(exc)
        error.message = _scrub(error.message, secrets)
        log.warning("model call failed: %s", error.message)
        raise error from exc
    except GraphRecursionError as exc:
        raise StepLimitExceeded(
            "the turn ran more graph steps than the recursion limit allows (a model that keeps calling tools?)"
        ) from exc


def model_error(exc: openai.APIError) -> ModelError:
    """The ModelError for an openai failure: status codes decide what a caller should do."""
    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        return ModelUnavailable(f"the model endpoint is unreachable: {type(exc).__name__}")
    status = getattr(exc, "status_code", None)
    detail = f"the model endpoint answered HTTP {status}: {_first_line(exc)}"
    if status == 429:
        return ModelRateLimited(detail)
    if status in (401, 403):
        return ModelRejectedCredentials(detail)
    if isinstance(status, int) and status >= 500:
        return ModelUnavailable(detail)
    if isinstance(status, int) and 400 <= status < 500:
        return ModelRejectedRequest(detail)
    # No status: the endpoint failed after its HTTP 200 (an error event in the stream); its message says why.
    return ModelUnavailable(f"the model endpoint failed: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _scrub(message: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
            # openai echoes keys partly masked ("sk-ab***wxyz"): drop any long tail of the key too.
            if len(secret) > 8:
                message = message.replace(secret[-4:], "****")
    return message
