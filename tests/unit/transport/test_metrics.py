"""The metrics' names, help texts and labels, on a registry of the test's own."""

from __future__ import annotations

import grpc
import pytest
from prometheus_client import CollectorRegistry

from threadline.transport.metrics import GRPC_CODE_NAMES, Metrics

RPC = ("unary", "threadline.v1.ThreadlineService", "Ask")


def test_every_metric_is_named_by_its_family_and_has_help() -> None:
    registry = CollectorRegistry()
    Metrics(tenant_label=False, registry=registry)
    families = list(registry.collect())
    assert families
    for family in families:
        assert family.name.startswith(("grpc_server_", "threadline_")), family.name
        assert family.documentation.strip(), f"{family.name} has a help text"


def test_a_tenant_label_only_when_asked_for() -> None:
    registry = CollectorRegistry()
    plain = Metrics(tenant_label=False, registry=registry)
    plain.handled.labels(*RPC, "OK").inc()
    assert registry.get_sample_value("grpc_server_handled_total", dict(zip(_names(), (*RPC, "OK"), strict=True))) == 1
    with pytest.raises(ValueError):
        plain.handled.labels(*RPC, "OK", "acme")

    registry = CollectorRegistry()
    tenanted = Metrics(tenant_label=True, registry=registry)
    tenanted.handled.labels(*RPC, "OK", "acme").inc()
    tenanted.turn_duration.labels("Ask", "OK", "acme").observe(0.5)
    labels = dict(zip((*_names(), "tenant"), (*RPC, "OK", "acme"), strict=True))
    assert registry.get_sample_value("grpc_server_handled_total", labels) == 1
    assert (
        registry.get_sample_value(
            "threadline_turn_duration_seconds_count", {"rpc": "Ask", "outcome": "OK", "tenant": "acme"}
        )
        == 1
    )


def test_every_status_code_has_its_go_grpc_name() -> None:
    assert set(GRPC_CODE_NAMES) == set(grpc.StatusCode)
    assert GRPC_CODE_NAMES[grpc.StatusCode.NOT_FOUND] == "NotFound"
    assert GRPC_CODE_NAMES[grpc.StatusCode.CANCELLED] == "Canceled"


def _names() -> tuple[str, ...]:
    return ("grpc_type", "grpc_service", "grpc_method", "grpc_code")


def test_what_turns_did_is_recorded_with_a_tenant_only_when_asked_for() -> None:
    for tenant_label in (False, True):
        registry = CollectorRegistry()
        metrics = Metrics(tenant_label=tenant_label, registry=registry)
        tenant = {"tenant": "acme"} if tenant_label else {}
        metrics.model_request(tenant="acme", model="m", outcome="ok", duration_s=0.5, input_tokens=7, output_tokens=3)
        metrics.model_request(
            tenant="acme", model="m", outcome="error", duration_s=0.1, input_tokens=None, output_tokens=None
        )
        metrics.tool_call(tenant="acme", tool="calculator", outcome="ok")
        metrics.busy_wait(tenant="acme", rpc="Ask", outcome="held", waited_s=0.2)
        metrics.interrupts_created(tenant="acme", count=2)
        metrics.interrupt_resumed(tenant="acme")
        metrics.checkpoint_bytes_written(100)
        metrics.checkpoint_bytes_written(20)
        value = registry.get_sample_value
        assert value("threadline_model_requests_total", {"model": "m", "outcome": "ok", **tenant}) == 1
        assert value("threadline_model_requests_total", {"model": "m", "outcome": "error", **tenant}) == 1
        assert value("threadline_model_request_duration_seconds_sum", {"model": "m", "outcome": "ok", **tenant}) == 0.5
        assert value("threadline_model_tokens_total", {"model": "m", "type": "input", **tenant}) == 7
        assert value("threadline_model_tokens_total", {"model": "m", "type": "output", **tenant}) == 3
        assert value("threadline_tool_calls_total", {"tool": "calculator", "outcome": "ok", **tenant}) == 1
        assert value("threadline_busy_wait_seconds_count", {"rpc": "Ask", "outcome": "held", **tenant}) == 1
        assert value("threadline_interrupts_created_total", tenant) == 2
        assert value("threadline_interrupts_resumed_total", tenant) == 1
        assert value("threadline_checkpoint_bytes_written_total", {}) == 120
