"""The local OpenAI-compatible model server, driven through the real client stack (ChatOpenAI and the openai SDK)."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import operator
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletionMessageParam
from pydantic import SecretStr

from tests.model_server import (
    ModelServer,
    drop,
    failure,
    smart_reply,
    stall,
    stream_error,
    text,
    tokens,
    tool_call,
    tool_calls,
)
from tests.support import ROOT

CALCULATOR: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


@pytest.fixture
def server() -> Iterator[ModelServer]:
    with ModelServer() as model_server:
        yield model_server


@pytest.fixture
def client(server: ModelServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0) as sdk_client:
        yield sdk_client


def chat_model(server: ModelServer, **kwargs: Any) -> ChatOpenAI:
    key = SecretStr("test-key")
    return ChatOpenAI(base_url=server.base_url, api_key=key, model="test-model", max_retries=0, **kwargs)


def merged(chunks: Iterable[AIMessage]) -> AIMessage:
    """The message a stream adds up to (the chunks are AIMessageChunks, whose `+` merges them)."""
    result: AIMessage = functools.reduce(operator.add, chunks)
    return result


def test_invoke_returns_the_scripted_text_with_usage(server: ModelServer) -> None:
    server.script(text("Hello there, world!"))
    reply = chat_model(server).invoke("one two three")
    assert reply.content == "Hello there, world!"
    assert reply.usage_metadata is not None
    assert (reply.usage_metadata["input_tokens"], reply.usage_metadata["output_tokens"]) == (3, 3)
    [record] = server.requests
    assert record.body["model"] == "test-model" and not record.stream
    assert record.authorization == "Bearer test-key"
    assert record.completed and not record.cancelled and len(record.chunk_times) == 1


def test_streamed_tokens_arrive_one_by_one(server: ModelServer) -> None:
    n, delay = 10, 0.03
    server.token_delay_s = delay
    server.script(tokens(n))
    arrivals: list[float] = []
    contents: list[str] = []
    for chunk in chat_model(server).stream("go"):
        if chunk.content:
            arrivals.append(time.monotonic())
            contents.append(str(chunk.content))
    assert contents == [f"t{i} " for i in range(n)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert arrivals[-1] - arrivals[0] >= 0.7 * (n - 1) * delay, "tokens were not spread over time"
    assert sum(gap > delay / 3 for gap in gaps) >= n - 2, f"tokens arrived in bursts: {gaps}"
    [record] = server.requests
    # n tokens, the finish chunk and [DONE]; no usage chunk was asked for.
    assert record.stream and record.completed and len(record.chunk_times) == n + 2
    assert "stream_options" not in record.body
    assert record.usage is None, "no usage was sent"


def test_the_stream_is_server_sent_events_ending_in_done(server: ModelServer) -> None:
    server.script(text(["Hi", " you"]))
    body = {"model": "m", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert [c["choices"][0]["delta"] for c in chunks[:2]] == [
        {"role": "assistant", "content": "Hi"},
        {"content": " you"},
    ]
    assert chunks[2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[3]["choices"] == [] and chunks[3]["usage"] == {
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "total_tokens": 3,
    }
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}


def test_stream_usage_is_reported_when_asked_for(server: ModelServer) -> None:
    server.script(tokens(4))
    message = merged(chat_model(server, stream_usage=True).stream("count these words"))
    assert message.content == "t0 t1 t2 t3 "
    assert message.usage_metadata is not None
    assert (message.usage_metadata["input_tokens"], message.usage_metadata["output_tokens"]) == (3, 4)
    assert message.usage_metadata["total_tokens"] == 7
    assert server.requests[0].body["stream_options"] == {"include_usage": True}
    assert server.requests[0].usage == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


@pytest.mark.parametrize("streaming", [False, True])
def test_tool_calls_reach_the_model_parsed(server: ModelServer, streaming: bool) -> None:
    server.script(
        tool_calls(
            tool_call("calculator", {"expression": "12*(3+4)"}),
            tool_call("lookup", {"query": "a longer argument", "limit": 3}, call_id="call_fixed"),
        )
    )
    model = chat_model(server).bind_tools([CALCULATOR])
    message: AIMessage = merged(model.stream("compute")) if streaming else model.invoke("compute")
    assert [(c["name"], c["args"], c["id"]) for c in message.tool_calls] == [
        ("calculator", {"expression": "12*(3+4)"}, "call_0_0"),
        ("lookup", {"query": "a longer argument", "limit": 3}, "call_fixed"),
    ]
    assert message.response_metadata["finish_reason"] == "tool_calls"
    [record] = server.requests
    assert record.body["tools"][0]["function"]["name"] == "calculator"
    if streaming:
        # Arguments go out in fragments: more chunks than one per call (+ finish and [DONE]).
        assert len(record.chunk_times) > 2 + 2 * 2


def test_the_default_reply_calls_the_calculator_then_answers(server: ModelServer) -> None:
    model = chat_model(server).bind_tools([CALCULATOR])
    question = HumanMessage("What is 2+3?")
    call = model.invoke([question])
    assert isinstance(call, AIMessage)
    assert [(c["name"], c["args"]) for c in call.tool_calls] == [("calculator", {"expression": "2+3"})]
    answer = model.invoke([question, call, ToolMessage("5", tool_call_id=call.tool_calls[0]["id"] or "")])
    assert answer.content == "The answer is 5."
    assert chat_model(server).invoke("What is 2+3?").content == "You said: What is 2+3?", "no calculator offered"
    assert chat_model(server).invoke("hello").content == "You said: hello"


def test_smart_reply_reads_text_parts() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "x"}]}]}
    assert smart_reply(body) == text("You said: hi x")


def test_scripted_replies_are_used_in_order_then_the_default(server: ModelServer, client: openai.OpenAI) -> None:
    server.script(text("first"), text("second"))
    answers = [client.chat.completions.create(model="m", messages=USER).choices[0].message.content for _ in range(3)]
    assert answers == ["first", "second", "You said: hello"]
    assert [r.index for r in server.wait_for_requests(3)] == [0, 1, 2]
    server.script(text("forgotten"))
    server.reset()
    assert server.requests == []
    assert client.chat.completions.create(model="m", messages=USER).choices[0].message.content == "You said: hello"
    with pytest.raises(TimeoutError):
        server.wait_for_requests(2, timeout=0.05)


@pytest.mark.parametrize(
    ("status", "error", "error_type"),
    [
        (429, openai.RateLimitError, "requests"),
        (500, openai.InternalServerError, "server_error"),
        (503, openai.InternalServerError, "server_error"),
        (400, openai.BadRequestError, "invalid_request_error"),
    ],
)
def test_failures_map_to_openai_errors(
    server: ModelServer, client: openai.OpenAI, status: int, error: type[openai.APIStatusError], error_type: str
) -> None:
    server.script(failure(status, "scripted", retry_after_s=7))
    with pytest.raises(error) as caught:
        client.chat.completions.create(model="m", messages=USER, stream=True)
    assert caught.value.status_code == status
    assert caught.value.response.headers["retry-after"] == "7"
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["message"] == "scripted" and caught.value.body["type"] == error_type


def test_failures_reach_chat_openai(server: ModelServer) -> None:
    server.script(failure(429))
    with pytest.raises(openai.RateLimitError):
        chat_model(server).invoke("hi")
    assert server.requests[0].completed


def test_a_wrong_api_key_gets_401() -> None:
    with ModelServer(api_key="sk-right") as server:
        with openai.OpenAI(base_url=server.base_url, api_key="sk-wrong", max_retries=0) as wrong:
            with pytest.raises(openai.AuthenticationError) as caught:
                wrong.chat.completions.create(model="m", messages=USER)
            with pytest.raises(openai.AuthenticationError):
                wrong.models.list()
        assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "invalid_api_key"
        with openai.OpenAI(base_url=server.base_url, api_key="sk-right", max_retries=0) as right:
            assert right.chat.completions.create(model="m", messages=USER).choices[0].message.content
            assert [model.id for model in right.models.list()] == ["test-model"]
        assert [r.authorization for r in server.requests] == ["Bearer sk-wrong", "Bearer sk-right"]


def test_a_dropped_stream_raises_after_the_tokens_sent(server: ModelServer, client: openai.OpenAI) -> None:
    server.script(drop(3))
    received: list[str | None] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(model="m", messages=USER, stream=True):
            received.append(chunk.choices[0].delta.content)
    assert received == ["t0 ", "t1 ", "t2 "]
    [record] = server.requests
    assert not record.completed and not record.cancelled and len(record.chunk_times) == 3


def test_an_error_event_raises_after_the_tokens_sent(server: ModelServer, client: openai.OpenAI) -> None:
    server.script(stream_error(2, "The model fell over."), stream_error(2, "The model fell over."))
    received: list[str | None] = []
    with pytest.raises(openai.APIError, match="The model fell over") as caught:
        for chunk in client.chat.completions.create(model="m", messages=USER, stream=True):
            received.append(chunk.choices[0].delta.content)
    assert received == ["t0 ", "t1 "] and not isinstance(caught.value, openai.APIStatusError)
    with pytest.raises(openai.InternalServerError, match="The model fell over"):  # unstreamed: HTTP 500
        client.chat.completions.create(model="m", messages=USER)
    records = [(len(r.chunk_times), r.completed, r.cancelled) for r in server.requests]
    assert records == [(3, True, False), (1, True, False)]


def test_a_dropped_stream_fails_chat_openai(server: ModelServer) -> None:
    server.script(drop(2))
    with pytest.raises(openai.APIConnectionError):
        list(chat_model(server).stream("hi"))


def test_closing_a_stalled_stream_is_noticed(server: ModelServer, client: openai.OpenAI) -> None:
    server.script(stall(2))
    stream = client.chat.completions.create(model="m", messages=USER, stream=True)
    for received, chunk in enumerate(stream, start=1):
        assert chunk.choices[0].delta.content == f"t{received - 1} "
        if received == 2:
            break
    # A stall is not a cancel: while the client holds the stream, nothing is recorded as cancelled.
    time.sleep(0.05)
    assert not server.cancelled_requests()
    closed_at = time.monotonic()
    stream.close()
    [record] = server.wait_for_cancelled(1, timeout=5)
    assert record.cancelled_at is not None and record.cancelled_at >= closed_at
    assert not record.completed and len(record.chunk_times) == 2


async def test_cancelling_an_astream_task_cancels_the_request(server: ModelServer) -> None:
    server.script(stall(2))
    two_received = asyncio.Event()

    async def consume() -> None:
        received = 0
        async for _ in chat_model(server).astream("hi"):
            received += 1
            if received == 2:
                two_received.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(two_received.wait(), timeout=2)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [record] = await asyncio.to_thread(server.wait_for_cancelled, 1, 5)
    assert record.cancelled_at is not None and record.cancelled_at >= cancelled_at


def test_a_client_timeout_on_a_stalled_completion_is_recorded(server: ModelServer) -> None:
    server.script(stall(0))
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0, timeout=0.2) as impatient:
        with pytest.raises(openai.APITimeoutError):
            impatient.chat.completions.create(model="m", messages=USER)
    [record] = server.wait_for_cancelled(1, timeout=5)
    assert record.cancelled_at is not None and not record.completed


def test_the_token_delay_applies_to_whole_completions_and_changes_at_runtime() -> None:
    with ModelServer(token_delay_s=0.25) as server:
        server.script(tokens(4), tokens(4))
        started = time.monotonic()
        chat_model(server).invoke("hi")
        assert time.monotonic() - started >= 1.0, "four tokens, 0.25 s each"
        server.token_delay_s = 0.0
        started = time.monotonic()
        chat_model(server).invoke("hi")
        assert time.monotonic() - started < 1.0, "without the delay"


def test_stopping_during_a_stall_is_prompt_and_leaves_nothing_behind() -> None:
    with ModelServer() as server, openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as sdk_client:
        port = server.port
        server.script(stall(1))
        stream = sdk_client.chat.completions.create(model="m", messages=USER, stream=True)
        assert next(iter(stream)).choices[0].delta.content == "t0 "
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 1.0
        stream.close()
    assert not [thread for thread in threading.enumerate() if thread.name == "model-server"]
    assert not server.cancelled_requests(), "the server, not the client, ended the stream"
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_it_runs_as_a_demo_process() -> None:
    command = [sys.executable, "-m", "tests.model_server", "--port", "0", "--token-delay-ms", "1", "--api-key", "k"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as process:
        assert process.stdout is not None
        base_url = process.stdout.readline().decode().split()[-1]
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        model = ChatOpenAI(base_url=base_url, api_key=SecretStr("k"), model="test-model", max_retries=0)
        assert model.invoke("ping").content == "You said: ping"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0


def test_a_conversation_with_an_unanswered_tool_call_is_refused_as_openai_does() -> None:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI
    from openai import BadRequestError

    from tests.model_server import ModelServer

    call = {"name": "calculator", "args": {"expression": "1+1"}, "id": "call-1"}
    with ModelServer() as server:
        model = ChatOpenAI(base_url=server.base_url, api_key="test", model="test-model", max_retries=0)
        answered = [HumanMessage("1+1?"), AIMessage("", tool_calls=[call]), ToolMessage("2", tool_call_id="call-1")]
        assert model.invoke([*answered, HumanMessage("thanks")]).content
        with pytest.raises(BadRequestError, match="call-1"):
            model.invoke([HumanMessage("1+1?"), AIMessage("", tool_calls=[call]), HumanMessage("never mind")])
