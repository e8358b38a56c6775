"""Several server processes on one address: the supervisor of `THREADLINE_WORKERS` > 1.

A supervisor process runs that many server processes on one address (SO_REUSEPORT:
the kernel spreads incoming connections over them), so that turns, which are bound
by Python CPU, use more than one core. The supervisor serves nothing itself: it
starts the workers (the first alone, so that only one of them runs the schema
set-up), forwards SIGTERM/SIGINT/SIGUSR1 to them, and if a worker dies unexpectedly
it stops the others and exits 1, leaving restarts to whatever runs the service
(systemd, Kubernetes), which then sees the failure.

With metrics on, the supervisor serves /metrics: the workers write theirs to a directory of
the supervisor's (prometheus-client's multiprocess mode), removed when the supervisor ends.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType

from threadline.config import Settings
from threadline.errors import ConfigurationError, ThreadlineError
from threadline.transport.metrics import multiprocess_directory, multiprocess_registry, serve_metrics, worker_exited
from threadline.transport.server import configure_logging, run

log = logging.getLogger(__name__)

WORKER_START_TIMEOUT_S = 120.0
"""Longest a worker may take to start serving (imports, graph, database set-up)."""
WORKER_STOP_MARGIN_S = 10.0
"""How long past the shutdown grace a worker gets to close its database before it is killed."""


def _worker_main(settings: Settings, index: int, supervisor: Connection) -> None:
    """A worker process: serves like a single process would, and tells the supervisor when it does."""
    # Ctrl-C reaches the whole process group; the supervisor forwards it as SIGTERM, and a
    # KeyboardInterrupt during start-up (before the event loop takes the signal) would print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until serve() reloads API keys on it
    configure_logging(settings.log_level, log_format=settings.log_format, worker=True)
    # One worker runs the retention passes: the others would only race it for the same threads.
    sys.exit(run(settings, retention=index == 0, supervisor=supervisor))


def _split_address(address: str) -> tuple[str, int]:
    host, separator, port = address.rpartition(":")
    if not separator or not port.isdigit():
        raise ConfigurationError(f"THREADLINE_ADDRESS: expected host:port with several workers, got {address!r}")
    return host, int(port)


def reserve_address(address: str) -> tuple[socket.socket, str]:
    """Binds (without listening) a SO_REUSEPORT socket on address, for the workers to share.

    Returns:
        The socket, to keep open while the workers run (a port 0 stays this port), and the
        address with the port filled in.

    Raises:
        OSError: another server listens on the address already.
    """
    host, port = _split_address(address)
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    if port:
        # SO_REUSEPORT would let the workers join another server's port silently: a bind
        # without it fails when anything listens there.
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror}") from None
    reservation = socket.socket(family, kind, proto)
    try:
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reservation.bind(sockaddr)
    except OSError:
        reservation.close()
        raise
    return reservation, f"{host}:{reservation.getsockname()[1]}"


@dataclasses.dataclass
class _Worker:
    index: int
    process: BaseProcess
    pipe: Connection
    """The supervisor's end of the worker's pipe: the worker reports on it once it serves."""
    serving: bool = False


class _Supervisor:
    """Starts the workers, forwards signals to them, and stops them all when one fails."""

    def __init__(self, settings: Settings, metrics_directory: str | None = None) -> None:
        self._settings = settings
        self._metrics_directory = metrics_directory
        self._context = multiprocessing.get_context("spawn")  # never fork a process that may hold gRPC state
        self._workers: list[_Worker] = []
        self._stopping_since: float | None = None
        self._failed = False

    def run(self) -> int:
        handlers = {sig: signal.signal(sig, self._on_stop_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        handlers[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._forward_signal)
        handlers[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._forward_signal)  # reloads API keys
        try:
            # The first worker alone sets up the schema; the others start once it serves.
            self._start(0)
            started_at = time.monotonic()
            while self._stopping_since is None:
                self._watch(timeout=0.5)
                if self._stopping_since is not None:
                    break
                if len(self._workers) == 1 and self._workers[0].serving:
                    for index in range(1, self._settings.workers):
                        self._start(index)
                starting = [w.process.pid for w in self._workers if not w.serving]
                if starting and time.monotonic() - started_at > WORKER_START_TIMEOUT_S:
                    log.error("worker(s) %s not serving within %gs: stopping", starting, WORKER_START_TIMEOUT_S)
                    self._fail()
            self._stop_all()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        return 1 if self._failed else 0

    def _start(self, index: int) -> None:
        mine, theirs = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main, args=(self._settings, index, theirs), name=f"threadline-worker-{index}"
        )
        process.start()
        theirs.close()  # the worker holds the only other end: either side's exit closes the pipe
        self._workers.append(_Worker(index, process, mine))

    def _watch(self, timeout: float) -> None:
        """Waits for a worker to report serving or to exit; an exit before a stop fails the whole service."""
        sentinels = {w.process.sentinel: w for w in self._workers}
        pipes = {w.pipe: w for w in self._workers if not w.serving}
        for item in wait([*sentinels, *pipes], timeout=timeout):
            if isinstance(item, Connection):
                try:
                    item.recv()
                except EOFError:
                    continue  # it died before serving: its sentinel says so
                pipes[item].serving = True
                if len(self._workers) == self._settings.workers and all(w.serving for w in self._workers):
                    log.info(
                        "threadline serving on %s with %d worker processes (pids %s)",
                        self._settings.address,
                        len(self._workers),
                        ", ".join(str(w.process.pid) for w in self._workers),
                    )
            elif isinstance(item, int) and self._stopping_since is None:
                worker = sentinels[item]
                worker.process.join(1.0)  # the sentinel can fire just before the exit status is there
                self._forget_metrics(worker)
                log.error(
                    "worker %d (pid %s) exited unexpectedly with code %s: stopping the others",
                    worker.index,
                    worker.process.pid,
                    worker.process.exitcode,
                )
                self._fail()

    def _forget_metrics(self, worker: _Worker) -> None:
        """Drops an exited worker's live gauges from the scrape; its counters stay counted."""
        if self._metrics_directory is not None and worker.process.pid is not None:
            worker_exited(self._metrics_directory, worker.process.pid)

    def _fail(self) -> None:
        self._failed = True
        self._stopping_since = time.monotonic()

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping_since is None:
            log.info("%s: stopping %d worker(s)", signal.Signals(signum).name, len(self._workers))
            self._stopping_since = time.monotonic()
        self._forward_signal(signal.SIGTERM, frame)

    def _forward_signal(self, signum: int, frame: FrameType | None) -> None:
        for worker in self._workers:
            if worker.process.pid is not None and worker.process.exitcode is None:
                os.kill(worker.process.pid, signum)

    def _stop_all(self) -> None:
        """SIGTERM to every worker (each drains like one process does), SIGKILL to any still running late."""
        self._forward_signal(signal.SIGTERM, None)
        assert self._stopping_since is not None
        deadline = self._stopping_since + self._settings.shutdown_grace_s + WORKER_STOP_MARGIN_S
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                log.error("worker %d (pid %s) did not stop in time: killing it", worker.index, worker.process.pid)
                worker.process.kill()
                worker.process.join()
                self._failed = True
            elif worker.process.exitcode not in (0, -signal.SIGTERM):  # SIGTERM before its handler was set
                self._failed = True
            worker.pipe.close()
            self._forget_metrics(worker)
        log.info("stopped %d worker(s)", len(self._workers))


def serve_in_workers(settings: Settings) -> int:
    """Runs settings.workers server processes sharing settings.address; returns the exit code.

    0 after a SIGTERM/SIGINT stopped every worker cleanly; 1 when a worker could not
    start, died, or had to be killed (the others are stopped first).
    """
    try:
        reservation, address = reserve_address(settings.address)
    except (OSError, ThreadlineError) as exc:
        log.error("cannot start: %s", exc.message if isinstance(exc, ThreadlineError) else exc)
        return 1
    with reservation:
        settings = dataclasses.replace(settings, address=address)
        if not settings.metrics_address:
            return _Supervisor(settings).run()
        with multiprocess_directory() as directory:
            try:
                endpoint = serve_metrics(settings.metrics_address, multiprocess_registry(directory))
            except OSError as exc:
                log.error("cannot start: metrics at %s: %s", settings.metrics_address, exc)
                return 1
            log.info("metrics of all workers at http://%s/metrics", settings.metrics_address)
            try:
                return _Supervisor(settings, directory).run()
            finally:
                endpoint.shutdown()
                endpoint.server_close()
