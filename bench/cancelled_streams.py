"""Cancelled streams leak nothing: 10,000 StreamAsk calls cancelled by their client after the first token.

grpc/grpc issue 43360 describes a native leak in grpc.aio server-streaming handlers that catch
CancelledError, or whose client cancels mid-receive. The server here serves the offline model on
SQLite with a token delay, so every call is cancelled while tokens still flow. Measured: the
server's RSS and asyncio task count (its SIGUSR1 "runtime stats" line) at start, after a warm-up,
at each fifth of the soak, and after it, once the server has settled.

A fresh process grows to a plateau as the allocators reach the high-water mark of CONCURRENCY
turns in flight (freed memory stays with the process); a leak keeps growing after it. So the
warm-up is rounds of the same load until one round adds less than WARM_UP_SETTLED_KIB, and the
soak that follows is judged against where the warm-up left the server.

Targets (issue: hardening): RSS after the soak within 20 MB of after the warm-up; tasks back where
they were.

Run alone: .venv/bin/python bench/cancelled_streams.py   (BENCH_CANCELLED_STREAMS to change the count)
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import Row, print_table, run_on_loop, server, verdict

from threadline_client import AsyncThreadlineClient

CALLS = int(os.environ.get("BENCH_CANCELLED_STREAMS", "10000"))
WARM_UP_ROUND = 1000
WARM_UP_MAX_ROUNDS = 10
WARM_UP_SETTLED_KIB = 2 * 1024
SOAK_SAMPLES = 5
CONCURRENCY = 50
RSS_TARGET_KIB = 20 * 1000 * 1000 // 1024
"""20 MB, in KiB."""
REUSE_THREADS = os.environ.get("BENCH_REUSE_THREADS", "") == "1"
"""1: each worker cancels its calls on one thread of its own; default: every call starts a thread."""
STATS = re.compile(r"runtime stats: tasks=(\d+) fds=(\d+) sockets=(\d+)")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise KeyError("VmRSS")


def tasks(process: object, log: Path) -> int:
    """The server's asyncio task count, from the line SIGUSR1 makes it log."""
    seen = len(STATS.findall(log.read_text()))
    process.signal(signal.SIGUSR1)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = STATS.findall(log.read_text())
        if len(found) > seen:
            return int(found[-1][0])
        time.sleep(0.05)
    raise TimeoutError("no runtime stats line")


async def cancel_after_first_token(client: AsyncThreadlineClient, calls: int) -> int:
    """`calls` StreamAsk calls, CONCURRENCY at a time, each cancelled once its first event is in; the number done."""
    done = 0

    async def one(thread_id: str) -> None:
        nonlocal done
        # The client's streaming methods are async generators; closing one cancels its call.
        stream = client.stream_ask("Tell me a long story about " + "words " * 40, thread_id=thread_id)
        async for _ in stream:
            break
        await stream.aclose()
        done += 1

    async def worker(index: int, share: int) -> None:
        for _ in range(share):
            await one(f"soak-{index}" if REUSE_THREADS else "")

    await asyncio.gather(*(worker(index, calls // CONCURRENCY) for index in range(CONCURRENCY)))
    return done


async def settle() -> None:
    """The last cancelled turns end and the collector runs."""
    await asyncio.sleep(2)


@dataclass
class Soak:
    """What the soak measured: RSS in KiB, asyncio tasks, calls."""

    start_rss: int
    start_tasks: int
    warm_up_calls: int = 0
    settled: bool = False
    warm_rss: int = 0
    warm_tasks: int = 0
    calls: int = 0
    seconds: float = 0.0
    samples: list[int] = field(default_factory=list)
    end_rss: int = 0
    end_tasks: int = 0


async def soak(process: Any) -> Soak:
    """Warm-up rounds until RSS settles, then the soak in fifths, all on one client connection.

    One channel for the whole run, as a real client keeps: what lives as long as a connection
    (grpc issue 43360 is such a leak) is not freed between the samples.
    """
    pid = process.process.pid
    figures = Soak(rss_kib(pid), tasks(process, process.log_path))
    async with AsyncThreadlineClient(process.address) as client:
        before = figures.start_rss
        for _ in range(WARM_UP_MAX_ROUNDS):
            figures.warm_up_calls += await cancel_after_first_token(client, WARM_UP_ROUND)
            await settle()
            after = rss_kib(pid)
            if after - before < WARM_UP_SETTLED_KIB:
                figures.settled = True
                break
            before = after
        figures.warm_rss, figures.warm_tasks = rss_kib(pid), tasks(process, process.log_path)
        for _ in range(SOAK_SAMPLES):
            began = time.monotonic()
            figures.calls += await cancel_after_first_token(client, CALLS // SOAK_SAMPLES)
            figures.seconds += time.monotonic() - began
            await settle()
            figures.samples.append(rss_kib(pid))
        figures.end_rss, figures.end_tasks = rss_kib(pid), tasks(process, process.log_path)
    return figures


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {"THREADLINE_OFFLINE_TOKEN_DELAY_MS": "5", "THREADLINE_LOG_LEVEL": "INFO"}
        with server(f"sqlite:///{folder / 'threadline.db'}", folder, **env) as process:
            assert process.process is not None
            figures = run_on_loop(soak(process))
            errors = process.log().count(" ERROR ")
    growth = figures.end_rss - figures.warm_rss
    warm_growth, total_growth = figures.warm_rss - figures.start_rss, figures.end_rss - figures.start_rss
    rows = [
        Row("RSS at start", figures.start_rss / 1024, "MiB"),
        Row(
            f"RSS after {figures.warm_up_calls} warm-up calls",
            figures.warm_rss / 1024,
            "MiB",
            f"{warm_growth / 1024:+.1f} MiB from the start",
        ),
        Row(
            "RSS at each fifth of the soak",
            figures.samples[-1] / 1024,
            "MiB",
            " ".join(f"{(sample - figures.warm_rss) / 1024:+.1f}" for sample in figures.samples),
        ),
        Row(
            f"RSS after {figures.calls} cancelled calls",
            figures.end_rss / 1024,
            "MiB",
            f"{growth / 1024:+.1f} MiB from the warm-up, {total_growth / 1024:+.1f} from the start",
        ),
        Row("tasks at start / warm / end", figures.start_tasks, "", f"{figures.warm_tasks} / {figures.end_tasks}"),
        Row("calls per second", figures.calls / figures.seconds, "calls/s"),
        Row("ERROR lines in the server log", errors, ""),
    ]
    cancelled, warm_tasks, end_tasks = figures.calls, figures.warm_tasks, figures.end_tasks
    print_table(f"{cancelled} StreamAsk calls cancelled after their first token (SQLite, offline model)", rows)
    print(verdict("the warm-up settled", figures.settled, f"{WARM_UP_MAX_ROUNDS} rounds at most"))
    print(verdict("RSS within 20 MB", growth <= RSS_TARGET_KIB, f"{growth / 1024:+.1f} MiB"))
    print(verdict("tasks back where they were", end_tasks <= warm_tasks, f"{warm_tasks} -> {end_tasks}"))


if __name__ == "__main__":
    main()
