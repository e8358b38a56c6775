"""No answer outgrows the server's largest message: long threads read in pages, huge messages come back cut.

The server runs with a 64 KiB message limit (the smallest it accepts) so that a few long turns
exceed it, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, database_url
from tests.support import ServerProcess, server_env
from threadline_client import ThreadlineClient, pb

LIMIT = 64 * 1024
LONG = 15_000
TURNS = 12


@pytest.fixture(scope="module", params=BACKENDS)
def small_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, logs: Path
) -> Iterator[ServerProcess]:
    url = database_url(request.param, tmp_path_factory.mktemp(f"bounded-{request.param}"), request)
    env = server_env(THREADLINE_MAX_MESSAGE_BYTES=str(LIMIT), THREADLINE_MAX_QUERY_CHARS="200000")
    with ServerProcess(url, logs, env=env) as server:
        yield server


@pytest.fixture(scope="module")
def long_thread(small_server: ServerProcess) -> tuple[str, list[str]]:
    """A thread whose conversation is several times the message limit; and its questions."""
    questions = [f"Note {turn}: " + chr(ord("a") + turn) * LONG for turn in range(TURNS)]
    with ThreadlineClient(small_server.address) as client:
        thread = client.ask(questions[0]).thread_id
        for question in questions[1:]:
            client.ask(question, thread_id=thread)
    return thread, questions


def test_get_state_and_history_answer_within_the_limit(
    small_server: ServerProcess, long_thread: tuple[str, list[str]]
) -> None:
    thread, questions = long_thread
    with ThreadlineClient(small_server.address) as client:
        state = client.get_state(thread)
        assert state.message_count == 2 * TURNS
        assert 0 < len(state.messages) < state.message_count, "the newest messages that fit, not all"
        assert state.ByteSize() <= LIMIT
        assert state.messages[-2].text == questions[-1] and not state.messages[-2].truncated
        history = client.history(thread, message_limit=1000)
        assert history.message_count == 2 * TURNS and 0 < len(history.messages) < history.message_count
        assert history.ByteSize() <= LIMIT


def test_list_messages_reads_the_whole_conversation_in_pages(
    small_server: ServerProcess, long_thread: tuple[str, list[str]]
) -> None:
    thread, questions = long_thread
    with ThreadlineClient(small_server.address) as client:
        oldest_first = list(client.iter_messages(thread, page_size=1000))
        assert [m.text for m in oldest_first if m.role == pb.ROLE_HUMAN] == questions
        assert not any(m.truncated for m in oldest_first)
        newest_first = list(client.iter_messages(thread, newest_first=True))
        assert [m.id for m in newest_first] == [m.id for m in reversed(oldest_first)]
        first = client.list_messages(thread, page_size=1000)
        assert len(first.messages) < first.message_count == 2 * TURNS, "a page ends at the size limit"
        # A page token keeps reading the conversation of its first page, after the thread moved on.
        client.ask("One more.", thread_id=thread)
        second = client.list_messages(thread, page_token=first.next_page_token)
        assert second.checkpoint_id == first.checkpoint_id and second.message_count == 2 * TURNS
        assert client.list_messages(thread).message_count == 2 * TURNS + 2


def test_messages_larger_than_a_response_can_hold_come_back_cut_and_flagged(small_server: ServerProcess) -> None:
    # A request fits the limit; its answer, the question and the echo, does not: each is cut to fit.
    huge = "z" * 60_000
    with ThreadlineClient(small_server.address) as client:
        turn = client.ask(huge)
        assert turn.ByteSize() <= LIMIT and len(turn.answer) < len(huge), "the answer is cut to fit"
        state = client.get_state(turn.thread_id)
        assert state.ByteSize() <= LIMIT and state.messages[-1].truncated
        asked = next(iter(client.iter_messages(turn.thread_id)))
        assert asked.truncated and huge.startswith(asked.text) and len(asked.text) < len(huge)
        # Stored whole: the thread's own title (its first question) is cut only to 80 characters.
        assert client.list_threads().threads[0].title == huge[:80]
