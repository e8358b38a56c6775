"""The `threadline` client commands against a real server, as the README shows them."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT, ServerProcess, server_env


def _threadline(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadline", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=server_env(THREADLINE_ADDRESS=server.address),
    )  # fmt: skip


def test_ask_history_and_rewind_from_the_command_line(sqlite_server: ServerProcess) -> None:
    told = _threadline(sqlite_server, "ask", "My name is Ada.", "--json")
    assert told.returncode == 0, told.stderr
    turn = json.loads(told.stdout)
    thread = turn["threadId"]

    renamed = _threadline(sqlite_server, "ask", "My name is Grace.", "--thread", thread)
    assert renamed.returncode == 0 and renamed.stdout.strip() == "Noted: your name is Grace."
    assert f"thread: {thread}" in renamed.stderr

    streamed = _threadline(sqlite_server, "ask", "What is my name?", "--thread", thread, "--stream")
    assert streamed.returncode == 0 and streamed.stdout.strip() == "Your name is Grace."

    history = _threadline(sqlite_server, "history", thread, "--all")
    assert history.returncode == 0 and "My name is Grace." in history.stdout and turn["checkpointId"] in history.stdout

    rewound = _threadline(sqlite_server, "rewind", thread, "--checkpoint", turn["checkpointId"])
    assert rewound.returncode == 0, rewound.stderr
    assert "Grace" not in rewound.stdout and "Ada" in rewound.stdout
    answer = _threadline(sqlite_server, "ask", "What is my name?", "--thread", thread)
    assert answer.stdout.strip() == "Your name is Ada."


def test_errors_print_the_status_and_exit_non_zero(sqlite_server: ServerProcess) -> None:
    missing = _threadline(sqlite_server, "history", "no-such-thread")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr and "THREAD_NOT_FOUND" in missing.stderr
    bad = _threadline(sqlite_server, "ask", "   ")
    assert bad.returncode == 2 and "INVALID_ARGUMENT" in bad.stderr
