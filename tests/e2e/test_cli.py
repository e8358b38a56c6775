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


def test_fork_state_threads_and_the_history_tree(sqlite_server: ServerProcess) -> None:
    turn = json.loads(_threadline(sqlite_server, "ask", "My name is Ada.", "--json").stdout)
    thread, first = turn["threadId"], turn["checkpointId"]
    _threadline(sqlite_server, "ask", "My name is Grace.", "--thread", thread)
    forked = _threadline(sqlite_server, "ask", "My name is Linus.", "--thread", thread, "--checkpoint", first)
    assert forked.returncode == 0, forked.stderr

    state = _threadline(sqlite_server, "state", thread)
    assert state.returncode == 0 and state.stdout.startswith("head: ") and "Linus" in state.stdout
    assert "Grace" not in state.stdout and "next: (nothing" in state.stdout

    tree = _threadline(sqlite_server, "history", thread, "--tree")
    assert tree.returncode == 0, tree.stderr
    lines = tree.stdout.splitlines()
    grace = next(line for line in lines if "Noted: your name is Grace" in line)
    linus = next(line for line in lines if "Noted: your name is Linus" in line)
    assert linus.startswith("*") and not grace.startswith("*"), "the current branch is marked"
    indent = len(grace) - len(grace[1:].lstrip())
    assert len(linus) - len(linus[1:].lstrip()) != indent, "the two branches are drawn at different depths"

    listed = _threadline(sqlite_server, "threads", "--page-size", "100")
    assert listed.returncode == 0 and thread in listed.stdout and "turns=2" in listed.stdout
