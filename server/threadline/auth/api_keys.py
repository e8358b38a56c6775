"""API keys: a file of key hashes per tenant, re-read when it changes.

File format (THREADLINE_API_KEYS_FILE; part of the contract): one key per line,

    TENANT SHA256_HEX [SCOPES [LABEL]]

TENANT has the syntax of a thread id; SHA256_HEX is the lowercase hex SHA-256 of the key
(only hashes are stored); SCOPES is a comma-separated subset of read,write,delete (default:
all three); LABEL (the rest of the line, may contain spaces) names the key in the audit trail.
Blank lines and lines starting with `#` are ignored. A key's hash appears once.

A key is looked up by comparing its hash with every stored hash in constant time, so the
time a lookup takes says nothing about which hashes exist.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from dataclasses import dataclass

from threadline.auth.principals import ALL_SCOPES, Principal, Scope, is_tenant_id
from threadline.errors import ConfigurationError

log = logging.getLogger(__name__)

KEY_PREFIX = "tl_"
"""Start of every key `threadline keys new` makes, so secret scanners and readers recognise one."""
_KEY_BYTES = 32
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ApiKey:
    """One line of the keys file."""

    tenant: str
    digest: bytes
    scopes: frozenset[Scope]
    label: str

    def principal(self) -> Principal:
        """The caller this key authenticates."""
        return Principal(self.tenant, self.scopes, self.label)


def digest_of(key: str) -> bytes:
    """The SHA-256 of a key, as the keys file stores it (in hex)."""
    return hashlib.sha256(key.encode()).digest()


def new_key() -> str:
    """A new random key: KEY_PREFIX and 32 random bytes, URL-safe base64 (no dots: never parsed as a JWT)."""
    return KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)


def key_line(key: str, tenant: str, scopes: frozenset[Scope] = ALL_SCOPES, label: str = "") -> str:
    """The keys-file line of key (its hash, never the key)."""
    if not is_tenant_id(tenant):
        raise ConfigurationError(f"tenant {tenant!r} must be 1 to 128 characters of [A-Za-z0-9._:-]")
    fields = [tenant, digest_of(key).hex(), ",".join(scope.value for scope in Scope if scope in scopes)]
    return " ".join([*fields, label] if label else fields)


def parse_scopes(text: str) -> frozenset[Scope]:
    """A comma-separated list of scope names; ConfigurationError names an unknown one."""
    scopes = set()
    for name in (part.strip() for part in text.split(",")):
        try:
            scopes.add(Scope(name))
        except ValueError:
            raise ConfigurationError(f"unknown scope {name!r}: expected read, write or delete") from None
    return frozenset(scopes)


def parse_keys(text: str, source: str) -> tuple[ApiKey, ...]:
    """The keys of a keys file's text; ConfigurationError names the first bad line (never its hash)."""
    keys: list[ApiKey] = []
    seen: set[bytes] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split(maxsplit=3)
        if not fields or fields[0].startswith("#"):
            continue
        try:
            key = _parse_line(fields)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{source} line {number}: {exc.message}") from None
        if key.digest in seen:
            raise ConfigurationError(f"{source} line {number}: this hash is listed already")
        seen.add(key.digest)
        keys.append(key)
    return tuple(keys)


def _parse_line(fields: list[str]) -> ApiKey:
    if len(fields) < 2:
        raise ConfigurationError("expected TENANT SHA256_HEX [SCOPES [LABEL]]")
    tenant, hex_digest = fields[0], fields[1]
    if not is_tenant_id(tenant):
        raise ConfigurationError("the tenant must be 1 to 128 characters of [A-Za-z0-9._:-]")
    if not _HEX_SHA256.fullmatch(hex_digest):
        raise ConfigurationError("the key hash must be 64 lowercase hex digits (sha256sum of the key)")
    scopes = parse_scopes(fields[2]) if len(fields) > 2 else ALL_SCOPES
    label = fields[3].strip() if len(fields) > 3 else ""
    return ApiKey(tenant, bytes.fromhex(hex_digest), scopes, label)


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class ApiKeyFile:
    """The keys of THREADLINE_API_KEYS_FILE, kept current while the server runs.

    A file that cannot be read or parsed at start-up is a ConfigurationError. Later, a change
    is picked up by reload_if_changed() (the server polls it) or reload() (on SIGHUP); a bad
    edit keeps the previous keys in force and logs why.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._stamp = _stamp(path)
        self._keys = self._load()

    def _load(self) -> tuple[ApiKey, ...]:
        try:
            with open(self._path, encoding="utf-8") as file:
                text = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigurationError(f"THREADLINE_API_KEYS_FILE: cannot read {self._path!r}: {reason}") from None
        return parse_keys(text, self._path)

    def reload(self) -> None:
        """Re-reads the file; on an error keeps the keys in force and logs why."""
        self._stamp = _stamp(self._path)
        try:
            keys = self._load()
        except ConfigurationError as exc:
            log.warning("API keys not reloaded, the previous %d key(s) stay in force: %s", len(self._keys), exc.message)
            return
        self._keys = keys
        log.info("API keys reloaded from %s: %d key(s)", self._path, len(keys))

    def reload_if_changed(self) -> None:
        """Re-reads the file when its modification time, size or inode changed since the last read."""
        if _stamp(self._path) != self._stamp:
            self.reload()

    def find(self, key: str) -> ApiKey | None:
        """The entry of key, or None. Compares with every hash, in constant time each."""
        digest = digest_of(key)
        found = None
        for entry in self._keys:
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        return found
