"""Fixtures: real server processes over loopback gRPC, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.support import ServerProcess
from threadline_client import ThreadlineClient

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgres")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _own_postgres_database() -> Iterator[str]:
    """A database of the caller's own on the test PostgreSQL; dropped afterwards.

    Unreachable PostgreSQL skips the Postgres tests on a developer's machine and fails them under CI=true.
    """
    admin_url = os.environ.get("THREADLINE_TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
    name = f"threadline_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL at {admin_url} is unreachable: {exc}"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    yield urlsplit(admin_url)._replace(path=f"/{name}").geturl()
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database shared by this test session's Postgres servers."""
    yield from _own_postgres_database()


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """An empty database of the test's own."""
    yield from _own_postgres_database()


def database_url(backend: str, folder: Path, request: pytest.FixtureRequest, *, fresh: bool = False) -> str:
    """A database URL of the given backend ("sqlite" files go in folder; fresh: an empty Postgres database)."""
    if backend == "sqlite":
        return f"sqlite:///{folder / 'threadline.db'}"
    url: str = request.getfixturevalue("fresh_postgres_url" if fresh else "postgres_url")
    return url


@pytest.fixture(scope="session")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, logs: Path
) -> Iterator[ServerProcess]:
    """One server per backend, shared by the tests that only talk to it."""
    url = database_url(request.param, tmp_path_factory.mktemp(request.param), request)
    with ServerProcess(url, logs) as process:
        yield process


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory, logs: Path) -> Iterator[ServerProcess]:
    """A server on the embedded default, for tests of the contract that do not depend on the backend."""
    with ServerProcess(f"sqlite:///{tmp_path_factory.mktemp('contract') / 'threadline.db'}", logs) as process:
        yield process


@pytest.fixture
def client(server: ServerProcess) -> Iterator[ThreadlineClient]:
    with ThreadlineClient(server.address) as c:
        yield c


@pytest.fixture
def sqlite_client(sqlite_server: ServerProcess) -> Iterator[ThreadlineClient]:
    with ThreadlineClient(sqlite_server.address) as c:
        yield c
