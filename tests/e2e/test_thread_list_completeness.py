"""ListThreads lists every thread that has a checkpoint, at its current head.

A turn that does not finish (its caller cancels the stream, its deadline passes, the server is
killed) leaves checkpoints; its thread is listed all the same, with the head, turn count and
time those checkpoints give it. Rows a server left missing or behind (a crash, a version before
this) are brought up to date when a server starts.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from tests.conftest import BACKENDS, database_url
from tests.support import ServerProcess, server_env, wait_until
from threadline_client import ThreadlineClient, ThreadlineError, pb
from threadline_client.v1.threadline_pb2_grpc import ThreadlineServiceStub

# Slow tokens: a turn is still running when its caller cancels it, or its deadline passes.
SLOW = server_env(THREADLINE_OFFLINE_TOKEN_DELAY_MS="50")
LONG_QUERY = "Please tell me a rather long story about write-ahead logs"


@pytest.fixture(scope="module", params=BACKENDS)
def slow_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, logs: Path
) -> Iterator[ServerProcess]:
    url = database_url(request.param, tmp_path_factory.mktemp(f"list-{request.param}"), request)
    with ServerProcess(url, logs, env=SLOW) as process:
        yield process


def _listed(client: ThreadlineClient, thread: str) -> pb.ThreadSummary | None:
    token = ""
    while True:
        page = client.list_threads(page_size=100, page_token=token)
        for summary in page.threads:
            if summary.thread_id == thread:
                return summary
        token = page.next_page_token
        if not token:
            return None


def _listed_at_head(client: ThreadlineClient, thread: str, moved_from: str = "") -> pb.ThreadSummary:
    """The thread's summary once it names the thread's head, and that head is not moved_from (a turn
    cancelled is let go of in the background: on PostgreSQL its last checkpoints are on their way)."""
    found: list[pb.ThreadSummary] = []

    def at_head() -> bool:
        summary = _listed(client, thread)
        try:
            head = client.history(thread, page_size=1).head_checkpoint_id
        except ThreadlineError as exc:  # on PostgreSQL a cancelled turn's checkpoints may be on their way
            assert exc.code == grpc.StatusCode.NOT_FOUND, exc
            return False
        found[:] = [summary] if summary is not None else []
        return summary is not None and summary.head_checkpoint_id == head != moved_from

    wait_until(at_head, 10, f"thread {thread} is not listed at its head: {found}")
    return found[0]


def _questions(client: ThreadlineClient, thread: str) -> int:
    return sum(1 for m in client.history(thread, message_limit=1000).messages if m.role == pb.ROLE_HUMAN)


def _cancel_mid_stream(address: str, thread: str, query: str = LONG_QUERY) -> None:
    with grpc.insecure_channel(address) as channel:
        call = ThreadlineServiceStub(channel).StreamAsk(pb.StreamAskRequest(thread_id=thread, query=query))
        assert next(call).HasField("token")  # the turn runs: its question is stored
        call.cancel()


def test_a_stream_cancelled_on_a_new_thread_is_listed_at_its_head(slow_server: ServerProcess) -> None:
    thread = f"cancelled-{uuid.uuid4().hex}"
    _cancel_mid_stream(slow_server.address, thread)
    with ThreadlineClient(slow_server.address) as client:
        summary = _listed_at_head(client, thread)
        assert (summary.title, summary.turn_count) == (LONG_QUERY, 1)
        assert summary.turn_count == _questions(client, thread)
        # The thread is let go with its row written: the next turn goes on from there.
        assert client.ask("My name is Ada.", thread_id=thread).answer
        after = _listed_at_head(client, thread)
        assert after.title == LONG_QUERY and after.turn_count == _questions(client, thread)
        assert after.update_time.ToDatetime() >= summary.update_time.ToDatetime()


def test_a_stream_cancelled_on_a_listed_thread_moves_its_row(slow_server: ServerProcess) -> None:
    thread = f"moved-{uuid.uuid4().hex}"
    with ThreadlineClient(slow_server.address) as client:
        client.ask("My name is Ada.", thread_id=thread)
        before = _listed_at_head(client, thread)
        assert before.turn_count == 1
        _cancel_mid_stream(slow_server.address, thread)
        after = _listed_at_head(client, thread, moved_from=before.head_checkpoint_id)
        assert after.head_checkpoint_id != before.head_checkpoint_id
        assert (after.title, after.turn_count) == ("My name is Ada.", 2) and _questions(client, thread) == 2
        assert after.update_time.ToDatetime() > before.update_time.ToDatetime()
        assert after.create_time == before.create_time


def test_a_turn_cut_by_its_deadline_on_a_new_thread_is_listed_at_its_head(slow_server: ServerProcess) -> None:
    thread = f"deadline-{uuid.uuid4().hex}"
    with ThreadlineClient(slow_server.address) as client:
        with pytest.raises(ThreadlineError) as caught:
            client.ask(LONG_QUERY, thread_id=thread, timeout=0.5)
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED, caught.value
        summary = _listed_at_head(client, thread)
        assert (summary.title, summary.turn_count) == (LONG_QUERY, 1) and _questions(client, thread) == 1
    assert "Traceback" not in slow_server.log()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_thread_whose_only_turn_was_killed_is_listed_after_a_restart(
    backend: str, tmp_path: Path, logs: Path, request: pytest.FixtureRequest
) -> None:
    url = database_url(backend, tmp_path, request)
    thread = f"killed-{uuid.uuid4().hex}"
    first = ServerProcess(url, logs, env=SLOW).start()
    try:
        with grpc.insecure_channel(first.address) as channel:
            call = ThreadlineServiceStub(channel).StreamAsk(pb.StreamAskRequest(thread_id=thread, query=LONG_QUERY))
            # Tokens for 400 ms: the question's checkpoint is stored (durability "sync"; on PostgreSQL the
            # turn's writes wait at most postgres_writes.SEND_AFTER_S, 100 ms, for company).
            for _ in range(8):
                assert next(call).HasField("token")
            first.kill()  # SIGKILL mid-turn: no shutdown code runs
    finally:
        first.kill()
    with ServerProcess(url, logs, env=SLOW) as second, ThreadlineClient(second.address) as client:
        summary = _listed(client, thread)
        assert summary is not None, "a thread whose turn was killed is not listed after a restart"
        assert summary.head_checkpoint_id == client.history(thread, page_size=1).head_checkpoint_id
        assert (summary.title, summary.turn_count) == (LONG_QUERY, 1) and _questions(client, thread) == 1
        assert client.ask("My name is Ada.", thread_id=thread).answer
        assert _listed_at_head(client, thread).turn_count == _questions(client, thread)


def _run_sql(url: str, statements: list[tuple[str, tuple[str, ...]]]) -> None:
    """Changes the registry behind the server's back, as an older version would have left it."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for sql, params in statements:
                conn.execute(sql.replace("%s", "?"), params)
        return
    with psycopg.connect(url, autocommit=True) as conn:
        for sql, params in statements:
            conn.execute(sql, params)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_left_missing_or_behind_are_brought_up_to_date_at_start_up(
    backend: str, tmp_path: Path, logs: Path, request: pytest.FixtureRequest
) -> None:
    url = database_url(backend, tmp_path, request, fresh=True)
    with ServerProcess(url, logs) as server, ThreadlineClient(server.address) as client:
        missing = client.ask("My name is Ada.").thread_id
        client.ask("My pet is Rex.", thread_id=missing)
        behind = client.ask("My name is Grace.").thread_id
        first_of_behind = client.history(behind, page_size=1).head_checkpoint_id
        client.ask("My pet is Tom.", thread_id=behind)
        kept = client.ask("My name is Edsger.").thread_id
        expected = {t.thread_id: t for t in client.list_threads(page_size=100).threads}
    _run_sql(
        url,
        [
            ("DELETE FROM threadline_threads WHERE thread_id = %s", (missing,)),
            (
                "UPDATE threadline_threads SET turn_count = 1, head_checkpoint_id = %s WHERE thread_id = %s",
                (first_of_behind, behind),
            ),
            # A row with no checkpoints (a thread an older version listed) is left alone.
            (
                "INSERT INTO threadline_threads SELECT tenant, 'no-checkpoints', title, turn_count, created_at,"
                " updated_at, head_checkpoint_id FROM threadline_threads WHERE thread_id = %s",
                (kept,),
            ),
        ],
    )
    with ServerProcess(url, logs) as server, ThreadlineClient(server.address) as client:
        listed = {t.thread_id: t for t in client.list_threads(page_size=100).threads}
        assert set(listed) == {missing, behind, kept, "no-checkpoints"}
        for thread in (missing, behind, kept):
            was, now = expected[thread], listed[thread]
            assert (now.title, now.turn_count, now.head_checkpoint_id) == (
                was.title,
                was.turn_count,
                was.head_checkpoint_id,
            ), thread
            # Times come from the checkpoints: the thread's first, and its head.
            assert abs((now.update_time.ToDatetime() - was.update_time.ToDatetime()).total_seconds()) < 1
            assert abs((now.create_time.ToDatetime() - was.create_time.ToDatetime()).total_seconds()) < 1
        assert listed[missing].turn_count == 2 and listed[behind].turn_count == 2
        # Newest activity first, as before.
        assert [t for t in listed if t != "no-checkpoints"] == [t for t in expected]
        assert "2 thread(s) whose row was missing or behind" in server.log()
