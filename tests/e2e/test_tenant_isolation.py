"""Tenants over loopback gRPC, on SQLite and PostgreSQL: each tenant's threads are its own, whatever
another tenant names (thread ids, checkpoint ids, page tokens, request ids); the audit trail names
the tenant and the caller; per-tenant limits hold one tenant back without slowing another."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.conftest import BACKENDS, database_url
from tests.credentials import api_key
from tests.support import ServerProcess, server_env, wait_until
from threadline_client import ThreadlineClient, ThreadlineError, pb

ACME = api_key("acme", label="acme ci")
GLOBEX = api_key("globex", label="globex bot")


@pytest.fixture(scope="module", params=BACKENDS)
def tenants_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, logs: Path
) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp(f"tenants-{request.param}")
    keys = folder / "keys"
    keys.write_text(f"{ACME.line}\n{GLOBEX.line}\n")
    env = server_env(THREADLINE_API_KEYS_FILE=str(keys))
    with ServerProcess(database_url(request.param, folder, request), logs, env=env) as process:
        yield process


@pytest.fixture
def acme(tenants_server: ServerProcess) -> Iterator[ThreadlineClient]:
    with ThreadlineClient(tenants_server.address, token=ACME.key) as client:
        yield client


@pytest.fixture
def globex(tenants_server: ServerProcess) -> Iterator[ThreadlineClient]:
    with ThreadlineClient(tenants_server.address, token=GLOBEX.key) as client:
        yield client


def _questions(client: ThreadlineClient, thread: str) -> int:
    """How many questions the thread's conversation holds."""
    return sum(message.role == pb.ROLE_HUMAN for message in client.get_state(thread).messages)


def _outcome(call: Callable[[str], Any], value: str) -> tuple[str, str, str]:
    """(code, reason, message with value replaced by <id>) of call(value), a call expected to fail."""
    with pytest.raises(ThreadlineError) as failed:
        call(value)
    return failed.value.code.name, failed.value.reason, failed.value.message.replace(value, "<id>")


def test_two_tenants_own_separate_threads_of_one_name(acme: ThreadlineClient, globex: ThreadlineClient) -> None:
    thread = f"user-{uuid.uuid4().hex[:8]}"
    acme.ask("My name is Ada.", thread_id=thread)
    acme.ask("My pet is Rex.", thread_id=thread)
    globex.ask("My name is Grace.", thread_id=thread)
    assert _questions(globex, thread) == 1
    assert "Grace" not in acme.ask("What is my name?", thread_id=thread).answer
    assert "Ada" not in globex.ask("What is my name?", thread_id=thread).answer
    acme_texts = [m.text for m in acme.get_state(thread).messages]
    assert not any("Grace" in text for text in acme_texts) and any("Ada" in text for text in acme_texts)
    assert globex.delete_thread(thread).existed
    assert _questions(acme, thread) == 3, "deleting globex's thread touched acme's"


def test_another_tenants_thread_is_as_unknown_as_one_never_made(
    acme: ThreadlineClient, globex: ThreadlineClient
) -> None:
    theirs = acme.ask("My name is Ada.", thread_id=f"acme-only-{uuid.uuid4().hex[:8]}").thread_id
    never = f"never-{uuid.uuid4().hex[:8]}"
    approve = pb.ResumeDecision(approve=pb.Approval())
    checkpoint = str(uuid.uuid4())
    calls: dict[str, Callable[[str], Any]] = {
        "History": lambda t: globex.history(t),
        "GetState": lambda t: globex.get_state(t),
        "Rewind": lambda t: globex.rewind(t, steps_back=1),
        "Resume": lambda t: globex.resume(t, "interrupt", approve),
        "StreamResume": lambda t: list(globex.stream_resume(t, "interrupt", approve)),
        "Fork": lambda t: globex.ask("hi", thread_id=t, checkpoint_id=checkpoint),
    }
    for rpc, call in calls.items():
        assert _outcome(call, theirs) == _outcome(call, never), rpc
    assert _questions(acme, theirs) == 1, "another tenant's calls changed the thread"
    assert theirs not in [t.thread_id for t in globex.list_threads().threads]


def test_another_tenants_checkpoint_ids_and_page_tokens_mean_nothing(
    acme: ThreadlineClient, globex: ThreadlineClient
) -> None:
    thread = f"shared-name-{uuid.uuid4().hex[:8]}"
    for query in ("One.", "Two.", "Three."):
        acme.ask(query, thread_id=thread)
        globex.ask(query, thread_id=thread)
    acme_checkpoint = acme.history(thread, page_size=1).checkpoints[0].checkpoint_id
    made_up = str(uuid.uuid4())
    checkpoint_calls: dict[str, Callable[[str], Any]] = {
        "GetState": lambda c: globex.get_state(thread, checkpoint_id=c),
        "Rewind": lambda c: globex.rewind(thread, checkpoint_id=c),
        "Fork": lambda c: globex.ask("hi", thread_id=thread, checkpoint_id=c),
    }
    for rpc, call in checkpoint_calls.items():
        assert _outcome(call, acme_checkpoint) == _outcome(call, made_up), rpc

    history_token = acme.history(thread, page_size=1).next_page_token
    threads_token = _threads_token(acme)
    garbage = "bm90LWEtdG9rZW4"
    assert history_token and threads_token

    def history(token: str) -> Any:
        return globex.history(thread, page_size=1, page_token=token)

    def list_threads(token: str) -> Any:
        return globex.list_threads(page_size=1, page_token=token)

    assert _outcome(history, history_token) == _outcome(history, garbage)
    assert _outcome(list_threads, threads_token) == _outcome(list_threads, garbage)
    # The tenant's own tokens work.
    assert acme.history(thread, page_size=1, page_token=history_token).checkpoints


def _threads_token(client: ThreadlineClient) -> str:
    client.ask("Another thread, so there are two pages.")
    return client.list_threads(page_size=1).next_page_token


def test_another_tenants_request_id_is_a_new_request(acme: ThreadlineClient, globex: ThreadlineClient) -> None:
    request_id = f"req-{uuid.uuid4().hex}"
    mine = acme.ask("My name is Ada.", request_id=request_id)
    theirs = globex.ask("My name is Grace.", request_id=request_id)
    assert "Grace" in theirs.answer and theirs.answer != mine.answer, "globex got acme's turn"
    assert _questions(globex, theirs.thread_id) == 1
    assert _questions(acme, mine.thread_id) == 1
    thread = f"named-{uuid.uuid4().hex[:8]}"
    acme.ask("My pet is Rex.", thread_id=thread, request_id=request_id)
    # The same request_id with another query on globex's thread of that name is globex's first use of it.
    assert "Tom" in globex.ask("My pet is Tom.", thread_id=thread, request_id=request_id).answer


def test_list_threads_lists_only_the_callers_threads(acme: ThreadlineClient, globex: ThreadlineClient) -> None:
    marker = uuid.uuid4().hex[:8]
    acme.ask("Hello.", thread_id=f"acme-{marker}")
    globex.ask("Hello.", thread_id=f"globex-{marker}")
    acme_ids = _all_thread_ids(acme)
    globex_ids = _all_thread_ids(globex)
    assert f"acme-{marker}" in acme_ids and f"acme-{marker}" not in globex_ids
    assert f"globex-{marker}" in globex_ids and f"globex-{marker}" not in acme_ids


def _all_thread_ids(client: ThreadlineClient) -> set[str]:
    ids, token = set(), ""
    while True:
        page = client.list_threads(page_size=50, page_token=token)
        ids |= {thread.thread_id for thread in page.threads}
        token = page.next_page_token
        if not token:
            return ids


def test_the_audit_trail_names_the_tenant_and_the_caller(
    acme: ThreadlineClient, globex: ThreadlineClient, tenants_server: ServerProcess
) -> None:
    thread = f"audited-{uuid.uuid4().hex[:8]}"
    acme.ask("One.", thread_id=thread)
    acme.ask("Two.", thread_id=thread)
    acme.rewind(thread, steps_back=1)
    globex.ask("One.", thread_id=thread)
    metadata = _stored_metadata(tenants_server.database_url)
    acme_rows = [m for thread_id, m in metadata if thread_id == f"acme/{thread}"]
    globex_rows = [m for thread_id, m in metadata if thread_id == f"globex/{thread}"]
    assert acme_rows and globex_rows
    for row in acme_rows:
        assert (row["threadline_tenant"], row["threadline_caller"]) == ("acme", "acme ci"), row
    assert {row["threadline_rpc"] for row in acme_rows} >= {"Ask", "Rewind"}
    for row in globex_rows:
        assert (row["threadline_tenant"], row["threadline_caller"]) == ("globex", "globex bot"), row


def _stored_metadata(url: str) -> list[tuple[str, dict[str, Any]]]:
    """(thread_id, metadata) of every checkpoint stored, read straight from the database."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            rows = db.execute("SELECT thread_id, metadata FROM checkpoints").fetchall()
        return [(thread_id, json.loads(metadata)) for thread_id, metadata in rows]
    with psycopg.connect(url) as db:
        return [
            (thread_id, metadata) for thread_id, metadata in db.execute("SELECT thread_id, metadata FROM checkpoints")
        ]


def test_retention_deletes_idle_threads_of_every_tenant(tmp_path: Path, logs: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"{ACME.line}\n{GLOBEX.line}\n")
    env = server_env(
        THREADLINE_API_KEYS_FILE=str(keys), THREADLINE_RETENTION_TTL_S="1", THREADLINE_RETENTION_INTERVAL_S="0.3"
    )
    with ServerProcess(f"sqlite:///{tmp_path / 'threadline.db'}", logs, env=env) as server:
        clients = [ThreadlineClient(server.address, token=key.key) for key in (ACME, GLOBEX)]
        threads = [client.ask("Hello.").thread_id for client in clients]
        wait_until(
            lambda: not any(_exists(client, thread) for client, thread in zip(clients, threads, strict=True)),
            15,
            "retention deletes every tenant's idle thread",
        )
        for client in clients:
            client.close()


def _exists(client: ThreadlineClient, thread: str) -> bool:
    try:
        client.get_state(thread)
    except ThreadlineError as error:
        assert error.code == grpc.StatusCode.NOT_FOUND
        return False
    return True


def _quota_details(error: grpc.RpcError) -> tuple[error_details_pb2.QuotaFailure, error_details_pb2.RetryInfo]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    quota, retry = error_details_pb2.QuotaFailure(), error_details_pb2.RetryInfo()
    assert any(detail.Unpack(quota) for detail in status.details)
    assert any(detail.Unpack(retry) for detail in status.details)
    return quota, retry


def test_a_tenant_at_its_concurrency_limit_waits_alone(tmp_path: Path, logs: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"{ACME.line}\n{GLOBEX.line}\n")
    env = server_env(
        THREADLINE_API_KEYS_FILE=str(keys),
        THREADLINE_TENANT_MAX_CONCURRENT_TURNS="1",
        THREADLINE_OFFLINE_TOKEN_DELAY_MS="20",
    )
    with ServerProcess(f"sqlite:///{tmp_path / 'threadline.db'}", logs, env=env) as server:
        with grpc.insecure_channel(server.address) as channel:
            from threadline_client.v1.threadline_pb2_grpc import ThreadlineServiceStub

            stub = ThreadlineServiceStub(channel)
            acme_auth = (("authorization", f"Bearer {ACME.key}"),)
            globex_auth = (("authorization", f"Bearer {GLOBEX.key}"),)
            # acme's slow turn: the first event arrives once it runs, then it streams on.
            long_turn = stub.StreamAsk(
                pb.StreamAskRequest(query="Tell me something long. " * 20), metadata=acme_auth, timeout=60
            )
            next(long_turn)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Ask(pb.AskRequest(query="hi"), metadata=acme_auth, timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            quota, retry = _quota_details(refused.value)
            assert quota.violations[0].subject == "tenant:acme"
            assert quota.violations[0].quota_id == "concurrent_turns"
            assert retry.retry_delay.ToTimedelta() > dt.timedelta(0)
            # globex is not held back while acme's turn runs on.
            assert stub.Ask(pb.AskRequest(query="hi"), metadata=globex_auth, timeout=10).turn.answer
            assert long_turn.running(), "acme's turn ended before globex's answer: nothing was shown"
            rest = list(long_turn)
            assert rest[-1].HasField("final")
            # Its turn over, acme may start another.
            assert stub.Ask(pb.AskRequest(query="hi"), metadata=acme_auth, timeout=10).turn.answer


def test_a_tenant_over_its_turns_per_minute_is_told_when_to_retry(tmp_path: Path, logs: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"{ACME.line}\n{GLOBEX.line}\n")
    env = server_env(THREADLINE_API_KEYS_FILE=str(keys), THREADLINE_TENANT_TURNS_PER_MINUTE="2")
    with ServerProcess(f"sqlite:///{tmp_path / 'threadline.db'}", logs, env=env) as server:
        with (
            ThreadlineClient(server.address, token=ACME.key) as acme,
            ThreadlineClient(server.address, token=GLOBEX.key) as globex,
        ):
            acme.ask("One.")
            acme.ask("Two.")
            with pytest.raises(ThreadlineError) as refused:
                acme.ask("Three.")
            assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert refused.value.reason == "TENANT_QUOTA_EXCEEDED"
            assert refused.value.metadata == {"limit": "turns_per_minute"}
            assert refused.value.retry_after is not None and 0 < refused.value.retry_after <= 30
            assert acme.list_threads().threads, "reads are not turns: not limited"
            globex.ask("One.")
            globex.ask("Two.")


def test_concurrent_tenants_each_get_their_limit(tmp_path: Path, logs: Path) -> None:
    """Both tenants at their limit at once: each is refused alone, neither takes the other's share."""
    keys = tmp_path / "keys"
    keys.write_text(f"{ACME.line}\n{GLOBEX.line}\n")
    env = server_env(THREADLINE_API_KEYS_FILE=str(keys), THREADLINE_TENANT_TURNS_PER_MINUTE="3")
    with ServerProcess(f"sqlite:///{tmp_path / 'threadline.db'}", logs, env=env) as server:
        outcomes: dict[str, list[str]] = {"acme": [], "globex": []}

        def run(name: str, key: str) -> None:
            with ThreadlineClient(server.address, token=key) as client:
                for _ in range(5):
                    try:
                        client.ask("Hello.")
                        outcomes[name].append("OK")
                    except ThreadlineError as error:
                        outcomes[name].append(error.reason)

        workers = [threading.Thread(target=run, args=(n, k.key)) for n, k in (("acme", ACME), ("globex", GLOBEX))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        for name in outcomes:
            assert outcomes[name].count("OK") == 3, outcomes
            assert outcomes[name].count("TENANT_QUOTA_EXCEEDED") == 2, outcomes
