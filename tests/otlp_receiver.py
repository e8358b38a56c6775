"""Local OTLP trace receivers, decoded with opentelemetry-proto: real protobuf over HTTP (OtlpReceiver)
and over gRPC (OtlpGrpcReceiver)."""

from __future__ import annotations

import gzip
import threading
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span


@dataclass
class ReceivedSpan:
    """A span as the receiver got it, ids in hex."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    status_code: int
    service: str
    start_time_unix_nano: int = 0
    end_time_unix_nano: int = 0


@dataclass
class SpanReceiver:
    """The spans a receiver got, from any number of exporting threads."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    decode: bool = True
    """False: only count the requests (a benchmark's receiver spends no CPU on decoding)."""
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _add(self, request: ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(_received(span, str(resource.get("service.name", ""))))
        with self._lock:
            self.spans.extend(received)

    def of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]


@dataclass
class OtlpReceiver(SpanReceiver):
    """Accepts POST /v1/traces on a free loopback port, for as long as it is open (a context manager)."""

    def __enter__(self) -> OtlpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(404)
                    return
                with receiver._lock:
                    receiver.requests += 1
                if receiver.decode:
                    receiver._add(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"


@dataclass
class OtlpGrpcReceiver(SpanReceiver):
    """Serves opentelemetry.proto.collector.trace.v1.TraceService/Export over plaintext gRPC on a free
    loopback port, for as long as it is open (a context manager)."""

    metadata: list[dict[str, str]] = field(default_factory=list)
    """The invocation metadata of each Export call (OTEL_EXPORTER_OTLP_HEADERS arrive there)."""

    def __enter__(self) -> OtlpGrpcReceiver:
        receiver = self

        class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(
                self, request: ExportTraceServiceRequest, context: grpc.ServicerContext
            ) -> ExportTraceServiceResponse:
                with receiver._lock:
                    receiver.requests += 1
                    receiver.metadata.append({key: str(value) for key, value in context.invocation_metadata()})
                if receiver.decode:
                    receiver._add(request)
                return ExportTraceServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), self._server)  # type: ignore[no-untyped-call]
        self._port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None)

    @property
    def endpoint(self) -> str:
        """As OTEL_EXPORTER_OTLP_ENDPOINT gives it: http:// makes the gRPC exporter connect without TLS."""
        return f"http://127.0.0.1:{self._port}"


def _received(span: Span, service: str) -> ReceivedSpan:
    return ReceivedSpan(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        kind=span.kind,
        attributes={a.key: _value(a.value) for a in span.attributes},
        status_code=span.status.code,
        service=service,
        start_time_unix_nano=span.start_time_unix_nano,
        end_time_unix_nano=span.end_time_unix_nano,
    )


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    return getattr(value, which) if which else None
