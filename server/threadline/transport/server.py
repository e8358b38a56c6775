"""The server's life: start, serve health and reflection, shut down gracefully on a signal.

One process serves; `transport/workers.py` runs several of these on one address.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import resource
import signal
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.trace import Tracer

from threadline import collector
from threadline.auth.api_keys import ApiKeyFile
from threadline.auth.credentials import Authenticator
from threadline.config import Settings, is_loopback
from threadline.engine.engine import Engine
from threadline.errors import ThreadlineError
from threadline.event_loop import describe, loop_factory
from threadline.transport import security
from threadline.transport.interceptors import SERVICE_NAME, RequestInterceptor
from threadline.transport.log_format import configure_logging
from threadline.transport.metrics import Metrics, in_multiprocess_mode, serve_metrics
from threadline.transport.overload import CallLimit
from threadline.transport.reflection import REFLECTION_SERVICES, enable_reflection
from threadline.transport.servicer import ThreadlineServicer
from threadline.transport.stream_writer import StreamLimits
from threadline.transport.telemetry import TelemetryInterceptor
from threadline.transport.tracing import start_tracing, stop_tracing, untraced
from threadline_client.v1 import threadline_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

__all__ = ["configure_logging", "run", "serve"]


def _options(settings: Settings) -> list[tuple[str, int]]:
    """gRPC core's options: message sizes, connection limits and lifetimes, its queue of new calls."""
    # Core cancels (bare CANCELLED) the calls it queued for the application beyond its pending
    # limit (1000 by default); a burst must reach CallLimit instead, which refuses with a reason.
    pending = max(PENDING_CALLS_FLOOR, 4 * settings.max_concurrent_rpcs)
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # One process rejects a second server on the same port instead of silently
        # sharing it; workers share it on purpose (the supervisor checked that nobody
        # else listens there before starting them).
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ("grpc.server.max_pending_requests", pending),
        ("grpc.server.max_pending_requests_hard_limit", pending),
        ("grpc.max_allowed_incoming_connections", max_connections(settings)),
        *_lifetime_options(settings),
    ]


PENDING_CALLS_FLOOR = 10_000

CONNECTIONS_FD_RESERVE = 256
"""File descriptors kept back from client connections: the database pool, log files, the metrics endpoint."""


def max_connections(settings: Settings) -> int:
    """THREADLINE_MAX_CONNECTIONS, or (0) the open-file limit less the reserve: accepting never runs out of fds."""
    if settings.max_connections:
        return settings.max_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1_000_000
    return max(1, soft - CONNECTIONS_FD_RESERVE)


def _lifetime_options(settings: Settings) -> list[tuple[str, int]]:
    """Idle timeout and maximum age of client connections (0 in a setting: gRPC's default, for ever)."""
    options = []
    if settings.connection_idle_timeout_s:
        options.append(("grpc.max_connection_idle_ms", round(settings.connection_idle_timeout_s * 1000)))
    if settings.connection_max_age_s:
        options += [
            ("grpc.max_connection_age_ms", round(settings.connection_max_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", round(settings.connection_max_age_grace_s * 1000)),
        ]
    return options


STORAGE_CHECK_INTERVAL_S = 1.0
API_KEYS_CHECK_INTERVAL_S = 1.0


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:  # closed since it was listed
        return ""


def log_runtime_stats() -> None:
    """On SIGUSR1: how many asyncio tasks and open sockets the process has (to spot leaks)."""
    try:
        fds = os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []
    except OSError as exc:  # out of file descriptors (EMFILE) is when this is wanted most
        log.info("runtime stats: tasks=%d fds=? (%s)", len(asyncio.all_tasks()), exc.strerror)
        return
    sockets = sum(1 for fd in fds if _link(f"/proc/self/fd/{fd}").startswith("socket:"))
    log.info("runtime stats: tasks=%d fds=%d sockets=%d", len(asyncio.all_tasks()), len(fds), sockets)


async def _watch_storage(
    engine: Engine, health_servicer: health.aio.HealthServicer, metrics: Metrics | None = None
) -> None:
    """Keeps health NOT_SERVING while the database is unreachable, so load balancers route around us.

    threadline_storage_up follows the same probe; the pool's metrics are sampled with it.
    """
    serving = True
    while True:
        with untraced():  # once a second: no trace of its own
            up = await engine.check_storage()
        if metrics is not None:
            metrics.storage_up.set(1 if up else 0)
            pool = engine.pool_stats()
            if pool is not None:
                metrics.observe_pool(pool)
        if up != serving:
            serving = up
            status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
            for service in ("", SERVICE_NAME):
                await health_servicer.set(service, status)
        await asyncio.sleep(STORAGE_CHECK_INTERVAL_S)


async def _expire_idle_threads(engine: Engine, ttl_s: float, interval_s: float) -> None:
    """Retention: deletes threads idle longer than ttl_s, checking every interval_s."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            deleted = await engine.delete_idle_threads(ttl_s)
        except ThreadlineError as exc:
            log.warning("retention pass failed: %s", exc.message)
            continue
        if deleted:
            log.info("retention: deleted %d thread(s) idle for more than %gs", deleted, ttl_s)


async def _list_unlisted_threads(engine: Engine) -> None:
    """At start-up: rows of the thread list that a killed process (or an older version) left missing or behind."""
    try:
        listed = await engine.list_unlisted_threads()
    except ThreadlineError as exc:
        log.warning("could not check the thread list against the checkpoints: %s", exc.message)
        return
    if listed:
        log.info("thread list: %d thread(s) whose row was missing or behind their checkpoints listed", listed)


def _supervisor_gone(stop: asyncio.Event) -> None:
    if not stop.is_set():
        log.warning("the supervisor is gone: stopping")
        stop.set()


async def serve(
    settings: Settings,
    *,
    ready: asyncio.Event | None = None,
    retention: bool = True,
    supervisor: Connection | None = None,
) -> None:
    """Runs the server until SIGTERM or SIGINT, then drains in-flight calls and closes the database.

    Args:
        settings: What to serve, and where.
        ready: Set once the server accepts calls.
        retention: Whether this process runs the retention passes (one worker does).
        supervisor: A worker's pipe to its supervisor: the worker reports its pid on it once
            it serves, and stops when the pipe closes (the supervisor is gone, e.g. killed
            with SIGKILL) instead of serving on as an orphan.
    """
    loop = asyncio.get_running_loop()
    stop = _stop_on_signals(loop)
    authenticator = await security.authenticator(settings)
    metrics = _metrics(settings)
    tracer = start_tracing()
    server, health_servicer = await _grpc_server(settings, authenticator, metrics, tracer)
    engine_settings = dataclasses.replace(settings.engine, traced=tracer is not None)
    async with Engine.open(engine_settings, observer=metrics) as engine, _metrics_endpoint(settings, metrics):
        await _list_unlisted_threads(engine)
        streams = StreamLimits(settings.stream_buffer_bytes, settings.stream_stall_timeout_s)
        pb_grpc.add_ThreadlineServiceServicer_to_server(ThreadlineServicer(engine, streams), server)
        _listen(server, settings)
        await server.start()
        collector.settle_after_startup()
        for service in ("", SERVICE_NAME):
            await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("threadline serving on %s (event loop %s)", settings.address, describe(loop))
        if ready is not None:
            ready.set()
        if supervisor is not None:
            supervisor.send(os.getpid())
            # The supervisor never writes again: the pipe turns readable only when it closes.
            loop.add_reader(supervisor.fileno(), _supervisor_gone, stop)
        background = _background_tasks(engine, health_servicer, settings, metrics, retention=retention)
        loop.add_signal_handler(signal.SIGHUP, _reload_credentials, authenticator)
        if authenticator.api_keys is not None:
            background.append(asyncio.create_task(_watch_api_keys(authenticator.api_keys)))
        await stop.wait()
        if supervisor is not None:
            loop.remove_reader(supervisor.fileno())
        for task in background:
            task.cancel()
        log.info("shutting down: NOT_SERVING, %.1fs grace for in-flight calls", settings.shutdown_grace_s)
        await health_servicer.enter_graceful_shutdown()
        await server.stop(settings.shutdown_grace_s)
        # Calls still running were cancelled; the engine waits, as it closes, for their threads to be let go.
        await asyncio.gather(*background, return_exceptions=True)
    if tracer is not None:
        await asyncio.to_thread(stop_tracing)  # exports what is left
    log.info("stopped")


def _stop_on_signals(loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    """An event set by SIGTERM or SIGINT; SIGUSR1 logs the runtime stats (SIGHUP reloads API keys: serve())."""
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, log_runtime_stats)
    return stop


def _listen(server: grpc.aio.Server, settings: Settings) -> None:
    """Listens on the address: TLS when configured, plaintext otherwise; warns when that is open to all."""
    credentials = security.server_credentials(settings)
    if credentials is None:
        port = server.add_insecure_port(settings.address)
    else:
        port = server.add_secure_port(settings.address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {settings.address}")
    if not settings.authenticated and not is_loopback(settings.address):
        log.warning(
            "serving %s WITHOUT AUTHENTICATION (THREADLINE_ALLOW_UNAUTHENTICATED=true): anyone who reaches it can "
            "read and delete every thread",
            settings.address,
        )


def _reload_credentials(authenticator: Authenticator) -> None:
    """On SIGHUP: re-reads the API keys file now."""
    if authenticator.api_keys is None:
        log.info("SIGHUP: no API keys file to reload")
    else:
        authenticator.api_keys.reload()


async def _watch_api_keys(api_keys: ApiKeyFile) -> None:
    """Picks up an edited keys file (revoked and added keys) within a second, without a restart."""
    while True:
        await asyncio.sleep(API_KEYS_CHECK_INTERVAL_S)
        api_keys.reload_if_changed()


def _metrics(settings: Settings) -> Metrics | None:
    """This process's metrics, when THREADLINE_METRICS_ADDRESS is set.

    A worker registers none: it writes them to PROMETHEUS_MULTIPROC_DIR, whose sum the supervisor serves.
    """
    if not settings.metrics_address:
        return None
    if in_multiprocess_mode():
        return Metrics(tenant_label=settings.metrics_tenant_label, registry=None)
    return Metrics(tenant_label=settings.metrics_tenant_label)


@contextlib.asynccontextmanager
async def _metrics_endpoint(settings: Settings, metrics: Metrics | None) -> AsyncIterator[None]:
    """Serves /metrics for the block, unless there are none or the supervisor serves them."""
    if metrics is None or in_multiprocess_mode():
        yield
        return
    endpoint = serve_metrics(settings.metrics_address)
    log.info("metrics at http://%s/metrics", settings.metrics_address)
    try:
        yield
    finally:
        endpoint.shutdown()
        endpoint.server_close()


async def _grpc_server(
    settings: Settings, authenticator: Authenticator, metrics: Metrics | None = None, tracer: Tracer | None = None
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """The gRPC server with its interceptors, health (NOT_SERVING until the engine is open) and reflection.

    Health needs no credentials (load balancers and orchestrators probe it); reflection follows
    THREADLINE_REFLECTION. Telemetry (metrics, access log, server spans), when on, is the outermost
    interceptor: it sees every call, those refused by the RequestInterceptor too.
    """
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if metrics is not None or settings.access_log or tracer is not None:
        interceptors.append(TelemetryInterceptor(metrics, access_log=settings.access_log, tracer=tracer))
    interceptors.append(
        RequestInterceptor(
            authenticator,
            security.quotas(settings),
            authenticated_services=REFLECTION_SERVICES if settings.reflection == "authenticated" else frozenset(),
            call_limit=CallLimit(settings.max_concurrent_rpcs),
        )
    )
    server = grpc.aio.server(options=_options(settings), interceptors=interceptors)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection != "off":
        enable_reflection((SERVICE_NAME, health.SERVICE_NAME), server)
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    return server, health_servicer


def _background_tasks(
    engine: Engine,
    health_servicer: health.aio.HealthServicer,
    settings: Settings,
    metrics: Metrics | None,
    *,
    retention: bool,
) -> list[asyncio.Task[None]]:
    """The storage watch (health and threadline_storage_up follow the database); retention where this runs it."""
    tasks = [asyncio.create_task(_watch_storage(engine, health_servicer, metrics))]
    if retention and settings.retention_ttl_s > 0:
        tasks.append(
            asyncio.create_task(_expire_idle_threads(engine, settings.retention_ttl_s, settings.retention_interval_s))
        )
    return tasks


def run(settings: Settings, *, retention: bool = True, supervisor: Connection | None = None) -> int:
    """Serves in this process until a stop signal; returns the process's exit code (see serve())."""
    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            runner.run(serve(settings, retention=retention, supervisor=supervisor))
    except ThreadlineError as exc:
        log.error("cannot start: %s", exc.message)
        return 1
    except (OSError, RuntimeError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0
