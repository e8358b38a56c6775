"""Cost of a turn, of History and of storage as a thread grows: 10, 100 and 500 turns (PostgreSQL).

One thread grows turn by turn ("My itemN is valueN.", three checkpoints a turn, offline model).
Every Ask carries a request_id, as a caller that retries safely sends (the server looks up
whether that request already ran: a lookup that must not grow with the thread either).
At each length the benchmark times further turns and History(page_size=10) over gRPC, the same
graph on the same kind of saver in process (ainvoke, aget_state_history(limit=10)), and counts
the bytes the thread occupies in PostgreSQL (checkpoints, blobs and pending writes).

Targets (benchmarks issue): turn latency and History latency at 500 turns <= 1.5x at 10 turns;
bytes per turn over turns 400-500 <= 1.5x the bytes per turn over turns 1-10 (linear storage).
The latency verdicts compare the longest thread with threads of the shortest length timed
alongside it, sample by sample (a turn on the long thread, then one on a short thread, and the
same for History): a single turn takes 8-13 ms on this machine from minute to minute, and the
lengths' rows, timed minutes apart, swung the verdicts both ways.

Run alone: .venv/bin/python bench/thread_length.py   (BENCH_LENGTHS=10,100,500 to change)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from harness import Row, print_table, scratch_database, server, verdict, wait_for_quiet_machine

from threadline.agent.graphs import default_agent
from threadline.agent.offline_model import OfflineChatModel
from threadline.agent.tools import default_tools
from threadline.storage import postgres_holds
from threadline.storage.postgres_pool import open_pool
from threadline.storage.postgres_saver import PostgresSaver
from threadline_client import AsyncThreadlineClient

LENGTHS = tuple(int(n) for n in os.environ.get("BENCH_LENGTHS", "10,100,500").split(","))
SAMPLES = 5
THREAD = "bench-length"
# Bytes per turn on a long thread are measured over its last 100 turns (400-500 by default).
LATE_SPAN = 100
TENANT_PREFIX = "default/"

_BYTES_SQL = """
SELECT
  (SELECT coalesce(sum(pg_column_size(c.*)), 0) FROM checkpoints c WHERE thread_id = %(t)s)
+ (SELECT coalesce(sum(pg_column_size(b.*)), 0) FROM checkpoint_blobs b WHERE thread_id = %(t)s)
+ (SELECT coalesce(sum(pg_column_size(w.*)), 0) FROM checkpoint_writes w WHERE thread_id = %(t)s) AS bytes
"""


def _query(turn: int) -> str:
    return f"My item{turn} is value{turn}."


def _ask(client: AsyncThreadlineClient, turn: int, thread: str = THREAD) -> Any:
    return client.ask(_query(turn), thread_id=thread, request_id=f"{thread}-turn-{turn}")


async def _timed(call: Any) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


def _bytes(url: str, thread_key: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(_BYTES_SQL, {"t": thread_key}).fetchone()
        return int(row[0]) if row else 0


@dataclass(frozen=True)
class OverGrpc:
    """What the gRPC side measured."""

    by_length: dict[int, tuple[float, float, int]]
    """{length: (turn ms, History ms, bytes)} of the growing thread."""
    bytes_at_late_start: int
    """The growing thread's bytes LATE_SPAN turns before the end."""
    short_alongside: tuple[float, float] | None
    """(turn ms, History ms) on threads of the first length, timed alongside the last length's samples
    (None with a single length)."""


async def _over_grpc(url: str, address: str) -> OverGrpc:
    results: dict[int, tuple[float, float, int]] = {}
    late_start = max(LENGTHS[-1] - LATE_SPAN, LENGTHS[0])
    bytes_at_late_start = 0
    short_turns: list[float] = []
    short_histories: list[float] = []
    async with AsyncThreadlineClient(address) as client:
        done = 0
        for length in LENGTHS:
            while done < length:
                if done == late_start:
                    bytes_at_late_start = _bytes(url, TENANT_PREFIX + THREAD)
                await _ask(client, done)
                done += 1
            stored = _bytes(url, TENANT_PREFIX + THREAD)
            alongside = length == LENGTHS[-1] and len(LENGTHS) > 1
            shorts = [f"{THREAD}-short-{i}" for i in range(SAMPLES)] if alongside else []
            for short in shorts:
                for n in range(LENGTHS[0]):
                    await _ask(client, n, short)
            turns, histories = [], []
            for i in range(SAMPLES):
                turns.append(await _timed(lambda n=done: _ask(client, n)))
                done += 1
                histories.append(await _timed(lambda: client.history(THREAD, page_size=10)))
                if shorts:
                    short_turns.append(await _timed(lambda n=LENGTHS[0], t=shorts[i]: _ask(client, n, t)))
                    short_histories.append(await _timed(lambda t=shorts[i]: client.history(t, page_size=10)))
            results[length] = (statistics.median(turns), statistics.median(histories), stored)
    short_alongside = (statistics.median(short_turns), statistics.median(short_histories)) if short_turns else None
    return OverGrpc(results, bytes_at_late_start, short_alongside)


async def _in_process(url: str) -> dict[int, tuple[float, float]]:
    """{length: (turn ms, aget_state_history(limit=10) ms)} for the same graph called directly."""
    pool = await open_pool(url, min_size=2, max_size=4, timeout_s=10, prepare_threshold=0)
    try:
        await postgres_holds.setup(pool)  # outside a turn, each write holds its thread for itself
        saver = PostgresSaver(pool)
        await saver.setup()
        graph = default_agent(OfflineChatModel(), default_tools()).compile(checkpointer=saver)
        config: Any = {"configurable": {"thread_id": "bench-length-inproc"}}
        results: dict[int, tuple[float, float]] = {}
        done = 0

        async def turn() -> None:
            await graph.ainvoke({"messages": [("human", _query(done))]}, config, durability="sync")

        async def history() -> None:
            [s async for s in graph.aget_state_history(config, limit=10)]

        for length in LENGTHS:
            while done < length:
                await turn()
                done += 1
            turns = []
            for _ in range(SAMPLES):
                turns.append(await _timed(turn))
                done += 1
            histories = [await _timed(history) for _ in range(SAMPLES)]
            results[length] = (statistics.median(turns), statistics.median(histories))
        return results
    finally:
        await pool.close()


def main() -> list[str]:
    wait_for_quiet_machine()
    logs = Path(tempfile.mkdtemp(prefix="threadline-bench-"))
    with scratch_database() as url:
        with server(url, logs) as process:
            over_grpc = asyncio.run(_over_grpc(url, process.address))
            grpc_results, bytes_at_late_start = over_grpc.by_length, over_grpc.bytes_at_late_start
        inproc = asyncio.run(_in_process(url))
    rows = []
    for length in LENGTHS:
        turn_ms, history_ms, stored = grpc_results[length]
        rows.append(
            Row(f"{length:>4} turns: Ask over gRPC", turn_ms, "ms", f"in-process ainvoke {inproc[length][0]:.1f} ms")
        )
        rows.append(
            Row(
                f"{length:>4} turns: History(page_size=10)",
                history_ms,
                "ms",
                f"in-process aget_state_history(limit=10) {inproc[length][1]:.1f} ms",
            )
        )
        rows.append(
            Row(f"{length:>4} turns: PostgreSQL bytes", stored / 1024, "KiB", f"{stored / length / 1024:.1f} KiB/turn")
        )
    print_table(f"Cost as a thread grows (median of {SAMPLES} at each length)", rows)
    first, last = LENGTHS[0], LENGTHS[-1]
    short_turn, short_history = over_grpc.short_alongside or grpc_results[first][:2]
    alongside = "one length:"
    if over_grpc.short_alongside:
        alongside = f"{first}-turn threads timed alongside; {first} turns' own row"
    verdicts = [
        verdict(
            f"turn latency at {last} turns <= 1.5x at {first}",
            grpc_results[last][0] <= 1.5 * short_turn,
            f"{grpc_results[last][0]:.1f} vs {short_turn:.1f} ms ({alongside} {grpc_results[first][0]:.1f} ms)",
        ),
        verdict(
            f"History latency at {last} turns <= 1.5x at {first}",
            grpc_results[last][1] <= 1.5 * short_history,
            f"{grpc_results[last][1]:.1f} vs {short_history:.1f} ms ({alongside} {grpc_results[first][1]:.1f} ms)",
        ),
    ]
    if len(LENGTHS) >= 2:
        early = grpc_results[first][2] / first
        # The marginal cost of a turn on a long thread: its last LATE_SPAN turns (the timed turns at the
        # last length come after the byte count, so they are not in it).
        late_start = max(last - LATE_SPAN, first)
        late = (grpc_results[last][2] - bytes_at_late_start) / (last - late_start)
        verdicts.append(
            verdict(
                f"bytes per turn over turns {late_start}-{last} <= 1.5x over turns 1-{first}",
                late <= 1.5 * early,
                f"{late / 1024:.1f} vs {early / 1024:.1f} KiB/turn",
            )
        )
    for line in verdicts:
        print(line)
    return verdicts


if __name__ == "__main__":
    main()
