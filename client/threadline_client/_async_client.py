"""AsyncThreadlineClient: the asyncio client over grpc.aio; its calls are defined once, in _calls."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from . import _calls
from ._common import ClientBase, client_method
from ._errors import error_from_aio_rpc_error
from .v1.threadline_pb2_grpc import ThreadlineServiceStub

if TYPE_CHECKING:
    from .v1.threadline_pb2_grpc import ThreadlineServiceAsyncStub

_P = ParamSpec("_P")
_ResultT = TypeVar("_ResultT")
_ItemT = TypeVar("_ItemT")
_EventT = TypeVar("_EventT", bound=Message)

_STREAM_NOTE = (
    "The call starts on the first iteration. Cancelling the consuming task cancels\n"
    "the call; so does leaving the iteration early, once the generator is closed\n"
    "(wrap it in contextlib.aclosing() to close it at once)."
)


def _async_generator(item: Any) -> Any:
    """The annotation of a method that is an async generator of `item`s."""
    return AsyncGenerator[item, None]


def _unary(
    spec: Callable[_P, _calls.UnaryCall[_ResultT]],
) -> Callable[Concatenate[AsyncThreadlineClient, _P], Coroutine[Any, Any, _ResultT]]:
    """The coroutine method that makes the call `spec` describes and returns its result."""

    async def method(self: AsyncThreadlineClient, /, *args: _P.args, **kwargs: _P.kwargs) -> _ResultT:
        return await self._result(spec(*args, **kwargs))

    return client_method(method, spec)


def _stream(
    spec: Callable[_P, _calls.StreamCall[_EventT]],
) -> Callable[Concatenate[AsyncThreadlineClient, _P], AsyncGenerator[_EventT, None]]:
    """The async generator method that makes the streaming call `spec` describes and yields its messages."""

    async def method(
        self: AsyncThreadlineClient, /, *args: _P.args, **kwargs: _P.kwargs
    ) -> AsyncGenerator[_EventT, None]:
        # The generator's own body, not a delegation to another async generator:
        # closing this one must reach the `finally` at once.
        stream = spec(*args, **kwargs).start(self._stub(), self._metadata)
        try:
            async for event in stream:
                yield event
        except grpc.aio.AioRpcError as err:
            raise error_from_aio_rpc_error(err) from err
        finally:
            # A no-op once the stream has ended; stops the server's turn otherwise.
            stream.cancel()

    return client_method(method, spec, returns_in=_async_generator, note=_STREAM_NOTE)


def _paged(
    spec: Callable[_P, _calls.PagedCall[_ItemT]],
) -> Callable[Concatenate[AsyncThreadlineClient, _P], AsyncGenerator[_ItemT, None]]:
    """The async generator method that yields the items of every page of the calls `spec` describes."""

    async def method(
        self: AsyncThreadlineClient, /, *args: _P.args, **kwargs: _P.kwargs
    ) -> AsyncGenerator[_ItemT, None]:
        pages = spec(*args, **kwargs)
        page_token = ""
        while True:
            page = await self._result(pages.page(page_token))
            for item in page.items:
                yield item
            page_token = page.next_page_token
            if not page_token:
                return

    return client_method(method, spec, returns_in=_async_generator)


class AsyncThreadlineClient(ClientBase):
    """An asyncio client of threadline.v1.ThreadlineService.

    The channel opens on the first call, because a grpc.aio channel belongs to
    the event loop running when it is made: create the client anywhere, but use
    it within one event loop. Every method raises ThreadlineError when the RPC
    fails. Use it as an async context manager, or await close().

    The methods take `timeout` rather than leaving it to asyncio.timeout()
    because it becomes the call's gRPC deadline, which the server sees too.
    """

    def _init_channel(self) -> None:
        self._channel: grpc.aio.Channel | None = None
        self._stub_instance: ThreadlineServiceAsyncStub | None = None

    async def __aenter__(self) -> AsyncThreadlineClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel, cancelling the calls still running on it; a later call reopens it."""
        channel, self._channel, self._stub_instance = self._channel, None, None
        if channel is not None:
            await channel.close()

    def _stub(self) -> ThreadlineServiceAsyncStub:
        if self._stub_instance is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(self._target, options=self._options)
            else:
                channel = grpc.aio.secure_channel(self._target, self._credentials, options=self._options)
            self._channel, self._stub_instance = channel, _async_stub(channel)
        return self._stub_instance

    async def _result(self, call: _calls.UnaryCall[_ResultT]) -> _ResultT:
        try:
            response = await call.start(self._stub(), self._metadata)
        except grpc.aio.AioRpcError as err:
            raise error_from_aio_rpc_error(err) from err
        return call.result(response)

    ask = _unary(_calls.ask)
    stream_ask = _stream(_calls.stream_ask)
    history = _unary(_calls.history)
    iter_checkpoints = _paged(_calls.iter_checkpoints)
    rewind = _unary(_calls.rewind)
    delete_thread = _unary(_calls.delete_thread)
    get_state = _unary(_calls.get_state)
    list_threads = _unary(_calls.list_threads)
    list_messages = _unary(_calls.list_messages)
    iter_messages = _paged(_calls.iter_messages)
    resume = _unary(_calls.resume)
    stream_resume = _stream(_calls.stream_resume)


def _async_stub(channel: grpc.aio.Channel) -> ThreadlineServiceAsyncStub:
    # Without grpc type stubs both channel types are Any and the stub constructor's
    # overloads collapse to the sync one; at run time, on an aio channel, it is async.
    return ThreadlineServiceStub(channel)  # type: ignore[return-value, unused-ignore]
