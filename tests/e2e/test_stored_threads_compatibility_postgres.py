"""A PostgreSQL database written by an earlier version stays readable and retryable.

tests/data/written-by-0.1.0-postgres.sql is a pg_dump of a database written by Threadline 0.1.0
(the saver that subclassed langgraph-checkpoint-postgres): thread "golden" holds an Ask
(request_id golden-ask), a StreamAsk (golden-stream) and a fork from the Ask's checkpoint
(golden-fork); thread "nul-thread" holds an Ask whose question and answer hold NUL. Retrying each
request_id must return the turn stored then, not run a new one, and the threads go on from there.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import ROOT, ServerProcess
from threadline_client import ThreadlineClient

WRITTEN_BY_0_1_0 = ROOT / "tests" / "data" / "written-by-0.1.0-postgres.sql"
ASK = ("1f1f0da3-efd6-6543-8001-90186df3723d", "Noted: your name is Ada.")
STREAM = ("1f1f0da3-f007-67fd-8006-ae065876b612", "The answer is 42.")
FORK = ("1f1f0da3-f025-6a12-8004-d76c3b078941", "Noted: your name is Grace.")
NUL = (
    "1f1f0da3-f038-6f87-8001-c5564fcb2063",
    'I am the offline model (no OPENAI_API_KEY is set). You said: "nul \x00 inside". '
    "This thread held 0 earlier messages.",
)


def test_retries_of_turns_stored_by_0_1_0_on_postgres_return_those_turns(fresh_postgres_url: str, logs: Path) -> None:
    subprocess.run(
        ["psql", "--quiet", "--set", "ON_ERROR_STOP=1", "--file", str(WRITTEN_BY_0_1_0), fresh_postgres_url],
        check=True,
        capture_output=True,
    )
    with ServerProcess(fresh_postgres_url, logs) as server, ThreadlineClient(server.address) as client:
        checkpoints_before = len(list(client.iter_checkpoints("golden")))
        assert checkpoints_before == 11

        ask = client.ask("My name is Ada.", thread_id="golden", request_id="golden-ask")
        assert (ask.checkpoint_id, ask.answer) == ASK
        stream = list(client.stream_ask("What is 6*7?", thread_id="golden", request_id="golden-stream"))[-1].final
        assert (stream.checkpoint_id, stream.answer) == STREAM
        fork = client.ask("My name is Grace.", thread_id="golden", checkpoint_id=ASK[0], request_id="golden-fork")
        assert (fork.checkpoint_id, fork.answer) == FORK
        nul = client.ask("nul \x00 inside", thread_id="nul-thread", request_id="nul-ask")
        assert (nul.checkpoint_id, nul.answer) == NUL
        assert len(list(client.iter_checkpoints("golden"))) == checkpoints_before, "a retry ran a new turn"

        assert sorted(t.thread_id for t in client.list_threads().threads) == ["golden", "nul-thread"]
        history = client.history("golden")
        assert history.head_checkpoint_id == FORK[0]
        assert [m.text for m in history.messages][-2:] == ["My name is Grace.", FORK[1]]
        assert "Grace" in client.ask("What is my name?", thread_id="golden").answer
        assert "held 2 earlier messages" in client.ask("And now?", thread_id="nul-thread").answer
