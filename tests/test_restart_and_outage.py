"""Threads outlive server processes; a database outage is UNAVAILABLE, not a crash."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from tests.conftest import BACKENDS, database_url
from tests.support import ServerProcess, ThrowawayPostgres, health_status
from threadline_client import ThreadlineClient, ThreadlineError


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_thread_continues_after_the_server_is_killed(
    backend: str, tmp_path: Path, logs: Path, request: pytest.FixtureRequest
) -> None:
    url = database_url(backend, tmp_path, request)
    first = ServerProcess(url, logs).start()
    try:
        with ThreadlineClient(first.address) as client:
            turn = client.ask("My name is Ada.")
            client.ask("My pet is Rex.", thread_id=turn.thread_id)
    finally:
        first.kill()  # SIGKILL: no shutdown code runs
    with ServerProcess(url, logs) as second, ThreadlineClient(second.address) as client:
        assert "Ada" in client.ask("What is my name?", thread_id=turn.thread_id).answer
        assert "Rex" in client.ask("What is my pet?", thread_id=turn.thread_id).answer
        humans = [m.text for m in client.history(turn.thread_id).messages if m.role == 1]
        assert humans == ["My name is Ada.", "My pet is Rex.", "What is my name?", "What is my pet?"]


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    cluster = ThrowawayPostgres().init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


def test_a_database_outage_is_unavailable_and_the_service_recovers(
    throwaway_postgres: ThrowawayPostgres, logs: Path
) -> None:
    with ServerProcess(throwaway_postgres.url, logs) as server, ThreadlineClient(server.address) as client:
        thread = client.ask("My name is Ada.").thread_id
        throwaway_postgres.stop()
        for call in (
            lambda: client.ask("My pet is Rex.", thread_id=thread, timeout=20),
            lambda: client.history(thread, timeout=20),
        ):
            with pytest.raises(ThreadlineError) as caught:
                call()
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE, caught.value
            assert caught.value.reason == "STORAGE_UNAVAILABLE"
            assert "database is unavailable" in caught.value.message
        assert health_status(server.address) == health_pb2.HealthCheckResponse.SERVING  # the process lives on

        throwaway_postgres.start()
        answer = _first_success(lambda: client.ask("What is my name?", thread_id=thread, timeout=20).answer)
        assert "Ada" in answer
    assert "Traceback" not in server.log()


def _first_success(call: Callable[[], str], attempts: int = 20) -> str:

    for _ in range(attempts):
        try:
            return call()
        except ThreadlineError as exc:
            assert exc.code == grpc.StatusCode.UNAVAILABLE, exc
            time.sleep(0.5)
    raise AssertionError(f"still unavailable after {attempts} attempts")
