"""Real parts for the tests: a Threadline server process, throwaway PostgreSQL clusters."""

from __future__ import annotations

import concurrent.futures
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from threadline_client import ThreadlineClient

ROOT = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT_S = 60.0


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """An event loop's default executor that counts what is handed to its worker threads."""

    handed: int = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        self.handed += 1
        return super().submit(fn, *args, **kwargs)


def wait_until(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    """Returns once condition() is true; fails the test, saying what did not happen, after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def health_status(
    address: str, service: str = "", timeout: float = 2.0, credentials: grpc.ChannelCredentials | None = None
) -> int:
    """The health service's answer for service; raises grpc.RpcError when the server does not answer."""
    channel = grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)
    with channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
        return int(response.status)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape_text(address: str) -> str:
    """One scrape of http://address/metrics (a server's THREADLINE_METRICS_ADDRESS)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text: str = response.read().decode()
        return text


def scrape(address: str) -> Samples:
    """Every sample of one scrape of http://address/metrics, parsed by prometheus-client's own parser."""
    text = scrape_text(address)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of name's samples whose labels include these."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items() if sample == name and wanted <= have)


def server_env(**overrides: str) -> dict[str, str]:
    """The environment of a test server: no real model key, nothing inherited that changes behaviour."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THREADLINE_", "OPENAI_"))}
    env.update(overrides)
    return env


def model_server_env(base_url: str, **overrides: str) -> dict[str, str]:
    """server_env for a server whose model is a local ModelServer at base_url."""
    return server_env(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=base_url, THREADLINE_MODEL="test-model", **overrides)


def assert_one_linear_chain(client: ThreadlineClient, thread: str) -> None:
    """Every checkpoint of the thread is on its head's chain: nothing forked or orphaned."""
    checkpoints = list(client.iter_checkpoints(thread, page_size=100))
    by_id = {c.checkpoint_id: c for c in checkpoints}
    chain, current = [], client.history(thread, page_size=1).head_checkpoint_id
    while current:
        chain.append(current)
        current = by_id[current].parent_checkpoint_id
    assert len(chain) == len(checkpoints), f"{thread}: {len(checkpoints) - len(chain)} checkpoints off the head's chain"


class ServerProcess:
    """`threadline serve` in a child process, on a free loopback port."""

    def __init__(
        self,
        database_url: str,
        log_dir: Path,
        *,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        health_credentials: grpc.ChannelCredentials | None = None,
        open_files: int | None = None,
    ):
        """health_credentials: how the health checks that wait for SERVING connect (a TLS server needs them).
        open_files: the process's limit of open file descriptors (RLIMIT_NOFILE), when not inherited."""
        self.database_url = database_url
        self._health_credentials = health_credentials
        self.address = f"127.0.0.1:{free_port()}"
        self.log_path = log_dir / f"server-{self.address.replace(':', '_')}-{time.monotonic_ns()}.log"
        self._env = env if env is not None else server_env()
        self._args = args
        self._open_files = open_files
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> ServerProcess:
        """Starts the process (again, after kill() or stop(): its log goes on in the same file)."""
        self._close_log()
        self._log = self.log_path.open("ab")
        database = ("--database-url", self.database_url) if self.database_url else ()  # "": from the environment
        command = [sys.executable, "-m", "threadline", "serve", "--address", self.address, *database, *self._args]
        # A preexec_fn makes Popen fork() rather than vfork(): the child then runs gRPC's fork handlers
        # and, with calls in flight in this process, crashes (SIGSEGV, SIGABRT) before it execs.
        limits = self._limits if self._open_files is not None else None
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=self._env, cwd=ROOT, preexec_fn=limits
        )
        self.wait_serving()
        return self

    def _limits(self) -> None:
        """In the child, before it runs the server: its resource limits."""
        assert self._open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self._open_files, self._open_files))

    def wait_serving(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                status = health_status(self.address, timeout=0.5, credentials=self._health_credentials)
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not SERVING within {SERVER_START_TIMEOUT_S}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._close_log()

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def worker_pids(server: ServerProcess, timeout: float = 60.0) -> set[int]:
    """A THREADLINE_WORKERS server's worker pids, once every one of them serves (the supervisor logs them then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"with \d+ worker processes \(pids ([\d, ]+)\)", server.log())
        if found:
            return {int(pid) for pid in found.group(1).split(", ")}
        time.sleep(0.1)
    raise TimeoutError(f"the workers did not all serve within {timeout}s:\n{server.log()}")


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise FileNotFoundError(f"PostgreSQL's {name} is not installed")


class ThrowawayPostgres:
    """A PostgreSQL cluster of the test's own (initdb + pg_ctl) that it may stop and start."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="threadline-pg-"))
        self.data = self.dir / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        if os.geteuid() == 0:  # initdb refuses to run as root
            command = ("runuser", "-u", "postgres", "--", *command)
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> ThrowawayPostgres:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
