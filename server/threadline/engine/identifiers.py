"""Checks and encodings of what callers name: thread ids, checkpoint ids, request ids, page tokens."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import uuid

from threadline.errors import InvalidArgument

MAX_ID_CHARS = 128
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_TOKEN_VERSION = 1
_THREADS_OF_REQUESTS = uuid.UUID("6f1d3c2e-6b7a-4c1e-9a53-0f4e2b8d7c11")
"""Namespace of the thread ids derived from request ids (fixed: retries of stored calls depend on it)."""


def check_thread_id(thread_id: str, field: str = "thread_id") -> str:
    """Returns thread_id when it is well formed, else raises InvalidArgument."""
    if not thread_id:
        raise InvalidArgument(field, f"{field} is required")
    if not _ID.fullmatch(thread_id):
        raise InvalidArgument(
            field,
            f"{field} must be 1 to {MAX_ID_CHARS} characters of [A-Za-z0-9._:-] starting with a letter or digit",
        )
    return thread_id


def check_request_id(request_id: str) -> str:
    """Returns request_id ("" allowed: it is optional) when well formed, else raises InvalidArgument."""
    if request_id and not _ID.fullmatch(request_id):
        raise InvalidArgument(
            "request_id",
            f"request_id must be 1 to {MAX_ID_CHARS} characters of [A-Za-z0-9._:-] starting with a letter or digit",
        )
    return request_id


def check_checkpoint_id(checkpoint_id: str, field: str = "checkpoint_id") -> str:
    """Returns checkpoint_id in lower case (as LangGraph writes it) when it is a UUID in canonical
    form, in either case; else raises InvalidArgument."""
    try:
        canonical = str(uuid.UUID(checkpoint_id))
    except ValueError:
        raise InvalidArgument(field, f"{field} {checkpoint_id[:64]!r} is not a checkpoint id") from None
    if canonical != checkpoint_id.lower():
        raise InvalidArgument(field, f"{field} {checkpoint_id[:64]!r} is not in canonical UUID form")
    return canonical


def check_query(query: str, max_chars: int) -> str:
    """Returns the query when it is not blank and within max_chars, else raises InvalidArgument."""
    if not query.strip():
        raise InvalidArgument("query", "query must contain a non-blank character")
    if len(query) > max_chars:
        raise InvalidArgument("query", f"query is {len(query)} characters long; the limit is {max_chars}")
    return query


def new_thread_id(request_id: str = "") -> str:
    """The id of the thread an Ask without a thread_id creates.

    With a request_id it is derived from it, so a retry of the call (same request_id, still no
    thread_id) reaches the same thread, finds the turn there and returns it instead of creating
    another thread and running the model again. Threads are keyed by tenant as well, so two
    tenants' equal request_ids never meet.
    """
    return str(uuid.uuid5(_THREADS_OF_REQUESTS, request_id)) if request_id else str(uuid.uuid4())


def checkpoint_id_at(unix_time: float) -> str:
    """The smallest checkpoint id LangGraph can give a checkpoint written at unix_time (UUIDv6 layout)."""
    stamp = int(unix_time * 10_000_000) + 0x01B21DD213814000  # 100 ns ticks since 1582-10-15
    return f"{stamp >> 28:08x}-{(stamp >> 12) & 0xFFFF:04x}-6{stamp & 0x0FFF:03x}-0000-000000000000"


def encode_page_token(thread_id: str, before_checkpoint_id: str) -> str:
    """An opaque token for the History page that starts after before_checkpoint_id."""
    payload = json.dumps({"v": _TOKEN_VERSION, "t": thread_id, "b": before_checkpoint_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def encode_threads_token(updated_at: dt.datetime, thread_id: str) -> str:
    """An opaque token for the ListThreads page after the thread (updated_at, thread_id)."""
    payload = json.dumps({"v": _TOKEN_VERSION, "u": updated_at.isoformat(), "t": thread_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_threads_token(token: str) -> tuple[dt.datetime, str]:
    """The (updated_at, thread_id) a ListThreads page token continues after; InvalidArgument when malformed."""
    try:
        payload = json.loads(base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode("ascii")))
        if payload.get("v") == _TOKEN_VERSION and isinstance(payload.get("t"), str):
            at = dt.datetime.fromisoformat(payload["u"])
            if at.tzinfo is not None:
                return at, payload["t"]
    except (ValueError, UnicodeError, binascii.Error, KeyError, TypeError, AttributeError):
        pass
    raise InvalidArgument("page_token", "page_token is malformed; pass next_page_token unchanged")


def decode_page_token(token: str, thread_id: str) -> str:
    """The checkpoint id a page token continues after; InvalidArgument for a bad or foreign token."""
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        valid = isinstance(payload, dict) and payload.get("v") == _TOKEN_VERSION
        before = payload["b"] if valid else None
        owner = payload["t"] if valid else None
    except (ValueError, UnicodeError, binascii.Error, KeyError, TypeError):
        valid, before, owner = False, None, None
    if not valid or not isinstance(before, str) or not isinstance(owner, str):
        raise InvalidArgument("page_token", "page_token is malformed; pass next_page_token unchanged")
    if owner != thread_id:
        raise InvalidArgument("page_token", "page_token was issued for another thread")
    return check_checkpoint_id(before, field="page_token")
