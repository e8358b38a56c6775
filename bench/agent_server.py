"""Optional: Threadline's Ask against the LangGraph Agent Server's runs.wait on the same graph.

The Agent Server runs in dev mode (`langgraph dev --no-browser --no-reload`: in-memory runtime,
one background job at a time, tracing and analytics off) from its own venv, .venv-agent-server
(`make bench-agent-server-venv`; its langgraph-api pins grpcio and protobuf below ours). It serves
bench/agent_server_graph.py: Threadline's default agent with the offline (instant) model, compiled
without a checkpointer. It is called through langgraph-sdk's `runs.wait`; Threadline is called
with Ask over loopback gRPC, once on the memory:// backend (what dev mode keeps its checkpoints in)
and once on SQLite (the durable default of `make run`). Each turn is the tool turn of
ask_throughput.py ("What is 2+3?" -> calculator -> answer); each worker keeps a thread of its own
and starts a new one every 10 turns (the Agent Server creates it with `if_not_exists="create"`).
Both run with durability="sync". One server runs at a time.

When no `langgraph` CLI is found (BENCH_AGENT_SERVER_BIN, .venv-agent-server/bin, then PATH),
it prints a "skipped" line and exits 0. BENCH_AGENT_SERVER_JOBS sets --n-jobs-per-worker
(default: dev mode's own default, 1).

Run alone: .venv/bin/python bench/agent_server.py   (BENCH_RUNS, BENCH_SECONDS to change effort)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import ROOT, RUNS, SECONDS, Row, median_of, print_table, server, turns_per_second

from tests.support import free_port
from threadline_client import AsyncThreadlineClient

QUERY = "What is 2+3?"
ANSWER = "The answer is 5."
AGENT_SERVER_INPUT: dict[str, Any] = {"messages": [{"role": "human", "content": QUERY}]}
TURNS_PER_THREAD = 10  # as in ask_throughput.py: a turn on a short thread
CONCURRENCY = (1, 32)
GRAPH_FILE = Path(__file__).resolve().parent / "agent_server_graph.py"
START_TIMEOUT_S = 60.0
SKIP_HINT = "install with `make bench-agent-server-venv`"
Turn = Callable[[int], Awaitable[None]]
# (turn, close) for one measurement run, made inside that run's event loop.
MakeTurn = Callable[[], tuple[Turn, Callable[[], Awaitable[None]]]]


class NotInstalled(Exception):
    """No usable Agent Server: the benchmark is skipped."""


def agent_server_bin() -> str | None:
    """The `langgraph` CLI to run: BENCH_AGENT_SERVER_BIN, the separate venv's, or one on PATH."""
    configured = os.environ.get("BENCH_AGENT_SERVER_BIN")
    if configured:
        return configured if Path(configured).is_file() else None
    local = ROOT / ".venv-agent-server" / "bin" / "langgraph"
    if local.is_file():
        return str(local)
    return shutil.which("langgraph")


def _agent_server_env() -> dict[str, str]:
    """No model key, no tracing, no analytics: the server must run offline."""
    prefixes = ("OPENAI_", "LANGSMITH_", "LANGCHAIN_", "LANGGRAPH_", "THREADLINE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(LANGSMITH_TRACING="false", LANGCHAIN_TRACING_V2="false", LANGGRAPH_CLI_NO_ANALYTICS="1")
    return env


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ok", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def agent_server(binary: str, log_path: Path) -> Iterator[str]:
    """`langgraph dev` in a temporary directory serving the graph as "agent", logging to log_path; yields its URL."""
    with tempfile.TemporaryDirectory(prefix="threadline-agent-server-") as folder:
        config = {"dependencies": ["."], "graphs": {"agent": f"{GRAPH_FILE}:graph"}}
        Path(folder, "langgraph.json").write_text(json.dumps(config))
        port = free_port()
        command = [binary, "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port)]
        if jobs := os.environ.get("BENCH_AGENT_SERVER_JOBS"):
            command += ["--n-jobs-per-worker", jobs]
        with log_path.open("wb") as log:
            env = _agent_server_env()
            process = subprocess.Popen(
                command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _ready(url):
                if process.poll() is not None:
                    text = log_path.read_text(errors="replace")
                    if "is not installed" in text:  # a langgraph CLI without the inmem extra
                        raise NotInstalled(f"{binary} has no langgraph-api (the inmem extra)")
                    raise RuntimeError(f"langgraph dev exited with {process.returncode}:\n{text}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"langgraph dev not ready within {START_TIMEOUT_S:g}s; log: {log_path}")
                time.sleep(0.2)
            yield url
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's own process group (it was started in a new session), then SIGKILL."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _agent_server_turn(url: str) -> MakeTurn:
    from langgraph_sdk import get_client

    def make() -> tuple[Turn, Callable[[], Awaitable[None]]]:
        client = get_client(url=url, api_key=None)
        threads: dict[int, tuple[str, int]] = {}

        async def turn(worker: int) -> None:
            thread, done = threads.get(worker, ("", TURNS_PER_THREAD))
            if done == TURNS_PER_THREAD:
                thread, done = str(uuid.uuid4()), 0
            threads[worker] = (thread, done + 1)
            result: Any = await client.runs.wait(
                thread,
                "agent",
                input=AGENT_SERVER_INPUT,
                if_not_exists="create",
                durability="sync",
            )
            _check(result["messages"][-1]["content"])

        return turn, client.aclose

    return make


def _threadline_turn(address: str) -> MakeTurn:
    def make() -> tuple[Turn, Callable[[], Awaitable[None]]]:
        client = AsyncThreadlineClient(address)
        turns: dict[int, int] = {}
        run = uuid.uuid4().hex[:8]

        async def turn(worker: int) -> None:
            done = turns[worker] = turns.get(worker, 0) + 1
            reply = await client.ask(QUERY, thread_id=f"bench-{run}-{worker}-{done // TURNS_PER_THREAD}")
            _check(reply.answer)

        return turn, client.close

    return make


def _run_timings(log_text: str) -> str:
    """Median queue wait and execution time of the runs its log reports ("Background run succeeded" lines)."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", log_text)  # structlog colours its console output
    waits = [int(m) for m in re.findall(r"\brun_wait_time_ms=(\d+)", plain)]
    execs = [int(m) for m in re.findall(r"\brun_exec_ms=(\d+)", plain)]
    if not waits or not execs:
        return ""
    return f"per run p50: {statistics.median(waits):.0f} ms queued, {statistics.median(execs):.0f} ms executing"


def _check(answer: str) -> None:
    if answer != ANSWER:
        raise RuntimeError(f"unexpected answer {answer!r} (expected {ANSWER!r}): not the same graph?")


def _measure(make: MakeTurn, concurrency: int) -> float:
    async def once() -> float:
        turn, close = make()
        try:
            await turn(0)  # warm up: the connection, the first thread
            return await turns_per_second(turn, concurrency, SECONDS)
        finally:
            await close()

    return median_of(RUNS, lambda: asyncio.run(once()))


def main() -> list[str]:
    binary = agent_server_bin()
    try:
        import langgraph_sdk  # noqa: F401  (the client, in the venv running this script)
    except ImportError:
        binary = None
    if binary is None:
        print(f"agent_server.py skipped: the LangGraph Agent Server is not installed; {SKIP_HINT}")
        return []
    started = time.monotonic()
    logs = Path(tempfile.mkdtemp(prefix="threadline-bench-"))
    jobs = os.environ.get("BENCH_AGENT_SERVER_JOBS", "1")
    log_path = logs / "agent-server.log"
    theirs: dict[int, float] = {}
    timings: dict[int, str] = {}
    try:
        with agent_server(binary, log_path) as url:
            for c in CONCURRENCY:
                offset = log_path.stat().st_size
                theirs[c] = _measure(_agent_server_turn(url), c)
                with log_path.open("rb") as log:
                    log.seek(offset)
                    timings[c] = _run_timings(log.read().decode(errors="replace"))
    except NotInstalled as exc:
        print(f"agent_server.py skipped: {exc}; {SKIP_HINT}")
        return []
    ours: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for backend, database_url in (("memory://", "memory://"), ("SQLite", f"sqlite:///{Path(folder) / 'bench.db'}")):
            with server(database_url, logs) as process:
                for c in CONCURRENCY:
                    ours[(backend, c)] = _measure(_threadline_turn(process.address), c)
    rows: list[Row] = []
    for c in CONCURRENCY:
        name = f"c={c:<3} Agent Server dev, in-memory, {jobs} job(s): runs.wait"
        rows.append(Row(name, theirs[c], "turns/s", timings[c]))
        for backend in ("memory://", "SQLite"):
            value = ours[(backend, c)]
            note = f"{value / theirs[c]:.1f}x Agent Server"
            rows.append(Row(f"c={c:<3} Threadline over gRPC, {backend}: Ask", value, "turns/s", note))
    print_table(
        f"Threadline vs LangGraph Agent Server (tool turn, offline model; median of {RUNS} x {SECONDS:g}s;"
        f" {time.monotonic() - started:.0f}s in all)",
        rows,
    )
    return []


if __name__ == "__main__":
    main()
