"""Delta-stored conversations: linear storage, and hot states that read back as a cold replica rebuilds them.

The default agent stores its messages with LangGraph's DeltaChannel (only each step's
writes) and a replica keeps the messages at its recent checkpoints in memory. Both are
only worth having if nothing a caller reads changes: every History page and GetState
of a thread written by one server must equal what a fresh server, which has to
rebuild every state from the database, answers for the same thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import json_format

from tests.conftest import BACKENDS, database_url
from tests.support import ServerProcess, server_env
from threadline_client import ThreadlineClient, ThreadlineError, pb

_BYTES_SQL = """
SELECT
  (SELECT coalesce(sum(pg_column_size(c.*)), 0) FROM checkpoints c WHERE thread_id = %(t)s)
+ (SELECT coalesce(sum(pg_column_size(b.*)), 0) FROM checkpoint_blobs b WHERE thread_id = %(t)s)
+ (SELECT coalesce(sum(pg_column_size(w.*)), 0) FROM checkpoint_writes w WHERE thread_id = %(t)s)
"""


def _everything(client: ThreadlineClient, thread: str) -> dict[str, Any]:
    """All a caller can read of a thread: every History page and the state at every checkpoint."""
    pages = []
    token = ""
    while True:
        page = client.history(thread, page_size=4, page_token=token, message_limit=1000)
        pages.append(json_format.MessageToDict(page))
        token = page.next_page_token
        if not token:
            break
    checkpoints = [c["checkpointId"] for p in pages for c in p.get("checkpoints", [])]
    states = {c: json_format.MessageToDict(client.get_state(thread, checkpoint_id=c)) for c in checkpoints}
    return {"pages": pages, "states": states}


def _busy_thread(client: ThreadlineClient) -> str:
    """A thread with plain turns, tool turns, an approval, a fork, an abandoned interrupt and a rewind."""
    first = client.ask("My name is Ada.")
    thread = first.thread_id
    client.ask("My pet is Rex.", thread_id=thread)
    paused = client.ask("What is 2+3?", thread_id=thread)
    assert paused.interrupts, "calculator needs approval on these servers"
    client.resume(thread, paused.interrupts[0].interrupt_id, pb.ResumeDecision(approve=pb.Approval()))
    client.ask("What is my name?", thread_id=thread, checkpoint_id=first.checkpoint_id)  # a fork
    client.ask("What is 4*5?", thread_id=thread)  # paused again ...
    client.ask("My city is Paris.", thread_id=thread, abandon_interrupt=True)  # ... and given up
    client.rewind(thread, steps_back=2)
    client.ask("What is my pet?", thread_id=thread)
    return thread


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cold_replica_reads_every_checkpoint_as_the_hot_one(
    backend: str, tmp_path: Path, logs: Path, request: pytest.FixtureRequest
) -> None:
    url = database_url(backend, tmp_path, request, fresh=True)
    env = server_env(THREADLINE_APPROVAL_TOOLS="calculator")
    with ServerProcess(url, logs, env=env) as hot, ThreadlineClient(hot.address) as client:
        thread = _busy_thread(client)
        seen_hot = _everything(client, thread)
    # No hot states at all on the second server: everything it answers is LangGraph's own rebuild.
    with (
        ServerProcess(url, logs, env={**env, "THREADLINE_HOT_THREADS": "0"}) as cold,
        ThreadlineClient(cold.address) as client,
    ):
        seen_cold = _everything(client, thread)
    assert seen_cold == seen_hot
    assert len(seen_hot["states"]) > 20
    first_page = seen_hot["pages"][0]
    assert first_page["messageCount"] == len(first_page["messages"])


def test_history_carries_the_newest_messages_up_to_message_limit(client: ThreadlineClient) -> None:
    thread = client.ask("My name is Ada.").thread_id
    client.ask("My pet is Rex.", thread_id=thread)
    client.ask("My city is Paris.", thread_id=thread)
    everything = client.history(thread)
    assert everything.message_count == len(everything.messages) == 6
    newest = client.history(thread, message_limit=2)
    assert newest.message_count == 6
    assert [m.text for m in newest.messages] == [m.text for m in everything.messages[-2:]]
    later = client.history(thread, page_size=1, page_token=client.history(thread, page_size=1).next_page_token)
    assert not later.messages and later.message_count == 0
    with pytest.raises(ThreadlineError) as bad:
        client.history(thread, message_limit=-1)
    assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT and "message_limit" in bad.value.message


def test_storage_per_turn_does_not_grow_with_the_thread(fresh_postgres_url: str, logs: Path, tmp_path: Path) -> None:
    """Bytes per turn over turns 31-40 stay within 1.5x of turns 1-10 (stock LangGraph: 1.7x already at 40 turns)."""
    with ServerProcess(fresh_postgres_url, logs) as server, ThreadlineClient(server.address) as client:
        thread = client.ask("My item0 is value0.").thread_id
        key = f"default/{thread}"

        def stored() -> int:
            with psycopg.connect(fresh_postgres_url) as conn:
                row = conn.execute(_BYTES_SQL, {"t": key}).fetchone()
                return int(row[0]) if row else 0

        for turn in range(1, 10):
            client.ask(f"My item{turn} is value{turn}.", thread_id=thread)
        early = stored() / 10
        for turn in range(10, 30):
            client.ask(f"My item{turn} is value{turn}.", thread_id=thread)
        before = stored()
        for turn in range(30, 40):
            client.ask(f"My item{turn} is value{turn}.", thread_id=thread)
        late = (stored() - before) / 10
        assert "value39" in client.ask("What is my item39?", thread_id=thread).answer
    assert late <= 1.5 * early, f"{late:.0f} vs {early:.0f} bytes per turn"
