"""What secures the server: its TLS credentials, its authenticator, and the scope each RPC needs.

TLS certificates are read again when their files change: gRPC asks for the configuration at
each new connection's handshake, and gets a new one only when a file's stamp moved, so a
renewed certificate is served to new connections without a restart (open ones keep theirs).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import cast

import grpc

from threadline.auth.api_keys import ApiKeyFile
from threadline.auth.credentials import Authenticator
from threadline.auth.jwt_tokens import JwksKeys, JwtVerifier
from threadline.auth.principals import Scope
from threadline.auth.quotas import TenantQuotas
from threadline.config import Settings
from threadline.errors import ConfigurationError
from threadline_client.v1 import threadline_pb2 as pb

log = logging.getLogger(__name__)

RPC_SCOPES: dict[str, Scope] = {
    "Ask": Scope.WRITE,
    "StreamAsk": Scope.WRITE,
    "Resume": Scope.WRITE,
    "StreamResume": Scope.WRITE,
    "Rewind": Scope.WRITE,
    "History": Scope.READ,
    "GetState": Scope.READ,
    "ListThreads": Scope.READ,
    "ListMessages": Scope.READ,
    "DeleteThread": Scope.DELETE,
}
"""The scope each ThreadlineService RPC needs (a new RPC without one fails at import)."""

TURN_RPCS = frozenset({"Ask", "StreamAsk", "Resume", "StreamResume"})
"""The RPCs that run a turn: what per-tenant quotas count."""

_unscoped = set(pb.DESCRIPTOR.services_by_name["ThreadlineService"].methods_by_name) - set(RPC_SCOPES)
if _unscoped:
    raise RuntimeError(f"ThreadlineService RPCs without a scope in RPC_SCOPES: {sorted(_unscoped)}")


async def authenticator(settings: Settings) -> Authenticator:
    """The authenticator of the settings (open mode without keys file and JWKS); ConfigurationError when unusable."""
    api_keys = ApiKeyFile(settings.api_keys_file) if settings.api_keys_file else None
    verifier = None
    if settings.jwt_jwks:
        keys = JwksKeys(settings.jwt_jwks)
        await keys.load()
        verifier = JwtVerifier(
            keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience, tenant_claim=settings.jwt_tenant_claim
        )
    return Authenticator(api_keys, verifier)


def quotas(settings: Settings) -> TenantQuotas:
    """The per-tenant turn limits of the settings (inactive when both are 0)."""
    return TenantQuotas(
        max_concurrent=settings.tenant_max_concurrent_turns, per_minute=settings.tenant_turns_per_minute
    )


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path!r}: {exc.strerror}") from None


def _stamp(paths: tuple[str, ...]) -> tuple[tuple[int, int, int], ...]:
    stamps = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            stamps.append((0, 0, 0))
            continue
        stamps.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
    return tuple(stamps)


class _ReloadedCertificates:
    """gRPC's certificate configuration fetcher: a new configuration when the files changed, else None."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str) -> None:
        self._paths = tuple(path for path in (cert_file, key_file, client_ca_file) if path)
        self._cert_file, self._key_file, self._client_ca_file = cert_file, key_file, client_ca_file
        self._stamp = _stamp(self._paths)
        self.initial = self._configuration()

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        pair = (_read(self._key_file), _read(self._cert_file))
        root = _read(self._client_ca_file) if self._client_ca_file else None
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=root)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        stamp = _stamp(self._paths)
        if stamp == self._stamp:
            return None
        try:
            configuration = self._configuration()
        except (ConfigurationError, ValueError) as exc:
            log.warning("TLS certificates not reloaded, the previous ones stay in use: %s", exc)
            return None
        self._stamp = stamp
        log.info("TLS certificates reloaded from %s", self._cert_file)
        return configuration


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials (mTLS with a client CA) reloaded as their files change; None for plaintext."""
    if not settings.tls:
        return None
    certificates = _ReloadedCertificates(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
    # grpc's stubs type the fetcher's result as never None; its documentation says None keeps the current one.
    fetcher = cast(Callable[[], grpc.ServerCertificateConfiguration], certificates)
    return grpc.dynamic_ssl_server_credentials(
        certificates.initial, fetcher, require_client_authentication=bool(settings.tls_client_ca_file)
    )
