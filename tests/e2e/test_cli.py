"""The `threadline` client commands against a real server, as the README shows them, and their manners:
a reader that stops early, an error after streamed tokens, the exit codes their help promises."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.model_server import ModelServer, stream_error, tokens
from tests.support import ROOT, ServerProcess, free_port, model_server_env, server_env
from threadline.cli import main
from threadline_client import ThreadlineClient

CLIENT_COMMANDS = ("ask", "history", "rewind", "delete", "state", "resume", "threads")
PIPE_CAPACITY = 64 * 1024  # Linux's default: a writer of more blocks until the reader reads or goes away


def _threadline(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadline", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=server_env(THREADLINE_ADDRESS=server.address),
    )  # fmt: skip


def _start_threadline(
    server: ServerProcess, *args: str, buffered: bool = True, stderr: int = subprocess.PIPE
) -> subprocess.Popen[bytes]:
    """The command, running, with its stdout a pipe; buffered: Python's default block-buffered stdout."""
    env = server_env(THREADLINE_ADDRESS=server.address)
    env.pop("PYTHONUNBUFFERED", None)
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    command = [sys.executable, "-m", "threadline", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, bufsize=0, cwd=ROOT, env=env)


def _close_stdout_after(process: subprocess.Popen[bytes], n_bytes: int) -> tuple[int, bytes, bytes]:
    """Reads at most n_bytes of the command's stdout (0: none), closes it, and waits for the command to end.

    Returns its exit code, what was read, and its stderr.
    """
    assert process.stdout is not None and process.stderr is not None
    with process:
        read = process.stdout.read(n_bytes) if n_bytes else b""
        process.stdout.close()
        stderr = process.stderr.read()
    return process.wait(timeout=60), read or b"", stderr


@pytest.fixture(scope="module")
def model_endpoint() -> Iterator[ModelServer]:
    with ModelServer() as endpoint:
        yield endpoint


@pytest.fixture
def model(model_endpoint: ModelServer) -> Iterator[ModelServer]:
    """The module's model endpoint, with nothing scripted and no token delay."""
    model_endpoint.reset()
    model_endpoint.token_delay_s = 0.0
    yield model_endpoint
    model_endpoint.reset()
    model_endpoint.token_delay_s = 0.0


@pytest.fixture(scope="module")
def server_with_model(
    model_endpoint: ModelServer, tmp_path_factory: pytest.TempPathFactory, logs: Path
) -> Iterator[ServerProcess]:
    """A server whose model is the module's model endpoint."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cli-model') / 'threadline.db'}"
    with ServerProcess(url, logs, env=model_server_env(model_endpoint.base_url)) as process:
        yield process


@pytest.fixture(scope="module")
def approval_server(tmp_path_factory: pytest.TempPathFactory, logs: Path) -> Iterator[ServerProcess]:
    """A server whose calculator waits for a human's approval."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cli-approval') / 'threadline.db'}"
    with ServerProcess(url, logs, env=server_env(THREADLINE_APPROVAL_TOOLS="calculator")) as process:
        yield process


@pytest.fixture(scope="module")
def long_thread(sqlite_server: ServerProcess) -> str:
    """A thread whose history is more than a pipe holds."""
    statement = "word " * 2999 + "end."  # within the server's limit of 16,000 characters
    thread = ""
    with ThreadlineClient(sqlite_server.address) as client:
        for _ in range(PIPE_CAPACITY // len(statement) + 1):  # the questions alone are more than a pipe holds
            thread = client.ask(statement, thread_id=thread).thread_id
    return thread


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


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_a_reader_that_stops_early_ends_the_command_quietly(
    sqlite_server: ServerProcess, long_thread: str, buffered: bool
) -> None:
    """`threadline threads | head -1` and the like: the reader goes away while the command still has output."""
    # Closed at once: the reader is gone before the command writes anything.
    threads = _close_stdout_after(_start_threadline(sqlite_server, "threads", buffered=buffered), 0)
    # One line read of more than a pipe holds: the command is still writing when the reader goes.
    history = _start_threadline(sqlite_server, "history", long_thread, buffered=buffered)
    read_history = _close_stdout_after(history, 100)
    for code, _, stderr in (threads, read_history):
        assert (code, stderr.decode()) == (141, "")
    assert read_history[1], "the reader read a little before it went"


@pytest.mark.parametrize("json_lines", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_a_reader_that_stops_a_streamed_answer_ends_it_quietly(
    server_with_model: ServerProcess, model: ModelServer, buffered: bool, json_lines: bool
) -> None:
    """`threadline ask --stream ... | head -c 5`: the command stops at the next token, and so does the turn."""
    model.token_delay_s = 0.01
    model.script(tokens(200))  # two seconds of tokens
    args = ("ask", "--stream", "Count slowly.", *(("--json",) if json_lines else ()))
    code, read, stderr = _close_stdout_after(_start_threadline(server_with_model, *args, buffered=buffered), 5)
    assert (code, stderr.decode()) == (141, "")
    assert read
    (record,) = model.wait_for_cancelled(1)
    assert not record.completed


def test_an_error_after_streamed_tokens_starts_on_its_own_line(
    server_with_model: ServerProcess, model: ModelServer
) -> None:
    model.script(stream_error(3, "The model fell over."))
    # stdout and stderr into one pipe, as on a terminal: the error must not continue the tokens' line.
    process = _start_threadline(server_with_model, "ask", "--stream", "What now?", stderr=subprocess.STDOUT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert output.decode().splitlines() == [
        "t0 t1 t2 ",
        "error: UNAVAILABLE: the model endpoint failed: The model fell over. (MODEL_UNAVAILABLE)",
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["ask", "stream"])
def test_ask_can_abandon_the_approval_a_thread_waits_for(approval_server: ServerProcess, stream: bool) -> None:
    paused = json.loads(_threadline(approval_server, "ask", "What is 6*7?", "--json").stdout)
    thread, (pause,) = paused["threadId"], paused["interrupts"]
    streamed = ("--stream",) if stream else ()

    refused = _threadline(approval_server, "ask", "My name is Ada.", "--thread", thread, *streamed)
    assert refused.returncode == 1 and "THREAD_INTERRUPTED" in refused.stderr, refused.stderr
    answered = _threadline(
        approval_server, "ask", "My name is Ada.", "--thread", thread, "--abandon-interrupt", *streamed
    )
    assert answered.returncode == 0, answered.stderr
    assert "Ada" in answered.stdout and "waiting for approval" not in answered.stderr
    late = _threadline(approval_server, "resume", thread, pause["interruptId"], "--approve")
    assert late.returncode == 1 and "NOT_INTERRUPTED" in late.stderr, "nothing is pending any more"


def _exit_codes(help_text: str) -> dict[int, str]:
    """The "exit codes:" table of a --help: each code and the first line of its meaning."""
    table = help_text.split("\nexit codes:\n", 1)[1]
    return {int(code): meaning for code, meaning in re.findall(r"^  (\d+) +(\S.*)$", table, re.MULTILINE)}


def _help(*args: str, capsys: pytest.CaptureFixture[str]) -> str:
    """What `threadline ... --help` prints (in process: it talks to no server)."""
    with pytest.raises(SystemExit) as exited:
        main([*args, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_the_help_lists_the_exit_codes_the_commands_return(
    sqlite_server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    documented = _exit_codes(_help(capsys=capsys))
    for command in CLIENT_COMMANDS:
        assert _exit_codes(_help(command, capsys=capsys)) == documented, command

    unreachable = f"127.0.0.1:{free_port()}"
    returned = {
        "success": (_threadline(sqlite_server, "threads").returncode, 0),
        "an error status": (_threadline(sqlite_server, "history", "no-such-thread").returncode, 1),
        "no server": (_threadline(sqlite_server, "threads", "--address", unreachable).returncode, 1),
        "INVALID_ARGUMENT": (_threadline(sqlite_server, "ask", "   ").returncode, 2),
        "a refused command line": (_threadline(sqlite_server, "history").returncode, 2),
        "stdout closed": (_close_stdout_after(_start_threadline(sqlite_server, "threads"), 0)[0], 141),
    }
    assert {case: code for case, (code, _) in returned.items()} == {
        case: expected for case, (_, expected) in returned.items()
    }
    assert sorted(documented) == sorted({expected for _, expected in returned.values()})
    assert documented[0] == "success" and documented[141].startswith("stdout was closed")
