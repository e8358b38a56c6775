"""Checks and encodings of what callers name: thread ids, checkpoint ids, request ids, page tokens."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
import uuid

from threadline.engine.context import DEFAULT_TENANT
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


def checkpoint_time(checkpoint_id: str) -> dt.datetime:
    """When LangGraph wrote the checkpoint with this id (UUIDv6: its time is in its first 15 hex digits)."""
    digits = checkpoint_id.replace("-", "")
    stamp = (int(digits[:12], 16) << 12) | int(digits[13:16], 16)
    return dt.datetime.fromtimestamp((stamp - 0x01B21DD213814000) / 10_000_000, dt.UTC)


# Page tokens name the tenant they were issued to ("o", a digest of its id), so a token passed
# by another tenant is as meaningless as a made-up one. Tokens without it were issued before
# tenants had credentials, to the one tenant of open mode.
_MALFORMED = "page_token is malformed; pass next_page_token unchanged"


def _tenant_tag(tenant: str) -> str:
    return hashlib.sha256(tenant.encode()).hexdigest()[:16]


def _encoded(payload: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


MAX_PAGE_TOKEN_CHARS = 1024
"""Longer than any token the server issues: a longer one is malformed without being decoded."""


def _decoded(token: str, tenant: str) -> dict[str, object] | None:
    """The payload of a token of this version issued to tenant; None for anything else."""
    if len(token) > MAX_PAGE_TOKEN_CHARS:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error, RecursionError):
        return None
    if not isinstance(payload, dict) or payload.get("v") != _TOKEN_VERSION:
        return None
    owner = payload.get("o")
    if owner != _tenant_tag(tenant) and not (owner is None and tenant == DEFAULT_TENANT):
        return None
    return payload


def encode_page_token(tenant: str, thread_id: str, before_checkpoint_id: str) -> str:
    """An opaque token for the History page that starts after before_checkpoint_id."""
    return _encoded({"v": _TOKEN_VERSION, "o": _tenant_tag(tenant), "t": thread_id, "b": before_checkpoint_id})


def encode_threads_token(tenant: str, updated_at: dt.datetime, thread_id: str) -> str:
    """An opaque token for the ListThreads page after the thread (updated_at, thread_id)."""
    return _encoded({"v": _TOKEN_VERSION, "o": _tenant_tag(tenant), "u": updated_at.isoformat(), "t": thread_id})


def decode_threads_token(token: str, tenant: str) -> tuple[dt.datetime, str]:
    """The (updated_at, thread_id) a ListThreads page token continues after; InvalidArgument when malformed."""
    payload = _decoded(token, tenant)
    after, at = (payload.get("t"), payload.get("u")) if payload is not None else (None, None)
    if isinstance(after, str) and isinstance(at, str):
        try:
            stamp = dt.datetime.fromisoformat(at)
        except ValueError:
            stamp = None
        if stamp is not None and stamp.tzinfo is not None:
            return stamp, after
    raise InvalidArgument("page_token", _MALFORMED)


def decode_page_token(token: str, tenant: str, thread_id: str) -> str:
    """The checkpoint id a page token continues after; InvalidArgument for a bad or foreign token."""
    payload = _decoded(token, tenant)
    before, owner = (payload.get("b"), payload.get("t")) if payload is not None else (None, None)
    if not isinstance(before, str) or not isinstance(owner, str):
        raise InvalidArgument("page_token", _MALFORMED)
    if owner != thread_id:
        raise InvalidArgument("page_token", "page_token was issued for another thread")
    return check_checkpoint_id(before, field="page_token")


def encode_messages_token(tenant: str, thread_id: str, checkpoint_id: str, offset: int, newest_first: bool) -> str:
    """An opaque token for the ListMessages page that starts at offset (counted in the page order)."""
    payload = {"v": _TOKEN_VERSION, "o": _tenant_tag(tenant), "t": thread_id, "c": checkpoint_id}
    return _encoded({**payload, "n": offset, "r": newest_first})


def decode_messages_token(token: str, tenant: str, thread_id: str) -> tuple[str, int, bool]:
    """(checkpoint_id, offset, newest_first) of a ListMessages page token; InvalidArgument for a bad or foreign one."""
    payload = _decoded(token, tenant)
    fields = (payload.get("t"), payload.get("c"), payload.get("n"), payload.get("r")) if payload else (None,) * 4
    owner, checkpoint_id, offset, newest_first = fields
    valid = isinstance(checkpoint_id, str) and isinstance(newest_first, bool)
    if not valid or not isinstance(owner, str) or type(offset) is not int or offset < 0:
        raise InvalidArgument("page_token", _MALFORMED)
    if owner != thread_id:
        raise InvalidArgument("page_token", "page_token was issued for another thread")
    return check_checkpoint_id(str(checkpoint_id), field="page_token"), offset, bool(newest_first)
