"""The contract under arbitrary input: every RPC, over loopback, against a real server on SQLite and PostgreSQL.

Hypothesis makes the requests: arbitrary text and ids next to well-formed and known ones, integers
at and beyond their limits, page tokens, checkpoint ids, decisions and JSON values. Invariants:
each call ends OK or with a status code the proto documents for that RPC (never INTERNAL or
UNKNOWN), the server stays up, and every thread the fuzzer touched still answers a plain Ask.

`make test` runs a fixed-seed budget (FUZZ_EXAMPLES per RPC and backend, derandomized);
`make fuzz` runs a long, random one (THREADLINE_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import BACKENDS, database_url
from tests.support import ServerProcess, health_status, server_env
from threadline.engine.identifiers import check_thread_id
from threadline.errors import InvalidArgument
from threadline_client import ThreadlineClient, pb
from threadline_client.v1.threadline_pb2_grpc import ThreadlineServiceStub

FUZZ_EXAMPLES = int(os.environ.get("THREADLINE_FUZZ_EXAMPLES", "300"))
LONG_RUN = "THREADLINE_FUZZ_EXAMPLES" in os.environ
C = grpc.StatusCode
ANY_CALL = {C.OK, C.INVALID_ARGUMENT, C.UNAVAILABLE, C.RESOURCE_EXHAUSTED, C.DEADLINE_EXCEEDED, C.CANCELLED}
TURN = {C.NOT_FOUND, C.ABORTED, C.FAILED_PRECONDITION}
DOCUMENTED: dict[str, set[grpc.StatusCode]] = {
    "Ask": ANY_CALL | TURN,
    "StreamAsk": ANY_CALL | TURN,
    "History": ANY_CALL | {C.NOT_FOUND},
    "Rewind": ANY_CALL | {C.NOT_FOUND, C.OUT_OF_RANGE, C.FAILED_PRECONDITION, C.ABORTED},
    "DeleteThread": ANY_CALL | {C.NOT_FOUND, C.ABORTED},
    "GetState": ANY_CALL | {C.NOT_FOUND},
    "ListThreads": ANY_CALL,
    "ListMessages": ANY_CALL | {C.NOT_FOUND},
    "Resume": ANY_CALL | TURN,
    "StreamResume": ANY_CALL | TURN,
}
CALL_TIMEOUT_S = 30


class Known:
    """Threads, checkpoints, interrupts and page tokens the server really has, for the fuzzer to mix in."""

    def __init__(self, client: ThreadlineClient) -> None:
        plain = client.ask("My name is Ada.")
        client.ask("My pet is Rex.", thread_id=plain.thread_id)
        paused = client.ask("What is 6*7?")
        self.threads = [plain.thread_id, paused.thread_id]
        self.checkpoints = [c.checkpoint_id for t in self.threads for c in client.history(t, page_size=50).checkpoints]
        self.interrupts = [i.interrupt_id for i in paused.interrupts]
        self.page_tokens = [
            client.history(plain.thread_id, page_size=1).next_page_token,
            client.list_messages(plain.thread_id, page_size=1).next_page_token,
        ]
        self.touched: set[str] = set()


@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, logs: Path
) -> Iterator[ServerProcess]:
    url = database_url(request.param, tmp_path_factory.mktemp(f"fuzz-{request.param}"), request)
    env = server_env(THREADLINE_APPROVAL_TOOLS="calculator", THREADLINE_BUSY_POLICY="reject")
    with ServerProcess(url, logs, env=env) as server:
        yield server


@pytest.fixture(scope="module")
def known(fuzz_server: ServerProcess) -> Iterator[Known]:
    with ThreadlineClient(fuzz_server.address) as client:
        made = Known(client)
        yield made
        # Every thread the fuzzer touched still answers a plain Ask (a paused one: with abandon_interrupt).
        for thread in sorted(made.touched | set(made.threads)):
            assert client.ask("Still there?", thread_id=thread, abandon_interrupt=True, timeout=CALL_TIMEOUT_S)
    assert health_status(fuzz_server.address) == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def stub(fuzz_server: ServerProcess) -> Iterator[ThreadlineServiceStub]:
    with grpc.insecure_channel(fuzz_server.address) as channel:
        yield ThreadlineServiceStub(channel)


def _examples() -> Any:
    return settings(
        max_examples=FUZZ_EXAMPLES,
        derandomize=not LONG_RUN,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


TEXT = st.text(max_size=300)
ID_LIKE = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", fullmatch=True)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=20,
)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
SIZES = st.one_of(st.sampled_from([-(2**31), -1, 0, 1, 100, 101, 1000, 2**31 - 1]), INT32)


def _threads(known: Known) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(known.threads), ID_LIKE, TEXT, st.just(""))


def _checkpoints(known: Known) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(known.checkpoints),
        st.sampled_from(known.checkpoints).map(str.upper),
        st.uuids().map(str),
        TEXT,
        st.just(""),
    )


def _page_tokens(known: Known) -> st.SearchStrategy[str]:
    encoded_json = JSON.map(lambda v: base64.urlsafe_b64encode(json.dumps(v).encode()).decode().rstrip("="))
    return st.one_of(st.sampled_from(known.page_tokens), encoded_json, TEXT, st.just(""))


def _decisions() -> st.SearchStrategy[pb.ResumeDecision]:
    return st.one_of(
        st.just(pb.ResumeDecision()),
        st.just(pb.ResumeDecision(approve=pb.Approval())),
        TEXT.map(lambda reason: pb.ResumeDecision(reject=pb.Rejection(reason=reason))),
        st.dictionaries(TEXT, st.one_of(TEXT, JSON.map(json.dumps)), max_size=3).map(
            lambda args: pb.ResumeDecision(edit=pb.Edit(arguments_json=args))
        ),
        st.one_of(TEXT, JSON.map(json.dumps)).map(lambda value: pb.ResumeDecision(value_json=value)),
    )


def _check(rpc: str, call: Callable[[], Any], known: Known, thread_id: str) -> None:
    try:
        result = call()
        if not isinstance(result, pb.AskResponse | pb.HistoryResponse) and hasattr(result, "__iter__"):
            list(result)
    except grpc.RpcError as error:
        code = error.code() if isinstance(error, grpc.Call) else C.UNKNOWN
        assert code in DOCUMENTED[rpc], f"{rpc}: {code.name}: {error.details() if isinstance(error, grpc.Call) else ''}"
    if _is_id(thread_id):
        known.touched.add(thread_id)


def _is_id(text: str) -> bool:
    try:
        check_thread_id(text)
    except InvalidArgument:
        return False
    return True


@_examples()
@given(data=st.data())
def test_ask(stub: ThreadlineServiceStub, known: Known, data: st.DataObject) -> None:
    thread = data.draw(st.one_of(_threads(known), st.just("")))
    request = pb.AskRequest(
        thread_id=thread,
        query=data.draw(st.one_of(TEXT, st.sampled_from(["What is 6*7?", "My name is Ada.", " ", "\x00"]))),
        checkpoint_id=data.draw(st.one_of(st.just(""), _checkpoints(known))),
        request_id=data.draw(st.one_of(st.just(""), ID_LIKE, TEXT)),
        abandon_interrupt=data.draw(st.booleans()),
    )
    streamed = data.draw(st.booleans())
    rpc = "StreamAsk" if streamed else "Ask"
    if streamed:
        stream_request = pb.StreamAskRequest(**{f.name: v for f, v in request.ListFields()})
        _check(rpc, lambda: stub.StreamAsk(stream_request, timeout=CALL_TIMEOUT_S), known, thread)
    else:
        _check(rpc, lambda: stub.Ask(request, timeout=CALL_TIMEOUT_S), known, thread)


@_examples()
@given(data=st.data())
def test_reads(stub: ThreadlineServiceStub, known: Known, data: st.DataObject) -> None:
    thread = data.draw(_threads(known))
    which = data.draw(st.sampled_from(["History", "GetState", "ListThreads", "ListMessages"]))
    calls: dict[str, Callable[[], Any]] = {
        "History": lambda: stub.History(
            pb.HistoryRequest(
                thread_id=thread,
                page_size=data.draw(SIZES),
                page_token=data.draw(_page_tokens(known)),
                message_limit=data.draw(SIZES),
            ),
            timeout=CALL_TIMEOUT_S,
        ),
        "GetState": lambda: stub.GetState(
            pb.GetStateRequest(thread_id=thread, checkpoint_id=data.draw(_checkpoints(known))),
            timeout=CALL_TIMEOUT_S,
        ),
        "ListMessages": lambda: stub.ListMessages(
            pb.ListMessagesRequest(
                thread_id=thread,
                checkpoint_id=data.draw(st.one_of(st.just(""), _checkpoints(known))),
                page_size=data.draw(SIZES),
                page_token=data.draw(_page_tokens(known)),
                newest_first=data.draw(st.booleans()),
            ),
            timeout=CALL_TIMEOUT_S,
        ),
        "ListThreads": lambda: stub.ListThreads(
            pb.ListThreadsRequest(page_size=data.draw(SIZES), page_token=data.draw(_page_tokens(known))),
            timeout=CALL_TIMEOUT_S,
        ),
    }
    _check(which, calls[which], known, "")


@_examples()
@given(data=st.data())
def test_rewind_and_delete(stub: ThreadlineServiceStub, known: Known, data: st.DataObject) -> None:
    # Deleting the known threads would leave the other examples nothing to find: only fresh ones are deleted.
    if data.draw(st.booleans()):
        thread = data.draw(_threads(known))
        target = data.draw(st.sampled_from(["steps_back", "checkpoint_id", "none"]))
        request = pb.RewindRequest(thread_id=thread)
        if target == "steps_back":
            request.steps_back = data.draw(SIZES)
        elif target == "checkpoint_id":
            request.checkpoint_id = data.draw(_checkpoints(known))
        _check("Rewind", lambda: stub.Rewind(request, timeout=CALL_TIMEOUT_S), known, thread)
    else:
        thread = data.draw(st.one_of(ID_LIKE.map(lambda t: f"fuzz-{uuid.uuid4().hex[:6]}-{t}"[:128]), TEXT))
        _check(
            "DeleteThread",
            lambda: stub.DeleteThread(pb.DeleteThreadRequest(thread_id=thread), timeout=CALL_TIMEOUT_S),
            known,
            "",
        )


@_examples()
@given(data=st.data())
def test_resume(stub: ThreadlineServiceStub, known: Known, data: st.DataObject) -> None:
    thread = data.draw(_threads(known))
    fields = {
        "thread_id": thread,
        "interrupt_id": data.draw(st.one_of(st.sampled_from(known.interrupts), TEXT)),
        "decision": data.draw(_decisions()),
        "request_id": data.draw(st.one_of(st.just(""), ID_LIKE, TEXT)),
    }
    if data.draw(st.booleans()):
        _check(
            "StreamResume",
            lambda: stub.StreamResume(pb.StreamResumeRequest(**fields), timeout=CALL_TIMEOUT_S),
            known,
            thread,
        )
    else:
        _check("Resume", lambda: stub.Resume(pb.ResumeRequest(**fields), timeout=CALL_TIMEOUT_S), known, thread)
