"""Every saver we serve passes LangGraph's own checkpointer conformance suite.

langgraph-checkpoint-conformance exercises a BaseCheckpointSaver through its public interface
(put, put_writes, get_tuple, list, delete_thread, and the extended capabilities a saver
overrides). Each backend's saver is opened exactly as the server opens it (storage.urls.
open_storage), outside any turn's hold; memory and SQLite in a fresh store, PostgreSQL in a
database of the test's own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate

from threadline.config import Settings
from threadline.storage.urls import open_storage


def _registered(url_of: Any, name: str) -> Any:
    @checkpointer_test(name=name)
    async def saver() -> AsyncIterator[Any]:
        async with open_storage(url_of(), Settings().storage) as storage:
            yield storage.saver

    return saver


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"])
async def test_the_saver_passes_langgraphs_conformance_suite(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    files = iter(range(1_000))
    urls = {
        "memory": lambda: "memory://",
        "sqlite": lambda: f"sqlite:///{tmp_path / f'conformance-{next(files)}.db'}",
        "postgres": lambda: request.getfixturevalue("fresh_postgres_url"),
    }
    report = await validate(_registered(urls[backend], f"threadline {backend}"))
    failures = {name: result.failures for name, result in report.results.items() if result.failures}
    assert report.passed_all(), f"{report.conformance_level()}: {failures}"
    assert report.passed_all_base()
