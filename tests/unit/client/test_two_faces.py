"""ThreadlineClient and AsyncThreadlineClient show the same methods; the server shares the client's constants."""

from __future__ import annotations

import inspect
import pydoc
import typing
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any

import pytest

from threadline import config
from threadline.transport import status_mapping
from threadline_client import AsyncThreadlineClient, ThreadlineClient, constants

STREAMS = {"stream_ask", "stream_resume", "iter_checkpoints", "iter_messages"}


def _public(cls: type) -> list[str]:
    return sorted(name for name in dir(cls) if not name.startswith("_"))


METHODS = _public(ThreadlineClient)


def _parameters(method: Callable[..., Any]) -> list[tuple[str, Any, Any, Any]]:
    hints = typing.get_type_hints(method)
    return [(p.name, p.kind, p.default, hints.get(p.name)) for p in inspect.signature(method).parameters.values()]


def test_both_clients_have_the_same_public_methods() -> None:
    assert METHODS == _public(AsyncThreadlineClient)
    assert {"ask", "stream_ask", "history", "iter_checkpoints", "rewind", "resume", "stream_resume"} <= set(METHODS)


@pytest.mark.parametrize("name", ["__init__", *METHODS])
def test_a_method_takes_the_same_arguments_in_both_clients(name: str) -> None:
    assert _parameters(getattr(ThreadlineClient, name)) == _parameters(getattr(AsyncThreadlineClient, name))


@pytest.mark.parametrize("name", METHODS)
def test_a_method_returns_the_same_thing_its_own_way(name: str) -> None:
    sync, async_ = getattr(ThreadlineClient, name), getattr(AsyncThreadlineClient, name)
    returns, async_returns = typing.get_type_hints(sync)["return"], typing.get_type_hints(async_)["return"]
    if name in STREAMS:
        assert inspect.isgeneratorfunction(sync) and inspect.isasyncgenfunction(async_)
        assert typing.get_origin(returns) is Iterator and typing.get_origin(async_returns) is AsyncGenerator
        assert typing.get_args(returns) == typing.get_args(async_returns)[:1]
        assert typing.get_args(async_returns)[1] in (None, type(None)), "an async generator one sends nothing into"
    else:
        assert not inspect.isgeneratorfunction(sync) and inspect.iscoroutinefunction(async_)
        assert returns == async_returns


@pytest.mark.parametrize("cls", [ThreadlineClient, AsyncThreadlineClient])
@pytest.mark.parametrize("name", sorted(set(METHODS) - {"close", "stream_resume"}))
def test_help_documents_every_argument(cls: type, name: str) -> None:
    method = getattr(cls, name)
    text = pydoc.render_doc(method, renderer=pydoc.plaintext)
    assert f"{cls.__name__}.{name}" == method.__qualname__
    assert "Args:" in text
    for parameter in list(inspect.signature(method).parameters)[1:]:
        assert f"{parameter}: " in text, f"help({cls.__name__}.{name}) does not document {parameter}"


def test_a_stream_says_how_its_own_iteration_ends_the_call() -> None:
    assert "first next()" in (ThreadlineClient.stream_ask.__doc__ or "")
    assert "aclosing()" in (AsyncThreadlineClient.stream_ask.__doc__ or "")
    assert "aclosing()" in (AsyncThreadlineClient.stream_resume.__doc__ or "")


def test_the_server_takes_its_defaults_and_error_domain_from_the_client_package() -> None:
    defaults = config.Settings()
    assert defaults.address == constants.DEFAULT_ADDRESS == "127.0.0.1:50051"
    assert defaults.max_message_bytes == constants.DEFAULT_MAX_MESSAGE_BYTES == 4 * 1024 * 1024
    assert status_mapping.DOMAIN == constants.ERROR_DOMAIN == "threadline.dev"
    init = inspect.signature(ThreadlineClient.__init__).parameters
    assert init["target"].default == constants.DEFAULT_ADDRESS
    assert init["max_message_bytes"].default == constants.DEFAULT_MAX_MESSAGE_BYTES
