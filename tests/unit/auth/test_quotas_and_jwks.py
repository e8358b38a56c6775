"""Per-tenant quotas and the JWKS refetch rule, on a clock the test moves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.credentials import Signer
from threadline.auth.jwt_tokens import REFETCH_INTERVAL_S, JwksKeys
from threadline.auth.quotas import TenantQuotas
from threadline.errors import QuotaExceeded


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_turns_per_minute_refill_over_the_minute() -> None:
    clock = Clock()
    quotas = TenantQuotas(per_minute=2, clock=clock)
    for _ in range(2):
        quotas.admit("acme")
        quotas.done("acme")
    with pytest.raises(QuotaExceeded) as refused:
        quotas.admit("acme")
    assert refused.value.limit == "turns_per_minute" and refused.value.retry_after_s == pytest.approx(30)
    quotas.admit("globex")  # another tenant has its own bucket
    clock.now += 30
    quotas.admit("acme")
    with pytest.raises(QuotaExceeded):
        quotas.admit("acme")


def test_concurrent_turns_count_until_done() -> None:
    quotas = TenantQuotas(max_concurrent=2)
    quotas.admit("acme")
    quotas.admit("acme")
    with pytest.raises(QuotaExceeded) as refused:
        quotas.admit("acme")
    assert refused.value.limit == "concurrent_turns" and refused.value.value == 2
    quotas.done("acme")
    quotas.admit("acme")
    assert not TenantQuotas().active


async def test_an_unknown_kid_refetches_at_most_once_a_minute(tmp_path: Path) -> None:
    signer = Signer(tmp_path)
    clock = Clock()
    keys = JwksKeys(str(signer.jwks_file), clock=clock)
    await keys.load()
    assert await keys.key("rsa-1") is not None
    jwks = json.loads(signer.jwks_file.read_text())
    rotated = {**jwks["keys"][0], "kid": "rsa-2"}
    signer.jwks_file.write_text(json.dumps({"keys": [*jwks["keys"], rotated]}))
    assert await keys.key("rsa-2") is None, "refetched within a minute of the last fetch"
    clock.now += REFETCH_INTERVAL_S
    assert await keys.key("rsa-2") is not None
    assert await keys.key("made-up") is None
    signer.jwks_file.write_text("not json")
    clock.now += REFETCH_INTERVAL_S
    assert await keys.key("made-up-2") is None
    assert await keys.key("rsa-1") is not None, "a bad refetch dropped the keys in force"


async def test_a_key_set_without_asymmetric_keys_is_refused(tmp_path: Path) -> None:
    from threadline.errors import ConfigurationError

    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"}]}))
    with pytest.raises(ConfigurationError, match="no RS256, ES256, EdDSA key"):
        await JwksKeys(str(path)).load()
