"""Metrics and logs of a real server: known calls, then a real Prometheus scrape and the server's own log lines."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.credentials import Key, api_key
from tests.model_server import ModelServer, RequestRecord, failure, text, tool_call
from tests.support import (
    ROOT,
    ServerProcess,
    free_port,
    model_server_env,
    scrape,
    scrape_text,
    server_env,
    total,
    worker_pids,
)
from threadline_client import ThreadlineClient, ThreadlineError, pb

SERVICE = "threadline.v1.ThreadlineService"
KIT = ROOT / "deploy" / "observability"
METRIC_NAME = re.compile(r"\b(?:grpc_server|threadline)_[a-z_]+\b")
SAMPLE_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")
# Every query of this module carries it: it must never show up in a log line.
SECRET_QUERY_MARK = "zebra-quartz-7781"
# A channel of its own per client: the kernel spreads connections, not calls, over workers.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Key, Path]]:
    folder = tmp_path_factory.mktemp("observability-keys")
    made = api_key("acme", label="observability")
    (folder / "keys").write_text(made.line + "\n")
    yield made, folder / "keys"


@pytest.fixture(scope="module")
def observed(
    key: tuple[Key, Path], tmp_path_factory: pytest.TempPathFactory, logs: Path
) -> Iterator[tuple[ServerProcess, str]]:
    """A server with metrics, JSON logs and the access log on (API keys: calls have a tenant)."""
    metrics_address = f"127.0.0.1:{free_port()}"
    env = server_env(
        THREADLINE_API_KEYS_FILE=str(key[1]),
        THREADLINE_METRICS_ADDRESS=metrics_address,
        THREADLINE_LOG_FORMAT="json",
        THREADLINE_ACCESS_LOG="true",
    )
    url = f"sqlite:///{tmp_path_factory.mktemp('observability') / 'threadline.db'}"
    with ServerProcess(url, logs, env=env) as server:
        yield server, metrics_address


@pytest.fixture(scope="module")
def known_calls(observed: tuple[ServerProcess, str], key: tuple[Key, Path]) -> dict[str, Any]:
    """Makes a known set of calls between two scrapes; what the tests below check."""
    server, metrics_address = observed
    before = scrape(metrics_address)
    with ThreadlineClient(server.address, token=key[0].key) as client:
        thread = client.ask(f"My name is Ada. {SECRET_QUERY_MARK}", request_id="obs-1").thread_id
        for i in range(2):
            client.ask(f"My item{i} is {SECRET_QUERY_MARK}.", thread_id=thread)
        streamed = list(client.stream_ask(f"What is 2+3? {SECRET_QUERY_MARK}", thread_id=thread))
        with pytest.raises(ThreadlineError) as missing:
            client.history("no-such-thread")
    with ThreadlineClient(server.address) as anonymous, pytest.raises(ThreadlineError) as refused:
        anonymous.list_threads()
    with grpc.insecure_channel(server.address) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return {
        "before": before,
        "after": scrape(metrics_address),
        "thread": thread,
        "streamed": len(streamed),
        "missing": missing.value.code,
        "refused": refused.value.code,
    }


def delta(calls: dict[str, Any], name: str, **labels: str) -> float:
    return total(calls["after"], name, **labels) - total(calls["before"], name, **labels)


def test_known_calls_give_exact_rpc_counter_deltas(known_calls: dict[str, Any]) -> None:
    assert known_calls["missing"] == grpc.StatusCode.NOT_FOUND
    assert known_calls["refused"] == grpc.StatusCode.UNAUTHENTICATED
    ask = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "Ask"}
    assert delta(known_calls, "grpc_server_started_total", **ask) == 3
    assert delta(known_calls, "grpc_server_handled_total", **ask, grpc_code="OK") == 3
    assert delta(known_calls, "grpc_server_handled_total", **ask) == 3, "no Ask under another code"
    assert delta(known_calls, "grpc_server_msg_received_total", **ask) == 3
    assert delta(known_calls, "grpc_server_msg_sent_total", **ask) == 3
    assert delta(known_calls, "grpc_server_handling_seconds_count", **ask) == 3
    assert delta(known_calls, "grpc_server_handled_total", grpc_method="History", grpc_code="NotFound") == 1
    assert delta(known_calls, "grpc_server_handled_total", grpc_method="ListThreads", grpc_code="Unauthenticated") == 1
    stream = {"grpc_type": "server_stream", "grpc_service": SERVICE, "grpc_method": "StreamAsk"}
    assert delta(known_calls, "grpc_server_handled_total", **stream, grpc_code="OK") == 1
    assert known_calls["streamed"] > 1
    assert delta(known_calls, "grpc_server_msg_sent_total", **stream) == known_calls["streamed"]
    health = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Check", "grpc_code": "OK"}
    assert delta(known_calls, "grpc_server_handled_total", **health) == 1


def test_turn_metrics_storage_and_build_info(known_calls: dict[str, Any]) -> None:
    assert delta(known_calls, "threadline_turn_duration_seconds_count", rpc="Ask", outcome="OK") == 3
    assert delta(known_calls, "threadline_turn_duration_seconds_count", rpc="StreamAsk", outcome="OK") == 1
    assert delta(known_calls, "threadline_time_to_first_token_seconds_count", rpc="StreamAsk", outcome="OK") == 1
    after = known_calls["after"]
    assert total(after, "threadline_turns_in_flight") == 0
    assert total(after, "threadline_open_streams") == 0
    assert total(after, "threadline_storage_up") == 1
    info = [labels for (name, labels) in after if name == "threadline_build_info"]
    assert len(info) == 1 and {"version", "python", "langgraph"} <= {k for k, _ in info[0]}


def test_json_log_lines_carry_the_call_and_never_the_query(
    observed: tuple[ServerProcess, str], known_calls: dict[str, Any]
) -> None:
    server, _ = observed
    lines = _log_lines(server, lambda lines: any(line.get("grpc_code") == "Unauthenticated" for line in lines))
    assert SECRET_QUERY_MARK not in server.log(), "no query text in the log"
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    access = [line for line in lines if line["logger"] == "threadline.access"]
    asks = [line for line in access if line.get("rpc") == "Ask"]
    assert len(asks) >= 3
    first = next(line for line in asks if line["request_id"] == "obs-1")
    assert first["grpc_code"] == "OK" and first["tenant"] == "acme" and first["thread_id"] == known_calls["thread"]
    assert first["peer"].startswith("ipv4:127.0.0.1:") and first["duration_ms"] >= 0
    failed = next(line for line in access if line.get("rpc") == "History")
    assert failed["grpc_code"] == "NotFound" and failed["thread_id"] == "no-such-thread"
    refused = next(line for line in access if line.get("grpc_code") == "Unauthenticated")
    assert refused["grpc_method"] == f"/{SERVICE}/ListThreads" and refused["tenant"] == ""


def _log_lines(server: ServerProcess, complete: Any) -> list[dict[str, Any]]:
    """The server's log, one JSON object per line, once complete(lines) holds (a line is written after its call)."""
    deadline = time.monotonic() + 10
    while True:
        text = server.log()
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        if complete(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_one_scrape_counts_every_worker(fresh_postgres_url: str, logs: Path) -> None:
    metrics_address = f"127.0.0.1:{free_port()}"
    env = server_env(THREADLINE_WORKERS="2", THREADLINE_METRICS_ADDRESS=metrics_address)
    connections = 24  # all 24 on one worker: a chance of 2 in 2**24
    with ServerProcess(fresh_postgres_url, logs, env=env) as server:
        workers = worker_pids(server)

        def ask(i: int) -> str:
            with ThreadlineClient(server.address, channel_options=OWN_CONNECTION) as client:
                thread = client.ask(f"My item{i} is value{i}.", timeout=60).thread_id
                return client.get_state(thread).checkpoint.replica

        with ThreadPoolExecutor(8) as pool:
            replicas = set(pool.map(ask, range(connections)))
        assert {int(replica.rpartition(":")[2]) for replica in replicas} == workers, "both workers ran turns"
        samples = scrape(metrics_address)
    assert total(samples, "grpc_server_handled_total", grpc_method="Ask", grpc_code="OK") == connections
    assert total(samples, "grpc_server_handled_total", grpc_method="GetState", grpc_code="OK") == connections
    assert total(samples, "threadline_storage_up") == 1
    assert total(samples, "threadline_turns_in_flight") == 0
    assert total(samples, "threadline_db_pool_max_connections") == 2 * 10, "both workers' pools (10 each)"
    # The engine's measurements too, from both workers' files: one offline model request per Ask.
    ok = {"model": "threadline-offline", "outcome": "ok"}
    assert total(samples, "threadline_model_requests_total", **ok) == connections
    assert total(samples, "threadline_model_request_duration_seconds_count", **ok) == connections
    assert total(samples, "threadline_checkpoint_bytes_written_total") > 0


def test_the_dashboard_and_alerts_name_only_exported_metrics(observed: tuple[ServerProcess, str]) -> None:
    _, metrics_address = observed
    families = {family.name for family in text_string_to_metric_families(scrape_text(metrics_address))}
    dashboard = json.loads((KIT / "grafana-dashboard.json").read_text())
    rules = yaml.safe_load((KIT / "prometheus-alerts.yml").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    expressions += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    named = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    assert len(named) >= 15
    missing = {name for name in named if _family(name, families) is None}
    assert not missing, f"named in deploy/observability but not exported: {sorted(missing)}"
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {"ThreadlineStorageDown", "ThreadlineServerErrors", "ThreadlinePoolExhausted"} <= alerts


def _family(name: str, families: set[str]) -> str | None:
    """The exported family a name in PromQL belongs to (a histogram's _bucket, a counter's _total...)."""
    if name in families:
        return name
    for suffix in SAMPLE_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in families:
            return name.removesuffix(suffix)
    return None


@pytest.fixture(scope="module")
def model() -> Iterator[ModelServer]:
    """An OpenAI-compatible model of ours, whose responses report their usage (streamed ones when asked)."""
    with ModelServer() as running:
        yield running


@pytest.fixture(scope="module")
def modelled(
    model: ModelServer, tmp_path_factory: pytest.TempPathFactory, logs: Path
) -> Iterator[tuple[ServerProcess, str]]:
    """A server on the local model with metrics on; current_time waits for a human's approval."""
    metrics_address = f"127.0.0.1:{free_port()}"
    env = model_server_env(
        model.base_url,
        THREADLINE_METRICS_ADDRESS=metrics_address,
        THREADLINE_APPROVAL_TOOLS="current_time",
        THREADLINE_MODEL_MAX_RETRIES="0",
    )
    url = f"sqlite:///{tmp_path_factory.mktemp('observability-model') / 'threadline.db'}"
    with ServerProcess(url, logs, env=env) as server:
        yield server, metrics_address


def _usage_of(records: list[RequestRecord], kind: str) -> float:
    return sum(record.usage[kind] for record in records if record.usage is not None)


def test_model_tool_interrupt_and_checkpoint_metrics(modelled: tuple[ServerProcess, str], model: ModelServer) -> None:
    server, metrics_address = modelled
    before, first_request = scrape(metrics_address), len(model.requests)
    with ThreadlineClient(server.address) as client:
        streamed = list(client.stream_ask("What is 6*7?"))  # model (a calculator call), calculator, model
        assert streamed[-1].final.messages[-1].text == "The answer is 42."
        client.ask("What is 1/0?")  # the calculator fails: the model reads its error and answers
        model.script(tool_call("current_time"))
        paused = client.ask("What time is it?")  # model (a call waiting for approval): paused
        assert len(paused.interrupts) == 1
        client.resume(paused.thread_id, paused.interrupts[0].interrupt_id, pb.ResumeDecision(approve=pb.Approval()))
        model.script(failure(400, "The model refused."))
        with pytest.raises(ThreadlineError):
            client.ask("Fail please")
    records = model.requests[first_request:]
    calls = {"before": before, "after": scrape(metrics_address)}

    assert len(records) == 7
    ok = {"model": "test-model", "outcome": "ok"}
    assert delta(calls, "threadline_model_requests_total", **ok) == 6
    assert delta(calls, "threadline_model_requests_total", model="test-model", outcome="error") == 1
    assert delta(calls, "threadline_model_request_duration_seconds_count", **ok) == 6
    assert delta(calls, "threadline_model_request_duration_seconds_sum", **ok) > 0
    # The provider's usage, streamed responses' included: what the model server reported, to the token.
    assert all(record.usage is not None for record in records[:-1]), "every answered request reported usage"
    assert records[0].stream and records[0].body["stream_options"] == {"include_usage": True}
    for kind, reported in (("input", "prompt_tokens"), ("output", "completion_tokens")):
        tokens = delta(calls, "threadline_model_tokens_total", model="test-model", type=kind)
        assert tokens == _usage_of(records, reported) > 0, kind
    assert delta(calls, "threadline_tool_calls_total", tool="calculator", outcome="ok") == 1
    assert delta(calls, "threadline_tool_calls_total", tool="calculator", outcome="error") == 1
    assert delta(calls, "threadline_tool_calls_total", tool="current_time", outcome="ok") == 1
    assert delta(calls, "threadline_tool_calls_total") == 3
    assert delta(calls, "threadline_interrupts_created_total") == 1
    assert delta(calls, "threadline_interrupts_resumed_total") == 1
    assert delta(calls, "threadline_checkpoint_bytes_written_total") > 0
    assert delta(calls, "threadline_busy_wait_seconds_count") == 0, "no turn found its thread busy"


def test_a_turn_waiting_for_its_busy_thread_is_measured(
    modelled: tuple[ServerProcess, str], model: ModelServer
) -> None:
    server, metrics_address = modelled
    with ThreadlineClient(server.address) as client:
        thread = client.ask("Hello").thread_id
        before = scrape(metrics_address)
        first_request = len(model.requests)
        model.script(text(["slow "] * 10))
        model.token_delay_s = 0.1  # the first turn holds the thread for about a second
        try:
            with ThreadPoolExecutor(2) as pool:
                first = pool.submit(client.ask, "Take your time", thread_id=thread)
                model.wait_for_requests(first_request + 1)  # the first turn holds the thread: it called the model
                second = pool.submit(client.ask, "And then?", thread_id=thread)
                first.result(timeout=30), second.result(timeout=30)
        finally:
            model.token_delay_s = 0.0
    calls = {"before": before, "after": scrape(metrics_address)}
    assert delta(calls, "threadline_busy_wait_seconds_count", rpc="Ask", outcome="held") == 1
    assert delta(calls, "threadline_busy_wait_seconds_count") == 1
    assert delta(calls, "threadline_busy_wait_seconds_sum", rpc="Ask") >= 0.3, "it waited for the slow turn"
    assert delta(calls, "threadline_busy_rejections_total") == 0
