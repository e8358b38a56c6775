"""Turns start a few at a time, in arrival order: a burst waits its turn instead of failing on the pool."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, database_url
from tests.model_server import ModelServer, tokens
from tests.support import ServerProcess, free_port, model_server_env, scrape, total, wait_until
from threadline.engine.turn_starts import TurnStarts
from threadline.errors import DeadlineExceeded
from threadline_client import AsyncThreadlineClient, ThreadlineClient


def _checkpoint(source: str) -> dict[str, object]:
    """A "checkpoints" part of LangGraph's astream, as much of it as a turn's start looks at."""
    return {"metadata": {"source": source, "step": 3}}


def test_turns_past_the_limit_wait_in_arrival_order_until_a_question_is_stored() -> None:
    async def scenario() -> list[str]:
        starts = TurnStarts(limit=1)
        order: list[str] = []
        first_admitted = asyncio.Event()
        go_on = asyncio.Event()

        async def turn(name: str) -> None:
            async with starts.admitted(deadline=None, rpc="Ask") as admission:
                order.append(name)
                if name == "first":
                    first_admitted.set()
                    admission.saw("checkpoints", _checkpoint("input"))  # the question is being stored
                    # A window for the others to run: one admitted now would show in `order` before
                    # "first still starting" (passing does not depend on the window's length).
                    await asyncio.sleep(0.05)
                    order.append("first still starting")
                    admission.saw("checkpoints", _checkpoint("loop"))  # stored: the model is asked next
                    await go_on.wait()  # the turn runs on, without its place
                    order.append("first ends")

        first = asyncio.create_task(turn("first"))
        await first_admitted.wait()
        others = [asyncio.create_task(turn(name)) for name in ("second", "third")]
        await asyncio.gather(*others)
        go_on.set()
        await first
        return order

    assert asyncio.run(scenario()) == ["first", "first still starting", "second", "third", "first ends"]


def test_a_turn_that_waits_for_a_busy_thread_steps_aside_and_then_takes_its_place_again() -> None:
    async def scenario() -> list[str]:
        starts = TurnStarts(limit=1)
        order: list[str] = []
        thread_free, stepped_aside = asyncio.Event(), asyncio.Event()

        async def waits_for_its_thread() -> None:
            async with starts.admitted(deadline=None, rpc="Ask") as admission:
                async with admission.stepped_aside():
                    stepped_aside.set()
                    await thread_free.wait()
                order.append("waiter has its place again")

        async def another_thread() -> None:
            async with starts.admitted(deadline=None, rpc="Ask"):
                order.append("another thread starts")
                thread_free.set()
                # A window for the waiter to run: taking its place back now would show in `order`
                # before "another thread done starting" (passing does not depend on the window's length).
                await asyncio.sleep(0.05)
                order.append("another thread done starting")

        waiter = asyncio.create_task(waits_for_its_thread())
        await stepped_aside.wait()  # the only place is free again, while the waiter still holds its admission
        await asyncio.gather(waiter, another_thread())
        return order

    assert asyncio.run(scenario()) == [
        "another thread starts",
        "another thread done starting",
        "waiter has its place again",
    ]


def test_the_wait_to_start_ends_at_the_calls_deadline() -> None:
    async def scenario() -> None:
        starts = TurnStarts(limit=1)
        async with starts.admitted(deadline=None, rpc="Ask"):
            with pytest.raises(DeadlineExceeded, match="waited to start behind 1 others"):
                async with starts.admitted(deadline=time.monotonic() + 0.05, rpc="StreamAsk"):
                    raise AssertionError("admitted while the only place was held")
        async with starts.admitted(deadline=time.monotonic() + 1, rpc="Ask"):  # the place was given back
            pass

    asyncio.run(scenario())


@pytest.mark.parametrize(("backend", "replicas"), [*((backend, 1) for backend in BACKENDS), ("postgres", 2)], ids=str)
def test_turns_queued_on_a_busy_thread_do_not_hold_up_other_threads(
    backend: str, replicas: int, tmp_path: Path, logs: Path, request: pytest.FixtureRequest
) -> None:
    """With one place to start, a turn waiting for a busy thread must not keep it.

    On one replica the waiting turns queue on the thread's local lock; on a second replica
    the first of them polls the database for the thread (the others queue behind it).
    """
    url = database_url(backend, tmp_path, request, fresh=True)
    with ModelServer(token_delay_s=0.05) as model:
        metrics = [f"127.0.0.1:{free_port()}" for _ in range(replicas)]
        with ExitStack() as stack:
            servers = [
                stack.enter_context(ServerProcess(url, logs, env=_starting_one_at_a_time(model, metrics_address)))
                for metrics_address in metrics
            ]
            first = stack.enter_context(ThreadlineClient(servers[0].address))
            last = stack.enter_context(ThreadlineClient(servers[-1].address))
            busy = first.ask("Hello", timeout=30).thread_id
            model.script(tokens(80))  # the busy thread's long turn: 4 s
            long_turn = first.stream_ask("Talk slowly", thread_id=busy, timeout=30)
            assert next(long_turn).HasField("token")
            with ThreadPoolExecutor(3) as pool:
                # Three more turns queue on the busy thread.
                waiting = [pool.submit(last.ask, f"And then {i}?", thread_id=busy, timeout=30) for i in range(3)]
                in_flight = 1 + 3 if replicas == 1 else 3  # the long turn is the first replica's
                wait_until(
                    lambda: total(scrape(metrics[-1]), "threadline_turns_in_flight") == in_flight,
                    10,
                    "the three turns reached the server",
                )
                other = last.ask("Meanwhile, hello", timeout=30)
                assert "Meanwhile, hello" in other.answer
                long_request = model.requests[1]  # the first was the thread's first turn
                assert long_request.reply == tokens(80)
                assert not long_request.completed, "the other thread's turn waited for the busy thread's turn to end"
                assert any(e.HasField("final") for e in long_turn)
                assert all("And then" in future.result().answer for future in waiting)


def _starting_one_at_a_time(model: ModelServer, metrics_address: str) -> dict[str, str]:
    """A server on the model, with one place to start turns, whose metrics are served at metrics_address."""
    return model_server_env(
        model.base_url, THREADLINE_MAX_STARTING_TURNS="1", THREADLINE_METRICS_ADDRESS=metrics_address
    )


def test_a_burst_far_beyond_the_pool_waits_to_start_instead_of_failing(fresh_postgres_url: str, logs: Path) -> None:
    """200 streams at once on a pool of 2 whose statements may wait only 0.5 s for a connection."""
    streams = 200
    with ModelServer(token_delay_s=0.05) as model:
        env = model_server_env(
            model.base_url,
            THREADLINE_DB_POOL_MIN_SIZE="2",
            THREADLINE_DB_POOL_MAX_SIZE="2",
            THREADLINE_DB_POOL_TIMEOUT_S="0.5",  # the default limit on starting turns: twice the pool, 4
        )
        with ServerProcess(fresh_postgres_url, logs, env=env) as server:

            async def burst() -> list[str | BaseException]:
                clients = [AsyncThreadlineClient(server.address) for _ in range(4)]

                async def one(i: int) -> str:
                    answer = ""
                    async for event in clients[i % len(clients)].stream_ask(f"Hello number {i}", timeout=60):
                        if event.HasField("final"):
                            answer = event.final.answer
                    return answer

                try:
                    return await asyncio.gather(*(one(i) for i in range(streams)), return_exceptions=True)
                finally:
                    for c in clients:
                        await c.close()

            results = asyncio.run(burst())
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, f"{len(failures)} of {streams} failed, first: {failures[0]!r}"
        assert all(f"Hello number {i}" in str(r) for i, r in enumerate(results))
