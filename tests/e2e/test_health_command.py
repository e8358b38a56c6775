"""`threadline health` (the image's HEALTHCHECK) asks the server at the configured address."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from grpc_health.v1 import health_pb2

from tests.support import ROOT, ServerProcess, ThrowawayPostgres, free_port, health_status, server_env, wait_until


def _health(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadline", "health", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=server_env(**env),
    )  # fmt: skip


def test_serving_at_the_address_threadline_address_names(sqlite_server: ServerProcess) -> None:
    checked = _health(THREADLINE_ADDRESS=sqlite_server.address)
    assert (checked.returncode, checked.stdout.strip()) == (0, "SERVING"), checked.stderr
    service = _health("--address", sqlite_server.address, "--service", "threadline.v1.ThreadlineService")
    assert (service.returncode, service.stdout.strip()) == (0, "SERVING"), service.stderr


def test_no_server_at_the_address_fails() -> None:
    checked = _health("--timeout", "1", THREADLINE_ADDRESS=f"127.0.0.1:{free_port()}")
    assert checked.returncode == 1 and checked.stdout == ""
    assert "UNAVAILABLE" in checked.stderr or "DEADLINE_EXCEEDED" in checked.stderr


def test_an_unknown_service_fails(sqlite_server: ServerProcess) -> None:
    checked = _health("--address", sqlite_server.address, "--service", "no.such.Service")
    assert checked.returncode == 1 and "NOT_FOUND" in checked.stderr


def test_not_serving_while_the_database_is_down_fails(logs: Path) -> None:
    database = ThrowawayPostgres().init()
    database.start()
    try:
        with ServerProcess(database.url, logs) as server:
            database.stop()
            wait_until(
                lambda: health_status(server.address) == health_pb2.HealthCheckResponse.NOT_SERVING,
                10,
                "health turns NOT_SERVING",
            )
            checked = _health(THREADLINE_ADDRESS=server.address)
            assert (checked.returncode, checked.stdout.strip()) == (1, "NOT_SERVING"), checked.stderr
    finally:
        database.destroy()
