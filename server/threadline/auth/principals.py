"""Principal: the verified caller of one RPC, with its tenant and what it may do."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from threadline.engine.context import DEFAULT_TENANT

_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class Scope(enum.StrEnum):
    """What a credential allows. JWTs carry them as `threadline:<scope>` in their `scope` claim."""

    READ = "read"
    """History, GetState, ListThreads: reading the tenant's threads."""
    WRITE = "write"
    """Ask, StreamAsk, Resume, StreamResume, Rewind: changing the tenant's threads."""
    DELETE = "delete"
    """DeleteThread."""


ALL_SCOPES = frozenset(Scope)


def is_tenant_id(value: str) -> bool:
    """True when value is a valid tenant id: the syntax of a thread id (1 to 128 of [A-Za-z0-9._:-])."""
    return _TENANT_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class Principal:
    """A caller whose credentials were verified."""

    tenant: str
    """The tenant whose threads the caller reads and writes."""
    scopes: frozenset[Scope]
    """What the caller may do."""
    caller: str = ""
    """Who, for the audit trail: an API key's label or a JWT's `sub` (never the credential)."""


OPEN = Principal(DEFAULT_TENANT, ALL_SCOPES)
"""The caller of a server without authentication (open mode): the one tenant, every scope."""
