"""Several replicas on one PostgreSQL: any replica continues any thread, and a thread has one writer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import grpc
import psycopg
import pytest

from tests.model_server import ModelServer, tokens
from tests.support import ServerProcess, assert_one_linear_chain, model_server_env, server_env, wait_until
from threadline_client import ThreadlineClient, ThreadlineError, pb

CONCURRENT_ASKS = 20


def _start_replicas(url: str, logs: Path, count: int, **env: str) -> Iterator[list[ServerProcess]]:
    with ExitStack() as stack:
        yield [stack.enter_context(ServerProcess(url, logs, env=server_env(**env))) for _ in range(count)]


@pytest.fixture(scope="module")
def replicas(postgres_url: str, logs: Path) -> Iterator[list[ServerProcess]]:
    yield from _start_replicas(postgres_url, logs, 3)


@pytest.fixture(scope="module")
def rejecting_replicas(postgres_url: str, logs: Path) -> Iterator[list[ServerProcess]]:
    # Slow tokens keep each turn running long enough for the others to find it busy.
    yield from _start_replicas(
        postgres_url, logs, 3, THREADLINE_BUSY_POLICY="reject", THREADLINE_OFFLINE_TOKEN_DELAY_MS="20"
    )


def _ask_concurrently(servers: list[ServerProcess], thread: str) -> list[pb.Turn | ThreadlineError]:
    def ask(i: int) -> pb.Turn | ThreadlineError:
        with ThreadlineClient(servers[i % len(servers)].address) as client:
            try:
                return client.ask(f"My item{i} is value{i}.", thread_id=thread, request_id=f"ask-{i}", timeout=60)
            except ThreadlineError as error:
                return error

    with ThreadPoolExecutor(CONCURRENT_ASKS) as pool:
        return list(pool.map(ask, range(CONCURRENT_ASKS)))


def _assert_one_linear_chain_of(client: ThreadlineClient, thread: str, accepted: set[int]) -> None:
    assert_one_linear_chain(client, thread)

    messages = list(client.history(thread).messages)
    humans = [m for m in messages if m.role == pb.ROLE_HUMAN]
    items = [int(re.fullmatch(r"My item(\d+) is value\d+\.", m.text).group(1)) for m in humans[1:]]  # type: ignore[union-attr]
    assert sorted(items) == sorted(accepted), "each accepted turn's question is there exactly once"
    for question, answer in zip(messages[2::2], messages[3::2], strict=True):
        assert question.role == pb.ROLE_HUMAN and answer.role == pb.ROLE_AI
        item = question.text.removeprefix("My ").split(" ")[0]
        assert answer.text.startswith(f"Noted: your {item} is"), "each answer follows its own question"


def test_turns_on_different_replicas_see_the_whole_thread(replicas: list[ServerProcess]) -> None:
    clients = [ThreadlineClient(r.address) for r in replicas]
    try:
        thread = clients[0].ask("My name is Ada.").thread_id
        clients[1].ask("My pet is Rex.", thread_id=thread)
        clients[2].ask("My city is Lisbon.", thread_id=thread)
        assert "Ada" in clients[1].ask("What is my name?", thread_id=thread).answer
        assert "Rex" in clients[2].ask("What is my pet?", thread_id=thread).answer
        assert "Lisbon" in clients[0].ask("What is my city?", thread_id=thread).answer
    finally:
        for client in clients:
            client.close()


def test_a_round_robin_channel_over_the_replicas_holds_one_conversation(replicas: list[ServerProcess]) -> None:
    target = "ipv4:" + ",".join(r.address for r in replicas)
    options = [("grpc.lb_policy_name", "round_robin")]
    with ThreadlineClient(target, channel_options=options) as client:
        thread = client.ask("My name is Ada.").thread_id
        for _ in range(5):
            assert "Ada" in client.ask("What is my name?", thread_id=thread).answer
        writers = {c.replica for c in client.iter_checkpoints(thread)}
    pids = {str(r.process.pid) for r in replicas if r.process is not None}
    assert {w.rpartition(":")[2] for w in writers} == pids, "every replica wrote turns of the conversation"


def test_concurrent_asks_on_one_thread_queue_up_into_one_linear_chain(replicas: list[ServerProcess]) -> None:
    with ThreadlineClient(replicas[0].address) as client:
        thread = client.ask("My name is Ada.").thread_id
        results = _ask_concurrently(replicas, thread)
        failures = [r for r in results if isinstance(r, ThreadlineError)]
        assert not failures, failures
        _assert_one_linear_chain_of(client, thread, set(range(CONCURRENT_ASKS)))


def test_with_policy_reject_a_busy_thread_is_aborted_and_only_accepted_turns_land(
    rejecting_replicas: list[ServerProcess],
) -> None:
    with ThreadlineClient(rejecting_replicas[0].address) as client:
        thread = client.ask("My name is Ada.").thread_id
        results = _ask_concurrently(rejecting_replicas, thread)
        rejected = [r for r in results if isinstance(r, ThreadlineError)]
        assert rejected, "with 20 simultaneous turns some found the thread busy"
        for error in rejected:
            assert error.code == grpc.StatusCode.ABORTED and error.reason == "THREAD_BUSY", error
            assert thread in error.message
        accepted = {i for i, r in enumerate(results) if isinstance(r, pb.Turn)}
        assert accepted
        _assert_one_linear_chain_of(client, thread, accepted)


def test_sqlite_gives_the_same_guarantee_within_its_process(sqlite_server: ServerProcess) -> None:
    with ThreadlineClient(sqlite_server.address) as client:
        thread = client.ask("My name is Ada.").thread_id
        results = _ask_concurrently([sqlite_server], thread)
        assert not [r for r in results if isinstance(r, ThreadlineError)]
        _assert_one_linear_chain_of(client, thread, set(range(CONCURRENT_ASKS)))


def _end_owner_session(database_url: str, server: ServerProcess) -> int:
    """Ends a replica's owner session, as a dropped connection would; returns how many sessions were ended."""
    assert server.process is not None
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"threadline owner pid={server.process.pid}",),
        ).fetchall()
    return len(rows)


def test_a_turn_whose_replica_lost_its_session_writes_nothing_once_another_replica_takes_the_thread(
    fresh_postgres_url: str, logs: Path
) -> None:
    """Fencing: the takeover is immediate, and the old turn's later writes are refused, not forked in."""
    with ModelServer(token_delay_s=0.1) as model:
        env = model_server_env(model.base_url)
        with (
            ServerProcess(fresh_postgres_url, logs, env=env) as first,
            ServerProcess(fresh_postgres_url, logs, env=env) as second,
            ThreadlineClient(first.address) as on_first,
            ThreadlineClient(second.address) as on_second,
        ):
            thread = on_first.ask("My name is Ada.").thread_id
            model.script(tokens(30))  # 3 s of answer
            events = on_first.stream_ask("Talk slowly", thread_id=thread, request_id="slow-1", timeout=30)
            assert next(events).HasField("token")

            assert _end_owner_session(fresh_postgres_url, first) == 1
            taken = on_second.ask("My pet is Rex.", thread_id=thread, timeout=10)  # does not wait for the stream
            assert taken.answer == "You said: My pet is Rex."
            with pytest.raises(ThreadlineError) as caught:
                for _ in events:
                    pass
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE and caught.value.reason == "THREAD_HOLD_LOST"

            messages = list(on_second.history(thread).messages)
            # The new question started from before the cut turn's question (a new branch) ...
            assert [m.text for m in messages if m.role == pb.ROLE_HUMAN] == ["My name is Ada.", "My pet is Rex."]
            assert [m.text for m in messages if m.role == pb.ROLE_AI] == ["You said: My name is Ada.", taken.answer]
            # ... and the cut turn's branch holds its question, written before the takeover, never its answer.
            cut = [c for c in on_second.iter_checkpoints(thread, page_size=100) if c.request_id == "slow-1"]
            assert cut, "the cut turn wrote nothing before the takeover"
            for checkpoint in cut:
                state = on_second.get_state(thread, checkpoint_id=checkpoint.checkpoint_id)
                answers = [m.text for m in state.messages if m.role == pb.ROLE_AI]
                assert answers == ["You said: My name is Ada."], "the fenced turn wrote after the takeover"
            # The first replica opened a new session by itself and serves the thread again.
            assert on_first.ask("What is my pet?", thread_id=thread, timeout=10).answer == "You said: What is my pet?"
            assert "database is unavailable" not in first.log()


def test_a_turn_whose_replica_reopened_its_session_finishes_when_nobody_took_its_thread(
    fresh_postgres_url: str, logs: Path
) -> None:
    """Losing the owner session makes a replica's threads takeable, not lost: untaken, its turns still write."""
    with ModelServer(token_delay_s=0.1) as model:
        env = model_server_env(model.base_url)
        with ServerProcess(fresh_postgres_url, logs, env=env) as server, ThreadlineClient(server.address) as client:
            model.script(tokens(25))  # 2.5 s of answer
            events = client.stream_ask("Talk slowly", timeout=30)
            assert next(events).HasField("token")
            assert _end_owner_session(fresh_postgres_url, server) == 1
            # The storage probe (every second) opens a new session while the turn goes on.
            wait_until(
                lambda: "owner session open" in server.log().partition("owner session lost")[2], 10, "it reconnected"
            )
            finals = [e.final for e in events if e.HasField("final")]
            assert len(finals) == 1 and finals[0].answer == "".join(f"t{i} " for i in range(25))
