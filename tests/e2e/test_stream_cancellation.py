"""A caller that cancels a stream it stopped reading is not an error of the server's."""

from __future__ import annotations

from pathlib import Path

import grpc

from tests.support import ServerProcess
from threadline_client import ThreadlineClient, pb
from threadline_client.v1.threadline_pb2_grpc import ThreadlineServiceStub

STREAMS = 20
# A small HTTP/2 window and no BDP probing: the server's writes block once a few tokens are out.
SLOW_READER = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]


def test_cancelling_flow_blocked_streams_logs_no_error(tmp_path: Path, logs: Path) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path / 'threadline.db'}", logs)
    with server:
        channels = [grpc.insecure_channel(server.address, options=SLOW_READER) for _ in range(STREAMS)]
        calls = []
        for channel in channels:
            call = ThreadlineServiceStub(channel).StreamAsk(pb.StreamAskRequest(query="word " * 3000))
            next(call)  # the turn runs; its writes block on the window from here on
            calls.append(call)
        # By the time the last stream has started, the first ones are blocked in their writes.
        for call in calls:
            call.cancel()
        for channel in channels:
            channel.close()
        with ThreadlineClient(server.address) as client:
            assert client.ask("Still serving?").answer
    log = server.log()
    assert "ERROR" not in log and "Traceback" not in log, log[-3000:]
