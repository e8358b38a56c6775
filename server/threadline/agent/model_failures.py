"""Turns the model SDK's failures into ModelErrors: status codes decide what a caller should do."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import openai

from threadline.errors import (
    ModelError,
    ModelRateLimited,
    ModelRejectedCredentials,
    ModelRejectedRequest,
    ModelUnavailable,
)

log = logging.getLogger(__name__)


@contextmanager
def model_failures(*, secrets: tuple[str, ...] = ()) -> Iterator[None]:
    """Re-raises an openai failure in the block as a ModelError; secrets never reach its message."""
    try:
        yield
    except openai.APIError as exc:
        error = model_error(exc)
        error.message = _scrub(error.message, secrets)
        log.warning("model call failed: %s", error.message)
        raise error from exc


def model_error(exc: openai.APIError) -> ModelError:
    """The ModelError for an openai failure."""
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
