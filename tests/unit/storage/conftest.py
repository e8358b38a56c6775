"""Fixtures of the storage tests: each backend as `open_storage` opens it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from threadline.config import Settings
from threadline.storage.contract import Storage
from threadline.storage.urls import open_storage


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """Every backend in turn, opened empty (PostgreSQL: a database of the test's own)."""
    urls = {
        "memory": lambda: "memory://",
        "sqlite": lambda: f"sqlite:///{tmp_path / 'threadline.db'}",
        "postgres": lambda: request.getfixturevalue("fresh_postgres_url"),
    }
    async with open_storage(urls[request.param](), Settings().storage) as opened:
        yield opened
