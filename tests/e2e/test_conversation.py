"""Ask and StreamAsk over real gRPC: threads remember, tokens stream, tools show up."""

from __future__ import annotations

import uuid

from threadline_client import ThreadlineClient, pb


def test_a_thread_remembers_what_it_was_told_and_another_thread_does_not(client: ThreadlineClient) -> None:
    first = client.ask("My name is Ada.")
    assert first.thread_id
    assert "Ada" in client.ask("What is my name?", thread_id=first.thread_id).answer

    other = client.ask("What is my name?")
    assert other.thread_id != first.thread_id
    assert "Ada" not in other.answer


def test_the_latest_statement_wins(client: ThreadlineClient) -> None:
    thread = client.ask("My name is Ada.").thread_id
    client.ask("My name is Grace.", thread_id=thread)
    answer = client.ask("What is my name?", thread_id=thread).answer
    assert "Grace" in answer and "Ada" not in answer


def test_a_caller_chosen_thread_id_creates_the_thread(client: ThreadlineClient) -> None:
    thread = f"orders:{uuid.uuid4().hex}"
    turn = client.ask("My city is Lisbon.", thread_id=thread)
    assert turn.thread_id == thread
    assert "Lisbon" in client.ask("What is my city?", thread_id=thread).answer


def test_ask_returns_every_message_the_turn_added(client: ThreadlineClient) -> None:
    turn = client.ask("What is 6*7?", request_id="req-1")
    roles = [m.role for m in turn.messages]
    assert roles == [pb.ROLE_HUMAN, pb.ROLE_AI, pb.ROLE_TOOL, pb.ROLE_AI]
    human, call, result, answer = turn.messages
    assert human.text == "What is 6*7?"
    assert [c.name for c in call.tool_calls] == ["calculator"]
    assert result.tool_call_id == call.tool_calls[0].id and result.text == "42"
    assert answer.text == turn.answer and "42" in turn.answer
    assert turn.checkpoint_id


def test_stream_ask_streams_tokens_that_add_up_to_the_answer(client: ThreadlineClient) -> None:
    thread = client.ask("My name is Ada Lovelace.").thread_id
    events = list(client.stream_ask("What is my name?", thread_id=thread))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "final" and kinds.count("final") == 1
    tokens = [e.token for e in events if e.HasField("token")]
    assert len(tokens) > 1, "the answer arrives in several token events, before the final event"
    final = events[-1].final
    assert "".join(t.text for t in tokens) == final.answer
    assert {t.message_id for t in tokens} == {final.messages[-1].id}
    assert "Ada Lovelace" in final.answer and final.thread_id == thread


def test_stream_ask_reports_tool_calls_and_results_in_order(client: ThreadlineClient) -> None:
    events = list(client.stream_ask("What is (2+3)*4?"))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("token") < kinds.index("final")
    call = next(e.tool_call for e in events if e.HasField("tool_call"))
    result = next(e.tool_result for e in events if e.HasField("tool_result"))
    assert call.name == "calculator" and '"(2+3)*4"' in call.arguments_json
    assert result.tool_call_id == call.id and result.content == "20" and not result.is_error
    final = events[-1].final
    assert "20" in final.answer
    assert "".join(e.token.text for e in events if e.HasField("token")) == final.answer


def test_the_final_event_matches_what_ask_returns(client: ThreadlineClient) -> None:
    streamed = list(client.stream_ask("What is 9-4?"))[-1].final
    asked = client.ask("What is 9-4?")
    assert streamed.answer == asked.answer
    assert [(m.role, m.text) for m in streamed.messages] == [(m.role, m.text) for m in asked.messages]


def test_a_failing_tool_is_reported_as_an_error_result_not_a_failed_turn(client: ThreadlineClient) -> None:
    events = list(client.stream_ask("What is 1/0?"))
    result = next(e.tool_result for e in events if e.HasField("tool_result"))
    assert result.is_error and "division by zero" in result.content
    assert "failed" in events[-1].final.answer
