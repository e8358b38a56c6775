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

Also printed: how long the calls waited for their first token (from the moment all were sent).
The model server sends its first token after 1 s; the rest is the server starting 1,000 turns.

Run alone: .venv/bin/python bench/open_streams.py   (BENCH_STREAMS to change the count,
BENCH_BACKENDS=postgres or sqlite for one backend)
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness import ROOT, Row, print_table, scratch_database, server, verdict, wait_for_quiet_machine

from tests.support import free_port
from threadline_client import AsyncThreadlineClient, ThreadlineError

STREAMS = int(os.environ.get("BENCH_STREAMS", "1000"))
TOKENS = 10
TOKEN_DELAY_MS = 1000
BACKENDS = [name.strip().lower() for name in os.environ.get("BENCH_BACKENDS", "sqlite,postgres").split(",")]
QUERY = " ".join(["word"] * (TOKENS - 2))  # the model server answers "You said: <query>": TOKENS tokens
API_KEY = "sk-bench"


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@dataclass
class Outcome:
    """What STREAMS concurrent StreamAsk calls gave."""

    completed: int
    failed: int
    seconds: float
    most_open: int
    first_token_s: list[float]
    """Seconds from the start of the burst to each successful call's first token, sorted."""

    def first_token(self, fraction: float) -> float:
        if not self.first_token_s:
            return float("nan")
        return self.first_token_s[min(len(self.first_token_s) - 1, int(fraction * len(self.first_token_s)))]


async def _open_streams(address: str) -> Outcome:
    """STREAMS concurrent StreamAsk calls, started together."""
    # A few channels: one HTTP/2 connection caps its concurrent streams (100 by default in gRPC core).
    clients = [
        AsyncThreadlineClient(address, channel_options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(20)
    ]
    open_now = most_open = 0
    first_tokens: list[float] = []

    async def one(i: int) -> bool:
        nonlocal open_now, most_open
        tokens = 0
        first_at = 0.0
        try:
            async for event in clients[i % len(clients)].stream_ask(QUERY, timeout=120):
                if event.HasField("token"):
                    tokens += 1
                    if tokens == 1:
                        first_at = time.monotonic() - started
                        open_now += 1
                        most_open = max(most_open, open_now)
        finally:
            open_now -= tokens > 0
        if tokens == TOKENS:
            first_tokens.append(first_at)
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
    return Outcome(ok, len(results) - ok, took, most_open, sorted(first_tokens))


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
            backends = [("SQLite", f"sqlite:///{logs / 'streams.db'}"), ("PostgreSQL", postgres_url)]
            for backend, url in [b for b in backends if b[0].lower().startswith(tuple(BACKENDS))]:
                wait_for_quiet_machine()
                with server(url, logs, **env) as process:
                    assert process.process is not None
                    pid = process.process.pid
                    idle_kib = _memory_kib(pid, "VmRSS")
                    outcome = asyncio.run(_open_streams(process.address))
                    peak_kib = _memory_kib(pid, "VmHWM")
                rows += [
                    Row(f"{backend}: server RSS idle", idle_kib / 1024, "MiB"),
                    Row(f"{backend}: server peak RSS with {STREAMS} open StreamAsk", peak_kib / 1024, "MiB"),
                    Row(
                        f"{backend}: streams completed",
                        outcome.completed,
                        "",
                        f"{outcome.failed} failed; {outcome.most_open} streaming at once at most; "
                        f"all done in {outcome.seconds:.1f} s",
                    ),
                    Row(
                        f"{backend}: first token, p50 of the burst",
                        outcome.first_token(0.5),
                        "s",
                        f"p90 {outcome.first_token(0.9):.1f} s, last {outcome.first_token(1.0):.1f} s "
                        f"(the model's first token comes after {TOKEN_DELAY_MS / 1000:.0f} s)",
                    ),
                ]
                verdicts.append(
                    verdict(
                        f"{STREAMS} concurrent open StreamAsk on {backend}, no error, RSS <= 400 MB",
                        outcome.failed == 0 and peak_kib <= 400 * 1024,
                        f"{outcome.failed} errors, peak {peak_kib / 1024:.0f} MiB",
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
