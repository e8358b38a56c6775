"""Ask throughput: Threadline over gRPC against the same graph and checkpointer called in process.

Each turn is a tool turn of the default agent with the offline (instant) model:
"What is 2+3?" -> calculator -> answer, so the figures are framework and storage
overhead. Workers keep one thread each and run turns back to back.

Target (issue: no global lock): on PostgreSQL at concurrency 32, Threadline over gRPC
reaches at least 2x the turns/s of the stock in-process baseline (the graph on
LangGraph's stock AsyncPostgresSaver, whose one asyncio.Lock serializes every
database operation of the process).

Run alone: .venv/bin/python bench/ask_throughput.py   (BENCH_RUNS, BENCH_SECONDS to change effort)
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg_pool
from harness import RUNS, SECONDS, Row, median_of, print_table, scratch_database, server, turns_per_second, verdict
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from psycopg.rows import dict_row

from threadline.engine.graphs import default_agent
from threadline.engine.offline_model import OfflineChatModel
from threadline.engine.postgres import PooledPostgresSaver
from threadline.engine.tools import default_tools
from threadline_client import AsyncThreadlineClient

QUERY = "What is 2+3?"
# Each worker starts a new thread every this many turns: the figures measure a turn on a
# short thread (the cost of long threads is measured by the thread-length benchmark).
TURNS_PER_THREAD = 10
POOL_SIZE = 40  # above the highest concurrency: every turn in flight holds one connection
CONCURRENCY = (1, 32)
Turn = Callable[[int], Awaitable[None]]


def _graph(saver: Any) -> Any:
    return default_agent(OfflineChatModel(), default_tools()).compile(checkpointer=saver)


@asynccontextmanager
async def _pg_pool(url: str) -> AsyncIterator[psycopg_pool.AsyncConnectionPool[Any]]:
    pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
        url,
        min_size=POOL_SIZE,
        max_size=POOL_SIZE,
        open=False,
        kwargs={"autocommit": True, "row_factory": dict_row, "prepare_threshold": 0},
    )
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()


def _in_process_turn(graph: Any, durability: str) -> Turn:
    turns: dict[int, int] = {}
    run = uuid.uuid4().hex[:8]

    async def turn(worker: int) -> None:
        done = turns[worker] = turns.get(worker, 0) + 1
        config = {"configurable": {"thread_id": f"bench-{run}-{worker}-{done // TURNS_PER_THREAD}"}}
        await graph.ainvoke({"messages": [("human", QUERY)]}, config, durability=durability)

    return turn


def _grpc_turn(client: AsyncThreadlineClient) -> Turn:
    turns: dict[int, int] = {}
    run = uuid.uuid4().hex[:8]

    async def turn(worker: int) -> None:
        done = turns[worker] = turns.get(worker, 0) + 1
        await client.ask(QUERY, thread_id=f"bench-{run}-{worker}-{done // TURNS_PER_THREAD}")

    return turn


def _measure(make_turn: Callable[[], Awaitable[tuple[Turn, Callable[[], Awaitable[None]]]]], concurrency: int) -> float:
    async def once() -> float:
        turn, close = await make_turn()
        try:
            await turn(0)  # warm up: imports, first connection, the thread
            return await turns_per_second(turn, concurrency, SECONDS)
        finally:
            await close()

    return median_of(RUNS, lambda: asyncio.run(once()))


def _in_process(url: str, saver_kind: str, durability: str) -> Callable[[], Awaitable[tuple[Turn, Any]]]:
    async def make() -> tuple[Turn, Any]:
        pool_cm = _pg_pool(url)
        pool = await pool_cm.__aenter__()
        saver_class = AsyncPostgresSaver if saver_kind == "stock" else PooledPostgresSaver
        saver = saver_class(pool)
        await saver.setup()

        async def close() -> None:
            await pool_cm.__aexit__(None, None, None)

        return _in_process_turn(_graph(saver), durability), close

    return make


def _in_process_sqlite(path: Path) -> Callable[[], Awaitable[tuple[Turn, Any]]]:
    async def make() -> tuple[Turn, Any]:
        saver_cm = AsyncSqliteSaver.from_conn_string(str(path))
        saver = await saver_cm.__aenter__()

        async def close() -> None:
            await saver_cm.__aexit__(None, None, None)

        return _in_process_turn(_graph(saver), "sync"), close

    return make


def _over_grpc(address: str) -> Callable[[], Awaitable[tuple[Turn, Any]]]:
    async def make() -> tuple[Turn, Any]:
        client = AsyncThreadlineClient(address)
        return _grpc_turn(client), client.close

    return make


def main() -> list[str]:
    verdicts = []
    logs = Path(tempfile.mkdtemp(prefix="threadline-bench-"))
    rows: list[Row] = []
    results: dict[tuple[str, int], float] = {}
    with scratch_database() as url:
        for c in CONCURRENCY:
            for name, make in (
                ("in-process, stock AsyncPostgresSaver, durability=async", _in_process(url, "stock", "async")),
                ("in-process, stock AsyncPostgresSaver, durability=sync", _in_process(url, "stock", "sync")),
                ("in-process, Threadline's saver, durability=sync", _in_process(url, "ours", "sync")),
            ):
                results[(name, c)] = _measure(make, c)
                rows.append(Row(f"PostgreSQL c={c:<3} {name}", results[(name, c)], "turns/s"))
        env = {"THREADLINE_DB_POOL_MIN_SIZE": str(POOL_SIZE), "THREADLINE_DB_POOL_MAX_SIZE": str(POOL_SIZE)}
        with server(url, logs, **env) as process:
            for c in CONCURRENCY:
                name = "Threadline over gRPC (1 process)"
                results[(name, c)] = _measure(_over_grpc(process.address), c)
                stock = results[("in-process, stock AsyncPostgresSaver, durability=async", c)]
                ratio = results[(name, c)] / stock
                rows.append(Row(f"PostgreSQL c={c:<3} {name}", results[(name, c)], "turns/s", f"{ratio:.2f}x stock"))
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        with server(f"sqlite:///{base / 'grpc.db'}", logs) as process:
            for c in CONCURRENCY:
                inproc = _measure(_in_process_sqlite(base / f"inproc-{c}.db"), c)
                over = _measure(_over_grpc(process.address), c)
                rows.append(
                    Row(f"SQLite     c={c:<3} in-process, AsyncSqliteSaver, durability=sync", inproc, "turns/s")
                )
                rows.append(
                    Row(
                        f"SQLite     c={c:<3} Threadline over gRPC", over, "turns/s", f"{over / inproc:.2f}x in-process"
                    )
                )
    print_table(f"Ask throughput (tool turn, offline model; median of {RUNS} x {SECONDS:g}s)", rows)
    ours = results[("Threadline over gRPC (1 process)", 32)]
    stock = results[("in-process, stock AsyncPostgresSaver, durability=async", 32)]
    verdicts.append(
        verdict(
            "Postgres Ask throughput at c=32 >= 2x stock in-process baseline",
            ours >= 2 * stock,
            f"{ours:.1f} vs {stock:.1f} turns/s = {ours / stock:.2f}x",
        )
    )
    for line in verdicts:
        print(line)
    return verdicts


if __name__ == "__main__":
    main()
