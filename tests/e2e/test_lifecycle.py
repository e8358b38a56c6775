"""Start-up, health, graceful shutdown, and serving a user's graph."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import psycopg
import pytest

from tests.conftest import BACKENDS, database_url
from tests.support import ROOT, ServerProcess, server_env
from threadline_client import ThreadlineClient, pb
from threadline_client.v1.threadline_pb2_grpc import ThreadlineServiceStub

STREAMS_AT_SIGTERM = 30


def test_sigterm_lets_an_in_flight_stream_finish_then_exits_cleanly(tmp_path: Path, logs: Path) -> None:
    server = ServerProcess(
        f"sqlite:///{tmp_path / 't.db'}", logs, env=server_env(THREADLINE_OFFLINE_TOKEN_DELAY_MS="30")
    ).start()
    events: list[pb.StreamAskResponse] = []
    first_token = threading.Event()
    try:
        with ThreadlineClient(server.address) as client:

            def consume() -> None:
                for event in client.stream_ask("Please tell me a rather long story about gRPC"):
                    events.append(event)
                    first_token.set()

            reader = threading.Thread(target=consume)
            reader.start()
            assert first_token.wait(10)
            server.signal(signal.SIGTERM)
            reader.join(20)
        assert events and events[-1].HasField("final"), "the in-flight turn finished during the grace period"
        assert server.wait(timeout=20) == 0
    finally:
        server.stop()
    log = server.log()
    assert "shutting down" in log and "stopped" in log and "Traceback" not in log


def test_a_user_graph_is_served_with_the_checkpointer(tmp_path: Path, logs: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    for spec in ("tests.graphs.echo:build", "tests.graphs.echo:builder"):
        with ServerProcess(url, logs, args=("--graph", spec)) as server, ThreadlineClient(server.address) as client:
            turn = client.ask("hello")
            assert turn.answer == "echo #1: hello"
            assert client.ask("again", thread_id=turn.thread_id).answer == "echo #3: again"
            assert client.history(turn.thread_id).checkpoints[0].nodes == ["echo"]


@pytest.mark.parametrize(
    ("event_loop", "shown"),
    [(None, "uvloop.Loop"), ("asyncio", "asyncio._UnixSelectorEventLoop")],
    ids=["default", "asyncio"],
)
def test_the_server_runs_on_the_configured_event_loop(
    tmp_path: Path, logs: Path, event_loop: str | None, shown: str
) -> None:
    chosen = {"THREADLINE_EVENT_LOOP": event_loop} if event_loop else {}
    env = server_env(THREADLINE_OFFLINE_TOKEN_DELAY_MS="2", **chosen)
    with (
        ServerProcess(f"sqlite:///{tmp_path / 't.db'}", logs, env=env) as server,
        ThreadlineClient(server.address) as client,
    ):
        events = list(client.stream_ask("What is 2+3?"))
        assert [e.WhichOneof("event") for e in events[:2]] == ["tool_call", "tool_result"]
        assert events[-1].final.answer == "".join(e.token.text for e in events if e.HasField("token"))
        assert client.ask("And 6*7?", thread_id=events[-1].final.thread_id).answer
    log = server.log()
    assert f"(event loop {shown})" in log, log[-2000:]
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--graph", "tests.graphs.echo:not_a_graph"), "is int, not a StateGraph"),
        (("--graph", "tests.graphs.missing:build"), "cannot load"),
        (("--graph", "no_colon"), "expected package.module:attr"),
        (("--database-url", "mysql://x"), "unsupported scheme 'mysql'"),
        (("--max-query-chars", "lots"), "expected int"),
    ],
)
def test_bad_configuration_stops_start_up_with_a_clear_message(args: tuple[str, ...], message: str) -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "threadline", "serve", "--address", "127.0.0.1:0", "--database-url", "memory://", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=server_env(),
    )  # fmt: skip
    assert finished.returncode != 0
    assert message in finished.stderr


def test_passwords_in_the_database_url_never_reach_the_log(postgres_url: str, tmp_path: Path, logs: Path) -> None:
    """The test PostgreSQL trusts every connection, so the passwords are sent and ignored: only the log is checked."""
    url_file = tmp_path / "database-url"
    url_file.write_text(f"{postgres_url}?sslmode=disable&password=hunter2-query&sslpassword=hunter2-ssl\n")
    user_info = postgres_url.replace("postgresql://postgres@", "postgresql://postgres:hunter2-user@")
    for url, env in [(user_info, server_env()), ("", server_env(THREADLINE_DATABASE_URL_FILE=str(url_file)))]:
        server = ServerProcess(url, logs, env=env).start()
        try:
            with ThreadlineClient(server.address) as client:
                assert client.ask("hello").answer
        finally:
            server.stop()
        log = server.log()
        assert "hunter2" not in log and "***" in log


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_lets_go_of_every_thread_before_the_database_closes(
    backend: str, tmp_path: Path, logs: Path, request: pytest.FixtureRequest
) -> None:
    """Streams still running when the grace period ends are cancelled; their turns end and release their
    threads (their last writes and registry rows stored) before the storage closes, quietly."""
    url = database_url(backend, tmp_path, request, fresh=True)
    slow = server_env(THREADLINE_OFFLINE_TOKEN_DELAY_MS="100", THREADLINE_SHUTDOWN_GRACE_S="0.5")
    server = ServerProcess(url, logs, env=slow).start()
    threads = [f"sigterm-{i}" for i in range(STREAMS_AT_SIGTERM)]
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = ThreadlineServiceStub(channel)
            calls = [
                stub.StreamAsk(pb.StreamAskRequest(thread_id=t, query="tell me a long story " * 20)) for t in threads
            ]
            for call in calls:
                assert next(call).HasField("token")  # every turn runs, holding its thread
            server.signal(signal.SIGTERM)
            assert server.wait(timeout=30) == 0
    finally:
        server.stop()
    log = server.log()
    assert "stopped" in log and "Traceback" not in log
    assert "could not" not in log and "already closed" not in log and "still in use" not in log, log[-3000:]
    if backend == "postgres":
        with psycopg.connect(url) as conn:
            held = conn.execute("SELECT count(*) FROM threadline_thread_holders").fetchone()
        assert held == (0,), "a thread was left held"
    with ServerProcess(url, logs) as again, ThreadlineClient(again.address) as client:
        listed = {t.thread_id: t for t in client.list_threads(page_size=100).threads}
        for thread in threads:
            assert listed[thread].head_checkpoint_id == client.history(thread, page_size=1).head_checkpoint_id
            assert client.ask("My name is Ada.", thread_id=thread, timeout=10).answer
    assert "thread(s) whose row was missing" not in again.log(), "rows were left behind at shutdown"
