"""Traces of a real server, exported over OTLP/HTTP or OTLP/gRPC to a receiver of ours and decoded from protobuf."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from tests.model_server import ModelServer
from tests.otlp_receiver import OtlpGrpcReceiver, OtlpReceiver, ReceivedSpan, SpanReceiver
from tests.support import ROOT, ServerProcess, free_port, model_server_env, server_env
from threadline_client import ThreadlineClient, ThreadlineError

CALLER_TRACE_ID = 0x5B8AA5A2D2C872E8321CF37308D69DF2
CALLER_SPAN_ID = 0x051581BF3CB55C13
POSTGRES_CALLER_TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
GRPC_CALLER_TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def model() -> Iterator[ModelServer]:
    """An OpenAI-compatible model of ours: arithmetic gets a calculator call, then the answer."""
    with ModelServer() as running:
        yield running


@pytest.fixture(scope="module")
def traced(
    receiver: OtlpReceiver, model: ModelServer, tmp_path_factory: pytest.TempPathFactory, logs: Path
) -> Iterator[ServerProcess]:
    env = model_server_env(
        model.base_url,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_SERVICE_NAME="threadline-test",
        OTEL_BSP_SCHEDULE_DELAY="100",
        THREADLINE_LOG_FORMAT="json",
        THREADLINE_ACCESS_LOG="true",
    )
    url = f"sqlite:///{tmp_path_factory.mktemp('tracing') / 'threadline.db'}"
    with ServerProcess(url, logs, env=env) as server:
        yield server


def _as_caller(trace_id: int = CALLER_TRACE_ID) -> object:
    """Makes a span of the test's own (ids known) the active context, as a traced caller's would be."""
    caller = SpanContext(trace_id, CALLER_SPAN_ID, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return otel_context.attach(trace.set_span_in_context(NonRecordingSpan(caller)))


def _spans_until(receiver: SpanReceiver, trace_id: str, names: set[str], timeout: float = 20) -> list[ReceivedSpan]:
    deadline = time.monotonic() + timeout
    while True:
        spans = receiver.of_trace(trace_id)
        if names <= {s.name for s in spans} or time.monotonic() > deadline:
            return spans
        time.sleep(0.1)


def test_a_streamed_tool_turn_continues_the_callers_trace(
    traced: ServerProcess, receiver: OtlpReceiver, model: ModelServer
) -> None:
    first_request = len(model.requests)
    token = _as_caller()
    try:
        with ThreadlineClient(traced.address) as client:
            events = list(client.stream_ask("What is 6*7?", request_id="traced-1"))
            with pytest.raises(ThreadlineError):
                client.history("no-such-thread")
    finally:
        otel_context.detach(token)  # type: ignore[arg-type]
    thread_id = events[-1].final.thread_id
    trace_id = f"{CALLER_TRACE_ID:032x}"
    server_name = "threadline.v1.ThreadlineService/StreamAsk"
    expected = {
        server_name,
        "threadline.turn",
        "threadline.hold_wait",
        "node agent",
        "node tools",
        "execute_tool calculator",
    }
    spans = _spans_until(receiver, trace_id, expected | {"threadline.v1.ThreadlineService/History"})
    names = [s.name for s in spans]
    assert expected <= set(names), names
    by_id = {s.span_id: s for s in spans}

    server = next(s for s in spans if s.name == server_name)
    assert server.parent_span_id == f"{CALLER_SPAN_ID:016x}", "the caller's span is the server span's parent"
    assert server.kind == Span.SPAN_KIND_SERVER and server.service == "threadline-test"
    assert server.attributes["rpc.system"] == "grpc" and server.attributes["rpc.grpc.status_code"] == 0

    turn = next(s for s in spans if s.name == "threadline.turn")
    assert turn.parent_span_id == server.span_id
    assert turn.attributes["threadline.request_id"] == "traced-1"
    assert turn.attributes["threadline.tenant"] == "default"

    [wait] = [s for s in spans if s.name == "threadline.hold_wait"]
    assert wait.parent_span_id == turn.span_id and wait.attributes["threadline.thread_busy"] is False
    nodes = [s for s in spans if s.name.startswith("node ")]
    assert all(s.start_time_unix_nano >= wait.end_time_unix_nano for s in nodes), "the graph runs once held"
    assert all(by_id[s.parent_span_id] is turn for s in nodes), "the graph's nodes are the turn's children"
    assert [s.name for s in nodes].count("node agent") == 2, "model, tool, model"
    tool = next(s for s in spans if s.name == "execute_tool calculator")
    assert by_id[tool.parent_span_id].name == "node tools"
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "calculator"
    chats = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "chat"]
    assert len(chats) == 2, names
    for chat in chats:
        assert by_id[chat.parent_span_id].name == "node agent"
        assert chat.attributes["gen_ai.request.model"] == "test-model"
        assert chat.attributes["gen_ai.provider.name"] == "openai"
    # Streamed requests too carry the provider's usage: what the model server reported, request by request.
    records = model.requests[first_request:]
    assert len(records) == 2 and all(r.stream and r.usage is not None for r in records)
    reported = [(r.usage["prompt_tokens"], r.usage["completion_tokens"]) for r in records if r.usage is not None]
    traced_usage = [
        (chat.attributes["gen_ai.usage.input_tokens"], chat.attributes["gen_ai.usage.output_tokens"])
        for chat in sorted(chats, key=lambda span: span.start_time_unix_nano)
    ]
    assert traced_usage == reported

    failed = next(s for s in spans if s.name == "threadline.v1.ThreadlineService/History")
    assert failed.status_code == Status.STATUS_CODE_ERROR
    assert failed.attributes["rpc.grpc.status_code"] == 5  # NOT_FOUND
    assert failed.attributes["error.type"] == "NotFound"

    access = _access_lines(traced, "StreamAsk")
    assert access and access[-1]["trace_id"] == trace_id and access[-1]["thread_id"] == thread_id


def test_a_model_call_records_the_providers_token_usage(traced: ServerProcess, receiver: OtlpReceiver) -> None:
    with ThreadlineClient(traced.address) as client:
        client.ask("Hello there", request_id="traced-usage")
    turns: list[ReceivedSpan] = []
    deadline = time.monotonic() + 20
    while not turns and time.monotonic() < deadline:
        turns = [s for s in receiver.spans if s.attributes.get("threadline.request_id") == "traced-usage"]
        time.sleep(0.1)
    assert turns, "the turn's span arrived"
    spans = _spans_until(receiver, turns[0].trace_id, {"chat test-model"})
    chat = next(s for s in spans if s.name == "chat test-model")
    assert chat.attributes["gen_ai.usage.input_tokens"] > 0
    assert chat.attributes["gen_ai.usage.output_tokens"] > 0


def _access_lines(server: ServerProcess, rpc: str) -> list[dict[str, object]]:
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
        found = [line for line in lines if line["logger"] == "threadline.access" and line.get("rpc") == rpc]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_postgresql_statements_are_spans_of_the_turn(
    receiver: OtlpReceiver, model: ModelServer, fresh_postgres_url: str, logs: Path
) -> None:
    env = model_server_env(
        model.base_url,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_SERVICE_NAME="threadline-postgres",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    with ServerProcess(fresh_postgres_url, logs, env=env) as server:
        serving_since = time.time_ns()
        # The storage probe runs once a second and must make no trace of its own: a window in which
        # it runs at least once, checked below (a shorter one would make the check weaker, not fail it).
        time.sleep(1.5)
        token = _as_caller(POSTGRES_CALLER_TRACE_ID)
        try:
            with ThreadlineClient(server.address) as client:
                client.ask("Hello there", request_id="traced-postgres")
        finally:
            otel_context.detach(token)  # type: ignore[arg-type]
        trace_id = f"{POSTGRES_CALLER_TRACE_ID:032x}"
        _spans_until(receiver, trace_id, {"threadline.turn", "threadline.hold_wait"})
        # The last statements (the turn's writes, its release) end after the call's span; a server
        # that stops exports every span it still holds before it exits.
        server.stop()
    spans = receiver.of_trace(trace_id)
    by_id = {s.span_id: s for s in spans}

    def ancestors(span: ReceivedSpan) -> list[str]:
        names = []
        while span.parent_span_id in by_id:
            span = by_id[span.parent_span_id]
            names.append(span.name)
        return names

    statements = [s for s in spans if s.attributes.get("db.system") == "postgresql"]
    assert statements, [s.name for s in spans]
    assert all("threadline.turn" in ancestors(s) for s in statements), "every statement is the turn's"
    take = [s for s in statements if by_id[s.parent_span_id].name == "threadline.hold_wait"]
    assert take, "the statements taking the hold are the wait's"
    assert all(s.kind == Span.SPAN_KIND_CLIENT and "db.statement" in s.attributes for s in statements)
    # The take and the read of the head go in one round trip; the pool's check of a connection is an empty statement.
    assert {s.name for s in take} >= {"INSERT", "SELECT"}
    assert any("threadline_thread_holders" in s.attributes["db.statement"] for s in take)
    assert "Hello there" not in " ".join(str(s.attributes.get("db.statement")) for s in statements), "no values"
    # (Startup's migrations, outside any call, are traces of their own.)
    roots = [s for s in receiver.spans if s.service == "threadline-postgres" and s.trace_id != trace_id]
    assert not [s for s in roots if s.start_time_unix_nano > serving_since], "the storage probe makes no trace"


def test_the_standard_variable_leaves_postgresql_statements_untraced(
    receiver: OtlpReceiver, model: ModelServer, fresh_postgres_url: str, logs: Path
) -> None:
    env = model_server_env(
        model.base_url,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="psycopg",
    )
    trace_id = 0x1C0FFEE51DE4ADD0B1E55ED0C0FFEE00
    with ServerProcess(fresh_postgres_url, logs, env=env) as server:
        token = _as_caller(trace_id)
        try:
            with ThreadlineClient(server.address) as client:
                client.ask("Hello there")
        finally:
            otel_context.detach(token)  # type: ignore[arg-type]
        _spans_until(receiver, f"{trace_id:032x}", {"threadline.turn", "threadline.hold_wait", "node agent"})
        server.stop()  # exports every span it still holds, the turn's last statements' included
    names = {s.name for s in receiver.of_trace(f"{trace_id:032x}")}
    assert {"threadline.turn", "threadline.hold_wait", "node agent"} <= names, names
    assert not [s for s in receiver.of_trace(f"{trace_id:032x}") if "db.system" in s.attributes]


def test_spans_are_exported_over_otlp_grpc_when_the_protocol_says_so(
    model: ModelServer, tmp_path: Path, logs: Path
) -> None:
    with OtlpGrpcReceiver() as receiver:
        env = model_server_env(
            model.base_url,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
            OTEL_EXPORTER_OTLP_HEADERS="x-collector-tenant=threadline-ci",
            OTEL_SERVICE_NAME="threadline-grpc",
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        with ServerProcess(f"sqlite:///{tmp_path / 'threadline.db'}", logs, env=env) as server:
            token = _as_caller(GRPC_CALLER_TRACE_ID)
            try:
                with ThreadlineClient(server.address) as client:
                    client.ask("Hello there", request_id="traced-grpc")
            finally:
                otel_context.detach(token)  # type: ignore[arg-type]
            trace_id = f"{GRPC_CALLER_TRACE_ID:032x}"
            server_name = "threadline.v1.ThreadlineService/Ask"
            spans = _spans_until(receiver, trace_id, {server_name, "threadline.turn"})
    names = [s.name for s in spans]
    assert {server_name, "threadline.turn"} <= set(names), names
    call = next(s for s in spans if s.name == server_name)
    assert call.parent_span_id == f"{CALLER_SPAN_ID:016x}", "the caller's span is the server span's parent"
    assert call.kind == Span.SPAN_KIND_SERVER and call.service == "threadline-grpc"
    turn = next(s for s in spans if s.name == "threadline.turn")
    assert turn.parent_span_id == call.span_id and turn.attributes["threadline.request_id"] == "traced-grpc"
    assert receiver.metadata and all(m.get("x-collector-tenant") == "threadline-ci" for m in receiver.metadata), (
        "the exporter sends OTEL_EXPORTER_OTLP_HEADERS itself"
    )


@pytest.mark.parametrize(
    ("variable", "protocol"),
    [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"), ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "zipkin")],
)
def test_a_protocol_without_an_exporter_stops_the_server_from_starting(
    variable: str, protocol: str, tmp_path: Path
) -> None:
    env = server_env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}", **{variable: protocol})
    if variable != "OTEL_EXPORTER_OTLP_PROTOCOL":
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc"  # the traces' own variable wins
    finished = subprocess.run(
        [sys.executable, "-m", "threadline", "serve", "--address", f"127.0.0.1:{free_port()}",
         "--database-url", f"sqlite:///{tmp_path / 'threadline.db'}"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )  # fmt: skip
    assert finished.returncode == 1, finished.stderr
    assert f"cannot start: {variable}: expected http/protobuf or grpc, got {protocol!r}" in finished.stderr
    assert "Traceback" not in finished.stderr
