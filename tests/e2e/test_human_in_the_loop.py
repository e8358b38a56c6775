"""Tools behind a human's approval: the turn pauses, survives restarts, and Resume approves, edits or rejects."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.conftest import BACKENDS, database_url
from tests.support import ROOT, ServerProcess, server_env
from threadline_client import ThreadlineClient, ThreadlineError, pb

APPROVAL = server_env(THREADLINE_APPROVAL_TOOLS="calculator")
APPROVE = pb.ResumeDecision(approve=pb.Approval())


@pytest.fixture(scope="module", params=BACKENDS)
def approval_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, logs: Path
) -> Iterator[ServerProcess]:
    url = database_url(request.param, tmp_path_factory.mktemp("hitl"), request)
    with ServerProcess(url, logs, env=APPROVAL) as server:
        yield server


@pytest.fixture
def client(approval_server: ServerProcess) -> Iterator[ThreadlineClient]:
    with ThreadlineClient(approval_server.address) as c:
        yield c


def _paused(client: ThreadlineClient, query: str = "What is 6*7?") -> pb.Turn:
    turn = client.ask(query)
    assert len(turn.interrupts) == 1 and not turn.answer
    (call,) = turn.interrupts[0].tool_calls
    assert call.name == "calculator" and json.loads(call.arguments_json) == {"expression": query[8:-1]}
    return turn


def test_a_tool_needing_approval_pauses_the_turn_until_approved(client: ThreadlineClient) -> None:
    turn = _paused(client)
    with pytest.raises(ThreadlineError) as caught:
        client.ask("My name is Ada.", thread_id=turn.thread_id)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION and caught.value.reason == "THREAD_INTERRUPTED"
    state = client.get_state(turn.thread_id)
    assert list(state.next) == ["approval"] and list(state.interrupts) == list(turn.interrupts)

    resumed = client.resume(turn.thread_id, turn.interrupts[0].interrupt_id, APPROVE, request_id="ok-1")
    assert resumed.answer == "The answer is 42." and not resumed.interrupts
    assert [m.role for m in resumed.messages] == [pb.ROLE_TOOL, pb.ROLE_AI]
    head = client.history(turn.thread_id, page_size=1).checkpoints[0]
    assert head.rpc == "Resume" and head.request_id == "ok-1"
    assert "Ada" in client.ask("My name is Ada.", thread_id=turn.thread_id).answer


def test_a_rejected_call_does_not_run_and_the_model_hears_why(client: ThreadlineClient) -> None:
    turn = _paused(client)
    decision = pb.ResumeDecision(reject=pb.Rejection(reason="no maths today"))
    resumed = client.resume(turn.thread_id, turn.interrupts[0].interrupt_id, decision)
    tool = next(m for m in resumed.messages if m.role == pb.ROLE_TOOL)
    assert "rejected" in tool.text and "no maths today" in tool.text
    assert "42" not in resumed.answer and "no maths today" in resumed.answer


def test_an_edited_call_runs_with_the_new_arguments(client: ThreadlineClient) -> None:
    turn = _paused(client)
    call_id = turn.interrupts[0].tool_calls[0].id
    decision = pb.ResumeDecision(edit=pb.Edit(arguments_json={call_id: '{"expression": "2+2"}'}))
    resumed = client.resume(turn.thread_id, turn.interrupts[0].interrupt_id, decision)
    assert resumed.answer == "The answer is 4."


def test_streamed_turns_pause_and_resume_too(client: ThreadlineClient) -> None:
    events = list(client.stream_ask("What is 3*3?"))
    assert [e.WhichOneof("event") for e in events] == ["tool_call", "final"]
    paused = events[-1].final
    assert paused.interrupts
    resumed = list(client.stream_resume(paused.thread_id, paused.interrupts[0].interrupt_id, APPROVE))
    kinds = [e.WhichOneof("event") for e in resumed]
    assert kinds[0] == "tool_result" and "token" in kinds and kinds[-1] == "final"
    assert (
        "".join(e.token.text for e in resumed if e.HasField("token")) == resumed[-1].final.answer == "The answer is 9."
    )


def test_a_new_question_may_abandon_the_pending_call(client: ThreadlineClient) -> None:
    turn = _paused(client)
    answered = client.ask("My name is Ada.", thread_id=turn.thread_id, abandon_interrupt=True)
    assert "Ada" in answered.answer and not answered.interrupts
    texts = [m.text for m in client.history(turn.thread_id).messages]
    assert any("abandoned" in t for t in texts), "the model was told the call was given up"
    with pytest.raises(ThreadlineError) as caught:
        client.resume(turn.thread_id, turn.interrupts[0].interrupt_id, APPROVE)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION and caught.value.reason == "NOT_INTERRUPTED"


def test_resume_errors(client: ThreadlineClient) -> None:
    turn = _paused(client)
    interrupt = turn.interrupts[0].interrupt_id
    bad_json = pb.ResumeDecision(edit=pb.Edit(arguments_json={"x": "["}))
    cases = [
        (turn.thread_id, "not-this-one", APPROVE, grpc.StatusCode.NOT_FOUND, "INTERRUPT_NOT_FOUND"),
        (turn.thread_id, interrupt, pb.ResumeDecision(), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (turn.thread_id, interrupt, bad_json, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ("no-such-thread", interrupt, APPROVE, grpc.StatusCode.NOT_FOUND, "THREAD_NOT_FOUND"),
    ]
    for thread, interrupt_id, decision, code, reason in cases:
        with pytest.raises(ThreadlineError) as caught:
            client.resume(thread, interrupt_id, decision)
        assert caught.value.code == code and caught.value.reason == reason, caught.value
    assert client.resume(turn.thread_id, interrupt, APPROVE).answer == "The answer is 42.", "errors changed nothing"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_pause_survives_a_sigkill_and_resumes_on_a_new_process(
    backend: str, tmp_path: Path, logs: Path, request: pytest.FixtureRequest
) -> None:
    url = database_url(backend, tmp_path, request)
    first = ServerProcess(url, logs, env=APPROVAL).start()
    try:
        with ThreadlineClient(first.address) as client:
            turn = _paused(client)
    finally:
        first.kill()
    with ServerProcess(url, logs, env=APPROVAL) as second, ThreadlineClient(second.address) as client:
        resumed = client.resume(turn.thread_id, turn.interrupts[0].interrupt_id, APPROVE)
        assert resumed.answer == "The answer is 42."


def test_the_command_line_shows_the_pause_and_resumes_it(approval_server: ServerProcess) -> None:
    def threadline(*args: str) -> subprocess.CompletedProcess[str]:
        env = server_env(THREADLINE_ADDRESS=approval_server.address)
        command = [sys.executable, "-m", "threadline", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)

    asked = threadline("ask", "What is 5*5?")
    assert asked.returncode == 0 and "[waiting for approval] calculator" in asked.stderr
    answer_line = next(line for line in asked.stderr.splitlines() if "threadline resume" in line)
    thread, interrupt = answer_line.split("threadline resume ")[1].split()[:2]
    resumed = threadline("resume", thread, interrupt, "--approve", "--stream")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "The answer is 25."


def _value(text: str) -> pb.ResumeDecision:
    return pb.ResumeDecision(value_json=text)


BAD_DECISIONS = {
    "nested 10,000 deep": (_value("[" * 10_000 + "]" * 10_000), "decision.value_json", "nests deeper than 32"),
    "nested 900 deep": (_value('{"a":' * 900 + "1" + "}" * 900), "decision.value_json", "nests deeper than 32"),
    "a 40-digit integer": (
        _value('{"action": "reject", "reason": "x", "n": ' + "9" * 40 + "}"),
        "decision.value_json",
        "outside the 64-bit range",
    ),
    "NaN": (_value('{"action": "approve", "x": NaN}'), "decision.value_json", "is not valid JSON"),
    "arguments not an object": (
        _value('{"action": "edit", "arguments": "notadict"}'),
        "decision.value_json",
        "arguments must map tool call ids to JSON objects",
    ),
    "no action": (_value('{"approve": true}'), "decision.value_json", "to answer an approval"),
    "a 3 MB reason": (
        pb.ResumeDecision(reject=pb.Rejection(reason="x" * 3_000_000)),
        "decision.reject.reason",
        "the limit is 65536",
    ),
    "edit arguments nested 5,000 deep": (
        pb.ResumeDecision(edit=pb.Edit(arguments_json={"c1": '{"a":' * 5000 + "1" + "}" * 5000})),
        "decision.edit.arguments_json",
        "nests deeper than 32",
    ),
}


def test_malformed_decisions_are_invalid_arguments_and_leave_the_pause_intact(
    approval_server: ServerProcess,
) -> None:
    # A 3 MB reason is within the server's 4 MiB message limit; the client's default is the same.
    with ThreadlineClient(approval_server.address) as client:
        turn = _paused(client)
        interrupt = turn.interrupts[0].interrupt_id
        for case, (decision, field, message) in BAD_DECISIONS.items():
            try:
                client.resume(turn.thread_id, interrupt, decision)
            except ThreadlineError as error:
                assert error.code == grpc.StatusCode.INVALID_ARGUMENT, f"{case}: {error}"
                assert error.metadata == {"field": field} and message in error.message, f"{case}: {error}"
            else:
                pytest.fail(f"{case}: accepted")
        state = client.get_state(turn.thread_id)
        assert [i.interrupt_id for i in state.interrupts] == [interrupt], "a refused decision consumed the pause"
        assert client.resume(turn.thread_id, interrupt, APPROVE).answer == "The answer is 42."


def test_a_page_token_nested_deep_is_malformed(client: ThreadlineClient) -> None:
    import base64

    deep = base64.urlsafe_b64encode(b"[" * 100_000 + b"]" * 100_000).decode()
    thread = client.ask("My name is Ada.").thread_id
    for call in (lambda: client.history(thread, page_token=deep), lambda: client.list_threads(page_token=deep)):
        with pytest.raises(ThreadlineError) as caught:
            call()
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.metadata == {"field": "page_token"}


def _no_dangling_tool_calls(messages: list[pb.Message]) -> bool:
    """Every AI tool call is answered by a tool message before the next human message."""
    owed: set[str] = set()
    for message in messages:
        if message.role == pb.ROLE_HUMAN and owed:
            return False
        owed |= {call.id for call in message.tool_calls}
        if message.role == pb.ROLE_TOOL:
            owed.discard(message.tool_call_id)
    return True


def test_rewinding_to_a_paused_turn_is_refused_and_keeps_the_pause(client: ThreadlineClient) -> None:
    turn = _paused(client)
    interrupt = turn.interrupts[0].interrupt_id
    with pytest.raises(ThreadlineError) as refused:
        client.rewind(turn.thread_id, checkpoint_id=turn.checkpoint_id)
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.reason == "CHECKPOINT_MID_TURN" and "paused for a human" in refused.value.message
    assert [i.interrupt_id for i in client.get_state(turn.thread_id).interrupts] == [interrupt]
    assert client.resume(turn.thread_id, interrupt, APPROVE).answer == "The answer is 42."


def test_forking_from_inside_a_turn_is_refused_with_the_checkpoint_before_it(client: ThreadlineClient) -> None:
    first = client.ask("My name is Ada.")
    thread = first.thread_id
    turn = client.ask("What is 6*7?", thread_id=thread)
    assert turn.interrupts
    with pytest.raises(ThreadlineError) as refused:
        client.ask("My pet is Rex.", thread_id=thread, checkpoint_id=turn.checkpoint_id)
    assert refused.value.reason == "CHECKPOINT_MID_TURN"
    assert refused.value.metadata == {"before_checkpoint_id": first.checkpoint_id}
    forked = client.ask("My pet is Rex.", thread_id=thread, checkpoint_id=first.checkpoint_id)
    state = client.get_state(thread)
    assert forked.checkpoint_id == state.checkpoint.checkpoint_id and not state.interrupts
    assert [m.text for m in state.messages if m.role == pb.ROLE_HUMAN] == ["My name is Ada.", "My pet is Rex."]


def test_an_ask_after_rewinding_into_a_finished_tool_turn_owes_no_tool_results(
    client: ThreadlineClient,
) -> None:
    turn = _paused(client)
    thread = turn.thread_id
    client.resume(thread, turn.interrupts[0].interrupt_id, APPROVE)
    # The step after the approval, before the tool ran: the head would owe the tool's result.
    mid = next(
        c
        for c in client.iter_checkpoints(thread, page_size=100)
        if list(client.get_state(thread, checkpoint_id=c.checkpoint_id).next) == ["tools"]
    )
    client.rewind(thread, checkpoint_id=mid.checkpoint_id)
    client.ask("My name is Ada.", thread_id=thread)
    messages = list(client.get_state(thread).messages)
    assert _no_dangling_tool_calls(messages), [(m.role, m.text, list(m.tool_calls)) for m in messages]
    assert [m.text for m in messages if m.role == pb.ROLE_HUMAN] == ["My name is Ada."]
