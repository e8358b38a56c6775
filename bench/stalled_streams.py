"""Stalled readers cost bounded memory: 500 StreamAsk calls with 16,000-character answers, never read.

Each call runs on a channel of its own with a small HTTP/2 window (1 KiB lookahead, no BDP
probing), reads its first event and then stops reading. The server (offline model, SQLite)
runs every turn to its end regardless: what waits for a reader is bounded by
THREADLINE_STREAM_BUFFER_BYTES (default) and the stall timeout (15 s here, to keep the run
short). Measured: the server's RSS at start, while all 500 stall, and after they have ended
(each gets RESOURCE_EXHAUSTED STREAM_TOO_SLOW once it reads again) and the server settled;
and whether every turn was stored while its reader stalled.

"Start" is the RSS after as many streams of the same turns were read as they came: the
server's memory at that concurrency without stalls (the allocator keeps its high water, so
the cold RSS is shown too). Further rounds show whether stalls leave anything behind.

Targets (issue: backpressure): RSS during the stall at most 150 MB above the start; after, within
50 MB of the start; every turn stored; no growth from one round to the next.

Run alone: .venv/bin/python bench/stalled_streams.py   (BENCH_STALLED_STREAMS to change the count)
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc
from cancelled_streams import rss_kib
from harness import Row, print_table, run_on_loop, server, verdict

from threadline_client import ThreadlineClient, pb
from threadline_client.v1.threadline_pb2_grpc import ThreadlineServiceStub

STREAMS = int(os.environ.get("BENCH_STALLED_STREAMS", "500"))
STALL_TIMEOUT_S = 15
QUERY = "word " * 3198  # the offline model repeats it: a ~16,000-character answer
SLOW_READER = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
DURING_TARGET_KIB = 150 * 1024
AFTER_TARGET_KIB = 50 * 1024
ROUNDS = 3


async def read_all(address: str) -> None:
    """As many streams of the same turns, read as they come: the server's memory at that concurrency, unstalled."""
    channels = [grpc.aio.insecure_channel(address) for _ in range(STREAMS)]

    async def one(channel: grpc.aio.Channel) -> None:
        async for _ in ThreadlineServiceStub(channel).StreamAsk(pb.StreamAskRequest(query=QUERY)):
            pass

    await asyncio.gather(*(one(channel) for channel in channels))
    for channel in channels:
        await channel.close()


async def stall(address: str, pid: int) -> tuple[int, Counter[str], float]:
    """Starts the stalled streams; returns the RSS while they stall, how they ended, and the seconds to start them."""
    channels = [grpc.aio.insecure_channel(address, options=SLOW_READER) for _ in range(STREAMS)]
    began = time.monotonic()
    calls = [ThreadlineServiceStub(channel).StreamAsk(pb.StreamAskRequest(query=QUERY)) for channel in channels]
    await asyncio.gather(*(call.read() for call in calls))  # every turn runs; nobody reads on
    started_s = time.monotonic() - began
    await asyncio.sleep(STALL_TIMEOUT_S / 2)
    during = rss_kib(pid)
    await asyncio.sleep(STALL_TIMEOUT_S)  # past the stall timeout: the server gave every reader up

    async def ending(call: grpc.aio.UnaryStreamCall) -> str:  # type: ignore[type-arg]
        try:
            while await call.read() is not grpc.aio.EOF:
                pass
            return "OK"
        except grpc.aio.AioRpcError as exc:
            return exc.code().name

    ends = Counter(await asyncio.gather(*(ending(call) for call in calls)))
    for channel in channels:
        await channel.close()
    return during, ends, started_s


def count_threads(client: ThreadlineClient) -> int:
    count, token = 0, ""
    while True:
        page = client.list_threads(page_size=100, page_token=token)
        count += len(page.threads)
        token = page.next_page_token
        if not token:
            return count


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {"THREADLINE_STREAM_STALL_TIMEOUT_S": str(STALL_TIMEOUT_S), "THREADLINE_LOG_LEVEL": "WARNING"}
        with server(f"sqlite:///{folder / 'threadline.db'}", folder, **env) as process:
            assert process.process is not None
            pid = process.process.pid
            with ThreadlineClient(process.address) as client:
                client.ask("warm up")
            cold = rss_kib(pid)
            run_on_loop(read_all(process.address))
            time.sleep(3)
            start = rss_kib(pid)
            during, ends, started_s = run_on_loop(stall(process.address, pid))
            time.sleep(3)  # the last calls end; the collector runs
            after = rss_kib(pid)
            # More rounds: memory the first freed is reused (the allocator's high water), not added to.
            rounds = [run_on_loop(stall(process.address, pid))[0] for _ in range(ROUNDS - 1)]
            time.sleep(3)
            last = rss_kib(pid)
            with ThreadlineClient(process.address) as client:
                stored = count_threads(client) - 1 - STREAMS  # less the warm-ups'
            errors = process.log().count(" ERROR ")
    rows = [
        Row("RSS at start, cold", cold / 1024, "MiB"),
        Row(f"RSS after {STREAMS} streams read as they came", start / 1024, "MiB", f"{(start - cold) / 1024:+.1f} MiB"),
        Row(f"RSS while {STREAMS} streams stall", during / 1024, "MiB", f"{(during - start) / 1024:+.1f} MiB"),
        Row("RSS after they ended", after / 1024, "MiB", f"{(after - start) / 1024:+.1f} MiB"),
        Row(
            f"RSS while stalled, rounds 2-{ROUNDS}",
            rounds[-1] / 1024,
            "MiB",
            " / ".join(f"{r / 1024:.1f}" for r in rounds),
        ),
        Row(f"RSS after round {ROUNDS}", last / 1024, "MiB", f"{(last - start) / 1024:+.1f} MiB"),
        Row("seconds to start them all", started_s, "s"),
        Row("turns stored", stored, "", f"of {ROUNDS * STREAMS}"),
        Row("ERROR lines in the server log", errors, ""),
    ]
    print_table(f"{STREAMS} stalled StreamAsk readers, 16,000-character answers (SQLite, offline model)", rows)
    print(f"  how the streams ended (round 1): {dict(ends)}")
    growth, settled = (during - start) / 1024, (last - start) / 1024
    print(verdict("RSS during the stall ≤ +150 MB", during - start <= DURING_TARGET_KIB, f"{growth:+.1f} MiB"))
    print(
        verdict(
            "RSS after within 50 MB of start", after - start <= AFTER_TARGET_KIB, f"{(after - start) / 1024:+.1f} MiB"
        )
    )
    print(
        verdict(
            f"RSS after round {ROUNDS} within 50 MB of start", last - start <= AFTER_TARGET_KIB, f"{settled:+.1f} MiB"
        )
    )
    print(
        verdict(
            "every turn stored while its reader stalled", stored == ROUNDS * STREAMS, f"{stored} of {ROUNDS * STREAMS}"
        )
    )


if __name__ == "__main__":
    main()
