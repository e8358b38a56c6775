"""Prometheus metrics: the gRPC server family of go-grpc-prometheus, Threadline's own, and /metrics.

The RPC metrics keep go-grpc-prometheus's names, labels and status code names, so dashboards
built for gRPC servers work unchanged. Threadline's own metrics are prefixed `threadline_`.

One process serves `/metrics` on THREADLINE_METRICS_ADDRESS itself. With several workers the
supervisor serves it instead: before it starts them it points PROMETHEUS_MULTIPROC_DIR at a
directory of its own (prometheus-client's multiprocess mode), every worker writes its values
there, and one scrape of the supervisor adds them up.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
    start_http_server,
)

from threadline import __version__
from threadline.engine.observer import ModelOutcome, ToolOutcome, WaitOutcome
from threadline.storage.contract import PoolStats

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

GRPC_CODE_NAMES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}
"""gRPC status codes as go-grpc-prometheus names them in `grpc_code` (Go's codes.Code.String())."""

HANDLING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""go-grpc-prometheus's handling-time buckets (Prometheus' DefBuckets), in seconds."""
TURN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Turn durations and time to first token, in seconds: model turns run from milliseconds to minutes."""
MODEL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
"""Model request durations, in seconds: from a short completion to a long streamed answer."""
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Waits for a busy thread, in seconds: as long as the turn ahead runs, up to THREADLINE_BUSY_WAIT_MAX_S."""

_RPC = ("grpc_type", "grpc_service", "grpc_method")


@dataclass(frozen=True)
class RpcMetrics:
    """One method's RPC series, looked up once per method rather than once per call."""

    started: Counter
    received: Counter
    sent: Counter
    handling: Histogram


class Metrics:
    """Every metric one server process records; created once per process, when metrics are on."""

    def __init__(self, *, tenant_label: bool, registry: CollectorRegistry | None = REGISTRY) -> None:
        """Args:
        tenant_label: Whether handled calls and turns carry a `tenant` label (one series per tenant).
        registry: Where the metrics are registered; None in a worker, whose values the supervisor's
            multiprocess collector reads from PROMETHEUS_MULTIPROC_DIR.
        """
        self.tenant_label = tenant_label
        # go-grpc-prometheus has no *_created series, and multiprocess mode has none: one scrape shape.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        tenant = ("tenant",) if tenant_label else ()
        self._declare_rpc_metrics(tenant, registry)
        self._declare_turn_metrics(tenant, registry)
        self._declare_model_and_tool_metrics(tenant, registry)
        self._declare_process_and_storage_metrics(registry)
        self._pool_totals = (0.0, 0)
        self._rpcs: dict[tuple[str, str, str], RpcMetrics] = {}

    def _declare_rpc_metrics(self, tenant: tuple[str, ...], registry: CollectorRegistry | None) -> None:
        """go-grpc-prometheus's server metrics, under its names and labels."""
        self.started = Counter(
            "grpc_server_started_total", "Total number of RPCs started on the server.", _RPC, registry=registry
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*_RPC, "grpc_code", *tenant),
            registry=registry,
        )
        self.received = Counter(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            _RPC,
            registry=registry,
        )
        self.sent = Counter(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            _RPC,
            registry=registry,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            _RPC,
            buckets=HANDLING_BUCKETS,
            registry=registry,
        )

    def _declare_turn_metrics(self, tenant: tuple[str, ...], registry: CollectorRegistry | None) -> None:
        """Turns: their duration, first tokens, calls in flight and waits for busy threads."""
        self.turn_duration = Histogram(
            "threadline_turn_duration_seconds",
            "Time a turn call (Ask, StreamAsk, Resume, StreamResume) took, from its start to its status; "
            "outcome is its gRPC code name.",
            ("rpc", "outcome", *tenant),
            buckets=TURN_BUCKETS,
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "threadline_time_to_first_token_seconds",
            "Time from a streamed turn's start to its first token sent; outcome is the call's gRPC code name.",
            ("rpc", "outcome", *tenant),
            buckets=TURN_BUCKETS,
            registry=registry,
        )
        self.turns_in_flight = Gauge(
            "threadline_turns_in_flight",
            "Turn calls being served now (waiting for their thread or running).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.open_streams = Gauge(
            "threadline_open_streams",
            "Server-streaming ThreadlineService calls open now (StreamAsk, StreamResume).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.busy_rejections = Counter(
            "threadline_busy_rejections_total",
            "Turns refused with ABORTED THREAD_BUSY: their thread was busy with another turn (on any replica).",
            ("rpc", *tenant),
            registry=registry,
        )
        self.busy_waits = Histogram(
            "threadline_busy_wait_seconds",
            "Time turns that found their thread busy with another turn waited for it; outcome: held (the turn "
            "ran) or gave_up (refused: also in threadline_busy_rejections_total, or cancelled).",
            ("rpc", "outcome", *tenant),
            buckets=WAIT_BUCKETS,
            registry=registry,
        )

    def _declare_model_and_tool_metrics(self, tenant: tuple[str, ...], registry: CollectorRegistry | None) -> None:
        """What the graphs' model requests and tool calls did."""
        self.model_requests = Counter(
            "threadline_model_requests_total",
            "Model (chat completion) requests the graphs made, by model and outcome: ok, error or cancelled.",
            ("model", "outcome", *tenant),
            registry=registry,
        )
        self.model_duration = Histogram(
            "threadline_model_request_duration_seconds",
            "Time a model request took, from its start to its whole answer (or its failure), by model and outcome.",
            ("model", "outcome", *tenant),
            buckets=MODEL_BUCKETS,
            registry=registry,
        )
        self.model_tokens = Counter(
            "threadline_model_tokens_total",
            "Tokens of model requests as the provider's usage reports them, by model and type: input or output.",
            ("model", "type", *tenant),
            registry=registry,
        )
        self.tool_calls = Counter(
            "threadline_tool_calls_total",
            "Tool calls the graphs made, by tool and outcome: ok, error (raised or returned an error result), "
            "cancelled or interrupted (paused for a human inside the tool).",
            ("tool", "outcome", *tenant),
            registry=registry,
        )
        self.created_interrupts = Counter(
            "threadline_interrupts_created_total",
            "Interrupts turns paused on, waiting for a human (one per pending interrupt).",
            tenant,
            registry=registry,
        )
        self.resumed_interrupts = Counter(
            "threadline_interrupts_resumed_total",
            "Interrupts a Resume answered, whose run then finished (paused again or answered).",
            tenant,
            registry=registry,
        )

    def _declare_process_and_storage_metrics(self, registry: CollectorRegistry | None) -> None:
        """Checkpoints written, storage health, the build, the PostgreSQL pool."""
        self.checkpoint_bytes = Counter(
            "threadline_checkpoint_bytes_written_total",
            "Bytes the checkpointer serialized to write: channel values and tasks' pending writes (with SQLite "
            "the whole checkpoint); a checkpoint's small JSON header in PostgreSQL is not counted.",
            registry=registry,
        )
        self.storage_up = Gauge(
            "threadline_storage_up",
            "1 while the checkpoint database answers the health probe, 0 while it does not "
            "(with several workers: the lowest of theirs).",
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.build_info = Gauge(
            "threadline_build_info",
            "Always 1; the labels name the running versions of Threadline, Python and LangGraph.",
            ("version", "python", "langgraph"),
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.build_info.labels(__version__, platform.python_version(), _version_of("langgraph")).set(1)
        self.pool_connections = Gauge(
            "threadline_db_pool_connections",
            "PostgreSQL pool connections open, by state: idle or in_use.",
            ("state",),
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.pool_max_connections = Gauge(
            "threadline_db_pool_max_connections",
            "Most PostgreSQL connections the pools may open (THREADLINE_DB_POOL_MAX_SIZE per process).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.pool_waiting = Gauge(
            "threadline_db_pool_requests_waiting",
            "Requests waiting for a PostgreSQL pool connection now.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.pool_wait = Counter(
            "threadline_db_pool_wait_seconds",
            "Seconds requests waited for a PostgreSQL pool connection, summed.",
            registry=registry,
        )
        self.pool_errors = Counter(
            "threadline_db_pool_errors",
            "Requests that got no PostgreSQL pool connection (pool timeout).",
            registry=registry,
        )

    def rpc(self, grpc_type: str, service: str, method: str) -> RpcMetrics:
        """The series of one method (of the methods the server serves: a bounded set)."""
        key = (grpc_type, service, method)
        found = self._rpcs.get(key)
        if found is None:
            found = self._rpcs[key] = RpcMetrics(
                self.started.labels(*key),
                self.received.labels(*key),
                self.sent.labels(*key),
                self.handling.labels(*key),
            )
        return found

    def _tenant(self, tenant: str) -> tuple[str, ...]:
        return (tenant,) if self.tenant_label else ()

    # The engine's TurnObserver (engine.observer): what its turns did.

    def model_request(
        self,
        *,
        tenant: str,
        model: str,
        outcome: ModelOutcome,
        duration_s: float,
        input_tokens: int | None,
        output_tokens: int | None,
    ) -> None:
        """One model request ended, with the provider's usage (None: none reported)."""
        labels = (model, outcome, *self._tenant(tenant))
        self.model_requests.labels(*labels).inc()
        self.model_duration.labels(*labels).observe(duration_s)
        if input_tokens is not None:
            self.model_tokens.labels(model, "input", *self._tenant(tenant)).inc(input_tokens)
        if output_tokens is not None:
            self.model_tokens.labels(model, "output", *self._tenant(tenant)).inc(output_tokens)

    def tool_call(self, *, tenant: str, tool: str, outcome: ToolOutcome) -> None:
        """One tool call ended."""
        self.tool_calls.labels(tool, outcome, *self._tenant(tenant)).inc()

    def busy_wait(self, *, tenant: str, rpc: str, outcome: WaitOutcome, waited_s: float) -> None:
        """A turn waited waited_s for its busy thread."""
        self.busy_waits.labels(rpc, outcome, *self._tenant(tenant)).observe(waited_s)

    def interrupts_created(self, *, tenant: str, count: int) -> None:
        """A turn paused on count interrupts."""
        if self.tenant_label:
            self.created_interrupts.labels(tenant).inc(count)
        else:
            self.created_interrupts.inc(count)

    def interrupt_resumed(self, *, tenant: str) -> None:
        """A Resume answered an interrupt."""
        if self.tenant_label:
            self.resumed_interrupts.labels(tenant).inc()
        else:
            self.resumed_interrupts.inc()

    def checkpoint_bytes_written(self, nbytes: int) -> None:
        """The checkpointer serialized nbytes to write."""
        self.checkpoint_bytes.inc(nbytes)

    def observe_pool(self, stats: PoolStats) -> None:
        """Records a sample of the pool's state (sampled once a second, with the storage probe)."""
        self.pool_connections.labels("idle").set(stats.idle)
        self.pool_connections.labels("in_use").set(stats.size - stats.idle)
        self.pool_max_connections.set(stats.max_size)
        self.pool_waiting.set(stats.waiting)
        waited, errors = self._pool_totals
        self.pool_wait.inc(max(0.0, stats.wait_s_total - waited))
        self.pool_errors.inc(max(0, stats.errors_total - errors))
        self._pool_totals = (stats.wait_s_total, stats.errors_total)


def _version_of(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of a host:port metrics address; an IPv6 host may be bracketed."""
    host, separator, port = address.rpartition(":")
    if not separator or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)


def serve_metrics(address: str, registry: CollectorRegistry = REGISTRY) -> WSGIServer:
    """Serves the registry's metrics at http://address/metrics from a daemon thread; shut it down when done.

    Raises:
        OSError: the address cannot be listened on.
    """
    host, port = split_address(address)
    server, _ = start_http_server(port, host, registry=registry)
    return server


def multiprocess_registry(directory: str) -> CollectorRegistry:
    """A registry whose scrape adds up what every process writing to directory recorded."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


@contextmanager
def multiprocess_directory() -> Iterator[str]:
    """A fresh PROMETHEUS_MULTIPROC_DIR for the workers started in the block; removed afterwards.

    Workers are spawned processes: they inherit the variable and import prometheus-client
    after it is set, which is what puts the client in multiprocess mode.
    """
    directory = tempfile.mkdtemp(prefix="threadline-metrics-")
    previous = os.environ.get(MULTIPROC_DIR_ENV)
    os.environ[MULTIPROC_DIR_ENV] = directory
    try:
        yield directory
    finally:
        if previous is None:
            del os.environ[MULTIPROC_DIR_ENV]
        else:
            os.environ[MULTIPROC_DIR_ENV] = previous
        shutil.rmtree(directory, ignore_errors=True)


def in_multiprocess_mode() -> bool:
    """True in a worker whose metrics the supervisor serves (PROMETHEUS_MULTIPROC_DIR is set)."""
    return bool(os.environ.get(MULTIPROC_DIR_ENV))


def worker_exited(directory: str, pid: int) -> None:
    """Drops an exited worker's live gauges (in flight, open streams, storage up) from the scrape."""
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
