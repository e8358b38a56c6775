"""A request_id protects a call that creates its thread, and ids match whatever their case.

An Ask (or StreamAsk) with a request_id and no thread_id, retried, must come back with the same
thread and the same turn, and the model must run once: the local model server counts its
requests. Checkpoint ids are UUIDs, which callers may write in upper case.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import database_url
from tests.model_server import ModelServer, text
from tests.support import ServerProcess, model_server_env
from threadline_client import ThreadlineClient, ThreadlineError


@pytest.fixture(scope="module")
def model() -> Iterator[ModelServer]:
    with ModelServer() as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def client(
    request: pytest.FixtureRequest, model: ModelServer, tmp_path_factory: pytest.TempPathFactory, logs: Path
) -> Iterator[ThreadlineClient]:
    url = database_url(request.param, tmp_path_factory.mktemp(request.param), request)
    with (
        ServerProcess(url, logs, env=model_server_env(model.base_url)) as server,
        ThreadlineClient(server.address) as c,
    ):
        yield c


@pytest.mark.parametrize("streamed", [False, True], ids=["Ask", "StreamAsk"])
def test_a_retried_call_without_a_thread_id_returns_its_thread_and_turn(
    client: ThreadlineClient, model: ModelServer, streamed: bool, request: pytest.FixtureRequest
) -> None:
    model.reset()
    request_id = f"create-{request.node.callspec.id}"
    model.script(text("Hello, Ada."))

    def call() -> tuple[str, str, str]:
        if streamed:
            turn = list(client.stream_ask("My name is Ada.", request_id=request_id))[-1].final
        else:
            turn = client.ask("My name is Ada.", request_id=request_id)
        return turn.thread_id, turn.checkpoint_id, turn.answer

    first = call()
    assert call() == first and call() == first
    assert len(model.requests) == 1, "the model ran once"
    assert [m.text for m in client.history(first[0]).messages] == ["My name is Ada.", "Hello, Ada."]

    model.script(text("Hello, Grace."))
    other = client.ask("My name is Grace.", request_id=f"{request_id}-other")
    assert other.thread_id != first[0]
    with pytest.raises(ThreadlineError) as refused:
        client.ask("Something else entirely", request_id=request_id)
    assert refused.value.code.name == "INVALID_ARGUMENT" and "different query" in refused.value.message


def test_checkpoint_ids_match_in_upper_case(client: ThreadlineClient, model: ModelServer) -> None:
    model.reset()
    model.script(text("One."), text("Two."), text("Forked."))
    thread = client.ask("First?").thread_id
    first = client.history(thread).head_checkpoint_id
    client.ask("Second?", thread_id=thread)

    state = client.get_state(thread, checkpoint_id=first.upper())
    assert state.checkpoint.checkpoint_id == first
    assert [m.text for m in state.messages] == ["First?", "One."]
    fork = client.ask("Again?", thread_id=thread, checkpoint_id=first.upper())
    assert fork.answer == "Forked." and client.history(thread).head_checkpoint_id == fork.checkpoint_id
    rewound = client.rewind(thread, checkpoint_id=first.upper())
    assert rewound.rewound_to_checkpoint_id == first and [m.text for m in rewound.messages] == ["First?", "One."]
