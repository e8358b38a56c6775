"""Test credentials made with real cryptography: CAs and certificates, JWKS files and signed JWTs, API keys."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from threadline.auth.api_keys import key_line, new_key

ISSUER = "https://idp.test.example"
AUDIENCE = "threadline-test"


def _pem_key(key: Any) -> bytes:
    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem


@dataclass
class Issued:
    """A certificate and its key as PEM files."""

    cert_file: Path
    key_file: Path


class CertificateAuthority:
    """A self-signed CA that issues server certificates for 127.0.0.1/localhost and client certificates."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name = folder, name
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
        self._cert = (
            self._builder(subject, self._key.public_key())
            .issuer_name(subject)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_file = folder / f"{name}-ca.pem"
        self.cert_file.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _builder(subject: x509.Name, public_key: Any) -> x509.CertificateBuilder:
        now = dt.datetime.now(dt.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
        )

    def issue(self, common_name: str, *, server: bool, file_stem: str | None = None) -> Issued:
        """A leaf certificate (server: for 127.0.0.1 and localhost; else a client's) and its key."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), key.public_key())
        builder = builder.issuer_name(self._cert.subject).add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        )
        if server:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
            usage = ExtendedKeyUsageOID.SERVER_AUTH
        else:
            usage = ExtendedKeyUsageOID.CLIENT_AUTH
        cert = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False).sign(self._key, hashes.SHA256())
        stem = file_stem or f"{self.name}-{common_name}"
        issued = Issued(self.folder / f"{stem}.pem", self.folder / f"{stem}.key")
        issued.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key_file.write_bytes(_pem_key(key))
        return issued


class Signer:
    """An identity provider's signing keys (RS256, ES256, EdDSA), their JWKS file, and tokens they sign."""

    def __init__(self, folder: Path) -> None:
        self.keys: dict[str, tuple[str, Any]] = {
            "rsa-1": ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            "ec-1": ("ES256", ec.generate_private_key(ec.SECP256R1())),
            "ed-1": ("EdDSA", ed25519.Ed25519PrivateKey.generate()),
        }
        self.jwks_file = folder / "jwks.json"
        self.jwks_file.write_text(json.dumps({"keys": [self._jwk(kid) for kid in self.keys]}))

    def _jwk(self, kid: str) -> dict[str, Any]:
        algorithm, key = self.keys[kid]
        jwk = json.loads(jwt.get_algorithm_by_name(algorithm).to_jwk(key.public_key()))
        return {**jwk, "kid": kid, "alg": algorithm, "use": "sig"}

    def public_pem(self, kid: str) -> bytes:
        public_key = self.keys[kid][1].public_key()
        pem: bytes = public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem

    def token(self, kid: str = "rsa-1", *, header: dict[str, Any] | None = None, **claims: Any) -> str:
        """A token signed by kid's key; claims override iss, aud, exp (now + 5 min), sub and tenant (None drops)."""
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "iat": now, "sub": "alice", "tenant": "acme"}
        body.update(claims)
        body = {name: value for name, value in body.items() if value is not None}
        algorithm, key = self.keys[kid]
        return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid, **(header or {})})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unsigned_token(**claims: Any) -> str:
    """A token with `alg: none` and no signature."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def hs256_with_public_key(public_pem: bytes, kid: str, **claims: Any) -> str:
    """The key-confusion attack: an HS256 token whose HMAC secret is the RSA public key's PEM."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


@dataclass
class Key:
    """An API key and its keys-file line."""

    key: str
    line: str


def api_key(tenant: str, scopes: str = "read,write,delete", label: str = "") -> Key:
    from threadline.auth.api_keys import parse_scopes

    key = new_key()
    return Key(key, key_line(key, tenant, parse_scopes(scopes), label))
