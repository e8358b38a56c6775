"""No poisoned threads: a database write that fails inside a turn, at each of its write points.

The faults are real database errors, raised by triggers the test puts in its own database and
arms while it asks: on the checkpoints, on the task writes, on the thread registry row and (on
PostgreSQL) on the release of the turn's hold (the DELETE of its `threadline_thread_holders`
row). On SQLite a hold is a lock in the server's process: its release writes nothing, so it
cannot fail there.

PostgreSQL's triggers raise SQLSTATE 53100 (disk_full) or 25006 (read_only_sql_transaction, a
primary demoted by a failover), errors a real database gives a write and that retrying later
can get past. A plain RAISE (P0001, psycopg's ProgrammingError) names no failure a caller can
act on: it is INTERNAL, and the thread still works after it.

SQLite's triggers RAISE(ABORT), which is all a trigger can raise there (sqlite3.IntegrityError,
one of STORAGE_ERRORS as every sqlite3.Error is). After a failed statement the server's SQLite
connection keeps its transaction, and the file's write lock, until its next commit, so the
test could not write to disarm a fault there: a fault is armed until a moment (`until`), and
the test waits for that moment to pass.

For each fault the rule of Ask holds: the failed call gets UNAVAILABLE (never INTERNAL), a
failed turn does not change the conversation the next turn sees, and a turn that committed
is returned by a retry with its request_id.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest

from tests.conftest import _own_postgres_database
from tests.support import ServerProcess
from threadline_client import ThreadlineClient, ThreadlineError, pb

SQLITE_POINTS = {"checkpoint": "checkpoints", "task writes": "writes", "registry row": "threadline_threads"}
POSTGRES_POINTS = {
    "checkpoint": ("checkpoints", "INSERT OR UPDATE"),
    "task writes": ("checkpoint_writes", "INSERT OR UPDATE"),
    "registry row": ("threadline_threads", "INSERT OR UPDATE"),
    "release": ("threadline_thread_holders", "DELETE"),
}
CASES = [
    *(pytest.param("sqlite", point, id=f"sqlite-{point.replace(' ', '-')}") for point in SQLITE_POINTS),
    *(pytest.param("postgres", point, id=f"postgres-{point.replace(' ', '-')}") for point in POSTGRES_POINTS),
]
READ_ONLY = "25006"
"""SQLSTATE read_only_sql_transaction: what a primary demoted by a failover answers a write."""
READ_ONLY_CASES = [pytest.param(point, id=f"postgres-{point.replace(' ', '-')}-read-only") for point in POSTGRES_POINTS]
SQLITE_FAULT_S = 1.5
"""How long a fault stays armed on SQLite (the test cannot disarm it: see the module docstring)."""

_POSTGRES_FAULT_SQL = """
CREATE TABLE threadline_test_fault (point text PRIMARY KEY, sqlstate text NOT NULL);
CREATE FUNCTION threadline_test_fault() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    code text;
BEGIN
    SELECT sqlstate INTO code FROM threadline_test_fault WHERE point = TG_ARGV[0];
    IF FOUND THEN
        RAISE EXCEPTION 'injected fault at %', TG_ARGV[0] USING ERRCODE = code;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END $$;
"""
DISK_FULL = "53100"
"""The SQLSTATE PostgreSQL's fault triggers raise unless told another."""
_SQLITE_NOW = "((julianday('now') - 2440587.5) * 86400.0)"


@dataclass
class FaultyServer:
    """A server on its own database, with a fault trigger on each write point of a turn."""

    backend: str
    server: ServerProcess
    client: ThreadlineClient
    _armed_until: float = 0.0

    @property
    def sqlite_path(self) -> str:
        return self.server.database_url.removeprefix("sqlite:///")

    def install(self) -> None:
        if self.backend == "sqlite":
            with closing(sqlite3.connect(self.sqlite_path, timeout=5)) as conn, conn:
                conn.execute("CREATE TABLE threadline_test_fault (point TEXT PRIMARY KEY, until REAL NOT NULL)")
                for point, table in SQLITE_POINTS.items():
                    conn.execute(
                        f"CREATE TRIGGER fault_{table} BEFORE INSERT ON {table} "
                        f"WHEN (SELECT until FROM threadline_test_fault WHERE point = '{point}') > {_SQLITE_NOW} "
                        f"BEGIN SELECT RAISE(ABORT, 'injected fault at {point}'); END"
                    )
            return
        with psycopg.connect(self.server.database_url, autocommit=True) as conn:
            conn.execute(_POSTGRES_FAULT_SQL)
            for point, (table, events) in POSTGRES_POINTS.items():
                conn.execute(
                    f"CREATE TRIGGER fault_{table} BEFORE {events} ON {table} "
                    f"FOR EACH ROW EXECUTE FUNCTION threadline_test_fault('{point}')"
                )

    def arm(self, point: str, *, sqlstate: str = DISK_FULL) -> None:
        """Makes every write at the point fail (on SQLite for SQLITE_FAULT_S from now; on PostgreSQL with sqlstate)."""
        if self.backend == "sqlite":
            with closing(sqlite3.connect(self.sqlite_path, timeout=5)) as conn, conn:
                conn.execute(
                    f"INSERT OR REPLACE INTO threadline_test_fault VALUES (?, {_SQLITE_NOW} + ?)",
                    (point, SQLITE_FAULT_S),
                )
            self._armed_until = time.time() + SQLITE_FAULT_S
        else:
            with psycopg.connect(self.server.database_url, autocommit=True) as conn:
                conn.execute("INSERT INTO threadline_test_fault VALUES (%s, %s)", (point, sqlstate))

    def disarm(self) -> None:
        if self.backend == "sqlite":
            time.sleep(max(0.0, self._armed_until - time.time()) + 0.05)
        else:
            with psycopg.connect(self.server.database_url, autocommit=True) as conn:
                conn.execute("DELETE FROM threadline_test_fault")


def _server(backend: str, url: str, logs: Path) -> Iterator[FaultyServer]:
    with ServerProcess(url, logs) as process, ThreadlineClient(process.address) as client:
        faulty = FaultyServer(backend, process, client)
        faulty.install()
        yield faulty


@pytest.fixture(scope="module")
def sqlite_faulty(tmp_path_factory: pytest.TempPathFactory, logs: Path) -> Iterator[FaultyServer]:
    yield from _server("sqlite", f"sqlite:///{tmp_path_factory.mktemp('faults') / 'threadline.db'}", logs)


@pytest.fixture(scope="module")
def postgres_faulty(logs: Path) -> Iterator[FaultyServer]:
    for url in _own_postgres_database():
        yield from _server("postgres", url, logs)


@pytest.fixture
def faulty(request: pytest.FixtureRequest) -> FaultyServer:
    backend = request.node.callspec.params["backend"]
    found: FaultyServer = request.getfixturevalue(f"{backend}_faulty")
    return found


def _humans(client: ThreadlineClient, thread: str) -> list[str]:
    return [m.text for m in client.history(thread).messages if m.role == pb.ROLE_HUMAN]


def _earlier_messages(answer: str) -> int:
    """How many messages the offline model saw before the question it answered."""
    found = re.search(r"This thread held (\d+) earlier message", answer)
    assert found, answer
    return int(found.group(1))


def _assert_the_documented_failure(caught: pytest.ExceptionInfo[ThreadlineError]) -> None:
    error = caught.value
    assert error.code == grpc.StatusCode.UNAVAILABLE, str(error)
    assert error.reason in ("STORAGE_UNAVAILABLE", "THREAD_HOLD_LOST"), str(error)


def _assert_the_thread_keeps_working(faulty: FaultyServer, thread: str, log_from: int) -> None:
    """After the failed turn and its retry: the next Ask sees the conversation once, and is listed at its head."""
    client = faulty.client
    assert _humans(client, thread) == ["My name is Ada.", "What is my name?"], "the question is on the thread once"
    following = client.ask("Tell me about checkpoints.", thread_id=thread)
    assert _earlier_messages(following.answer) == 4, "two turns before it: no failed question twice"
    assert _humans(client, thread) == ["My name is Ada.", "What is my name?", "Tell me about checkpoints."]
    assert "Ada" in client.ask("What is my name?", thread_id=thread).answer
    head = client.history(thread, page_size=1).head_checkpoint_id
    listed = {t.thread_id: t for t in client.list_threads(page_size=100).threads}
    assert listed[thread].head_checkpoint_id == head, "ListThreads shows the thread at its head"
    log = faulty.server.log()[log_from:]
    assert "Traceback" not in log and "unexpected error" not in log, log


def _ask(client: ThreadlineClient, query: str, thread: str, request_id: str, *, streamed: bool) -> pb.Turn:
    if not streamed:
        return client.ask(query, thread_id=thread, request_id=request_id)
    events = list(client.stream_ask(query, thread_id=thread, request_id=request_id))
    assert events[-1].WhichOneof("event") == "final"
    return events[-1].final


@dataclass(frozen=True)
class FailedTurn:
    committed: bool
    """Whether the turn is stored whole (its answer is the thread's head) although its call failed."""
    left_checkpoints: bool
    """Whether the turn left checkpoints (if not committed: an unfinished attempt, off the head)."""


def _fail_a_turn(
    faulty: FaultyServer,
    point: str,
    thread: str,
    request_id: str,
    *,
    streamed: bool = False,
    sqlstate: str = DISK_FULL,
) -> FailedTurn:
    """Asks "What is my name?" on the thread while writes at the point fail."""
    client = faulty.client
    checkpoints = len(list(client.iter_checkpoints(thread, page_size=100)))
    faulty.arm(point, sqlstate=sqlstate)
    try:
        with pytest.raises(ThreadlineError) as caught:
            _ask(client, "What is my name?", thread, request_id, streamed=streamed)
    finally:
        faulty.disarm()
    _assert_the_documented_failure(caught)
    humans = _humans(client, thread)
    committed = humans == ["My name is Ada.", "What is my name?"]
    if not committed:
        assert humans == ["My name is Ada."], "a turn reported as failed has not changed the conversation"
    return FailedTurn(committed, len(list(client.iter_checkpoints(thread, page_size=100))) > checkpoints)


def _fail_and_retry(faulty: FaultyServer, point: str, *, sqlstate: str = DISK_FULL) -> None:
    client = faulty.client
    thread = client.ask("My name is Ada.").thread_id
    log_from = len(faulty.server.log())
    request_id = f"fault-{point.replace(' ', '-')}-{sqlstate}"
    failed = _fail_a_turn(faulty, point, thread, request_id, sqlstate=sqlstate)

    checkpoints = len(list(client.iter_checkpoints(thread, page_size=100)))
    retried = client.ask("What is my name?", thread_id=thread, request_id=request_id)
    assert retried.answer == "Your name is Ada."
    if failed.committed:
        assert len(list(client.iter_checkpoints(thread, page_size=100))) == checkpoints, "the stored turn, not a rerun"
    assert client.ask("What is my name?", thread_id=thread, request_id=request_id) == retried, "same id, same turn"
    _assert_the_thread_keeps_working(faulty, thread, log_from)


@pytest.mark.parametrize(("backend", "point"), CASES)
def test_a_turn_that_fails_to_write_is_unavailable_and_its_retry_finishes_it(
    faulty: FaultyServer, backend: str, point: str
) -> None:
    _fail_and_retry(faulty, point)


@pytest.mark.parametrize("point", READ_ONLY_CASES)
def test_a_write_refused_by_a_read_only_postgres_is_unavailable_and_its_retry_finishes_it(
    postgres_faulty: FaultyServer, point: str
) -> None:
    _fail_and_retry(postgres_faulty, point, sqlstate=READ_ONLY)


@pytest.mark.parametrize(("backend", "point"), CASES)
def test_a_new_question_after_a_failed_write_does_not_see_the_failed_one(
    faulty: FaultyServer, backend: str, point: str
) -> None:
    client = faulty.client
    thread = client.ask("My name is Ada.").thread_id
    log_from = len(faulty.server.log())
    request_id = f"fault-then-new-{point.replace(' ', '-')}"
    failed = _fail_a_turn(faulty, point, thread, request_id)

    following = client.ask("Tell me about checkpoints.", thread_id=thread)
    assert _earlier_messages(following.answer) == (4 if failed.committed else 2)
    expected = ["My name is Ada.", *(["What is my name?"] if failed.committed else []), "Tell me about checkpoints."]
    assert _humans(client, thread) == expected

    # The failed call's request_id, once the thread has moved on: the committed turn is returned;
    # an unfinished attempt can no longer be finished; a call that left nothing is a new call.
    if failed.committed:
        assert client.ask("What is my name?", thread_id=thread, request_id=request_id).answer == "Your name is Ada."
    elif failed.left_checkpoints:
        with pytest.raises(ThreadlineError) as superseded:
            client.ask("What is my name?", thread_id=thread, request_id=request_id)
        assert (superseded.value.code, superseded.value.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "REQUEST_SUPERSEDED",
        ), str(superseded.value)
    else:
        assert client.ask("What is my name?", thread_id=thread, request_id=request_id).answer == "Your name is Ada."
        expected.append("What is my name?")
    assert _humans(client, thread) == expected
    listed = {t.thread_id: t for t in client.list_threads(page_size=100).threads}
    assert listed[thread].head_checkpoint_id == client.history(thread, page_size=1).head_checkpoint_id
    log = faulty.server.log()[log_from:]
    assert "Traceback" not in log and "unexpected error" not in log, log


@pytest.mark.parametrize(("backend", "point"), CASES)
def test_a_streamed_turn_that_fails_to_write_is_unavailable_and_its_retry_finishes_it(
    faulty: FaultyServer, backend: str, point: str
) -> None:
    client = faulty.client
    thread = client.ask("My name is Ada.").thread_id
    log_from = len(faulty.server.log())
    request_id = f"fault-streamed-{point.replace(' ', '-')}"
    failed = _fail_a_turn(faulty, point, thread, request_id, streamed=True)
    checkpoints = len(list(client.iter_checkpoints(thread, page_size=100)))
    retried = _ask(client, "What is my name?", thread, request_id, streamed=True)
    assert retried.answer == "Your name is Ada."
    if failed.committed:
        assert len(list(client.iter_checkpoints(thread, page_size=100))) == checkpoints, "the stored turn, not a rerun"
    _assert_the_thread_keeps_working(faulty, thread, log_from)


def test_a_database_error_we_cannot_name_is_internal_and_leaves_the_thread_working(
    postgres_faulty: FaultyServer,
) -> None:
    """P0001 (a plain RAISE, psycopg's ProgrammingError) says nothing a caller can act on: INTERNAL with an
    incident; the thread is not poisoned by it."""
    client = postgres_faulty.client
    thread = client.ask("My name is Ada.").thread_id
    postgres_faulty.arm("checkpoint", sqlstate="P0001")
    try:
        with pytest.raises(ThreadlineError) as caught:
            client.ask("What is my name?", thread_id=thread, request_id="unnamed")
    finally:
        postgres_faulty.disarm()
    assert caught.value.code == grpc.StatusCode.INTERNAL and "incident" in caught.value.message, str(caught.value)
    assert _humans(client, thread) == ["My name is Ada."]
    assert client.ask("What is my name?", thread_id=thread, request_id="unnamed").answer == "Your name is Ada."
    assert _earlier_messages(client.ask("Tell me about checkpoints.", thread_id=thread).answer) == 4


def test_a_failed_registry_write_on_sqlite_lets_go_of_the_files_write_lock(sqlite_faulty: FaultyServer) -> None:
    client = sqlite_faulty.client
    thread = client.ask("My name is Ada.").thread_id
    _fail_a_turn(sqlite_faulty, "registry row", thread, "registry-lock")
    with closing(sqlite3.connect(sqlite_faulty.sqlite_path, timeout=0.5)) as conn, conn:
        conn.execute("DELETE FROM threadline_test_fault")  # any write of another connection
