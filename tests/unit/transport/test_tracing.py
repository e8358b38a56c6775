"""Which OTLP exporter the OTEL_* environment picks, and when tracing is on at all."""

from __future__ import annotations

import pytest

from threadline.errors import ConfigurationError
from threadline.transport.tracing import exporter_protocol, requested

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


@pytest.mark.parametrize(
    ("environ", "protocol"),
    [
        ({}, "http/protobuf"),  # the specification's default
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "http/protobuf"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "grpc"),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "http/protobuf",
        ),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc"),  # empty: unset
        (
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "http/protobuf",
        ),
    ],
)
def test_the_traces_variable_wins_over_the_general_one(environ: dict[str, str], protocol: str) -> None:
    assert exporter_protocol(environ) == protocol


@pytest.mark.parametrize("value", ["http/json", "GRPC", "zipkin"])
def test_a_protocol_without_an_exporter_is_a_configuration_error(value: str) -> None:
    with pytest.raises(
        ConfigurationError, match=f"OTEL_EXPORTER_OTLP_PROTOCOL: expected http/protobuf or grpc, got '{value}'"
    ):
        exporter_protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": value})


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, False),  # a protocol alone exports nothing
        (ENDPOINT, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317"}, True),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False),
        ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_an_otlp_endpoint_turns_tracing_on(environ: dict[str, str], on: bool) -> None:
    assert requested(environ) is on
