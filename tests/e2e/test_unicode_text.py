"""Any valid Unicode string is stored and returned exactly, the same on memory, SQLite and PostgreSQL.

Text reaches storage from three sources, and each is checked on each backend: the caller's query (Ask and the
thread's title in ListThreads), the model's answer (the local model server echoes the query back through the
default agent), and a tool's result (a user graph whose tool echoes the query, and which keeps the last query in a
plain string channel: PostgreSQL's stock layout stores such values inline in JSONB, which refuses NUL). What the
server returned while the turn ran is compared with what History and GetState read back from storage afterwards,
and the thread still answers a plain Ask.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import database_url
from tests.model_server import ModelServer, text
from tests.support import ServerProcess, model_server_env
from threadline_client import ThreadlineClient, pb

CORPUS = {
    "nul": "My name is A\u0000da.",
    "nul only between words": "\u0000 a \u0000\u0000 b \u0000",
    "noncharacter": "edge \uffff\ufffe of the BMP",
    "astral": "𝔸𝕕𝕒 🧵🪡 𠀀 \U0010fffd",
    "combining": "Z\u0351\u0308\u0301a\u0303\u0328lgo e\u0301 n\u0303",
    "right to left": "שלום עולם مرحبا \u202eabc\u202c \u200f!",
    "controls and spaces": "tab\there\r\nline\u2028sep\u00a0nbsp\u3000wide\x1b[0m\x7f",
    "quotes and escapes": "\\u0000 \"json\" '\\x00' $$ -- ; DROP TABLE checkpoints",
    "16,000 characters": ("\u0000ǅ𝔸\u0301ש " * 3200)[:16_000],
}


def title_of(query: str) -> str:
    """ListThreads' title of a thread whose first question is query (the proto's rule)."""
    return " ".join(query.split())[:80]


@pytest.fixture(scope="module")
def model() -> Iterator[ModelServer]:
    with ModelServer() as server:
        yield server


@pytest.fixture(scope="module", params=["memory", "sqlite", "postgres"])
def client(
    request: pytest.FixtureRequest, model: ModelServer, tmp_path_factory: pytest.TempPathFactory, logs: Path
) -> Iterator[ThreadlineClient]:
    backend = request.param
    url = "memory://" if backend == "memory" else database_url(backend, tmp_path_factory.mktemp(backend), request)
    with (
        ServerProcess(url, logs, env=model_server_env(model.base_url)) as server,
        ThreadlineClient(server.address) as c,
    ):
        yield c


def texts(messages: Iterable[pb.Message]) -> list[str]:
    return [m.text for m in messages]


@pytest.mark.parametrize("name", list(CORPUS))
def test_the_callers_and_the_models_text_round_trip(client: ThreadlineClient, model: ModelServer, name: str) -> None:
    query = CORPUS[name]
    model.script(text(["You said: ", query]))
    turn = client.ask(query)
    assert texts(turn.messages) == [query, f"You said: {query}"]

    history = client.history(turn.thread_id)
    assert texts(history.messages) == [query, f"You said: {query}"]
    assert texts(client.get_state(turn.thread_id).messages) == [query, f"You said: {query}"]
    titles = {t.thread_id: t.title for t in client.list_threads(page_size=100).threads}
    assert titles[turn.thread_id] == title_of(query)

    model.script(text("Still here."))
    assert client.ask("Are you there?", thread_id=turn.thread_id).answer == "Still here."


@pytest.fixture(scope="module", params=["memory", "sqlite", "postgres"])
def tool_client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, logs: Path
) -> Iterator[ThreadlineClient]:
    """A server of tests.graphs.echo:tool_echo: a tool's result and a plain string channel, stored."""
    backend = request.param
    url = "memory://" if backend == "memory" else database_url(backend, tmp_path_factory.mktemp(backend), request)
    with (
        ServerProcess(url, logs, args=("--graph", "tests.graphs.echo:tool_echo")) as server,
        ThreadlineClient(server.address) as c,
    ):
        yield c


def test_a_tools_text_and_a_string_channel_round_trip(tool_client: ThreadlineClient) -> None:
    thread_id, previous = "", ""
    for query in CORPUS.values():
        events = list(tool_client.stream_ask(query, thread_id=thread_id))
        assert [e.tool_result.content for e in events if e.HasField("tool_result")] == [query]
        turn = events[-1].final
        # The answer quotes the previous turn's query, read back from the string channel's checkpoint.
        assert turn.answer == f"{query}|{previous}"
        thread_id, previous = turn.thread_id, query

    tool_texts = [m.text for m in tool_client.get_state(thread_id).messages if m.role == pb.ROLE_TOOL]
    assert tool_texts == list(CORPUS.values())
    history = tool_client.history(thread_id, message_limit=1000)
    assert [m.text for m in history.messages if m.role == pb.ROLE_TOOL] == list(CORPUS.values())


OLD_REGISTRY = """
CREATE TABLE threadline_threads (
    tenant text NOT NULL, thread_id text NOT NULL, title text NOT NULL, turn_count integer NOT NULL,
    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, head_checkpoint_id text NOT NULL,
    PRIMARY KEY (tenant, thread_id)
)
"""


def test_a_registry_written_before_titles_were_bytes_is_read_and_takes_nul(fresh_postgres_url: str, logs: Path) -> None:
    with psycopg.connect(fresh_postgres_url, autocommit=True) as conn:
        conn.execute(OLD_REGISTRY)
        conn.execute(
            "INSERT INTO threadline_threads VALUES ('default', 'old', 'Grüße, 𝔸da', 1, now(), now(), %s)",
            ("1f1f0ac4-3830-615d-bfff-359b216cd120",),
        )
    # The first replica converts the title column; the second finds it converted.
    with ServerProcess(fresh_postgres_url, logs) as one, ServerProcess(fresh_postgres_url, logs) as two:
        with ThreadlineClient(one.address) as client:
            assert [(t.thread_id, t.title) for t in client.list_threads().threads] == [("old", "Grüße, 𝔸da")]
            turn = client.ask(CORPUS["nul"])
        with ThreadlineClient(two.address) as client:
            titles = {t.thread_id: t.title for t in client.list_threads().threads}
        assert titles == {"old": "Grüße, 𝔸da", turn.thread_id: CORPUS["nul"]}
