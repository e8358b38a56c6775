"""JWT access tokens (OIDC): signature by the identity provider's published keys, then claims.

Verified with PyJWT against the keys of a JWKS (THREADLINE_JWT_JWKS: a file or an https URL).
Only asymmetric algorithms are accepted (RS256, ES256, EdDSA), and each key only for its own
algorithm, so neither `alg: none` nor an HS256 token "signed" with a public key can pass.
`exp`, `iss` and `aud` are required; clocks may differ by LEEWAY_S. The tenant comes from a
claim (THREADLINE_JWT_TENANT_CLAIM), the caller for the audit trail from `sub`, the scopes from
`scope`: space-separated `threadline:read threadline:write threadline:delete`; a token without a
`scope` claim has all three (an identity provider that issues tokens for Threadline alone need
not define scopes), one with a `scope` claim has exactly the threadline scopes it lists.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import jwt

from threadline.auth.principals import ALL_SCOPES, Principal, Scope, is_tenant_id
from threadline.errors import ConfigurationError, Unauthenticated

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "ES256", "EdDSA")
LEEWAY_S = 60
REFETCH_INTERVAL_S = 60.0
"""An unknown `kid` refetches the key set at most this often (a flood of made-up kids costs one fetch a minute)."""
FETCH_TIMEOUT_S = 10.0
SCOPE_PREFIX = "threadline:"
INVALID = "the credentials are not valid"
"""The one message of every rejected token or key: it says nothing about which tenants or keys exist."""


class JwksKeys:
    """The signing keys of a JWKS file or https URL, refetched when a token names an unknown key id."""

    def __init__(self, source: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not source.startswith(("https://", "/", "./", "../")) and "://" in source:
            raise ConfigurationError(f"THREADLINE_JWT_JWKS must be a file path or an https:// URL, got {source!r}")
        self._source = source
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -REFETCH_INTERVAL_S
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Fetches the key set; ConfigurationError when it cannot (at start-up)."""
        try:
            self._keys = await self._fetch()
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise ConfigurationError(f"THREADLINE_JWT_JWKS: cannot load {self._source!r}: {exc}") from None

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The key of kid (the only key when the token names none), refetching once for an unknown kid."""
        found = self._find(kid)
        if found is None and self._clock() - self._fetched_at >= REFETCH_INTERVAL_S:
            async with self._lock:
                if self._find(kid) is None and self._clock() - self._fetched_at >= REFETCH_INTERVAL_S:
                    await self._refetch()
            found = self._find(kid)
        return found

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refetch(self) -> None:
        try:
            self._keys = await self._fetch()
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            log.warning("JWKS %s not refetched, the previous keys stay in force: %s", self._source, exc)

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        self._fetched_at = self._clock()
        text = await asyncio.to_thread(self._read)
        keys = jwt.PyJWKSet.from_json(text).keys
        usable = {key.key_id or "": key for key in keys if key.algorithm_name in ALGORITHMS}
        if not usable:
            raise ValueError(f"no {', '.join(ALGORITHMS)} key in the set")
        log.info("JWKS loaded from %s: %d key(s)", self._source, len(usable))
        return usable

    def _read(self) -> str:
        if self._source.startswith("https://"):
            with urllib.request.urlopen(self._source, timeout=FETCH_TIMEOUT_S) as response:
                return str(response.read().decode())
        with open(self._source, encoding="utf-8") as file:
            return file.read()


class JwtVerifier:
    """Turns a JWT access token into its Principal, or raises Unauthenticated."""

    def __init__(self, keys: JwksKeys, *, issuer: str, audience: str, tenant_claim: str) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._tenant_claim = tenant_claim

    async def verify(self, token: str) -> Principal:
        """The caller the token names; Unauthenticated (TOKEN_EXPIRED when only its time is up) otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _rejected("not a JWT") from None
        kid = header.get("kid")
        if header.get("alg") not in ALGORITHMS or not isinstance(kid, str | None):
            raise _rejected(f"algorithm {header.get('alg')!r} not accepted")
        key = await self._keys.key(kid)
        if key is None:
            raise _rejected(f"unknown key id {kid!r}")
        claims = self._decode(token, key)
        tenant = claims.get(self._tenant_claim)
        if not isinstance(tenant, str) or not is_tenant_id(tenant):
            raise _rejected(f"claim {self._tenant_claim!r} missing or not a tenant id")
        subject = claims.get("sub")
        return Principal(tenant, _scopes(claims.get("scope")), subject if isinstance(subject, str) else "")

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud"], "enforce_minimum_key_length": True},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired", reason="TOKEN_EXPIRED") from None
        except jwt.PyJWTError as exc:
            raise _rejected(type(exc).__name__) from None


def _scopes(claim: Any) -> frozenset[Scope]:
    if claim is None:
        return ALL_SCOPES
    if not isinstance(claim, str):
        return frozenset()
    names = {part.removeprefix(SCOPE_PREFIX) for part in claim.split() if part.startswith(SCOPE_PREFIX)}
    return frozenset(scope for scope in Scope if scope.value in names)


def _rejected(why: str) -> Unauthenticated:
    """The error of a rejected token; why is for the server's log only (DEBUG), never the caller."""
    log.debug("JWT rejected: %s", why)
    return Unauthenticated(INVALID)
