"""Answered turns survive a kill -9; a turn cut short is finished by a retry with the same request_id."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import grpc
import psycopg
import pytest
from langgraph.checkpoint.sqlite.utils import search_where

from tests.conftest import BACKENDS, database_url
from tests.support import ServerProcess, server_env
from threadline.storage import audit
from threadline.storage import postgres_saver as postgres
from threadline_client import ThreadlineClient, ThreadlineError, pb

SLOW = server_env(THREADLINE_OFFLINE_TOKEN_DELAY_MS="50")
LONG_QUERY = "Please tell me everything you know about checkpoints and threads"


def _humans(client: ThreadlineClient, thread: str) -> list[str]:
    return [m.text for m in client.history(thread).messages if m.role == pb.ROLE_HUMAN]


def test_a_repeated_request_id_returns_the_stored_turn_without_running_again(client: ThreadlineClient) -> None:
    first = client.ask("What is 6*7?", request_id="pay-1")
    checkpoints = len(client.history(first.thread_id, page_size=100).checkpoints)

    again = client.ask("What is 6*7?", thread_id=first.thread_id, request_id="pay-1")
    assert again == first, "same request_id, same result: same answer, checkpoint and messages"
    streamed = list(client.stream_ask("What is 6*7?", thread_id=first.thread_id, request_id="pay-1"))
    assert [e.WhichOneof("event") for e in streamed] == ["final"] and streamed[0].final == first
    assert len(client.history(first.thread_id, page_size=100).checkpoints) == checkpoints, "nothing ran"
    assert _humans(client, first.thread_id) == ["What is 6*7?"]

    # Later turns, with and without request ids, do not change what the earlier request_id returns.
    client.ask("My name is Ada.", thread_id=first.thread_id)
    second = client.ask("What is 1+1?", thread_id=first.thread_id, request_id="pay-2")
    assert client.ask("What is 6*7?", thread_id=first.thread_id, request_id="pay-1") == first
    assert client.ask("What is 1+1?", thread_id=first.thread_id, request_id="pay-2") == second
    # A request_id is the thread's own: on another thread it is a new request. (Without a
    # thread_id the call would be a retry of the first, which created its thread.)
    other_thread = client.ask("My name is Ada.").thread_id
    elsewhere = client.ask("What is 6*7?", thread_id=other_thread, request_id="pay-1")
    assert elsewhere.thread_id != first.thread_id and elsewhere.checkpoint_id != first.checkpoint_id


def test_a_request_id_reused_with_another_query_is_invalid_argument(client: ThreadlineClient) -> None:
    thread = client.ask("My name is Ada.", request_id="once").thread_id
    with pytest.raises(ThreadlineError) as caught:
        client.ask("My name is Grace.", thread_id=thread, request_id="once")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.metadata == {"field": "request_id"} and "different query" in caught.value.message
    assert "Ada" in client.ask("What is my name?", thread_id=thread).answer


def _plan(server: ServerProcess, thread_key: str) -> str:
    """How the database finds a thread's checkpoint of a request_id (the query every turn with one runs)."""
    url = server.database_url
    if url.startswith("sqlite:///"):
        where, params = search_where(
            {"configurable": {"thread_id": thread_key, "checkpoint_ns": ""}}, {audit.REQUEST_ID: "r-x"}, None
        )
        # AsyncSqliteSaver.alist's query for a filter and limit=1.
        query = f"SELECT checkpoint FROM checkpoints {where} ORDER BY checkpoint_id DESC LIMIT ?"
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return "\n".join(str(row) for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", (*params, 1)))
    with psycopg.connect(url) as conn:
        conn.execute("SET enable_seqscan = off")  # tiny test tables: ask which index serves, not whether to scan
        rows = conn.execute(f"EXPLAIN {postgres.REQUEST_SQL}", (thread_key, "", "r-x")).fetchall()
        return "\n".join(str(row[0]) for row in rows)


def test_the_request_id_lookup_searches_an_index_instead_of_scanning_the_thread(
    client: ThreadlineClient, server: ServerProcess
) -> None:
    thread = client.ask("My name is Ada.", request_id="r-1").thread_id
    for n in range(2, 6):
        client.ask(f"What is {n}+{n}?", thread_id=thread, request_id=f"r-{n}")
    plan = _plan(server, f"default/{thread}")
    assert "threadline_checkpoints_by_request_id" in plan, plan


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_answered_turn_survives_sigkill_right_after_the_reply(
    backend: str, tmp_path: Path, logs: Path, request: pytest.FixtureRequest
) -> None:
    url = database_url(backend, tmp_path, request)
    server = ServerProcess(url, logs).start()
    try:
        with ThreadlineClient(server.address) as client:
            turn = client.ask("My name is Ada.")
    finally:
        server.kill()
    with ServerProcess(url, logs) as restarted, ThreadlineClient(restarted.address) as client:
        history = client.history(turn.thread_id)
        assert history.head_checkpoint_id == turn.checkpoint_id
        assert [m.text for m in history.messages] == ["My name is Ada.", "Noted: your name is Ada."]


def test_a_cancelled_turn_is_finished_by_a_retry_with_its_request_id(tmp_path: Path, logs: Path) -> None:
    with ServerProcess(f"sqlite:///{tmp_path / 't.db'}", logs, env=SLOW) as server:
        with ThreadlineClient(server.address) as client:
            thread = client.ask("My name is Ada.").thread_id
            events = client.stream_ask(LONG_QUERY, thread_id=thread, request_id="story-1")
            assert next(events).HasField("token")
            events.close()  # hang up mid-answer: the server cancels the turn

            retried = client.ask(LONG_QUERY, thread_id=thread, request_id="story-1", timeout=30)
            assert LONG_QUERY in retried.answer
            assert [m.role for m in retried.messages] == [pb.ROLE_HUMAN, pb.ROLE_AI]
            assert _humans(client, thread) == ["My name is Ada.", LONG_QUERY], "the question is there once"
            assert client.ask(LONG_QUERY, thread_id=thread, request_id="story-1") == retried


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_turn_cut_by_sigkill_is_finished_on_another_process(
    backend: str, tmp_path: Path, logs: Path, request: pytest.FixtureRequest
) -> None:
    url = database_url(backend, tmp_path, request)
    first = ServerProcess(url, logs, env=SLOW).start()
    started = threading.Event()
    try:
        with ThreadlineClient(first.address) as client:
            thread = client.ask("My name is Ada.").thread_id

            def stream() -> None:
                try:
                    for event in client.stream_ask(LONG_QUERY, thread_id=thread, request_id="cut-1"):
                        if event.HasField("token"):
                            started.set()
                except ThreadlineError:
                    pass  # the server died under it

            reader = threading.Thread(target=stream)
            reader.start()
            assert started.wait(10)
            first.kill()
            reader.join(10)
    finally:
        first.kill()
    with ServerProcess(url, logs) as second, ThreadlineClient(second.address) as client:
        # The thread is usable and the retry finishes the cut turn without asking it twice.
        retried = client.ask(LONG_QUERY, thread_id=thread, request_id="cut-1", timeout=30)
        assert LONG_QUERY in retried.answer
        assert _humans(client, thread) == ["My name is Ada.", LONG_QUERY]
        assert "Ada" in client.ask("What is my name?", thread_id=thread).answer


def test_a_cut_turn_superseded_by_later_turns_is_failed_precondition(tmp_path: Path, logs: Path) -> None:
    with ServerProcess(f"sqlite:///{tmp_path / 't.db'}", logs, env=SLOW) as server:
        with ThreadlineClient(server.address) as client:
            thread = client.ask("My name is Ada.").thread_id
            events = client.stream_ask(LONG_QUERY, thread_id=thread, request_id="late-1")
            next(events)
            events.close()
            client.ask("My pet is Rex.", thread_id=thread)
            with pytest.raises(ThreadlineError) as caught:
                client.ask(LONG_QUERY, thread_id=thread, request_id="late-1")
            assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert caught.value.reason == "REQUEST_SUPERSEDED"
