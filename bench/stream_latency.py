"""StreamAsk time to first token: Threadline over gRPC against the same graph streamed in process.

A local OpenAI-compatible model server (tests/model_server.py, its own process) streams
50 tokens 20 ms apart for every request; the default agent reaches it through
langchain-openai. The in-process baseline runs the same graph on the same kind of
checkpointer with `astream(stream_mode="messages")`; Threadline is called with
StreamAsk over loopback gRPC. Time to first token (TTFT) runs from the call to the
first text token; at concurrency C, C turns start together, each on a thread of its own.

Targets (issues: streaming, benchmarks): at concurrency 200 every stream completes with
no error; the TTFT overhead over in-process is <= 2 ms at p50 and <= 10 ms at p99 at
concurrency 32.

Run alone: .venv/bin/python bench/stream_latency.py
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from harness import ROOT, RUNS, Row, print_table, server, verdict
from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import SecretStr

from tests.support import free_port
from threadline.engine.graphs import default_agent
from threadline.engine.tools import default_tools
from threadline_client import AsyncThreadlineClient

TOKENS = 50
TOKEN_DELAY_MS = 20
# The model server answers "You said: <query>": 48 words make a 50-token answer, with no digits (no tool call).
QUERY = " ".join(["word"] * (TOKENS - 2))
CONCURRENCY = (1, 32, 200)
SAMPLES_AT_ONE = 20
API_KEY = "sk-bench"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _wave(first_token: Callable[[], Awaitable[float]], concurrency: int) -> tuple[list[float], int]:
    """TTFTs (ms) of `concurrency` turns started together (or SAMPLES_AT_ONE in a row at 1), and the error count."""
    if concurrency == 1:
        results: list[float | BaseException] = []
        for _ in range(SAMPLES_AT_ONE):
            results.extend(await asyncio.gather(first_token(), return_exceptions=True))
    else:
        results = list(await asyncio.gather(*(first_token() for _ in range(concurrency)), return_exceptions=True))
    ttfts = [r for r in results if isinstance(r, float)]
    return ttfts, len(results) - len(ttfts)


def _in_process(base_url: str) -> Callable[[], Awaitable[float]]:
    model = ChatOpenAI(model="test-model", api_key=SecretStr(API_KEY), base_url=base_url, max_retries=0)
    graph = default_agent(model, default_tools()).compile(checkpointer=InMemorySaver())

    async def first_token() -> float:
        config: Any = {"configurable": {"thread_id": uuid.uuid4().hex}}
        started = time.perf_counter()
        ttft = None
        async for chunk, _ in graph.astream({"messages": [("human", QUERY)]}, config, stream_mode="messages"):
            if ttft is None and isinstance(chunk, AIMessageChunk) and chunk.content:
                ttft = (time.perf_counter() - started) * 1000
        assert ttft is not None
        return ttft

    return first_token


def _over_grpc(client: AsyncThreadlineClient) -> Callable[[], Awaitable[float]]:
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


async def _measure(
    make: Callable[[], tuple[Callable[[], Awaitable[float]], Callable[[], Awaitable[None]]]], c: int
) -> Any:
    # One event loop for everything: langchain-openai caches its HTTP client per process.
    async def once() -> tuple[list[float], int]:
        first_token, close = make()
        try:
            await first_token()  # warm up: connections, imports
            return await _wave(first_token, c)
        finally:
            await close()

    runs = [await once() for _ in range(RUNS)]
    p50 = statistics.median(_percentile(t, 50) for t, _ in runs)
    p99 = statistics.median(_percentile(t, 99) for t, _ in runs)
    return p50, p99, sum(e for _, e in runs)


async def _compare(address: str, base_url: str) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    verdicts = []

    async def noop() -> None:
        return None

    def grpc_pair() -> tuple[Callable[[], Awaitable[float]], Callable[[], Awaitable[None]]]:
        client = AsyncThreadlineClient(address)
        return _over_grpc(client), client.close

    for c in CONCURRENCY:
        base = await _measure(lambda: (_in_process(base_url), noop), c)
        over = await _measure(grpc_pair, c)
        overhead = (over[0] - base[0], over[1] - base[1])
        rows.append(Row(f"c={c:<3} in-process astream  TTFT p50", base[0], "ms", f"p99 {base[1]:.1f} ms"))
        rows.append(
            Row(
                f"c={c:<3} StreamAsk over gRPC TTFT p50",
                over[0],
                "ms",
                f"p99 {over[1]:.1f} ms; overhead p50 {overhead[0]:+.1f} ms, p99 {overhead[1]:+.1f} ms;"
                f" errors {over[2]}",
            )
        )
        if c == 32:
            verdicts.append(
                verdict(
                    "TTFT overhead at c=32 <= 2 ms p50 and <= 10 ms p99",
                    overhead[0] <= 2 and overhead[1] <= 10,
                    f"p50 {overhead[0]:+.1f} ms, p99 {overhead[1]:+.1f} ms",
                )
            )
        if c == 200:
            verdicts.append(verdict("200 concurrent StreamAsk with no error", over[2] == 0, f"{over[2]} errors"))
    return rows, verdicts


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
        env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": base_url, "THREADLINE_MODEL": "test-model"}
        with server("memory://", logs, **env) as process:
            rows, verdicts = asyncio.run(_compare(process.address, base_url))
    finally:
        model_server.terminate()
        model_server.wait(10)
    print_table(f"StreamAsk time to first token ({TOKENS} tokens, {TOKEN_DELAY_MS} ms apart; median of {RUNS})", rows)
    for line in verdicts:
        print(line)
    return verdicts


if __name__ == "__main__":
    main()
