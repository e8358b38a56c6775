"""Cancelled streams leak nothing: 10,000 StreamAsk calls cancelled by their client after the first token.

grpc/grpc issue 43360 describes a native leak in grpc.aio server-streaming handlers that catch
CancelledError, or whose client cancels mid-receive. The server here serves the offline model on
SQLite with a token delay, so every call is cancelled while tokens still flow. Measured: the
server's RSS and asyncio task count (its SIGUSR1 "runtime stats" line) before, after a warm-up,
and after the soak, once the server has settled.

Targets (issue: hardening): RSS after within 20 MB of after the warm-up; tasks back where they were.

Run alone: .venv/bin/python bench/cancelled_streams.py   (BENCH_CANCELLED_STREAMS to change the count)
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import tempfile
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, cast

from harness import Row, print_table, run_on_loop, server, verdict

from threadline_client import AsyncThreadlineClient

CALLS = int(os.environ.get("BENCH_CANCELLED_STREAMS", "10000"))
WARM_UP = 500
CONCURRENCY = 50
RSS_TARGET_KIB = 20 * 1024
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


async def cancel_after_first_token(address: str, calls: int) -> int:
    """`calls` StreamAsk calls, CONCURRENCY at a time, each cancelled once its first event is in; the number done."""
    done = 0
    async with AsyncThreadlineClient(address) as client:

        async def one(thread_id: str) -> None:
            nonlocal done
            # The client's streaming methods are async generators; closing one cancels its call.
            events = client.stream_ask("Tell me a long story about " + "words " * 40, thread_id=thread_id)
            stream = cast(AsyncGenerator[Any, None], events)
            async for _ in stream:
                break
            await stream.aclose()
            done += 1

        async def worker(index: int, share: int) -> None:
            for _ in range(share):
                await one(f"soak-{index}" if REUSE_THREADS else "")

        await asyncio.gather(*(worker(index, calls // CONCURRENCY) for index in range(CONCURRENCY)))
    return done


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {"THREADLINE_OFFLINE_TOKEN_DELAY_MS": "5", "THREADLINE_LOG_LEVEL": "INFO"}
        with server(f"sqlite:///{folder / 'threadline.db'}", folder, **env) as process:
            assert process.process is not None
            pid = process.process.pid
            start_rss, start_tasks = rss_kib(pid), tasks(process, process.log_path)
            run_on_loop(cancel_after_first_token(process.address, WARM_UP))
            time.sleep(2)  # the last cancelled turns end; the collector runs
            warm_rss, warm_tasks = rss_kib(pid), tasks(process, process.log_path)
            began = time.monotonic()
            cancelled = run_on_loop(cancel_after_first_token(process.address, CALLS))
            seconds = time.monotonic() - began
            time.sleep(2)
            end_rss, end_tasks = rss_kib(pid), tasks(process, process.log_path)
            errors = process.log().count(" ERROR ")
    rows = [
        Row("RSS at start", start_rss / 1024, "MiB"),
        Row(f"RSS after {WARM_UP} warm-up calls", warm_rss / 1024, "MiB"),
        Row(f"RSS after {cancelled} cancelled calls", end_rss / 1024, "MiB", f"{(end_rss - warm_rss) / 1024:+.1f} MiB"),
        Row("tasks at start / warm / end", start_tasks, "", f"{warm_tasks} / {end_tasks}"),
        Row("calls per second", cancelled / seconds, "calls/s"),
        Row("ERROR lines in the server log", errors, ""),
    ]
    print_table(f"{cancelled} StreamAsk calls cancelled after their first token (SQLite, offline model)", rows)
    print(verdict("RSS within 20 MB", end_rss - warm_rss <= RSS_TARGET_KIB, f"{(end_rss - warm_rss) / 1024:+.1f} MiB"))
    print(verdict("tasks back where they were", end_tasks <= warm_tasks, f"{warm_tasks} -> {end_tasks}"))


if __name__ == "__main__":
    main()
