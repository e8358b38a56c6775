"""Threads outlive server processes; a database outage is UNAVAILABLE, not a crash."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from tests.conftest import BACKENDS, database_url
from tests.model_server import ModelServer, tokens
from tests.support import (
    ServerProcess,
    ThrowawayPostgres,
    assert_one_linear_chain,
    health_status,
    model_server_env,
    server_env,
    wait_until,
)
from threadline_client import ThreadlineClient, ThreadlineError

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


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
        wait_until(lambda: health_status(server.address) == NOT_SERVING, 10, "health turns NOT_SERVING")
        for call in (
            lambda: client.ask("My pet is Rex.", thread_id=thread, timeout=20),
            lambda: client.history(thread, timeout=20),
        ):
            started = time.monotonic()
            with pytest.raises(ThreadlineError) as caught:
                call()
            assert time.monotonic() - started < 1.0, "fails fast, without waiting for the pool"
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE, caught.value
            assert caught.value.reason == "STORAGE_UNAVAILABLE"
            assert "database is unavailable" in caught.value.message

        throwaway_postgres.start()
        restarted = time.monotonic()
        answer = _first_success(lambda: client.ask("What is my name?", thread_id=thread, timeout=20).answer)
        assert time.monotonic() - restarted <= 5.0, "recovers by itself within 5 s, without a restart"
        assert "Ada" in answer
        assert health_status(server.address) == SERVING
        humans = [m.text for m in client.history(thread).messages if m.role == 1]
        assert humans == ["My name is Ada.", "What is my name?"], "no thread was corrupted, no turn half-written"
    assert "Traceback" not in server.log()


def test_an_outage_mid_turn_fails_the_turn_and_leaves_the_thread_usable(
    throwaway_postgres: ThrowawayPostgres, logs: Path
) -> None:
    slow = server_env(THREADLINE_OFFLINE_TOKEN_DELAY_MS="50")
    with ServerProcess(throwaway_postgres.url, logs, env=slow) as server, ThreadlineClient(server.address) as client:
        thread = client.ask("My name is Ada.").thread_id
        events = client.stream_ask("Tell me a long story about databases", thread_id=thread, request_id="mid-1")
        assert next(events).HasField("token")
        throwaway_postgres.stop()
        with pytest.raises(ThreadlineError) as caught:
            list(events)
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE, caught.value
        throwaway_postgres.start()
        retried = _first_success(
            lambda: client.ask("Tell me a long story about databases", thread_id=thread, request_id="mid-1").answer
        )
        assert "long story" in retried
        humans = [m.text for m in client.history(thread).messages if m.role == 1]
        assert humans == ["My name is Ada.", "Tell me a long story about databases"]


def test_an_outage_under_load_fails_calls_fast_and_corrupts_no_thread(
    throwaway_postgres: ThrowawayPostgres, logs: Path
) -> None:
    stop_load = threading.Event()
    outcomes: list[tuple[str, float, float]] = []  # (status code name, seconds the call took, when it ended)

    def load(server: ServerProcess, worker: int) -> None:
        with ThreadlineClient(server.address) as client:
            thread = f"load-{worker}"
            while not stop_load.is_set():
                started = time.monotonic()
                try:
                    client.ask(f"My item{worker} is {started}.", thread_id=thread, timeout=10)
                    outcomes.append(("OK", time.monotonic() - started, time.monotonic()))
                except ThreadlineError as error:
                    outcomes.append((error.code.name, time.monotonic() - started, time.monotonic()))
                    time.sleep(0.05)

    with ServerProcess(throwaway_postgres.url, logs) as server:
        workers = [threading.Thread(target=load, args=(server, i)) for i in range(6)]
        for worker in workers:
            worker.start()
        wait_until(lambda: any(code == "OK" for code, _, _ in outcomes), 30, "the load is answered")
        throwaway_postgres.stop()
        stopped = time.monotonic()
        wait_until(
            lambda: any(code == "UNAVAILABLE" and ended > stopped for code, _, ended in outcomes),
            30,
            "calls fail during the outage",
        )
        throwaway_postgres.start()
        restarted = time.monotonic()
        time.sleep(6.0)  # the load goes on after the database's return: the window the recovery is judged in
        stop_load.set()
        for worker in workers:
            worker.join(20)

        codes = {code for code, _, _ in outcomes}
        assert codes <= {"OK", "UNAVAILABLE"}, f"only UNAVAILABLE during the outage: {codes}"
        assert "UNAVAILABLE" in codes and "OK" in codes
        assert max(took for _, took, _ in outcomes) < 10, "no call hung until its deadline"
        first_ok = min(ended for code, _, ended in outcomes if code == "OK" and ended > restarted)
        assert first_ok - restarted <= 5.0, "recovered by itself within 5 s of the database's return"
        assert outcomes[-1][0] == "OK"
        with ThreadlineClient(server.address) as client:
            for worker in range(6):
                thread = f"load-{worker}"
                assert_one_linear_chain(client, thread)
                assert client.ask("What is my name?", thread_id=thread, timeout=10).answer, "the thread is usable"
    assert "Traceback" not in server.log()


def _first_success(call: Callable[[], str], seconds: float = 10.0) -> str:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except ThreadlineError as exc:
            assert exc.code == grpc.StatusCode.UNAVAILABLE, exc
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_replica_runs_more_turns_at_once_than_its_pool_has_connections(fresh_postgres_url: str, logs: Path) -> None:
    """A turn holds its thread, not a database connection, while the model answers."""
    streams = 6
    with ModelServer(token_delay_s=0.1) as model:
        env = model_server_env(
            model.base_url,
            THREADLINE_DB_POOL_MIN_SIZE="1",
            THREADLINE_DB_POOL_MAX_SIZE="2",
            THREADLINE_DB_POOL_TIMEOUT_S="5",  # shorter than a stream: a stream waiting on another would fail
        )
        with ServerProcess(fresh_postgres_url, logs, env=env) as server, ThreadlineClient(server.address) as client:
            model.script(*[tokens(60) for _ in range(streams)])  # six streams of 6 s, on a pool of 2
            all_streaming = threading.Barrier(streams + 1)
            finished: list[str] = []
            failures: list[BaseException] = []

            def long_stream() -> None:
                try:
                    events = client.stream_ask("Talk slowly", timeout=30)
                    assert next(events).HasField("token")
                    all_streaming.wait(10)
                    finished.extend(e.final.answer for e in events if e.HasField("final"))
                except BaseException as exc:  # reported by the main thread
                    failures.append(exc)
                    all_streaming.abort()

            threads = [threading.Thread(target=long_stream) for _ in range(streams)]
            for thread in threads:
                thread.start()
            all_streaming.wait(15)  # all six are answering at once
            # The storage probe runs every second: a busy replica is not a database outage.
            seen = set()
            watch_until = time.monotonic() + 2.0
            while time.monotonic() < watch_until:
                seen.add(health_status(server.address))
                time.sleep(0.2)
            assert seen == {SERVING}
            answered = client.ask("What is 2+3?", timeout=10)  # a seventh turn runs beside them
            assert "5" in answered.answer and not finished, "the new turn did not wait for the streams"
            for thread in threads:
                thread.join(30)
            assert not failures, failures
            assert len(finished) == streams
        assert "unreachable" not in server.log()
