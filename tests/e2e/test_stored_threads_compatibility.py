"""A database written by an earlier version stays readable and retryable.

tests/data/written-by-0.1.0.db was written by Threadline 0.1.0 (before the turn kinds became an
enum and the layers became packages): thread "golden" holds an Ask (request_id golden-ask), a
StreamAsk (golden-stream) and a fork from the Ask's checkpoint (golden-fork). Retrying each
request_id must return the turn that was stored then, not run a new one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.support import ROOT, ServerProcess
from threadline_client import ThreadlineClient

WRITTEN_BY_0_1_0 = ROOT / "tests" / "data" / "written-by-0.1.0.db"
ASK = ("1f1f0b08-2860-6b43-8001-18d3f75e0d12", "Noted: your name is Ada.")
STREAM = ("1f1f0b08-288b-6f87-8006-2db1263eae96", "The answer is 42.")
FORK = ("1f1f0b08-28a6-6f1c-8004-f3fc5ecc0c48", "Noted: your name is Grace.")


def test_retries_of_turns_stored_by_0_1_0_return_those_turns(tmp_path: Path, logs: Path) -> None:
    database = tmp_path / "threadline.db"
    shutil.copyfile(WRITTEN_BY_0_1_0, database)
    with ServerProcess(f"sqlite:///{database}", logs) as server, ThreadlineClient(server.address) as client:
        checkpoints_before = len(list(client.iter_checkpoints("golden")))

        ask = client.ask("My name is Ada.", thread_id="golden", request_id="golden-ask")
        assert (ask.checkpoint_id, ask.answer) == ASK
        stream = list(client.stream_ask("What is 6*7?", thread_id="golden", request_id="golden-stream"))[-1].final
        assert (stream.checkpoint_id, stream.answer) == STREAM
        fork = client.ask("My name is Grace.", thread_id="golden", checkpoint_id=ASK[0], request_id="golden-fork")
        assert (fork.checkpoint_id, fork.answer) == FORK
        assert len(list(client.iter_checkpoints("golden"))) == checkpoints_before, "a retry ran a new turn"

        assert [t.thread_id for t in client.list_threads().threads] == ["golden"]
        history = client.history("golden")
        assert history.head_checkpoint_id == FORK[0]
        assert "Grace" in client.ask("What is my name?", thread_id="golden").answer
