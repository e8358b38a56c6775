"""What observability costs: Ask throughput at c=32 with everything off, with metrics on, and with
metrics plus traces at 100 % sampling exported to a local OTLP/HTTP receiver.

Three servers on one scratch PostgreSQL database, the same default agent and offline model (tool
turns, as in ask_throughput.py), measured turn by turn in rotation so the three medians come from
the same minutes, with the server's CPU time per turn (steadier than throughput on a small
machine, where the client and PostgreSQL share the cores). Targets (issue 24): metrics on
>= 0.97x all off; metrics and full tracing >= 0.85x.

Run alone: .venv/bin/python bench/observability_cost.py   (BENCH_RUNS, BENCH_SECONDS to change effort)
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from harness import (
    RUNS,
    SECONDS,
    Row,
    print_table,
    process_cpu_s,
    run_on_loop,
    scratch_database,
    server,
    turns_per_second,
    verdict,
    wait_for_quiet_machine,
)

from tests.otlp_receiver import OtlpReceiver
from tests.support import ServerProcess, free_port
from threadline_client import AsyncThreadlineClient

QUERY = "What is 2+3?"
CONCURRENCY = 32
TURNS_PER_THREAD = 10
POOL = {"THREADLINE_DB_POOL_MIN_SIZE": "16", "THREADLINE_DB_POOL_MAX_SIZE": "34"}
ALL_OFF = "all off"
TARGETS = {"metrics": 0.97, "metrics + traces (100 %)": 0.85}


@contextmanager
def variants(database_url: str, folder: Path, receiver: OtlpReceiver) -> Iterator[dict[str, ServerProcess]]:
    """The three servers, by name."""
    metrics = {"THREADLINE_METRICS_ADDRESS": f"127.0.0.1:{free_port()}"}
    traces = {
        "THREADLINE_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_TRACES_SAMPLER": "always_on",
    }
    with ExitStack() as stack:
        yield {
            ALL_OFF: stack.enter_context(server(database_url, folder, **POOL)),
            "metrics": stack.enter_context(server(database_url, folder, **metrics, **POOL)),
            "metrics + traces (100 %)": stack.enter_context(server(database_url, folder, **traces, **POOL)),
        }


async def measure(target: ServerProcess) -> tuple[float, float]:
    """(turns per second, the server's CPU milliseconds per turn) over SECONDS of Ask at CONCURRENCY."""
    assert target.process is not None
    async with AsyncThreadlineClient(target.address) as client:
        threads = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(CONCURRENCY)]
        turns = [0] * CONCURRENCY

        async def turn(index: int) -> None:
            turns[index] += 1
            if turns[index] % TURNS_PER_THREAD == 0:
                threads[index] = f"bench-{uuid.uuid4().hex[:8]}"
            await client.ask(QUERY, thread_id=threads[index])

        await turns_per_second(turn, CONCURRENCY, 0.5)  # warm up: connections, caches
        cpu_before, started = process_cpu_s(target.process.pid), time.monotonic()
        rate = await turns_per_second(turn, CONCURRENCY, SECONDS)
        cpu_s, seconds = process_cpu_s(target.process.pid) - cpu_before, time.monotonic() - started
        return rate, 1000 * cpu_s / (rate * seconds)


def main() -> None:
    with (
        scratch_database() as url,
        tempfile.TemporaryDirectory() as tmp,
        OtlpReceiver(decode=False) as receiver,
        variants(url, Path(tmp), receiver) as servers,
    ):
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
        for _ in range(RUNS):
            for name, target in servers.items():
                wait_for_quiet_machine()
                figures[name].append(run_on_loop(measure(target)))
    medians = {name: statistics.median(rate for rate, _ in values) for name, values in figures.items()}
    cpu = {name: statistics.median(ms for _, ms in values) for name, values in figures.items()}
    base, base_cpu = medians[ALL_OFF], cpu[ALL_OFF]
    rows = [Row(name, value, "turns/s", f"{value / base:.2f}x all off") for name, value in medians.items()]
    rows += [
        Row(f"server CPU per turn, {name}", value, "ms", f"{value - base_cpu:+.2f} ms over all off")
        for name, value in cpu.items()
    ]
    print_table(f"Ask c={CONCURRENCY} on PostgreSQL: the cost of metrics and traces (median of {RUNS})", rows)
    print(f"  (the receiver took {receiver.requests} OTLP export requests)")
    for name, ratio in TARGETS.items():
        value = medians[name]
        print(verdict(f"{name} >= {ratio}x all off", value >= ratio * base, f"{value / base:.2f}x"))


if __name__ == "__main__":
    main()
