"""Memory with many open streams: 1,000 concurrent StreamAsk calls held open by a slow model.

The local model server (its own process) streams 10 tokens 1 s apart, so every stream stays
open for about 10 s: a slow model (a reasoning model thinking, a long tool call) keeps calls
open without sending much. All 1,000 are open at once (the table prints how many were, at
most). The benchmark reads the Threadline server's peak resident memory (VmHWM) before and
after, and counts the calls that failed.

Why not faster tokens: one server process handles about 1,400 token events a second here
(langchain-openai's parsing of the model's SSE is 44% of its CPU, measured with py-spy). With
50 tokens 100 ms apart, 1,000 streams ask for 10,000 a second: calls then wait in gRPC's queue
instead of being open, and those not taken within gRPC core's 30 s limit are CANCELLED.

Target (benchmarks issue): 1,000 concurrent open StreamAsk calls with no error and server RSS <= 400 MB,
on SQLite and on PostgreSQL (its default pool of 10 connections: a turn holds its thread, not a connection).

Run alone: .venv/bin/python bench/open_streams.py   (BENCH_STREAMS to change the count)
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from harness import ROOT, Row, print_table, scratch_database, server, verdict, wait_for_quiet_machine

from tests.support import free_port
from threadline_client import AsyncThreadlineClient, ThreadlineError

STREAMS = int(os.environ.get("BENCH_STREAMS", "1000"))
TOKENS = 10
TOKEN_DELAY_MS = 1000
QUERY = " ".join(["word"] * (TOKENS - 2))  # the model server answers "You said: <query>": TOKENS tokens
API_KEY = "sk-bench"


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


async def _open_streams(address: str) -> tuple[int, int, float, int]:
    """(completed, failed, seconds, most open at once) for STREAMS concurrent StreamAsk calls."""
    # A few channels: one HTTP/2 connection caps its concurrent streams (100 by default in gRPC core).
    clients = [
        AsyncThreadlineClient(address, channel_options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(20)
    ]
    open_now = most_open = 0

    async def one(i: int) -> bool:
        nonlocal open_now, most_open
        tokens = 0
        try:
            async for event in clients[i % len(clients)].stream_ask(QUERY, timeout=120):
                if event.HasField("token"):
                    tokens += 1
                    if tokens == 1:
                        open_now += 1
                        most_open = max(most_open, open_now)
        finally:
            open_now -= tokens > 0
        return tokens == TOKENS

    started = time.monotonic()
    results = await asyncio.gather(*(one(i) for i in range(STREAMS)), return_exceptions=True)
    took = time.monotonic() - started
    for client in clients:
        await client.close()
    ok = sum(1 for r in results if r is True)
    kinds = Counter(_kind(r) for r in results if r is not True)
    for kind, count in kinds.most_common(5):
        print(f"  {count} failed: {kind}")
    return ok, len(results) - ok, took, most_open


def _kind(result: object) -> str:
    if isinstance(result, ThreadlineError):
        return f"{result.code.name} {result.reason}: {result.message[:160]}"
    return repr(result)[:200]


def main() -> list[str]:
    logs = Path(tempfile.mkdtemp(prefix="threadline-bench-"))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    model = subprocess.Popen(
        [sys.executable, "-m", "tests.model_server", "--port", str(port), "--token-delay-ms", str(TOKEN_DELAY_MS)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows: list[Row] = []
    verdicts: list[str] = []
    try:
        time.sleep(1.5)
        env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": base_url, "THREADLINE_MODEL": "test-model"}
        with scratch_database() as postgres_url:
            # PostgreSQL with its default pool of 10: a turn holds its thread, not a connection.
            for backend, url in (("SQLite", f"sqlite:///{logs / 'streams.db'}"), ("PostgreSQL", postgres_url)):
                wait_for_quiet_machine()
                with server(url, logs, **env) as process:
                    assert process.process is not None
                    pid = process.process.pid
                    idle_kib = _memory_kib(pid, "VmRSS")
                    ok, failed, took, most_open = asyncio.run(_open_streams(process.address))
                    peak_kib = _memory_kib(pid, "VmHWM")
                rows += [
                    Row(f"{backend}: server RSS idle", idle_kib / 1024, "MiB"),
                    Row(f"{backend}: server peak RSS with {STREAMS} open StreamAsk", peak_kib / 1024, "MiB"),
                    Row(
                        f"{backend}: streams completed",
                        ok,
                        "",
                        f"{failed} failed; {most_open} streaming at once at most; all done in {took:.1f} s",
                    ),
                ]
                verdicts.append(
                    verdict(
                        f"{STREAMS} concurrent open StreamAsk on {backend}, no error, RSS <= 400 MB",
                        failed == 0 and peak_kib <= 400 * 1024,
                        f"{failed} errors, peak {peak_kib / 1024:.0f} MiB",
                    )
                )
    finally:
        model.terminate()
        model.wait(10)
    print_table(f"{STREAMS} concurrent StreamAsk ({TOKENS} tokens, {TOKEN_DELAY_MS} ms apart)", rows)
    for line in verdicts:
        print(line)
    return verdicts


if __name__ == "__main__":
    main()
