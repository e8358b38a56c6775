"""Turns the model SDK's failures into ModelErrors: status codes decide what a caller should do."""

from __future__ import annotations

import logging
import os
import socket
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
        return ModelUnavailable(_connection_failure(exc))
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


def _connection_failure(exc: openai.APIConnectionError) -> str:
    """What went wrong: the OS's words when it gave a reason (refused, reset), else a timeout, else the SDK's error.

    The OS's reason is looked for first because the SDK's aiohttp client reports a refused connection
    as APITimeoutError.
    """
    os_words = _os_words(exc)
    if os_words is not None:
        return f"the model endpoint is unreachable: {os_words}"
    if isinstance(exc, openai.APITimeoutError):
        return "the model endpoint timed out"
    return f"the model endpoint is unreachable: {type(exc).__name__}"


def _os_words(exc: BaseException) -> str | None:
    """The OS's description of the innermost OSError with an errno in exc's chain of causes, if any.

    Innermost, because outer layers (asyncio, the HTTP clients) reword it ("Connect call failed ...");
    the errno's own text is what the OS says ("Connection refused"). A resolver error's errno is not an
    OS errno, so its own text is used.
    """
    words: str | None = None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            words = current.strerror if isinstance(current, socket.gaierror) else os.strerror(current.errno)
        current = current.__cause__ or current.__context__
    return words[:1].lower() + words[1:] if words else None


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
