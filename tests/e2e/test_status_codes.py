"""Every status code of the contract, with its message and ErrorInfo, over real gRPC."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from tests.support import ServerProcess, server_env
from threadline_client import ThreadlineClient, ThreadlineError
from threadline_client.v1 import threadline_pb2 as pb
from threadline_client.v1 import threadline_pb2_grpc as pb_grpc

UNKNOWN_CHECKPOINT = "1f000000-0000-6000-8000-000000000000"


def _error(call: Callable[[], object]) -> ThreadlineError:
    with pytest.raises(ThreadlineError) as caught:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    return caught.value


@pytest.fixture(scope="module")
def thread(sqlite_server: ServerProcess) -> str:
    with ThreadlineClient(sqlite_server.address) as client:
        return client.ask("My name is Ada.").thread_id


INVALID_ARGUMENTS: list[tuple[str, Callable[[ThreadlineClient, str], object], str, str]] = [
    ("empty query", lambda c, t: c.ask(""), "query", "non-blank"),
    ("blank query", lambda c, t: c.ask(" \n\t "), "query", "non-blank"),
    ("oversized query", lambda c, t: c.ask("x" * 16_001), "query", "limit is 16000"),
    ("bad thread_id", lambda c, t: c.ask("hi", thread_id="no spaces allowed"), "thread_id", "[A-Za-z0-9._:-]"),
    ("thread_id too long", lambda c, t: c.ask("hi", thread_id="a" * 129), "thread_id", "1 to 128"),
    ("bad request_id", lambda c, t: c.ask("hi", request_id="ü"), "request_id", "request_id must be"),
    ("stream: empty query", lambda c, t: c.stream_ask(""), "query", "non-blank"),
    ("stream: bad thread_id", lambda c, t: c.stream_ask("hi", thread_id="/etc"), "thread_id", "thread_id must"),
    ("history: no thread_id", lambda c, t: c.history(""), "thread_id", "thread_id is required"),
    ("history: bad thread_id", lambda c, t: c.history("a/b"), "thread_id", "thread_id must"),
    ("history: negative page_size", lambda c, t: c.history(t, page_size=-1), "page_size", "not be negative"),
    ("history: garbage page_token", lambda c, t: c.history(t, page_token="garbage!"), "page_token", "malformed"),
    ("rewind: no target", lambda c, t: c.rewind(t), "target", "exactly one"),
    ("rewind: zero steps", lambda c, t: c.rewind(t, steps_back=0), "steps_back", "at least 1"),
    ("rewind: negative steps", lambda c, t: c.rewind(t, steps_back=-3), "steps_back", "at least 1"),
    (
        "rewind: bad checkpoint_id",
        lambda c, t: c.rewind(t, checkpoint_id="latest"),
        "checkpoint_id",
        "not a checkpoint",
    ),
    ("rewind: bad thread_id", lambda c, t: c.rewind("", steps_back=1), "thread_id", "required"),
]


@pytest.mark.parametrize(
    ("call", "field", "phrase"), [case[1:] for case in INVALID_ARGUMENTS], ids=[case[0] for case in INVALID_ARGUMENTS]
)
def test_bad_input_is_invalid_argument_naming_the_field(
    sqlite_client: ThreadlineClient,
    thread: str,
    call: Callable[[ThreadlineClient, str], object],
    field: str,
    phrase: str,
) -> None:
    error = _error(lambda: call(sqlite_client, thread))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert error.reason == "INVALID_ARGUMENT" and error.metadata == {"field": field}
    assert phrase in error.message


def test_a_page_token_of_another_thread_is_invalid_argument(sqlite_client: ThreadlineClient, thread: str) -> None:
    other = sqlite_client.ask("My name is Grace.").thread_id
    token = sqlite_client.history(other, page_size=1).next_page_token
    assert token
    error = _error(lambda: sqlite_client.history(thread, page_token=token))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "another thread" in error.message


def test_unknown_threads_and_checkpoints_are_not_found(sqlite_client: ThreadlineClient, thread: str) -> None:
    missing = f"missing-{uuid.uuid4().hex}"
    for call in (lambda: sqlite_client.history(missing), lambda: sqlite_client.rewind(missing, steps_back=1)):
        error = _error(call)
        assert error.code == grpc.StatusCode.NOT_FOUND and error.reason == "THREAD_NOT_FOUND"
        assert missing in error.message

    error = _error(lambda: sqlite_client.rewind(thread, checkpoint_id=UNKNOWN_CHECKPOINT))
    assert error.code == grpc.StatusCode.NOT_FOUND and error.reason == "CHECKPOINT_NOT_FOUND"
    assert UNKNOWN_CHECKPOINT in error.message


def test_a_checkpoint_of_another_thread_is_not_found(sqlite_client: ThreadlineClient, thread: str) -> None:
    foreign = sqlite_client.ask("My name is Grace.").checkpoint_id
    error = _error(lambda: sqlite_client.rewind(thread, checkpoint_id=foreign))
    assert error.code == grpc.StatusCode.NOT_FOUND and error.reason == "CHECKPOINT_NOT_FOUND"


def test_a_message_over_the_size_limit_is_resource_exhausted(sqlite_server: ServerProcess) -> None:
    # The client may send 8 MiB; the server's limit is 4 MiB.
    with ThreadlineClient(sqlite_server.address, max_message_bytes=8 * 1024 * 1024) as big:
        error = _error(lambda: big.ask("x" * (5 * 1024 * 1024)))
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory, logs: Path) -> Iterator[ServerProcess]:
    """A server whose offline model pauses 40 ms before each token."""
    url = f"sqlite:///{tmp_path_factory.mktemp('slow') / 'threadline.db'}"
    with ServerProcess(url, logs, env=server_env(THREADLINE_OFFLINE_TOKEN_DELAY_MS="40")) as process:
        yield process


def test_a_passed_deadline_is_deadline_exceeded_and_the_thread_stays_usable(slow_server: ServerProcess) -> None:
    with ThreadlineClient(slow_server.address) as client:
        thread = client.ask("My name is Ada.").thread_id
        for call in (
            lambda: client.ask("Tell me a long story please", thread_id=thread, timeout=0.15),
            lambda: client.stream_ask("Tell me a long story please", thread_id=thread, timeout=0.15),
        ):
            assert _error(call).code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "Ada" in client.ask("What is my name?", thread_id=thread).answer
        history = client.history(thread, page_size=100)
        assert history.head_checkpoint_id == history.checkpoints[0].checkpoint_id


def test_a_cancelled_stream_is_cancelled_and_the_thread_stays_usable(slow_server: ServerProcess) -> None:
    with grpc.insecure_channel(slow_server.address) as channel:
        stub = pb_grpc.ThreadlineServiceStub(channel)
        thread = stub.Ask(pb.AskRequest(query="My name is Ada.")).turn.thread_id
        call = stub.StreamAsk(pb.StreamAskRequest(thread_id=thread, query="Tell me a long story please"))
        first = next(call)
        assert first.HasField("token")
        call.cancel()
        with pytest.raises(grpc.RpcError) as caught:
            next(call)
        assert caught.value.code() == grpc.StatusCode.CANCELLED
        answer = stub.Ask(pb.AskRequest(thread_id=thread, query="What is my name?"), timeout=30).turn.answer
        assert "Ada" in answer
    assert "Traceback" not in slow_server.log()
