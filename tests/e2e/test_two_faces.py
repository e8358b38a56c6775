"""The sync and async clients over real gRPC: the same arguments get the same answer, and streams end alike."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.model_server import ModelServer, stall, text
from tests.support import ServerProcess, model_server_env
from threadline_client import AsyncThreadlineClient, ThreadlineClient, ThreadlineError, pb

THREAD = "<the module's thread>"
UNKNOWN_CHECKPOINT = "1f000000-0000-6000-8000-000000000000"
APPROVE = pb.ResumeDecision(approve=pb.Approval())

# (method, positional arguments, keyword arguments); THREAD stands for a thread with two turns.
CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("history", (THREAD,), {}),
    ("history", (THREAD,), {"page_size": 1, "message_limit": 1}),
    ("history", (THREAD,), {"page_token": "garbage!"}),
    ("history", ("a/b",), {}),
    ("iter_checkpoints", (THREAD,), {"page_size": 2}),
    ("iter_checkpoints", ("no-such-thread",), {}),
    ("get_state", (THREAD,), {}),
    ("get_state", (THREAD,), {"checkpoint_id": UNKNOWN_CHECKPOINT}),
    ("list_threads", (), {"page_size": -1}),
    ("delete_thread", ("no-such-thread",), {}),
    ("delete_thread", ("no-such-thread",), {"allow_missing": True}),
    ("ask", ("",), {}),
    ("ask", ("hi",), {"thread_id": THREAD, "checkpoint_id": UNKNOWN_CHECKPOINT}),
    ("stream_ask", ("hi",), {"thread_id": "/etc"}),
    ("rewind", (THREAD,), {}),
    ("rewind", (THREAD,), {"steps_back": 0}),
    ("rewind", (THREAD,), {"steps_back": 1, "checkpoint_id": UNKNOWN_CHECKPOINT}),
    ("resume", (THREAD, "no-such-interrupt", APPROVE), {}),
    ("stream_resume", ("no-such-thread", "no-such-interrupt", APPROVE), {"request_id": "r-1"}),
]


@pytest.fixture(scope="module")
def thread(sqlite_server: ServerProcess) -> str:
    with ThreadlineClient(sqlite_server.address) as client:
        first = client.ask("My name is Ada.")
        client.ask("What is 2+3?", thread_id=first.thread_id)
        return first.thread_id


def _outcome_of_sync(client: ThreadlineClient, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
    try:
        result = getattr(client, method)(*args, **kwargs)
        return list(result) if isinstance(result, Iterator) else result
    except ThreadlineError as error:
        return (error.code, error.message, error.reason, error.metadata)
    except ValueError as error:
        return ("ValueError", str(error))


async def _outcome_of_async(
    client: AsyncThreadlineClient, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> object:
    try:
        result = getattr(client, method)(*args, **kwargs)
        return [item async for item in result] if isinstance(result, AsyncIterator) else await result
    except ThreadlineError as error:
        return (error.code, error.message, error.reason, error.metadata)
    except ValueError as error:
        return ("ValueError", str(error))


def _with_thread(value: Any, thread: str) -> Any:
    if isinstance(value, dict):
        return {key: _with_thread(item, thread) for key, item in value.items()}
    if isinstance(value, tuple):
        return tuple(_with_thread(item, thread) for item in value)
    return thread if value == THREAD else value


@pytest.mark.parametrize(("method", "args", "kwargs"), CALLS, ids=[f"{i}-{call[0]}" for i, call in enumerate(CALLS)])
async def test_the_same_arguments_get_the_same_answer_from_both_clients(
    sqlite_server: ServerProcess, thread: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    args, kwargs = _with_thread(args, thread), _with_thread(kwargs, thread)
    with ThreadlineClient(sqlite_server.address) as sync_client:
        expected = _outcome_of_sync(sync_client, method, args, kwargs)
    async with AsyncThreadlineClient(sqlite_server.address) as async_client:
        assert await _outcome_of_async(async_client, method, args, kwargs) == expected


async def test_the_async_client_continues_a_thread_the_sync_client_began(sqlite_server: ServerProcess) -> None:
    with ThreadlineClient(sqlite_server.address) as sync_client:
        thread = sync_client.ask("My name is Ada.").thread_id
        async with AsyncThreadlineClient(sqlite_server.address) as async_client:
            asked = await async_client.ask("What is my name?", thread_id=thread)
            assert "Ada" in asked.answer
            events = [event async for event in async_client.stream_ask("My name is Grace.", thread_id=thread)]
            assert events[-1].final.checkpoint_id == sync_client.get_state(thread).checkpoint.checkpoint_id

            rewound = await async_client.rewind(thread, checkpoint_id=asked.checkpoint_id)
            assert rewound.head.checkpoint_id == sync_client.history(thread).head_checkpoint_id
            assert "Ada" in sync_client.ask("What is my name?", thread_id=thread).answer
            assert (await async_client.delete_thread(thread)).existed
        with pytest.raises(ThreadlineError) as caught:
            sync_client.history(thread)
        assert caught.value.code == grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
def model() -> Iterator[ModelServer]:
    with ModelServer() as server:
        yield server


@pytest.fixture(scope="module")
def model_server(model: ModelServer, tmp_path_factory: pytest.TempPathFactory, logs: Path) -> Iterator[ServerProcess]:
    url = f"sqlite:///{tmp_path_factory.mktemp('two-faces') / 'threadline.db'}"
    with ServerProcess(url, logs, env=model_server_env(model.base_url)) as process:
        yield process


async def _first_token_then_close(client: AsyncThreadlineClient, thread: str) -> None:
    async with contextlib.aclosing(client.stream_ask("Talk slowly", thread_id=thread)) as events:
        async for event in events:
            assert event.HasField("token"), event
            break


async def _first_token_then_cancel_the_task(client: AsyncThreadlineClient, thread: str) -> None:
    first_token = asyncio.Event()

    async def consume() -> None:
        async for event in client.stream_ask("Talk slowly", thread_id=thread):
            assert event.HasField("token"), event
            first_token.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_token.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("leave", [_first_token_then_close, _first_token_then_cancel_the_task])
async def test_leaving_an_async_stream_cancels_the_call(
    model_server: ServerProcess, model: ModelServer, leave: Any
) -> None:
    model.reset()
    model.script(text("Hello, Ada."))
    async with AsyncThreadlineClient(model_server.address) as client:
        thread = (await client.ask("My name is Ada.")).thread_id
        model.script(stall(after_tokens=1))
        await leave(client, thread)
        (record,) = await asyncio.to_thread(model.wait_for_cancelled, 1, 10)
        assert not record.completed, "the model's stream was cut: the server's turn was cancelled"
        model.script(text("Still here."))
        assert (await client.ask("Are you there?", thread_id=thread, timeout=10)).answer == "Still here."
