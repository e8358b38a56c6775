"""ThreadlineClient: the synchronous client; its calls are defined once, in _calls."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import grpc
from google.protobuf.message import Message

from . import _calls
from ._common import ClientBase, client_method
from ._errors import error_from_rpc_error
from .v1.threadline_pb2_grpc import ThreadlineServiceStub

_P = ParamSpec("_P")
_ResultT = TypeVar("_ResultT")
_ItemT = TypeVar("_ItemT")
_EventT = TypeVar("_EventT", bound=Message)

_STREAM_NOTE = (
    "The call starts on the first next(). Leaving the iteration early (break, or an\n"
    "exception) cancels the call once the iterator is closed or garbage-collected."
)


def _iterator(item: Any) -> Any:
    """The annotation of a method that is an iterator of `item`s."""
    return Iterator[item]


def _unary(spec: Callable[_P, _calls.UnaryCall[_ResultT]]) -> Callable[Concatenate[ThreadlineClient, _P], _ResultT]:
    """The method that makes the call `spec` describes and returns its result."""

    def method(self: ThreadlineClient, /, *args: _P.args, **kwargs: _P.kwargs) -> _ResultT:
        return self._result(spec(*args, **kwargs))

    return client_method(method, spec)


def _stream(
    spec: Callable[_P, _calls.StreamCall[_EventT]],
) -> Callable[Concatenate[ThreadlineClient, _P], Iterator[_EventT]]:
    """The generator method that makes the streaming call `spec` describes and yields its messages."""

    def method(self: ThreadlineClient, /, *args: _P.args, **kwargs: _P.kwargs) -> Iterator[_EventT]:
        stream = spec(*args, **kwargs).start(self._stub, self._metadata)
        try:
            yield from stream
        except grpc.RpcError as err:
            raise error_from_rpc_error(err) from err
        finally:
            # A no-op once the stream has ended; stops the server's turn otherwise.
            stream.cancel()

    return client_method(method, spec, returns_in=_iterator, note=_STREAM_NOTE)


def _paged(
    spec: Callable[_P, _calls.PagedCall[_ItemT]],
) -> Callable[Concatenate[ThreadlineClient, _P], Iterator[_ItemT]]:
    """The generator method that yields the items of every page of the calls `spec` describes."""

    def method(self: ThreadlineClient, /, *args: _P.args, **kwargs: _P.kwargs) -> Iterator[_ItemT]:
        pages = spec(*args, **kwargs)
        page_token = ""
        while True:
            page = self._result(pages.page(page_token))
            yield from page.items
            page_token = page.next_page_token
            if not page_token:
                return

    return client_method(method, spec, returns_in=_iterator)


class ThreadlineClient(ClientBase):
    """A synchronous client of threadline.v1.ThreadlineService.

    Its channel opens when it is made. Every method raises ThreadlineError when
    the RPC fails. Use it as a context manager, or call close(), to release the
    channel.
    """

    def _init_channel(self) -> None:
        if self._credentials is None:
            self._channel = grpc.insecure_channel(self._target, options=self._options)
        else:
            self._channel = grpc.secure_channel(self._target, self._credentials, options=self._options)
        self._stub = ThreadlineServiceStub(self._channel)

    def __enter__(self) -> ThreadlineClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel, cancelling the calls still running on it."""
        self._channel.close()

    def _result(self, call: _calls.UnaryCall[_ResultT]) -> _ResultT:
        try:
            response = call.start(self._stub, self._metadata)
        except grpc.RpcError as err:
            raise error_from_rpc_error(err) from err
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
