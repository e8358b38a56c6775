"""OpenTelemetry traces, configured only by the standard OTEL_* environment variables.

With an OTLP endpoint set (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
OTEL_SDK_DISABLED=true and OTEL_TRACES_EXPORTER=none turn it off again), `start_tracing` sets up
the SDK: a batch span processor exporting over OTLP, the sampler of OTEL_TRACES_SAMPLER, and the
resource of OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (service.name defaults to
"threadline"). Without one nothing is set up: no span is made, nothing is exported, and calls pay
nothing for tracing.

The exporter follows OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL:
"http/protobuf" (the specification's default) is opentelemetry-exporter-otlp-proto-http's,
"grpc" opentelemetry-exporter-otlp-proto-grpc's (plaintext to an http:// endpoint, TLS to an
https:// one). Each reads the endpoint, headers, timeout, compression and certificate variables
itself. Any other value ("http/json" included: no exporter for it is installed) is a
ConfigurationError: the server does not start rather than export in a protocol the collector
does not expect.

The spans of a call: the server span (telemetry.TelemetryInterceptor; written here rather than
taken from opentelemetry-instrumentation-grpc because that interceptor already observes the
status every call ends with, aborted and refused calls included, so one wrapper serves metrics,
access log and span), the turn beneath it (`turn_span`), and the graph's nodes, model calls and
tool calls beneath that (engine.graph_spans, from LangChain's public callbacks), the turn's wait
for its thread's hold (engine.hold_waits), and each PostgreSQL statement
(opentelemetry-instrumentation-psycopg: every connection opened after `start_tracing`, the pool's
too, gets its traced cursor factory; the once-a-second storage probe runs with instrumentation
suppressed, `untraced()`, so it makes no trace of its own). As with opentelemetry-instrument,
OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=psycopg leaves the statements untraced.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.trace import Span, Tracer

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

from threadline.engine.context import RequestContext
from threadline.errors import ConfigurationError

INSTRUMENTATION = "threadline"

PROTOCOLS = ("http/protobuf", "grpc")
"""The values of OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL this server exports with; the first is the default."""

_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the OTEL_* environment asks for traces to be exported."""
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def exporter_protocol(environ: Mapping[str, str] | None = None) -> str:
    """The OTLP protocol spans are exported with; ConfigurationError for one this server has no exporter for."""
    environ = os.environ if environ is None else environ
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = environ.get(variable, "").strip()
        if value:  # the specification: an empty value is an unset one
            if value not in PROTOCOLS:
                raise ConfigurationError(
                    f"{variable}: expected {' or '.join(PROTOCOLS)}, got {value!r} (threadline has no OTLP "
                    "exporter for it; nothing would reach the collector)"
                )
            return value
    return PROTOCOLS[0]


def start_tracing() -> Tracer | None:
    """Sets up the SDK and its exporter when the environment asks for traces; this process's tracer, or None.

    Raises:
        ConfigurationError: OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL names a protocol without an exporter.
    """
    global _tracer, _provider
    if not requested():
        return None
    exporter = _exporter(exporter_protocol())
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    defaults = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: "threadline"}
    provider = TracerProvider(resource=Resource.create(defaults))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if "psycopg" not in _disabled_instrumentations():
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

        # Before the storage opens: connections opened from now on trace their statements.
        PsycopgInstrumentor().instrument(tracer_provider=provider)
    _provider, _tracer = provider, provider.get_tracer(INSTRUMENTATION)
    return _tracer


def _exporter(protocol: str) -> SpanExporter:
    """The OTLP span exporter of protocol, configured by the OTEL_EXPORTER_OTLP_* variables it reads itself."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        return GrpcSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    return HttpSpanExporter()


def _disabled_instrumentations() -> set[str]:
    """OTEL_PYTHON_DISABLED_INSTRUMENTATIONS (comma-separated), the variable opentelemetry-instrument reads."""
    listed = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    return {name.strip() for name in listed.split(",") if name.strip()}


def stop_tracing() -> None:
    """Exports the spans still buffered and stops the exporter (blocking: call it from a thread)."""
    if _provider is not None:
        _provider.shutdown()


def untraced() -> AbstractContextManager[None]:
    """A block whose instrumented calls (PostgreSQL statements) make no spans: background probes."""
    if _tracer is None:
        return nullcontext()
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    return suppress_instrumentation()


@contextmanager
def turn_span(ctx: RequestContext, thread_id: str) -> Iterator[Span | None]:
    """The span of a turn, beneath the call's, with its thread, request and tenant; None without tracing."""
    if _tracer is None:
        yield None
        return
    attributes = {
        "threadline.rpc": ctx.rpc,
        "threadline.tenant": ctx.tenant,
        "threadline.thread_id": thread_id,
        "threadline.request_id": ctx.request_id,
    }
    with _tracer.start_as_current_span("threadline.turn", attributes=attributes) as span:
        yield span
