"""StreamAsk time to first token: Threadline over gRPC against the same graph streamed in process.

A local OpenAI-compatible model server (tests/model_server.py, its own process) streams
50 tokens 20 ms apart for every request; the default agent reaches it through
langchain-openai. The in-process baseline runs the graph the server builds from the same
settings (same model client options), on InMemorySaver, with
`astream(stream_mode="messages")`; Threadline is called with StreamAsk over loopback gRPC
to a server on `memory://`. Time to first token (TTFT) runs from the call to the first
text token, as the caller sees it; every turn is on a thread of its own, and every
stream is read to its end.

Two load shapes, both printed:

- Closed loop at concurrency C, which is what "TTFT at concurrency C" means here (a
  service with C callers): C workers each start a new stream as soon as their previous
  one ended. Their first starts are spread over one stream's length (a ramp-up), so
  streams begin at a steady rate rather than all at once; streams started in the first
  WARMUP_S seconds are not sampled, every stream started in the next MEASURE_S seconds
  is (at C=32 about 30 a second, so p99 rests on a couple of hundred samples per run).
- Burst at concurrency C: C turns start at the same instant (a thundering herd), so TTFT
  is mostly queueing behind C turn set-ups on one event loop, and p99 of C samples is
  their maximum. The 200-stream burst is the no-error check.

Beside the c=1 rows, the transport alone (bench/grpc_floor.py): the time to the first message
of a bare grpc.aio StreamAsk handler that writes a token at once, called by the same client,
each call 20 ms after the processes last had work, as the c=1 streams start. Any gRPC
streaming call pays it, whatever its handler does; it is not subtracted from the c=1 overhead,
whose 6 samples a run move it by about a millisecond from run to run.

Each figure is the median over BENCH_RUNS runs of that run's percentile; within a run
the in-process and gRPC measurements alternate, so both see the same machine.

Targets (issues: streaming, benchmarks): in the 200-stream burst every stream completes
with no error; the closed-loop TTFT overhead over in-process is <= 2 ms at p50 and
<= 10 ms at p99 at concurrency 32.

Run alone: .venv/bin/python bench/stream_latency.py   (BENCH_RUNS; BENCH_STREAM_SECONDS sets MEASURE_S;
BENCH_STREAM_BACKEND=postgres compares on PostgreSQL, against the stock AsyncPostgresSaver;
BENCH_MODEL_HTTP_CLIENT=httpx runs both sides on langchain-openai's own HTTP client;
BENCH_EVENT_LOOP=asyncio runs both sides on asyncio's loop instead of the server's default, uvloop)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg_pool
from grpc_floor import bare_server, first_message_ms
from harness import (
    ROOT,
    RUNS,
    SERVER_EVENT_LOOP,
    Row,
    percentile,
    print_table,
    process_cpu_s,
    run_on_loop,
    scratch_database,
    server,
    server_collector_settings,
    verdict,
    wait_for_quiet_machine,
)
from langchain_core.messages import AIMessageChunk
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg.rows import dict_row

from tests.support import free_port
from threadline.agent.graphs import open_graph_builder
from threadline.config import Settings
from threadline_client import AsyncThreadlineClient

TOKENS = 50
TOKEN_DELAY_MS = 20
STREAM_S = TOKENS * TOKEN_DELAY_MS / 1000  # how long one stream lasts, about
# The model server answers "You said: <query>": 48 words make a 50-token answer, with no digits (no tool call).
QUERY = " ".join(["word"] * (TOKENS - 2))
CLOSED_LOOP = (1, 32)
BURSTS = (200,)  # the no-error check; a 32-stream burst was dropped to keep `make bench` under 10 minutes
TARGET_CONCURRENCY = 32
WARMUP_S = 2.0
MEASURE_S = float(os.environ.get("BENCH_STREAM_SECONDS", "6"))
API_KEY = "sk-bench"
MODEL = "test-model"
# memory:// (the default, in `make bench`) or postgres: the server on a scratch PostgreSQL
# database with its default pool of 10, against the stock AsyncPostgresSaver (durability
# async, pool of 10) in process.
BACKEND = os.environ.get("BENCH_STREAM_BACKEND", "memory")
# The model's HTTP client on both sides (THREADLINE_MODEL_HTTP_CLIENT): aiohttp, the default, or httpx.
MODEL_HTTP_CLIENT = os.environ.get("BENCH_MODEL_HTTP_CLIENT", "aiohttp")
SATURATED = 0.85  # a process this busy (share of a core) queues work: its TTFT is mostly waiting
STOCK_CONNECTION_KWARGS = {"autocommit": True, "row_factory": dict_row, "prepare_threshold": 0}

FirstToken = Callable[[], Awaitable[float]]
Close = Callable[[], Awaitable[None]]
Factory = Callable[[], Awaitable[tuple[FirstToken, Close]]]


@dataclass(frozen=True)
class Sample:
    """One run's TTFTs (ms), failed streams, and streams read to their end (warm-up ones too)."""

    ttfts: list[float]
    errors: int
    streams: int


@dataclass(frozen=True)
class Run:
    """A sample and the CPU its load cost: this bench process (the client, or all of the in-process
    baseline) and the server process, over the load's wall time. At c=32 the closed loop offers
    1,600 tokens a second; a process near 100% of a core is saturated, and TTFT then measures its queue."""

    sample: Sample
    wall_s: float
    bench_cpu_s: float
    server_cpu_s: float

    def per_token_us(self, cpu_s: float) -> float:
        return cpu_s / max(1, self.sample.streams * TOKENS) * 1e6


async def _burst(first_token: FirstToken, concurrency: int) -> Sample:
    """`concurrency` turns started at the same instant."""
    results = await asyncio.gather(*(first_token() for _ in range(concurrency)), return_exceptions=True)
    ttfts = [r for r in results if isinstance(r, float)]
    return Sample(ttfts, len(results) - len(ttfts), len(ttfts))


async def _closed_loop(first_token: FirstToken, concurrency: int) -> Sample:
    """`concurrency` workers, each starting a stream as soon as its last one ended (see the module docstring)."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    sample_from, stop_at = began + WARMUP_S, began + WARMUP_S + MEASURE_S
    ttfts: list[float] = []
    errors = streams = 0

    async def worker(index: int) -> None:
        nonlocal errors, streams
        await asyncio.sleep(index * STREAM_S / concurrency)
        while (started := loop.time()) < stop_at:
            try:
                ttft = await first_token()
            except Exception:
                errors += 1
                continue
            streams += 1
            if started >= sample_from:
                ttfts.append(ttft)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return Sample(ttfts, errors, streams)


async def _in_process(base_url: str, saver: BaseCheckpointSaver[Any]) -> tuple[FirstToken, Close]:
    """The server's graph, built from the same settings, and what closes its model's connections."""
    settings = Settings(
        openai_api_key=API_KEY, openai_base_url=base_url, model=MODEL, model_http_client=MODEL_HTTP_CLIENT
    )
    resources = AsyncExitStack()
    graph = (await resources.enter_async_context(open_graph_builder(settings.agent))).compile(checkpointer=saver)

    async def first_token() -> float:
        config: Any = {"configurable": {"thread_id": uuid.uuid4().hex}}
        started = time.perf_counter()
        ttft = None
        tokens = 0
        async for chunk, _ in graph.astream({"messages": [("human", QUERY)]}, config, stream_mode="messages"):
            if isinstance(chunk, AIMessageChunk) and chunk.content:
                tokens += 1
                if ttft is None:
                    ttft = (time.perf_counter() - started) * 1000
        assert ttft is not None and tokens == TOKENS, tokens
        return ttft

    return first_token, resources.aclose


def _over_grpc(client: AsyncThreadlineClient) -> FirstToken:
    async def first_token() -> float:
        started = time.perf_counter()
        ttft = None
        tokens = 0
        async for event in client.stream_ask(QUERY, timeout=120):
            if event.HasField("token"):
                tokens += 1
                if ttft is None:
                    ttft = (time.perf_counter() - started) * 1000
        assert ttft is not None and tokens == TOKENS, tokens
        return ttft

    return first_token


async def _once(make: Factory, shape: Callable[[FirstToken, int], Awaitable[Sample]], c: int, server_pid: int) -> Run:
    await asyncio.to_thread(wait_for_quiet_machine)
    first_token, close = await make()
    try:
        await first_token()  # warm up: connections, imports
        began, bench_cpu, server_cpu = time.monotonic(), time.process_time(), process_cpu_s(server_pid)
        sample = await shape(first_token, c)
        return Run(
            sample,
            wall_s=time.monotonic() - began,
            bench_cpu_s=time.process_time() - bench_cpu,
            server_cpu_s=process_cpu_s(server_pid) - server_cpu,
        )
    finally:
        await close()


@dataclass(frozen=True)
class Figures:
    """Medians over the runs of each run's p50 and p99, samples, CPU per token and busy share; all errors."""

    p50: float
    p99: float
    samples: int
    errors: int
    bench_us_per_token: float
    server_us_per_token: float
    bench_busy: float
    server_busy: float

    @classmethod
    def of(cls, runs: list[Run]) -> Figures:
        measured = [r.sample for r in runs if r.sample.ttfts]
        return cls(
            p50=statistics.median(percentile(r.ttfts, 50) for r in measured) if measured else float("nan"),
            p99=statistics.median(percentile(r.ttfts, 99) for r in measured) if measured else float("nan"),
            samples=round(statistics.median(len(r.sample.ttfts) for r in runs)),
            errors=sum(r.sample.errors for r in runs),
            bench_us_per_token=statistics.median(r.per_token_us(r.bench_cpu_s) for r in runs),
            server_us_per_token=statistics.median(r.per_token_us(r.server_cpu_s) for r in runs),
            bench_busy=statistics.median(r.bench_cpu_s / r.wall_s for r in runs),
            server_busy=statistics.median(r.server_cpu_s / r.wall_s for r in runs),
        )


FLOOR_CALLS = 40


async def _floor(address: str) -> tuple[float, float]:
    """One run's p50 and p99 (ms) of the bare handler's first message (see the module docstring).

    Run right after a c=1 run, which leaves the machine as quiet as it found it: no wait for it to settle.
    """
    async with AsyncThreadlineClient(address) as client:
        await first_message_ms(client, 5)  # warm up: the channel
        times = await first_message_ms(client, FLOOR_CALLS)
    return percentile(times, 50), percentile(times, 99)


async def _compare(
    address: str, floor_address: str, base_url: str, saver: Callable[[], BaseCheckpointSaver[Any]], server_pid: int
) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    verdicts = []

    async def in_process() -> tuple[FirstToken, Close]:
        return await _in_process(base_url, saver())

    async def grpc_pair() -> tuple[FirstToken, Close]:
        client = AsyncThreadlineClient(address)
        return _over_grpc(client), client.close

    plan: list[tuple[str, Callable[[FirstToken, int], Awaitable[Sample]], int]] = [
        *(("closed loop", _closed_loop, c) for c in CLOSED_LOOP),
        *(("burst", _burst, c) for c in BURSTS),
    ]
    # One event loop for everything: with the httpx client, langchain-openai caches it per process.
    for shape_name, shape, c in plan:
        base_runs: list[Run] = []
        over_runs: list[Run] = []
        floor_runs: list[tuple[float, float]] = []
        floor_too = shape is _closed_loop and c == 1
        for _ in range(RUNS):  # alternating, so both sides see the same machine
            base_runs.append(await _once(in_process, shape, c, server_pid))
            over_runs.append(await _once(grpc_pair, shape, c, server_pid))
            if floor_too:
                floor_runs.append(await _floor(floor_address))
        base, over = Figures.of(base_runs), Figures.of(over_runs)
        overhead = (over.p50 - base.p50, over.p99 - base.p99)
        label = f"{shape_name:<11} c={c:<3}"
        base_cpu = over_cpu = ""
        if shape is _closed_loop:
            base_cpu = f"; cpu/token {base.bench_us_per_token:.0f} us, process busy {base.bench_busy:.0%}"
            over_cpu = (
                f"; cpu/token server {over.server_us_per_token:.0f} + client {over.bench_us_per_token:.0f} us,"
                f" server busy {over.server_busy:.0%}"
            )
        rows.append(
            Row(
                f"{label} in-process astream  TTFT p50",
                base.p50,
                "ms",
                f"p99 {base.p99:.1f} ms; {base.samples} samples/run; errors {base.errors}{base_cpu}",
            )
        )
        rows.append(
            Row(
                f"{label} StreamAsk over gRPC TTFT p50",
                over.p50,
                "ms",
                f"p99 {over.p99:.1f} ms; {over.samples} samples/run; overhead p50 {overhead[0]:+.1f} ms,"
                f" p99 {overhead[1]:+.1f} ms; errors {over.errors}{over_cpu}",
            )
        )
        if floor_runs:
            rows.append(
                Row(
                    f"{label} bare grpc.aio handler first msg p50",
                    statistics.median(p50 for p50, _ in floor_runs),
                    "ms",
                    f"p99 {statistics.median(p99 for _, p99 in floor_runs):.1f} ms; {FLOOR_CALLS} calls/run;"
                    " the transport alone: a handler that writes a token at once, same client",
                )
            )
        if shape is _closed_loop and c == TARGET_CONCURRENCY:
            verdicts.append(
                verdict(
                    f"closed-loop TTFT overhead at c={c} on {BACKEND} <= 2 ms p50 and <= 10 ms p99",
                    overhead[0] <= 2 and overhead[1] <= 10 and over.errors == 0,
                    f"p50 {overhead[0]:+.1f} ms, p99 {overhead[1]:+.1f} ms (server busy {over.server_busy:.0%}"
                    f" of a core at {over.server_us_per_token:.0f} us/token; in process {base.bench_busy:.0%} at"
                    f" {base.bench_us_per_token:.0f} us/token{_queue_note(over.server_busy, base.bench_busy)})",
                )
            )
        if shape is _burst and c == 200:
            verdicts.append(
                verdict("200 concurrent StreamAsk (burst) with no error", over.errors == 0, f"{over.errors} errors")
            )
    return rows, verdicts


def _queue_note(*busy: float) -> str:
    """Said when a side ran near a full core: its TTFT then measures a queue, not the path."""
    return ": near 100%, TTFT measures a queue" if max(busy) >= SATURATED else ""


@contextmanager
def _database() -> Iterator[str]:
    if BACKEND == "postgres":
        with scratch_database() as url:
            yield url
    else:
        yield "memory://"


async def _against(
    address: str, floor_address: str, server_pid: int, base_url: str, url: str
) -> tuple[list[Row], list[str]]:
    """The comparison against the stock saver of the server's backend (both use the same database)."""
    if BACKEND != "postgres":
        return await _compare(address, floor_address, base_url, InMemorySaver, server_pid)
    pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
        url, min_size=10, max_size=10, open=False, kwargs=STOCK_CONNECTION_KWARGS
    )
    await pool.open(wait=True)
    try:
        return await _compare(address, floor_address, base_url, lambda: AsyncPostgresSaver(pool), server_pid)
    finally:
        await pool.close()


def main() -> list[str]:
    logs = Path(tempfile.mkdtemp(prefix="threadline-bench-"))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    model_server = subprocess.Popen(
        [sys.executable, "-m", "tests.model_server", "--port", str(port), "--token-delay-ms", str(TOKEN_DELAY_MS)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.5)
        env = {
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": base_url,
            "THREADLINE_MODEL": MODEL,
            "THREADLINE_MODEL_HTTP_CLIENT": MODEL_HTTP_CLIENT,
        }
        # This process runs the in-process baseline (and the gRPC client) with the garbage
        # collector settings and on the event loop the server runs with: the overhead measured
        # is the service's, not a difference in garbage collection (untuned, this process's own
        # collections put 60-120 ms on the baseline's p99) or in event loops.
        with (
            _database() as url,
            server(url, logs, **env) as process,
            bare_server(hold_ms=TOKEN_DELAY_MS) as floor_address,
            server_collector_settings(),
        ):
            assert process.process is not None
            comparison = _against(process.address, floor_address, process.process.pid, base_url, url)
            rows, verdicts = run_on_loop(comparison, SERVER_EVENT_LOOP)
    finally:
        model_server.terminate()
        model_server.wait(10)
    print_table(
        f"StreamAsk time to first token on {BACKEND} ({TOKENS} tokens, {TOKEN_DELAY_MS} ms apart;"
        f" closed loop: {MEASURE_S:g} s after {WARMUP_S:g} s warm-up; median of {RUNS}; both sides on"
        f" {SERVER_EVENT_LOOP})",
        rows,
    )
    for line in verdicts:
        print(line)
    return verdicts


if __name__ == "__main__":
    main()
