"""DeleteThread: gone for History and Rewind, never written back by a turn in flight."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest

from tests.conftest import database_url
from tests.support import ServerProcess, server_env
from threadline_client import ThreadlineClient, ThreadlineError


def test_a_deleted_thread_is_not_found_and_its_id_can_start_afresh(client: ThreadlineClient) -> None:
    turn = client.ask("My name is Ada.")
    other = client.ask("My name is Grace.")
    deleted = client.delete_thread(turn.thread_id)
    assert deleted.existed and deleted.thread_id == turn.thread_id
    for call in (lambda: client.history(turn.thread_id), lambda: client.rewind(turn.thread_id, steps_back=1)):
        with pytest.raises(ThreadlineError) as caught:
            call()
        assert caught.value.code == grpc.StatusCode.NOT_FOUND and caught.value.reason == "THREAD_NOT_FOUND"
    assert "Grace" in client.ask("What is my name?", thread_id=other.thread_id).answer, "other threads stay"

    with pytest.raises(ThreadlineError) as caught:
        client.delete_thread(turn.thread_id)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert not client.delete_thread(turn.thread_id, allow_missing=True).existed

    fresh = client.ask("What is my name?", thread_id=turn.thread_id)
    assert "Ada" not in fresh.answer
    assert len(client.history(turn.thread_id).messages) == 2


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_turn_in_flight_finishes_before_the_delete_and_does_not_resurrect_the_thread(
    backend: str, tmp_path: Path, logs: Path, request: pytest.FixtureRequest
) -> None:
    url = database_url(backend, tmp_path, request)
    slow = server_env(THREADLINE_OFFLINE_TOKEN_DELAY_MS="30")
    with ServerProcess(url, logs, env=slow) as server, ThreadlineClient(server.address) as client:
        thread = client.ask("My name is Ada.").thread_id
        streamed: list[str] = []
        started = threading.Event()

        def stream() -> None:
            for event in client.stream_ask("Tell me a long story about deleting things", thread_id=thread):
                streamed.append(event.WhichOneof("event") or "")
                started.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(10)
        assert client.delete_thread(thread).existed
        reader.join(20)
        assert streamed[-1] == "final", "the turn in flight completed before the delete"
        with pytest.raises(ThreadlineError) as caught:
            client.history(thread)
        assert caught.value.code == grpc.StatusCode.NOT_FOUND, "nothing wrote the thread back"


def test_with_policy_reject_deleting_a_busy_thread_is_aborted(tmp_path: Path, logs: Path) -> None:
    env = server_env(THREADLINE_OFFLINE_TOKEN_DELAY_MS="30", THREADLINE_BUSY_POLICY="reject")
    with ServerProcess(f"sqlite:///{tmp_path / 't.db'}", logs, env=env) as server:
        with ThreadlineClient(server.address) as client:
            thread = client.ask("My name is Ada.").thread_id
            events = client.stream_ask("Tell me a long story about deleting things", thread_id=thread)
            next(events)
            with pytest.raises(ThreadlineError) as caught:
                client.delete_thread(thread)
            assert caught.value.code == grpc.StatusCode.ABORTED and caught.value.reason == "THREAD_BUSY"
            assert list(events)[-1].HasField("final")
            assert client.delete_thread(thread).existed


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_retention_deletes_idle_threads_and_keeps_active_ones(
    backend: str, tmp_path: Path, logs: Path, request: pytest.FixtureRequest
) -> None:
    url = database_url(backend, tmp_path, request)
    env = server_env(THREADLINE_RETENTION_TTL_S="1.5", THREADLINE_RETENTION_INTERVAL_S="0.3")
    with ServerProcess(url, logs, env=env) as server, ThreadlineClient(server.address) as client:
        idle = client.ask("My name is Ada.").thread_id
        active = client.ask("My name is Grace.").thread_id
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            client.ask("My pet is Rex.", thread_id=active)  # keeps it active
            try:
                client.history(idle)
            except ThreadlineError as error:
                assert error.code == grpc.StatusCode.NOT_FOUND
                break
            time.sleep(0.3)
        else:
            pytest.fail("the idle thread was not deleted")
        assert "Grace" in client.ask("What is my name?", thread_id=active).answer
    assert "retention: deleted" in server.log()
