"""gRPC's own time to a first streamed message: a bare grpc.aio StreamAsk handler that writes one token at once.

`stream_latency.py` measures it beside its c=1 TTFT rows: what the transport itself costs a
StreamAsk caller before its first token (the call's set-up, one message each way across
loopback, two processes' wake-ups), with no engine, graph or model behind it. No change to
Threadline's code can take it back, and on this machine it is about half of the TTFT target's
2 ms p50 budget.

The handler holds its stream open for a while after the token (by default one token
interval of the TTFT bench, 20 ms) before it ends, so that each call starts, as there,
after the processes had nothing to do for that long. That matters: in one hour here the first
message took 0.83-0.93 ms with 20 ms between calls and 0.32-0.74 ms back to back (the wake-ups
of two processes and gRPC's poller threads).

The handler runs in a process of its own on the event loop the Threadline server runs on;
the caller is the same `threadline_client` the TTFT rows use.

Run alone: .venv/bin/python bench/grpc_floor.py   (p50 and p99 over 100 calls; --hold-ms to change the idle time)
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from harness import ROOT, SERVER_EVENT_LOOP, percentile, run_on_loop

from tests.support import free_port
from threadline_client import AsyncThreadlineClient
from threadline_client.v1 import threadline_pb2 as pb
from threadline_client.v1 import threadline_pb2_grpc as pb_grpc

TOKEN = pb.StreamAskResponse(token=pb.TokenDelta(text="word "))
HOLD_MS = 20


class _FirstTokenAtOnce(pb_grpc.ThreadlineServiceServicer):
    """StreamAsk writes one token, then ends `hold_s` later; every other RPC is UNIMPLEMENTED (the generated base's)."""

    def __init__(self, hold_s: float) -> None:
        self._hold_s = hold_s

    async def StreamAsk(self, request: pb.StreamAskRequest, context: grpc.aio.ServicerContext[Any, Any]) -> None:  # type: ignore[override]
        await context.write(TOKEN)
        await asyncio.sleep(self._hold_s)


async def _serve(port: int, hold_ms: float) -> None:
    server = grpc.aio.server()
    # The generated stub types every RPC abstract; those not written here answer UNIMPLEMENTED.
    handler = _FirstTokenAtOnce(hold_ms / 1000)  # type: ignore[abstract]
    pb_grpc.add_ThreadlineServiceServicer_to_server(handler, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


@contextmanager
def bare_server(hold_ms: float = HOLD_MS) -> Iterator[str]:
    """The bare handler's process, on a free loopback port; yields its address."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--hold-ms", str(hold_ms)],
        cwd=ROOT / "bench",
        stdout=subprocess.DEVNULL,
    )
    try:
        address = f"127.0.0.1:{port}"
        channel = grpc.insecure_channel(address)
        try:
            grpc.channel_ready_future(channel).result(timeout=30)
        finally:
            channel.close()
        yield address
    finally:
        process.terminate()
        process.wait(10)


async def first_message_ms(client: AsyncThreadlineClient, calls: int) -> list[float]:
    """`calls` StreamAsk calls one after another; each one's time to its first message, in ms."""
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        first = None
        async for _event in client.stream_ask("word", timeout=30):
            if first is None:
                first = (time.perf_counter() - started) * 1000
        assert first is not None
        times.append(first)
    return times


async def _measure(address: str, hold_ms: float) -> None:
    async with AsyncThreadlineClient(address) as client:
        await first_message_ms(client, 10)  # warm up: the channel, imports
        times = await first_message_ms(client, 100)
    p50, p99 = percentile(times, 50), percentile(times, 99)
    print(
        f"bare grpc.aio StreamAsk, time to first message over loopback ({SERVER_EVENT_LOOP}; calls"
        f" {hold_ms:g} ms apart): p50 {p50:.2f} ms, p99 {p99:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, metavar="PORT", help="serve the bare handler on this port (internal)")
    parser.add_argument("--hold-ms", type=float, default=HOLD_MS, help="how long a call stays open after its token")
    args = parser.parse_args()
    if args.serve:
        run_on_loop(_serve(args.serve, args.hold_ms), SERVER_EVENT_LOOP)
        return
    with bare_server(args.hold_ms) as address:
        run_on_loop(_measure(address, args.hold_ms), SERVER_EVENT_LOOP)


if __name__ == "__main__":
    main()
