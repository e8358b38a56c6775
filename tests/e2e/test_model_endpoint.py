"""The default agent against a real OpenAI-compatible endpoint, end to end over gRPC.

A `threadline serve` process talks through langchain-openai (ChatOpenAI, the openai SDK, its HTTP client) to the
in-process test model server (tests/model_server.py), so these tests cover what the offline model cannot:
- token streaming: each token the endpoint writes reaches the gRPC client as it is written, not batched, and the
  streamed text is what is checkpointed and what Ask answers;
- tool calls made by the real model client: tool_call, tool_result, tokens, final, and the stored messages;
- cancellation: a client that cancels, or whose deadline passes, closes the model's HTTP stream at once, also when
  the cancel lands while tokens flow (where cancellation races are); the turn is closed by the cancelled call, with
  nothing logged; 100 cancelled streams leave no tasks or sockets behind (SIGUSR1 "runtime stats");
- model failures (429, 5xx with bounded retries, a dropped stream, an error event in the stream, an unreachable
  endpoint, a refused key) as status codes with ErrorInfo reasons, never leaking the API key; after each the thread
  stays usable.
Every server test runs twice, once on each HTTP client of the model (THREADLINE_MODEL_HTTP_CLIENT: aiohttp, the
default, and httpx), and the aiohttp client is closed with the model that opened it.
"""

from __future__ import annotations

import functools
import json
import operator
import re
import signal
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
import openai
import pytest
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletionChunk

from tests.model_server import (
    FailureReply,
    ModelServer,
    Reply,
    RequestRecord,
    drop,
    failure,
    stall,
    stream_error,
    text,
    tokens,
    tool_call,
)
from tests.support import ServerProcess, free_port, server_env
from threadline.agent.model_client import open_chat_model
from threadline.config import Settings
from threadline_client import ThreadlineClient, ThreadlineError, pb

API_KEY = "sk-test-123456789"
OTHER_KEY = "sk-other-000000000"
MODEL = "test-model"
RUNTIME_STATS = re.compile(r"runtime stats: tasks=(\d+) fds=(\d+) sockets=(\d+)")
QUICK_RETRY_S = 0.01  # Retry-After of scripted failures: the openai SDK honours it, so retries cost ~nothing


def model_env(base_url: str, **overrides: str) -> dict[str, str]:
    return server_env(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=base_url, THREADLINE_MODEL=MODEL, **overrides)


@pytest.fixture(scope="module", params=["aiohttp", "httpx"])
def http_client(request: pytest.FixtureRequest) -> str:
    """THREADLINE_MODEL_HTTP_CLIENT: every test here runs on both (aiohttp is the default)."""
    return str(request.param)


@pytest.fixture(scope="module")
def model() -> Iterator[ModelServer]:
    with ModelServer() as server:
        yield server


@pytest.fixture(scope="module")
def server(
    model: ModelServer, http_client: str, tmp_path_factory: pytest.TempPathFactory, logs: Path
) -> Iterator[ServerProcess]:
    """A server using the model server, retrying a failed model request twice."""
    url = f"sqlite:///{tmp_path_factory.mktemp('model-endpoint') / 'threadline.db'}"
    env = model_env(model.base_url, THREADLINE_MODEL_MAX_RETRIES="2", THREADLINE_MODEL_HTTP_CLIENT=http_client)
    with ServerProcess(url, logs, env=env) as process:
        yield process


@pytest.fixture(autouse=True)
def fresh_model(model: ModelServer) -> Iterator[None]:
    model.reset()
    model.token_delay_s = 0.0
    yield
    model.reset()
    model.token_delay_s = 0.0


@pytest.fixture
def client(server: ServerProcess) -> Iterator[ThreadlineClient]:
    with ThreadlineClient(server.address) as c:
        yield c


def kinds(events: list[pb.StreamAskResponse]) -> list[str | None]:
    return [event.WhichOneof("event") for event in events]


def error_of(call: Callable[[], object]) -> ThreadlineError:
    with pytest.raises(ThreadlineError) as caught:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    return caught.value


def new_thread(client: ThreadlineClient, model: ModelServer) -> str:
    """A thread with one good turn in it."""
    model.script(text("Hello, Ada."))
    turn = client.ask("My name is Ada.")
    assert turn.answer == "Hello, Ada."
    return turn.thread_id


def assert_usable(client: ThreadlineClient, model: ModelServer, thread_id: str) -> None:
    """The next Ask on the thread works, and the thread still holds its earlier turns."""
    model.script(text("Still here."))
    turn = client.ask("Are you there?", thread_id=thread_id, timeout=10)
    assert turn.answer == "Still here."
    texts = [m.text for m in client.history(thread_id).messages]
    assert texts[-2:] == ["Are you there?", "Still here."]
    assert "My name is Ada." in texts


def cancel_after_first_token(client: ThreadlineClient, thread_id: str, query: str = "Talk slowly") -> float:
    """Starts StreamAsk, cancels it once the first token is in; returns when it cancelled (monotonic)."""
    events = client.stream_ask(query, thread_id=thread_id)
    assert isinstance(events, Generator)
    first = next(events)
    assert first.HasField("token"), first
    cancelled_at = time.monotonic()
    events.close()  # the client's generator cancels the call
    return cancelled_at


def log_since(server: ServerProcess, offset: int) -> str:
    return server.log()[offset:]


def wait_cancelled(model: ModelServer, n: int, server: ServerProcess) -> list[RequestRecord]:
    """The cancelled records once n model requests were cancelled; on a timeout, what the server logged."""
    try:
        return model.wait_for_cancelled(n, timeout=10)
    except TimeoutError as exc:
        states = [(r.index, r.cancelled, r.completed, len(r.chunk_times)) for r in model.requests]
        detail = f"{exc}; requests (index, cancelled, completed, chunks): {states}"
        raise AssertionError(f"{detail}\n{server.log()[-4000:]}") from None


# -- 1. token streaming ------------------------------------------------------------------------------


def test_tokens_reach_the_client_as_the_model_writes_them(client: ThreadlineClient, model: ModelServer) -> None:
    model.token_delay_s = 0.02
    model.script(tokens(50))
    events: list[pb.StreamAskResponse] = []
    arrivals: list[float] = []
    for event in client.stream_ask("Count to fifty, please."):
        arrivals.append(time.monotonic())
        events.append(event)

    assert kinds(events) == ["token"] * 50 + ["final"]
    final = events[-1].final
    streamed = "".join(event.token.text for event in events[:-1])
    assert streamed == "".join(f"t{i} " for i in range(50)) == final.answer
    assert {event.token.message_id for event in events[:-1]} == {final.messages[-1].id}

    (record,) = model.requests
    assert record.stream and record.completed and record.body["model"] == MODEL
    # How soon each token arrives is bench/stream_latency.py's to measure; here, that they stream at all.
    assert record.chunk_times[0] <= arrivals[0] < record.chunk_times[-1], "the first token came before the last"
    token_arrivals = arrivals[:50]
    assert token_arrivals[-1] - token_arrivals[0] >= 0.7, "tokens came in a burst, not as they were written"

    history = client.history(final.thread_id)
    assert [(m.role, m.text) for m in history.messages] == [
        (pb.ROLE_HUMAN, "Count to fifty, please."),
        (pb.ROLE_AI, streamed),
    ]
    assert history.messages[-1].id == final.messages[-1].id
    assert history.head_checkpoint_id == final.checkpoint_id

    model.token_delay_s = 0.0
    model.script(tokens(50))
    asked = client.ask("Count to fifty, please.")
    assert asked.thread_id != final.thread_id
    assert asked.answer == final.answer
    assert [(m.role, m.text) for m in asked.messages] == [(m.role, m.text) for m in final.messages]


# -- 2. tool calls -----------------------------------------------------------------------------------


def test_tool_calls_of_the_model_run_and_stream_in_order(client: ThreadlineClient, model: ModelServer) -> None:
    model.script(tool_call("calculator", {"expression": "2+3"}), text("The answer is 5."))
    events = list(client.stream_ask("What is 2+3?"))

    assert kinds(events) == ["tool_call", "tool_result", "token", "token", "token", "token", "final"]
    call, result, final = events[0].tool_call, events[1].tool_result, events[-1].final
    assert call.name == "calculator" and json.loads(call.arguments_json) == {"expression": "2+3"}
    assert call.id == "call_0_0"  # the id the model server gave the call
    assert (result.tool_call_id, result.name, result.content, result.is_error) == (call.id, "calculator", "5", False)
    assert "".join(e.token.text for e in events[2:-1]) == "The answer is 5." == final.answer

    first, second = model.wait_for_requests(2)
    assert "calculator" in {tool["function"]["name"] for tool in first.body["tools"]}
    tool_message = second.body["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == call.id
    assert tool_message["content"] == "5"

    model.script(tool_call("calculator", {"expression": "2+3"}), text("The answer is 5."))
    turn = client.ask("What is 2+3?")
    assert [m.role for m in turn.messages] == [pb.ROLE_HUMAN, pb.ROLE_AI, pb.ROLE_TOOL, pb.ROLE_AI]
    human, calling, tool, answer = turn.messages
    assert human.text == "What is 2+3?"
    assert [(c.name, json.loads(c.arguments_json)) for c in calling.tool_calls] == [
        ("calculator", {"expression": "2+3"})
    ]
    assert (tool.tool_call_id, tool.name, tool.text) == (calling.tool_calls[0].id, "calculator", "5")
    assert answer.text == turn.answer == "The answer is 5."


# -- 3. cancellation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "token_delay_s"), [(stall(after_tokens=1), 0.0), (tokens(50), 0.02)], ids=["stall", "slow-tokens"]
)
def test_a_cancelled_stream_closes_the_model_request(
    server: ServerProcess, client: ThreadlineClient, model: ModelServer, reply: Reply, token_delay_s: float
) -> None:
    thread = new_thread(client, model)
    model.token_delay_s = token_delay_s
    model.script(reply)
    cancelled_at = cancel_after_first_token(client, thread)

    (record,) = wait_cancelled(model, 1, server)
    assert record.cancelled_at is not None and not record.completed
    assert record.cancelled_at >= cancelled_at
    model.token_delay_s = 0.0
    assert_usable(client, model, thread)


# With langchain-openai's httpx client this test once failed now and then: the caller got
# DEADLINE_EXCEEDED on time, but the model stream ran to its end (2 of 8 runs alone and 3 of 6
# beside the cancellation tests in session 6; 1 of 6 in session 7), and it was skipped for httpx.
# It has not shown since: session 10, 0 of 10 alone and 0 of 12 beside them; session 11, after a
# turn's run got a task of its own that is cancelled exactly once, 0 of 12 alone and 0 of 8 in
# this module's runs. It runs again for both clients; if it fails, that race is back.
def test_a_passed_deadline_closes_the_model_request(
    server: ServerProcess, client: ThreadlineClient, model: ModelServer
) -> None:
    thread = new_thread(client, model)
    model.token_delay_s = 0.05  # 50 tokens: 2.5 s, far past the deadline
    calls: list[tuple[str, Callable[[], object]]] = [
        ("StreamAsk", lambda: client.stream_ask("Talk slowly", thread_id=thread, timeout=0.3)),
        ("Ask", lambda: client.ask("Talk slowly", thread_id=thread, timeout=0.3)),
    ]
    for n, (rpc, call) in enumerate(calls, start=1):
        model.script(tokens(50))
        started = time.monotonic()
        error = error_of(call)
        assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED, (rpc, error)
        record = wait_cancelled(model, n, server)[-1]
        # Closed, not run to its end: the 50 tokens would take 2.5 s.
        assert record.cancelled_at is not None and not record.completed, f"{rpc}: the model stream outlived it"
        assert record.cancelled_at >= started + 0.3, f"{rpc}: closed before the deadline"
    model.token_delay_s = 0.0
    assert_usable(client, model, thread)


def runtime_stats(server: ServerProcess, timeout: float = 5.0) -> dict[str, int]:
    """Sends SIGUSR1 and returns the "runtime stats" line it makes the server log."""
    before = len(RUNTIME_STATS.findall(server.log()))
    server.signal(signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = RUNTIME_STATS.findall(server.log())
        if len(found) > before:
            tasks, fds, sockets = (int(value) for value in found[-1])
            return {"tasks": tasks, "fds": fds, "sockets": sockets}
        time.sleep(0.02)
    raise TimeoutError(f"no runtime stats line within {timeout} s:\n{server.log()[-2000:]}")


def test_cancelled_streams_leave_no_tasks_or_sockets_behind(
    server: ServerProcess, client: ThreadlineClient, model: ModelServer
) -> None:
    workers = 5
    threads = [new_thread(client, model) for _ in range(workers)]
    # Warm up: one cancelled stream, so whatever is created lazily exists before the baseline.
    model.script(stall(after_tokens=1))
    cancel_after_first_token(client, threads[0])
    model.wait_for_cancelled(1)
    # A cancelled call's tasks take a moment to finish: the baseline is the lowest of a few readings.
    readings: list[dict[str, int]] = []
    for _ in range(5):
        readings.append(runtime_stats(server))
        time.sleep(0.1)
    baseline = {key: min(reading[key] for reading in readings) for key in readings[0]}

    streams = 100
    model.script(*[stall(after_tokens=1) for _ in range(streams)])

    def cancel_many(thread_id: str) -> None:
        for _ in range(streams // workers):
            cancel_after_first_token(client, thread_id)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(cancel_many, threads))
    wait_cancelled(model, 1 + streams, server)
    slow = [r for r in model.requests if r.body["messages"][-1]["content"] == "Talk slowly"]
    assert len(slow) == 1 + streams and all(r.cancelled and not r.completed for r in slow)

    slack = 3
    deadline = time.monotonic() + 3.0
    after = runtime_stats(server)
    while time.monotonic() < deadline and (
        after["tasks"] > baseline["tasks"] + slack or after["sockets"] > baseline["sockets"] + slack
    ):
        time.sleep(0.1)
        after = runtime_stats(server)
    print(f"runtime stats before {baseline}, after {streams} cancelled streams {after}")
    assert after["tasks"] <= baseline["tasks"] + slack, (baseline, after)
    assert after["sockets"] <= baseline["sockets"] + slack, (baseline, after)
    for thread in threads:
        assert_usable(client, model, thread)


def test_a_stream_cancelled_while_tokens_flow_ends_its_turn_cleanly(
    server: ServerProcess, client: ThreadlineClient, model: ModelServer
) -> None:
    """A cancel that lands while tokens flow: while the server sends one, or as the model's next chunk arrives.

    Every model stream must still close at once (on Python 3.11 langchain-openai's per-chunk asyncio.wait_for can
    swallow such a cancel), and the turn must be closed by the cancelled call itself, not left suspended for
    asyncio's async-generator finalizer to close later in another task and context (which logs errors).
    """
    offset = len(server.log())
    thread = new_thread(client, model)
    model.reset()
    model.token_delay_s = 0.001  # a token every millisecond (200 take ~0.25 s): the race windows are wide open
    latencies: list[float | None] = []
    for index in range(25):
        model.script(tokens(200))
        cancelled_at = cancel_after_first_token(client, thread)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not (model.requests[index].cancelled or model.requests[index].completed):
            time.sleep(0.005)
        record = model.requests[index]
        latencies.append(None if record.cancelled_at is None else record.cancelled_at - cancelled_at)
    # The server logs its runtime stats from its event loop: once they are in, so is whatever asyncio
    # logged about a turn left to its finalizer by then.
    runtime_stats(server)
    shown = [f"{latency * 1000:.1f}" if latency is not None else "ran to its end" for latency in latencies]
    print(f"cancel to model stream closed, with tokens flowing (ms): {', '.join(shown)}")
    log = log_since(server, offset)
    assert "Traceback" not in log and "Task exception was never retrieved" not in log, log[-3000:]
    assert all(latency is not None for latency in latencies), shown
    model.token_delay_s = 0.0
    assert_usable(client, model, thread)


async def test_the_model_client_is_closed_with_the_model(model: ModelServer) -> None:
    """open_chat_model owns the aiohttp client it opens for the model: closed on exit, not left to the collector."""
    settings = Settings(openai_api_key=API_KEY, openai_base_url=model.base_url, model=MODEL)
    assert settings.model_http_client == "aiohttp"
    async with open_chat_model(settings.agent) as chat:
        assert isinstance(chat, ChatOpenAI)
        model.script(text("Hello."))
        assert (await chat.ainvoke("Hi")).content == "Hello."
        http_client = chat.http_async_client
        assert isinstance(http_client, openai.DefaultAioHttpClient) and not http_client.is_closed
    assert http_client.is_closed
    (record,) = model.requests
    assert record.completed


async def test_streamed_chunks_are_the_sdks_own_and_what_the_endpoint_sent(
    model: ModelServer, http_client: str
) -> None:
    """ChatOpenAI reads streams through the openai SDK's own stream, on either HTTP client: its chunks are the SDK's
    models, unstreamed completions too, and streamed text and tool calls are what the endpoint sent."""
    settings = Settings(
        openai_api_key=API_KEY, openai_base_url=model.base_url, model=MODEL, model_http_client=http_client
    )
    async with open_chat_model(settings.agent) as chat:
        assert isinstance(chat, ChatOpenAI)
        model.script(text("Hello there."), text("Hello there."), tool_call("calculator", {"expression": "6*7"}))
        stream = await chat.async_client.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True)
        async with stream:
            chunks = [chunk async for chunk in stream]
        assert all(isinstance(chunk, ChatCompletionChunk) for chunk in chunks), [type(chunk) for chunk in chunks]
        assert [chunk.choices[0].delta.content for chunk in chunks] == ["Hello ", "there.", None]
        completion = await chat.async_client.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
        assert isinstance(completion, openai.types.chat.ChatCompletion)
        assert completion.choices[0].message.content == "Hello there."
        calculator = {"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}
        streamed = [chunk async for chunk in chat.bind_tools([calculator]).astream("What is 6*7?")]
    calling = functools.reduce(operator.add, streamed)
    assert calling.tool_calls == [
        {"name": "calculator", "args": {"expression": "6*7"}, "id": "call_2_0", "type": "tool_call"}
    ]
    assert [record.stream for record in model.requests] == [True, False, True]


# -- 4. model failures ---------------------------------------------------------------------------------


def ask(client: ThreadlineClient, thread: str) -> Callable[[], object]:
    return lambda: client.ask("What now?", thread_id=thread, timeout=10)


def stream_ask(client: ThreadlineClient, thread: str) -> Callable[[], object]:
    return lambda: client.stream_ask("What now?", thread_id=thread, timeout=10)


RPCS = {"Ask": ask, "StreamAsk": stream_ask}

FAILURES: list[tuple[str, list[Reply], grpc.StatusCode, str, int]] = [
    # (name, replies, code, reason, model requests): 429 and 5xx are retried twice, other 4xx are not.
    (
        "429",
        [failure(429, retry_after_s=QUICK_RETRY_S)] * 3,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "MODEL_RATE_LIMITED",
        3,
    ),
    ("500", [failure(500, retry_after_s=QUICK_RETRY_S)] * 3, grpc.StatusCode.UNAVAILABLE, "MODEL_UNAVAILABLE", 3),
    ("503", [failure(503, retry_after_s=QUICK_RETRY_S)] * 3, grpc.StatusCode.UNAVAILABLE, "MODEL_UNAVAILABLE", 3),
    (
        "400",
        [failure(400, "Unknown parameter.")],
        grpc.StatusCode.FAILED_PRECONDITION,
        "MODEL_REJECTED_REQUEST",
        1,
    ),
]


@pytest.mark.parametrize("rpc", sorted(RPCS))
@pytest.mark.parametrize(
    ("replies", "code", "reason", "requests"), [case[1:] for case in FAILURES], ids=[case[0] for case in FAILURES]
)
def test_model_http_errors_are_status_codes_with_reasons(
    client: ThreadlineClient,
    model: ModelServer,
    rpc: str,
    replies: list[Reply],
    code: grpc.StatusCode,
    reason: str,
    requests: int,
) -> None:
    thread = new_thread(client, model)
    model.reset()
    model.script(*replies, text("Recovered too early."))  # a retry too many would get this and succeed
    error = error_of(RPCS[rpc](client, thread))
    assert (error.code, error.reason) == (code, reason), error
    upstream = replies[0]
    assert isinstance(upstream, FailureReply)
    assert f"HTTP {upstream.status}" in error.message and upstream.message in error.message, error.message
    assert len(model.requests) == requests, [r.reply for r in model.requests]
    model.reset()
    assert_usable(client, model, thread)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (drop(after_tokens=3), "the model endpoint is unreachable: "),
        (stream_error(3, "The model fell over."), "the model endpoint failed: The model fell over."),
    ],
    ids=["dropped", "error-event"],
)
def test_a_stream_broken_mid_way_is_unavailable(
    client: ThreadlineClient, model: ModelServer, reply: Reply, message: str
) -> None:
    thread = new_thread(client, model)
    model.reset()
    model.script(reply)
    received: list[pb.StreamAskResponse] = []

    def consume() -> None:
        for event in client.stream_ask("What now?", thread_id=thread, timeout=10):
            received.append(event)

    error = error_of(consume)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "MODEL_UNAVAILABLE"), error
    assert error.message.startswith(message), error.message
    assert kinds(received) == ["token"] * 3
    assert len(model.requests) == 1  # a stream that broke after tokens went out is not retried
    model.reset()
    assert_usable(client, model, thread)


def test_a_key_echoed_by_the_endpoint_is_scrubbed(
    server: ServerProcess, client: ThreadlineClient, model: ModelServer
) -> None:
    thread = new_thread(client, model)
    # What OpenAI answers a bad key with: the key, partly masked.
    masked = f"{API_KEY[:6]}{'*' * (len(API_KEY) - 10)}{API_KEY[-4:]}"
    model.script(failure(401, f"Incorrect API key provided: {masked}. You can find your API key at the dashboard."))
    error = error_of(ask(client, thread))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_REJECTED_CREDENTIALS")
    assert "HTTP 401" in error.message and "Incorrect API key provided" in error.message
    assert_no_key(error.message, API_KEY)
    assert API_KEY not in server.log()
    assert_usable(client, model, thread)


def assert_no_key(message: str, key: str) -> None:
    assert key not in message
    for n in range(4, len(key)):
        assert key[-n:] not in message, f"{message!r} holds the key's last {n} characters"


# -- an endpoint that goes away, and one that refuses the key ---------------------------------------------


@pytest.fixture(scope="module")
def endpoint_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def endpoint_server(
    endpoint_port: int, http_client: str, tmp_path_factory: pytest.TempPathFactory, logs: Path
) -> Iterator[ServerProcess]:
    """A server whose endpoint the tests start and stop; it retries a failed model request once."""
    url = f"sqlite:///{tmp_path_factory.mktemp('endpoint') / 'threadline.db'}"
    env = model_env(
        f"http://127.0.0.1:{endpoint_port}/v1",
        THREADLINE_MODEL_MAX_RETRIES="1",
        THREADLINE_MODEL_HTTP_CLIENT=http_client,
    )
    with ServerProcess(url, logs, env=env) as process:
        yield process


@pytest.fixture
def endpoint_client(endpoint_server: ServerProcess) -> Iterator[ThreadlineClient]:
    with ThreadlineClient(endpoint_server.address) as c:
        yield c


@contextmanager
def endpoint(port: int, api_key: str | None = None) -> Iterator[ModelServer]:
    with ModelServer(port=port, api_key=api_key) as server:
        yield server


def test_an_unreachable_endpoint_is_unavailable(endpoint_client: ThreadlineClient, endpoint_port: int) -> None:
    with endpoint(endpoint_port) as model:
        thread = new_thread(endpoint_client, model)
    # Nothing listens on the port now: connection refused, retried once after the SDK's backoff (0.375-0.5 s).
    started = time.monotonic()
    error = error_of(ask(endpoint_client, thread))
    elapsed = time.monotonic() - started
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "MODEL_UNAVAILABLE"), error
    assert "unreachable" in error.message
    assert "refused" in error.message and "timed out" not in error.message, error.message
    print(f"unreachable endpoint: UNAVAILABLE after {elapsed:.2f} s")
    assert 0.3 < elapsed < 1.1, f"{elapsed:.2f} s: THREADLINE_MODEL_MAX_RETRIES=1 should mean exactly one retry"
    with endpoint(endpoint_port) as model:
        assert_usable(endpoint_client, model, thread)


def test_max_retries_bounds_the_requests(endpoint_client: ThreadlineClient, endpoint_port: int) -> None:
    with endpoint(endpoint_port) as model:
        thread = new_thread(endpoint_client, model)
        model.reset()
        model.script(*[failure(500, retry_after_s=QUICK_RETRY_S)] * 2, text("Recovered too early."))
        error = error_of(ask(endpoint_client, thread))
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "MODEL_UNAVAILABLE"), error
        assert len(model.requests) == 2  # THREADLINE_MODEL_MAX_RETRIES=1
        model.reset()
        assert_usable(endpoint_client, model, thread)


def test_a_refused_key_is_failed_precondition_without_the_key(
    endpoint_server: ServerProcess, endpoint_client: ThreadlineClient, endpoint_port: int
) -> None:
    with endpoint(endpoint_port) as model:
        thread = new_thread(endpoint_client, model)
    with endpoint(endpoint_port, api_key=OTHER_KEY) as strict:
        error = error_of(ask(endpoint_client, thread))
        assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_REJECTED_CREDENTIALS")
        assert "HTTP 401" in error.message and "Incorrect API key provided" in error.message
        assert_no_key(error.message, API_KEY)
        (record,) = strict.requests  # a refused key is not retried
        assert record.authorization == f"Bearer {API_KEY}"
    assert API_KEY not in endpoint_server.log()
    with endpoint(endpoint_port) as model:
        assert_usable(endpoint_client, model, thread)


def test_a_turn_cut_by_a_model_failure_is_finished_by_a_retry_with_its_request_id(
    client: ThreadlineClient, model: ModelServer
) -> None:
    thread = new_thread(client, model)
    model.reset()
    model.script(*[failure(500, retry_after_s=QUICK_RETRY_S)] * 3)  # the first try and both retries fail
    error = error_of(lambda: client.ask("Tell me more.", thread_id=thread, request_id="more-1", timeout=10))
    assert error.code == grpc.StatusCode.UNAVAILABLE

    model.script(text("Here is more."))
    retried = client.ask("Tell me more.", thread_id=thread, request_id="more-1", timeout=10)
    assert retried.answer == "Here is more."
    humans = [m.text for m in client.history(thread).messages if m.role == pb.ROLE_HUMAN]
    assert humans == ["My name is Ada.", "Tell me more."], "the question is in the thread once"
    assert client.ask("Tell me more.", thread_id=thread, request_id="more-1") == retried
    assert len(model.requests) == 4, "the finished turn was not run again"


def _conversation_sent(model: ModelServer) -> list[tuple[str, str]]:
    """(role, content) of the messages of the model's last request, system prompt aside."""
    return [(m["role"], m.get("content") or "") for m in model.requests[-1].body["messages"] if m["role"] != "system"]


def test_a_new_question_after_a_failed_turn_does_not_resend_the_failed_one(
    client: ThreadlineClient, model: ModelServer
) -> None:
    thread = new_thread(client, model)
    model.reset()
    model.script(*[failure(500, retry_after_s=QUICK_RETRY_S)] * 3)
    failed = error_of(lambda: client.ask("Tell me more.", thread_id=thread, request_id="lost-1", timeout=10))
    assert failed.code == grpc.StatusCode.UNAVAILABLE

    model.script(text("I am fine."))
    assert client.ask("How are you?", thread_id=thread, timeout=10).answer == "I am fine."
    assert _conversation_sent(model) == [
        ("user", "My name is Ada."),
        ("assistant", "Hello, Ada."),
        ("user", "How are you?"),
    ], "the failed question was sent again"
    humans = [m.text for m in client.history(thread).messages if m.role == pb.ROLE_HUMAN]
    assert humans == ["My name is Ada.", "How are you?"]
    # The failed attempt stays readable, on a branch of its own.
    checkpoints = list(client.iter_checkpoints(thread, page_size=100))
    asked = {c.checkpoint_id for c in checkpoints if c.rpc == "Ask" and c.request_id == "lost-1"}
    assert asked, "the failed attempt is gone from History"
    failed_states = [client.get_state(thread, checkpoint_id=c) for c in asked]
    assert any(m.text == "Tell me more." for state in failed_states for m in state.messages)
    # The thread moved on: the failed call's request_id can no longer finish it.
    superseded = error_of(lambda: client.ask("Tell me more.", thread_id=thread, request_id="lost-1", timeout=10))
    assert superseded.reason == "REQUEST_SUPERSEDED"


def test_a_new_question_after_a_turn_cut_at_its_tool_call_answers_no_dangling_call(
    client: ThreadlineClient, model: ModelServer
) -> None:
    thread = new_thread(client, model)
    model.reset()
    model.script(tool_call("calculator", {"expression": "6*7"}), *[failure(500, retry_after_s=QUICK_RETRY_S)] * 3)
    assert (
        error_of(lambda: client.ask("What is 6*7?", thread_id=thread, timeout=10)).code == grpc.StatusCode.UNAVAILABLE
    )
    model.script(text("Fine."))
    assert client.ask("How are you?", thread_id=thread, timeout=10).answer == "Fine."
    sent = model.requests[-1].body["messages"]
    assert not any(m.get("tool_calls") for m in sent) and not any(m["role"] == "tool" for m in sent)


def test_a_resume_cut_short_is_finished_by_a_retry_with_its_request_id(tmp_path: Path, logs: Path) -> None:
    approve = pb.ResumeDecision(approve=pb.Approval())
    with ModelServer() as model:
        env = model_env(model.base_url, THREADLINE_APPROVAL_TOOLS="calculator")
        with ServerProcess(f"sqlite:///{tmp_path / 'threadline.db'}", logs, env=env) as server:
            with ThreadlineClient(server.address) as client:
                model.script(tool_call("calculator", {"expression": "6*7"}, call_id="call-1"))
                paused = client.ask("What is 6*7?")
                interrupt = paused.interrupts[0].interrupt_id
                # Approved: the tool runs, then every model request fails: the Resume is cut short.
                model.script(*[failure(500, retry_after_s=QUICK_RETRY_S)] * 3)
                cut = error_of(lambda: client.resume(paused.thread_id, interrupt, approve, request_id="yes-1"))
                assert cut.code == grpc.StatusCode.UNAVAILABLE
                model.script(text("It is 42."))
                finished = client.resume(paused.thread_id, interrupt, approve, request_id="yes-1", timeout=10)
                assert finished.answer == "It is 42."
                assert [m.role for m in finished.messages] == [pb.ROLE_TOOL, pb.ROLE_AI], "one tool result"
                requests = len(model.requests)
                again = client.resume(paused.thread_id, interrupt, approve, request_id="yes-1", timeout=10)
                assert again == finished and len(model.requests) == requests, "the finished Resume ran again"
                misused = error_of(lambda: client.ask("What is 6*7?", thread_id=paused.thread_id, request_id="yes-1"))
                assert misused.code == grpc.StatusCode.INVALID_ARGUMENT
