"""The API keys file: its format, its errors (never showing a hash), and lookups."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from threadline.auth.api_keys import ApiKeyFile, key_line, new_key, parse_keys
from threadline.auth.principals import ALL_SCOPES, Scope
from threadline.errors import ConfigurationError

HASH = hashlib.sha256(b"secret-key").hexdigest()


def test_lines_give_tenant_scopes_and_label() -> None:
    text = f"""
# comment
acme {HASH}
globex {"1" * 64} read
initech {"2" * 64} read,delete  build bot 7
"""
    keys = parse_keys(text, "keys")
    assert [(k.tenant, k.scopes, k.label) for k in keys] == [
        ("acme", ALL_SCOPES, ""),
        ("globex", frozenset({Scope.READ}), ""),
        ("initech", frozenset({Scope.READ, Scope.DELETE}), "build bot 7"),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("acme", "expected TENANT SHA256_HEX"),
        (f"acme/x {HASH}", "the tenant must be"),
        (f"acme {HASH.upper()}", "64 lowercase hex digits"),
        (f"acme {HASH[:-1]}", "64 lowercase hex digits"),
        (f"acme {HASH} admin", "unknown scope 'admin'"),
        (f"acme {HASH}\nglobex {HASH}", "line 3: this hash is listed already"),
    ],
)
def test_a_bad_line_is_named_without_its_hash(line: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as refused:
        parse_keys(f"# keys\n{line}\n", "keys")
    assert HASH not in refused.value.message and HASH.upper() not in refused.value.message


def test_lookup_finds_a_key_by_its_hash_only(tmp_path: Path) -> None:
    key = new_key()
    assert key.startswith("tl_") and "." not in key and len(key) >= 3 + 43
    path = tmp_path / "keys"
    path.write_text(key_line(key, "acme", frozenset({Scope.READ}), "ci") + "\n")
    assert key not in path.read_text()
    keys = ApiKeyFile(str(path))
    found = keys.find(key)
    assert found is not None and found.principal().tenant == "acme" and found.principal().caller == "ci"
    assert keys.find(key + "x") is None and keys.find("") is None


def test_an_edit_is_picked_up_and_a_bad_edit_keeps_the_keys_in_force(tmp_path: Path) -> None:
    first, second = new_key(), new_key()
    path = tmp_path / "keys"
    path.write_text(key_line(first, "acme") + "\n")
    keys = ApiKeyFile(str(path))
    path.write_text(key_line(second, "acme") + "\n")
    keys.reload_if_changed()
    assert keys.find(first) is None and keys.find(second) is not None
    path.write_text("acme not-a-hash\n")
    keys.reload_if_changed()
    assert keys.find(second) is not None
    path.unlink()
    keys.reload_if_changed()
    assert keys.find(second) is not None


def test_an_unreadable_file_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        ApiKeyFile(str(tmp_path / "missing"))
