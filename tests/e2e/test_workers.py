"""THREADLINE_WORKERS: several server processes share one address (SO_REUSEPORT) on PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support import ROOT, ServerProcess, assert_one_linear_chain, server_env, wait_until, worker_pids
from threadline import config
from threadline.errors import ConfigurationError
from threadline_client import ThreadlineClient, ThreadlineError, pb
from threadline_client.v1 import threadline_pb2_grpc as pb_grpc

WORKERS = 2
# The kernel spreads connections over the workers by a hash of their addresses: with this
# many connections, the chance that every one lands on the same worker is 2 in 2**24.
CONNECTIONS = 24
# A channel of its own, not one connection shared with the process's other channels.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
SERVICE = "threadline.v1.ThreadlineService"


def _start(url: str, logs: Path, **env: str) -> ServerProcess:
    return ServerProcess(url, logs, env=server_env(THREADLINE_WORKERS=str(WORKERS), **env)).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def workers(postgres_url: str, logs: Path) -> Iterator[tuple[ServerProcess, set[int]]]:
    server = _start(postgres_url, logs)
    try:
        yield server, worker_pids(server)
    finally:
        server.stop()


def _one_connection(address: str) -> tuple[int, bool, set[str]]:
    """On a connection of its own: which worker ran a turn, its health, and the services it reflects."""
    with grpc.insecure_channel(address, options=OWN_CONNECTION) as channel:
        turn = pb_grpc.ThreadlineServiceStub(channel).Ask(pb.AskRequest(query="My name is Ada."), timeout=30).turn
        state = pb_grpc.ThreadlineServiceStub(channel).GetState(pb.GetStateRequest(thread_id=turn.thread_id))
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
        reflected = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        services = {s.name for response in reflected for s in response.list_services_response.service}
    pid = int(state.checkpoint.replica.rpartition(":")[2])
    return pid, health.status == health_pb2.HealthCheckResponse.SERVING, services


def test_connections_are_spread_over_the_workers_and_each_serves_health_and_reflection(
    workers: tuple[ServerProcess, set[int]],
) -> None:
    server, pids = workers
    assert len(pids) == WORKERS and server.process is not None and server.process.pid not in pids
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _one_connection(server.address), range(CONNECTIONS)))
    assert {pid for pid, _, _ in answers} == pids, "every worker ran turns (the replica in the audit trail)"
    for pid, serving, services in answers:
        assert serving, f"worker {pid} is SERVING"
        assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services, pid


def test_concurrent_asks_on_one_thread_through_every_worker_make_one_linear_chain(
    workers: tuple[ServerProcess, set[int]],
) -> None:
    server, pids = workers
    with ThreadlineClient(server.address) as client:
        thread = client.ask("My name is Ada.").thread_id

        def ask(i: int) -> pb.Turn | ThreadlineError:
            with ThreadlineClient(server.address, channel_options=OWN_CONNECTION) as own:
                try:
                    return own.ask(f"My item{i} is value{i}.", thread_id=thread, request_id=f"ask-{i}", timeout=60)
                except ThreadlineError as error:
                    return error

        with ThreadPoolExecutor(CONNECTIONS) as pool:
            results = list(pool.map(ask, range(CONNECTIONS)))
        assert not [r for r in results if isinstance(r, ThreadlineError)], results
        assert_one_linear_chain(client, thread)
        checkpoints = list(client.iter_checkpoints(thread, page_size=100))
        assert {int(c.replica.rpartition(":")[2]) for c in checkpoints} == pids, "both workers wrote the thread"
        humans = [m.text for m in client.history(thread).messages if m.role == pb.ROLE_HUMAN]
        assert sorted(humans[1:]) == sorted(f"My item{i} is value{i}." for i in range(CONNECTIONS)), (
            "each turn's question is there exactly once"
        )


def test_sigterm_lets_in_flight_streams_finish_on_every_worker_then_stops_them_all(
    postgres_url: str, logs: Path
) -> None:
    server = _start(postgres_url, logs, THREADLINE_OFFLINE_TOKEN_DELAY_MS="30")
    try:
        pids = worker_pids(server)
        streams = 8
        finals: list[str] = []
        started = threading.Barrier(streams + 1, timeout=30)

        def stream(i: int) -> None:
            with ThreadlineClient(server.address, channel_options=OWN_CONNECTION) as client:
                first = True
                for event in client.stream_ask(f"Please tell me a rather long story, number {i}", timeout=60):
                    if first:
                        first = False
                        started.wait()
                    if event.HasField("final"):
                        finals.append(event.final.thread_id)

        readers = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
        for reader in readers:
            reader.start()
        started.wait()
        server.signal(signal.SIGTERM)
        for reader in readers:
            reader.join(30)
        assert len(finals) == streams, "every in-flight turn finished during the grace period"
        assert server.wait(timeout=30) == 0
    finally:
        server.stop()
    assert not [pid for pid in pids if _alive(pid)], "no worker outlives the supervisor"
    log = server.log()
    assert "SIGTERM: stopping 2 worker(s)" in log and f"stopped {WORKERS} worker(s)" in log
    for pid in pids:
        assert f"[worker {pid}]: stopped" in log
    assert "Traceback" not in log


def test_a_worker_that_dies_stops_the_others_and_the_service_exits_non_zero(postgres_url: str, logs: Path) -> None:
    server = _start(postgres_url, logs)
    try:
        pids = worker_pids(server)
        victim, survivor = sorted(pids)
        os.kill(victim, signal.SIGKILL)
        assert server.wait(timeout=30) == 1
    finally:
        server.stop()
    assert not _alive(survivor)
    log = server.log()
    assert f"(pid {victim}) exited unexpectedly with code -9: stopping the others" in log
    assert f"[worker {survivor}]: stopped" in log


def test_a_worker_stops_when_its_supervisor_is_killed(postgres_url: str, logs: Path) -> None:
    server = _start(postgres_url, logs)
    try:
        pids = worker_pids(server)
        server.kill()
        wait_until(lambda: not any(_alive(pid) for pid in pids), 30, "orphaned workers stop by themselves")
    finally:
        server.stop()
    assert "the supervisor is gone: stopping" in server.log()


@pytest.mark.parametrize("url", ["sqlite:///{folder}/threadline.db", "memory://"])
def test_workers_are_refused_without_postgresql(url: str, tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "threadline", "serve", "--address", "127.0.0.1:0", "--workers", "2",
         "--database-url", url.format(folder=tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=server_env(),
    )  # fmt: skip
    assert finished.returncode == 2
    assert "THREADLINE_WORKERS=2 needs a postgresql:// database" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_a_worker_that_cannot_start_stops_the_service_with_its_error() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "threadline", "serve", "--address", "127.0.0.1:0", "--workers", "2",
         "--database-url", "postgresql://postgres@127.0.0.1:1/nowhere", "--db-pool-timeout-s", "1"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=server_env(),
    )  # fmt: skip
    assert finished.returncode == 1
    assert "cannot start: cannot connect to PostgreSQL" in finished.stderr
    assert "worker 0 (pid" in finished.stderr and "exited unexpectedly with code 1" in finished.stderr


def test_a_port_another_server_listens_on_is_refused(workers: tuple[ServerProcess, set[int]], logs: Path) -> None:
    server, _ = workers
    second = subprocess.run(
        [sys.executable, "-m", "threadline", "serve", "--address", server.address, "--workers", "2",
         "--database-url", server.database_url],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=server_env(),
    )  # fmt: skip
    assert second.returncode == 1
    assert f"cannot listen on {server.address}" in second.stderr


def test_the_number_of_workers_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="THREADLINE_WORKERS must be at least 1"):
        config.load(environ={"THREADLINE_WORKERS": "0", "THREADLINE_DATABASE_URL": "postgresql://h/db"})
    settings = config.load(environ={"THREADLINE_WORKERS": "4", "THREADLINE_DATABASE_URL": "postgresql://h/db"})
    assert settings.workers == 4 and "THREADLINE_WORKERS=4" in config.describe(settings)
