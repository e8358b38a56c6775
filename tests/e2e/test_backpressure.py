"""A slow or stalled stream reader costs bounded memory and never holds its thread; overload is explicit."""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support import ServerProcess, health_status, server_env, wait_until
from threadline_client import ThreadlineClient, pb
from threadline_client._errors import error_from_rpc_error
from threadline_client.v1.threadline_pb2_grpc import ThreadlineServiceStub

# A small HTTP/2 window and no BDP probing: the server's writes block once about 1 KiB is unread.
SLOW_READER = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
LONG_QUERY = "word " * 3000  # the offline model repeats it: a 15,000-character answer of ~3,000 tokens


def _answers_health(address: str) -> bool:
    try:
        health_status(address)
    except grpc.RpcError:
        return False
    return True


def _server(tmp_path: Path, logs: Path, **settings: str) -> ServerProcess:
    env = server_env(**{f"THREADLINE_{name.upper()}": value for name, value in settings.items()})
    return ServerProcess(f"sqlite:///{tmp_path / 'threadline.db'}", logs, env=env)


def _stalled_stream(address: str, thread_id: str, request_id: str) -> tuple[grpc.Channel, pb.StreamAskResponse, Any]:
    """A StreamAsk read up to its first event, then not read: its turn goes on at the server.

    Returns the channel, that first event, and the call (an iterator of the rest)."""
    channel = grpc.insecure_channel(address, options=SLOW_READER)
    call = ThreadlineServiceStub(channel).StreamAsk(
        pb.StreamAskRequest(thread_id=thread_id, query=LONG_QUERY, request_id=request_id)
    )
    first = next(call)
    return channel, first, call


def test_a_stalled_reader_does_not_hold_its_thread_and_gets_every_event_later(tmp_path: Path, logs: Path) -> None:
    with _server(tmp_path, logs, stream_stall_timeout_s="120") as server, ThreadlineClient(server.address) as client:
        thread = client.ask("My name is Ada.").thread_id
        channel, first, call = _stalled_stream(server.address, thread, "stalled-1")
        started = time.monotonic()
        # The stalled stream's turn ran to its end without its reader: the thread is free again.
        assert "Ada" in client.ask("What is my name?", thread_id=thread).answer
        assert time.monotonic() - started < 30, "the next Ask waited for the stalled reader"
        events = [first, *call]  # read at last: nothing was dropped
        channel.close()
    final = events[-1].final
    tokens = "".join(e.token.text for e in events if e.HasField("token"))
    assert final.answer and tokens == final.answer, "the tokens, joined or not, spell the answer"
    assert len(events) < 3000, "while the reader was behind, tokens were sent joined, not one event each"


def test_a_reader_that_stops_reading_gets_stream_too_slow_and_the_turn_is_stored(tmp_path: Path, logs: Path) -> None:
    with _server(tmp_path, logs, stream_stall_timeout_s="1") as server, ThreadlineClient(server.address) as client:
        thread = client.ask("Hello.").thread_id
        channel, _, call = _stalled_stream(server.address, thread, "stalled-2")
        wait_until(lambda: "stream ended: the reader read nothing for 1s" in server.log(), 30, "the reader given up on")
        with pytest.raises(grpc.RpcError) as raised:
            list(call)
        channel.close()
        error = error_from_rpc_error(raised.value)
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.reason == "STREAM_TOO_SLOW", error
        assert "read nothing for 1s" in error.message and "request_id" in error.message
        messages_before = client.get_state(thread).message_count
        retried = client.ask(LONG_QUERY, thread_id=thread, request_id="stalled-2")
        assert "word word" in retried.answer
        assert client.get_state(thread).message_count == messages_before, "the retry returned the stored turn"


def test_a_reader_past_the_buffer_gets_stream_too_slow(tmp_path: Path, logs: Path) -> None:
    with (
        _server(tmp_path, logs, stream_buffer_bytes="4096", stream_stall_timeout_s="120") as server,
        ThreadlineClient(server.address) as client,
    ):
        channel = grpc.insecure_channel(server.address, options=SLOW_READER)
        call = ThreadlineServiceStub(channel).StreamAsk(pb.StreamAskRequest(query=LONG_QUERY, request_id="stalled-3"))
        started = time.monotonic()
        # Not reading: ~15 KB of tokens pile up behind a 1 KiB window.
        wait_until(lambda: "stream ended: the reader fell more than 4096" in server.log(), 30, "the reader given up on")
        with pytest.raises(grpc.RpcError) as raised:
            list(call)
        channel.close()
        error = error_from_rpc_error(raised.value)
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.reason == "STREAM_TOO_SLOW", error
        assert "4096 bytes behind" in error.message
        assert time.monotonic() - started < 60, "ended when the buffer overflowed, not by the stall timeout"
        assert "word word" in client.ask(LONG_QUERY, request_id="stalled-3").answer
    log = server.log()
    assert "ERROR" not in log and "Traceback" not in log, log[-3000:]


BURST = 2000


def test_a_burst_gets_ok_or_server_overloaded_with_retry_info(tmp_path: Path, logs: Path) -> None:
    """2,000 simultaneous calls: each is answered, or refused as documented; none is a bare CANCELLED."""
    with _server(tmp_path, logs) as server, ThreadlineClient(server.address) as client:
        thread = client.ask("Hello.").thread_id
        channels = [grpc.insecure_channel(server.address) for _ in range(8)]
        stubs = [ThreadlineServiceStub(channel) for channel in channels]
        # grpc's own futures: every call is in flight at once, none waits for a thread of ours.
        futures = [
            stubs[i % len(stubs)].Ask.future(pb.AskRequest(query="Hi.", request_id=uuid.uuid4().hex), timeout=120)
            if i % 2
            else stubs[i % len(stubs)].GetState.future(pb.GetStateRequest(thread_id=thread), timeout=120)
            for i in range(BURST)
        ]
        outcomes: Counter[str] = Counter()
        for future in futures:
            try:
                future.result()
                outcomes["OK"] += 1
            except grpc.RpcError as exc:
                error = error_from_rpc_error(exc)
                if error.reason == "SERVER_OVERLOADED":
                    assert error.retry_after is not None and error.retry_after > 0, "RetryInfo says when"
                outcomes[f"{exc.code().name}:{error.reason}"] += 1
        for channel in channels:
            channel.close()
        assert client.ask("Still serving?", thread_id=thread).answer
    print("burst outcomes:", dict(outcomes))
    assert set(outcomes) <= {"OK", "RESOURCE_EXHAUSTED:SERVER_OVERLOADED"}, outcomes
    assert outcomes["OK"] >= 1000 and sum(outcomes.values()) == BURST  # the default limit: 1000 at once
    assert "overloaded: refused" in server.log()


def test_connections_past_the_file_limit_are_refused_and_the_server_lives_on(tmp_path: Path, logs: Path) -> None:
    """Under a small open-file limit, surplus connections are refused; fds never run out, nothing is spammed."""
    server = ServerProcess(f"sqlite:///{tmp_path / 'threadline.db'}", logs, env=server_env(), open_files=512)
    with server:
        # Each channel of its own subchannel pool is one TCP connection of its own.
        channels = [
            grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(400)
        ]
        outcomes: Counter[str] = Counter()
        for channel in channels:
            try:
                ThreadlineServiceStub(channel).ListThreads(pb.ListThreadsRequest(), timeout=5)
                outcomes["OK"] += 1
            except grpc.RpcError as exc:
                outcomes[exc.code().name] += 1
        server.signal(signal.SIGUSR1)  # the runtime stats need a descriptor of their own
        wait_until(lambda: "runtime stats:" in server.log(), 10, "the runtime stats logged at the file limit")
        for channel in channels:
            channel.close()
        wait_until(lambda: _answers_health(server.address), 10, "a connection accepted once the others closed")
        with ThreadlineClient(server.address) as client:
            assert client.ask("Still serving?").answer
    print("connection outcomes:", dict(outcomes))
    assert outcomes["OK"] == 512 - 256, "the default limit: the open-file limit less a reserve of 256"
    assert set(outcomes) == {"OK", "UNAVAILABLE"}, outcomes
    log = server.log()
    assert "runtime stats:" in log and "Traceback" not in log and "File descriptor limit" not in log, log[-3000:]
