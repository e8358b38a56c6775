"""What every benchmark shares: a scratch PostgreSQL database, server processes, load loops, tables.

Figures are medians of several runs; each benchmark measures Threadline over real gRPC
on loopback and an in-process baseline in the same run, and prints their ratio.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.support (server processes) when run as a script

from tests.support import ServerProcess, server_env  # noqa: E402
from threadline import collector  # noqa: E402
from threadline.config import Settings  # noqa: E402
from threadline.event_loop import loop_factory  # noqa: E402

T = TypeVar("T")

ADMIN_URL = os.environ.get("THREADLINE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))

# The event loop of the servers a bench starts (THREADLINE_EVENT_LOOP; BENCH_EVENT_LOOP=asyncio
# for A/Bs): where a bench runs an in-process side with the server's runtime settings, it runs
# it on this loop too.
SERVER_EVENT_LOOP = os.environ.get("BENCH_EVENT_LOOP", Settings().event_loop)


@contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one benchmark, dropped afterwards."""
    name = f"threadline_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(ADMIN_URL)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def server(database_url: str, log_dir: Path, **env: str) -> Iterator[ServerProcess]:
    """A Threadline server process on a free loopback port."""
    settings = {"THREADLINE_LOG_LEVEL": "WARNING", "THREADLINE_EVENT_LOOP": SERVER_EVENT_LOOP, **env}
    with ServerProcess(database_url, log_dir, env=server_env(**settings)) as process:
        yield process


_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (0 once it is gone; Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def _cpu_times() -> tuple[int, int]:
    """(all, idle) jiffies of the whole machine since boot, from /proc/stat (Linux)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    return sum(fields), fields[3] + fields[4]  # idle + iowait


def wait_for_quiet_machine(busy_below: float = 0.10, timeout_s: float = 60.0, window_s: float = 0.5) -> None:
    """Waits until the machine's CPUs are idle for two windows in a row (or timeout_s passed).

    What one benchmark leaves behind (PostgreSQL writing out and vacuuming what it did,
    processes shutting down) would otherwise land on the next one's first measurement; on
    2 cores, the three processes of a gRPC measurement suffer more from a lost core than the
    one process of its in-process baseline. Says so when it waited or gave up.
    """
    if not os.path.exists("/proc/stat"):
        return
    started = time.monotonic()
    quiet_windows = 0
    busy = 0.0
    while quiet_windows < 2 and time.monotonic() - started < timeout_s:
        total_0, idle_0 = _cpu_times()
        time.sleep(window_s)
        total_1, idle_1 = _cpu_times()
        busy = 1 - (idle_1 - idle_0) / max(1, total_1 - total_0)
        quiet_windows = quiet_windows + 1 if busy < busy_below else 0
    waited = time.monotonic() - started
    if quiet_windows < 2:
        print(f"  (the machine did not settle within {timeout_s:g} s: {busy:.0%} busy; measuring anyway)")
    elif waited > 2 * window_s + 1:
        print(f"  (waited {waited:.1f} s for the machine to settle)")


def run_on_loop(main: Coroutine[Any, Any, T], event_loop: str = "asyncio") -> T:
    """asyncio.run on the named event loop (asyncio's own, or the server's uvloop)."""
    with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
        return runner.run(main)


@contextmanager
def server_collector_settings() -> Iterator[None]:
    """This process collects garbage as a Threadline server does (threadline.collector) for the block."""
    thresholds = gc.get_threshold()
    collector.settle_after_startup()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


async def turns_per_second(turn: Callable[[int], Awaitable[None]], concurrency: int, seconds: float) -> float:
    """Runs `concurrency` workers doing turns back to back for `seconds`; completed turns per second.

    Each worker passes its own index, so it can keep its own thread.
    """
    done = 0
    stop_at = time.monotonic() + seconds

    async def worker(index: int) -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            await turn(index)
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done / (time.monotonic() - started)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile of values: the nearest rank, no interpolation."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def median_of(runs: int, measure: Callable[[], float]) -> float:
    """The median of `runs` measurements."""
    return statistics.median(measure() for _ in range(runs))


@dataclass(frozen=True)
class Row:
    """One line of a results table."""

    name: str
    value: float
    unit: str
    note: str = ""
    decimals: int = 1
    """Digits after the point (0 for counts)."""


def print_table(title: str, rows: Sequence[Row]) -> None:
    width = max(len(r.name) for r in rows)
    print(f"\n{title}")
    print("-" * len(title))
    for r in rows:
        print(f"  {r.name:<{width}}  {r.value:10.{r.decimals}f} {r.unit:<8} {r.note}")


def verdict(name: str, ok: bool, detail: str) -> str:
    """A PASS/FAIL line for a target."""
    return f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}"
