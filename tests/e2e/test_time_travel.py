"""GetState at any checkpoint, forks from any checkpoint, and ListThreads."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from tests.conftest import BACKENDS, database_url
from tests.support import ServerProcess
from threadline_client import ThreadlineClient, ThreadlineError, pb

UNKNOWN_CHECKPOINT = "1f000000-0000-6000-8000-000000000000"


def test_get_state_at_each_checkpoint_matches_history(client: ThreadlineClient) -> None:
    thread = client.ask("My name is Ada.").thread_id
    client.ask("What is 2+3?", thread_id=thread)
    client.ask("My pet is Rex.", thread_id=thread)
    history = client.history(thread, page_size=100)
    assert len(history.checkpoints) == 3 + 5 + 3  # input, __start__, agent (+ tools, agent for the tool turn)
    for listed in history.checkpoints:
        state = client.get_state(thread, checkpoint_id=listed.checkpoint_id)
        assert state.checkpoint == listed
        assert len(state.messages) == listed.message_count
        assert state.is_head == (listed.checkpoint_id == history.head_checkpoint_id)
        metadata = json.loads(state.metadata_json)
        assert metadata["step"] == listed.step and metadata["threadline_rpc"] == "Ask"
        if listed.nodes == ["__input__"]:
            assert list(state.next) == ["__start__"]
        if listed.preview.startswith("ai: calls calculator"):
            assert list(state.next) == ["tools"]
    head = client.get_state(thread)
    assert head.is_head and head.checkpoint.checkpoint_id == history.head_checkpoint_id and not head.next
    assert [m.text for m in head.messages] == [m.text for m in history.messages]


def test_get_state_of_an_unknown_checkpoint_is_not_found(client: ThreadlineClient) -> None:
    thread = client.ask("My name is Ada.").thread_id
    with pytest.raises(ThreadlineError) as caught:
        client.get_state(thread, checkpoint_id=UNKNOWN_CHECKPOINT)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND and caught.value.reason == "CHECKPOINT_NOT_FOUND"
    with pytest.raises(ThreadlineError) as caught:
        client.get_state("no-such-thread")
    assert caught.value.code == grpc.StatusCode.NOT_FOUND and caught.value.reason == "THREAD_NOT_FOUND"


def test_fork_from_the_second_of_four_turns_and_continue_both_branches(client: ThreadlineClient) -> None:
    turns = [client.ask("My name is Ada.")]
    thread = turns[0].thread_id
    for query in ("My pet is Rex.", "My name is Grace.", "My city is Lisbon."):
        turns.append(client.ask(query, thread_id=thread))
    old_head = turns[-1].checkpoint_id

    fork = client.ask("My name is Linus.", thread_id=thread, checkpoint_id=turns[1].checkpoint_id)
    assert fork.messages[0].text == "My name is Linus."
    state = client.get_state(thread)
    assert state.checkpoint.checkpoint_id == fork.checkpoint_id and state.checkpoint.rpc == "Fork"
    assert [m.text for m in state.messages if m.role == pb.ROLE_HUMAN] == [
        "My name is Ada.",
        "My pet is Rex.",
        "My name is Linus.",
    ]
    assert "Linus" in client.ask("What is my name?", thread_id=thread).answer
    assert "do not know your city" in client.ask("What is my city?", thread_id=thread).answer

    # The old branch is still there: continue it by forking from its head.
    old = client.ask("What is my name?", thread_id=thread, checkpoint_id=old_head)
    assert "Grace" in old.answer
    assert "Lisbon" in client.ask("What is my city?", thread_id=thread).answer
    streamed = list(client.stream_ask("What is my pet?", thread_id=thread, checkpoint_id=fork.checkpoint_id))
    assert "Rex" in streamed[-1].final.answer

    history = client.history(thread, page_size=100)
    ids = {c.checkpoint_id for c in history.checkpoints}
    assert {t.checkpoint_id for t in turns} <= ids, "every branch stays readable"
    forked = [c for c in history.checkpoints if c.rpc == "Fork"]
    assert forked and all(c.checkpoint_id in ids for c in forked)


def test_a_fork_needs_a_thread_and_a_checkpoint_of_it(client: ThreadlineClient) -> None:
    thread = client.ask("My name is Ada.").thread_id
    other = client.ask("My name is Grace.")
    cases = [
        (lambda: client.ask("hi", checkpoint_id=other.checkpoint_id), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: client.ask("hi", thread_id=thread, checkpoint_id="head"), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: client.ask("hi", thread_id=thread, checkpoint_id=other.checkpoint_id), grpc.StatusCode.NOT_FOUND),
    ]
    for call, code in cases:
        with pytest.raises(ThreadlineError) as caught:
            call()
        assert caught.value.code == code, caught.value


@pytest.mark.parametrize("backend", BACKENDS)
def test_list_threads_walks_every_thread_once_newest_activity_first(
    backend: str, tmp_path: Path, logs: Path, request: pytest.FixtureRequest
) -> None:
    url = database_url(backend, tmp_path, request, fresh=True)
    with ServerProcess(url, logs) as server, ThreadlineClient(server.address) as client:
        threads = [client.ask(f"My name is Person{i}.").thread_id for i in range(7)]
        client.ask("My pet is Rex.", thread_id=threads[2])  # now the most recently active
        walked: list[pb.ThreadSummary] = []
        token = ""
        while True:
            page = client.list_threads(page_size=3, page_token=token)
            assert len(page.threads) <= 3
            walked.extend(page.threads)
            token = page.next_page_token
            if not token:
                break
        assert [t.thread_id for t in walked] == [threads[2], *reversed(threads[:2] + threads[3:])]
        first = walked[0]
        assert first.title == "My name is Person2." and first.turn_count == 2
        assert first.update_time.ToDatetime() > first.create_time.ToDatetime()
        assert first.head_checkpoint_id == client.history(threads[2], page_size=1).head_checkpoint_id

        client.delete_thread(threads[0])
        assert threads[0] not in {t.thread_id for t in client.list_threads(page_size=100).threads}
        with pytest.raises(ThreadlineError) as caught:
            client.list_threads(page_token="bogus")
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
