"""Authenticator: the `authorization: Bearer <token>` of a call to its Principal.

A token with the shape of a JWT (three dot-separated parts) is verified as one when JWTs are
configured; any other token is looked up as an API key. With neither configured the server is
in open mode: every call is the one tenant `default` with every scope, whatever it sends.
"""

from __future__ import annotations

from threadline.auth.api_keys import ApiKeyFile
from threadline.auth.jwt_tokens import INVALID, JwtVerifier
from threadline.auth.principals import OPEN, Principal
from threadline.errors import Unauthenticated

MISSING = "no credentials: send the metadata `authorization: Bearer <token>`"


class Authenticator:
    """Verifies the credentials of calls against the configured API keys and JWT issuer."""

    def __init__(self, api_keys: ApiKeyFile | None = None, jwt: JwtVerifier | None = None) -> None:
        self.api_keys = api_keys
        self._jwt = jwt

    @property
    def open(self) -> bool:
        """True in open mode: no keys file and no JWKS."""
        return self.api_keys is None and self._jwt is None

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a call with this `authorization` metadata value; Unauthenticated otherwise."""
        if self.open:
            return OPEN
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(MISSING)
        if token.count(".") == 2 and self._jwt is not None:
            return await self._jwt.verify(token)
        found = self.api_keys.find(token) if self.api_keys is not None else None
        if found is None:
            raise Unauthenticated(INVALID)
        return found.principal()
