"""ThreadKey: a tenant's thread, and the one way its storage id is written and read."""

from __future__ import annotations

import pytest

from threadline.storage.thread_keys import ThreadKey


def test_two_tenants_threads_of_one_id_are_two_keys_and_round_trip() -> None:
    acme, globex = ThreadKey("acme", "user-123"), ThreadKey("globex", "user-123")
    assert acme != globex and acme.storage_id != globex.storage_id
    assert ThreadKey.parse(acme.storage_id) == acme and str(globex) == "globex/user-123"


def test_a_storage_id_without_a_tenant_is_refused() -> None:
    with pytest.raises(ValueError, match="not a tenant's thread id"):
        ThreadKey.parse("user-123")
