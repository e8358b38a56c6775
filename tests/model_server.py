"""A local OpenAI-compatible model server for tests and demos.

It speaks the Chat Completions wire protocol over real loopback HTTP, so langchain-openai's ``ChatOpenAI`` (the
``openai`` SDK and its HTTP client) runs against it exactly as it would against OpenAI: JSON completions, SSE streams
with per-token chunks, tool-call deltas and usage chunks, OpenAI-style HTTP errors and in-stream error events, and
connections that drop or stall mid-stream. Like OpenAI it refuses (HTTP 400) a conversation with a tool call
that no tool message answers before the next message, so no test passes with a dangling call. Every request is
recorded (body, chunk write times, completion, client cancellation) for tests to check.

In a (sync) test it runs its own event loop in a background thread::

    with ModelServer(token_delay_s=0.02) as server:
        server.script(text("Hello there"), failure(429, retry_after_s=1))
        server.script(tool_call("calculator", {"expression": "6*7"}), drop(after_tokens=3), stall(after_tokens=1))
        model = ChatOpenAI(base_url=server.base_url, api_key="test", model="test-model", max_retries=0)
        model.invoke("hi")  # "Hello there", streamed or not
        ...
        assert server.wait_for_requests(1)[0].completed

Each chat request takes the next scripted reply; with none left, `smart_reply` answers from the request itself:
a calculator call for arithmetic when a ``calculator`` tool is offered, "The answer is <result>." after a tool
result, and "You said: <text>" otherwise.

As a demo process (serves until SIGINT/SIGTERM)::

    python -m tests.model_server --port 8000 --token-delay-ms 20 [--api-key KEY]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any, NoReturn

from aiohttp import web

LOOPBACK = "127.0.0.1"
DEFAULT_MODELS = ("test-model",)
# Handlers still running when the server stops (a stall, a slow stream) get this long before they are cancelled:
# aiohttp waits up to twice this per connection, which keeps `stop()` well under a second.
_SHUTDOWN_GRACE_S = 0.1
_STOP_TIMEOUT_S = 5.0
# Tool-call arguments are streamed in fragments of this many characters, so clients must reassemble them.
_ARGUMENT_FRAGMENT_CHARS = 8
_ARITHMETIC = re.compile(r"[-(]*\d[\d.]*(?:\s*(?:\*\*|//|[-+*/%^])\s*[-(]*\d[\d.]*\)*)+\)*")
# Words keep their trailing whitespace, so the tokens join back into the exact text.
_TOKEN = re.compile(r"\S+\s*|\s+")


@dataclass(frozen=True)
class TextReply:
    """An assistant message streamed one token per chunk."""

    tokens: tuple[str, ...]


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as a model writes it
    call_id: str | None = None  # None: "call_<request index>_<position>"


@dataclass(frozen=True)
class ToolCallsReply:
    """An assistant message calling one or more tools (finish_reason "tool_calls")."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class FailureReply:
    """An HTTP error with an OpenAI-style body; nothing is streamed."""

    status: int
    message: str
    error_type: str
    code: str | None
    retry_after_s: float | None = None


@dataclass(frozen=True)
class DropReply:
    """`after_tokens` tokens, then the connection is aborted: no final chunk, no [DONE]."""

    after_tokens: int


@dataclass(frozen=True)
class StallReply:
    """`after_tokens` tokens, then silence until the client goes away or the server stops."""

    after_tokens: int


@dataclass(frozen=True)
class StreamErrorReply:
    """`after_tokens` tokens, then an error event in the stream (`data: {"error": ...}`), as OpenAI sends when a
    streamed completion fails after its HTTP 200; the stream ends there, with no [DONE]."""

    after_tokens: int
    message: str


Reply = TextReply | ToolCallsReply | FailureReply | DropReply | StallReply | StreamErrorReply
_Streamed = TextReply | ToolCallsReply | DropReply | StallReply | StreamErrorReply  # the replies that produce tokens


def text(content: str | Sequence[str]) -> TextReply:
    """A text reply: a string is split into words (each keeps its trailing whitespace); a sequence is the tokens."""
    return TextReply(tuple(_TOKEN.findall(content) if isinstance(content, str) else content))


def tokens(n: int) -> TextReply:
    """A text reply of n distinct tokens "t0 ", "t1 ", ..."""
    return TextReply(tuple(f"t{i} " for i in range(n)))


def tool_call(name: str, args: Mapping[str, Any] | None = None, *, call_id: str | None = None) -> ToolCallsReply:
    """A reply calling one tool with args (JSON-encoded on the wire)."""
    return ToolCallsReply((ToolCall(name, json.dumps(dict(args or {})), call_id),))


def tool_calls(*replies: ToolCallsReply) -> ToolCallsReply:
    """One reply making all the given calls, in order: ``tool_calls(tool_call("a", ...), tool_call("b", ...))``."""
    return ToolCallsReply(tuple(call for reply in replies for call in reply.calls))


def failure(
    status: int,
    message: str | None = None,
    *,
    error_type: str | None = None,
    code: str | None = None,
    retry_after_s: float | None = None,
) -> FailureReply:
    """An HTTP error; type and code default to what OpenAI sends for that status."""
    default_type, default_code = _error_kind(status)
    return FailureReply(
        status=status,
        message=message if message is not None else f"Scripted failure with HTTP status {status}.",
        error_type=error_type if error_type is not None else default_type,
        code=code if code is not None else default_code,
        retry_after_s=retry_after_s,
    )


def drop(after_tokens: int) -> DropReply:
    return DropReply(after_tokens)


def stall(after_tokens: int) -> StallReply:
    return StallReply(after_tokens)


def stream_error(
    after_tokens: int, message: str = "The server had an error while processing your request."
) -> StreamErrorReply:
    return StreamErrorReply(after_tokens, message)


def _error_kind(status: int) -> tuple[str, str | None]:
    if status == 401:
        return "invalid_request_error", "invalid_api_key"
    if status == 429:
        return "requests", "rate_limit_exceeded"
    if status >= 500:
        return "server_error", None
    return "invalid_request_error", None


def _unanswered_tool_calls(body: Mapping[str, Any]) -> list[str]:
    """The ids of tool calls in the request's messages that no tool message answers before the next turn."""
    owed: list[str] = []
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        if message.get("role") == "tool":
            owed = [call_id for call_id in owed if call_id != message.get("tool_call_id")]
        elif owed:
            return owed
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict):
                owed.append(str(call.get("id")))
    return owed


def smart_reply(body: Mapping[str, Any]) -> Reply:
    """The reply to a request nothing was scripted for (see the module docstring)."""
    messages: list[Mapping[str, Any]] = body.get("messages") or []
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return text(f"The answer is {_text_of(last.get('content'))}.")
    offered = {tool.get("function", {}).get("name") for tool in body.get("tools") or []}
    if last.get("role") == "user" and "calculator" in offered:
        expression = _ARITHMETIC.search(_text_of(last.get("content")))
        if expression:
            return tool_call("calculator", {"expression": expression.group(0).strip()})
    said = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    return text(f"You said: {said}")


def _text_of(content: Any) -> str:
    """The text of a message's content, which is a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


@dataclass(slots=True)
class RequestRecord:
    """One chat completion request as the server saw it. `ModelServer` hands out copies; times are monotonic."""

    index: int
    body: dict[str, Any]
    authorization: str | None
    started_at: float
    reply: Reply | None = None  # what the server answered with (a 401 when the API key was wrong)
    chunk_times: list[float] = field(default_factory=list)  # when each SSE chunk (or the whole body) was written
    completed: bool = False  # the whole response ([DONE] or the full body) went out
    cancelled: bool = False  # the client closed the connection before the response was complete
    cancelled_at: float | None = None  # when the server noticed
    usage: dict[str, int] | None = None  # the usage the response reported (a stream: only when asked for)

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


class ModelServer:
    """The server; see the module docstring. All public methods are safe to call from any thread."""

    def __init__(
        self,
        *,
        port: int = 0,
        token_delay_s: float = 0.0,
        api_key: str | None = None,
        models: Sequence[str] = DEFAULT_MODELS,
    ) -> None:
        # Read before every token, so a test may change it at any time, even mid-stream.
        self.token_delay_s = token_delay_s
        self._requested_port = port
        self._api_key = api_key
        self._models = tuple(models)
        # Guards the script and the records, shared between the server's loop thread and test threads.
        self._changed = threading.Condition()
        self._script: deque[Reply] = deque()
        self._records: list[RequestRecord] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._stopping = False
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the model server is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """What to give a client as its base URL: ``http://127.0.0.1:PORT/v1``."""
        return f"http://{LOOPBACK}:{self.port}/v1"

    def start(self) -> ModelServer:
        if self._thread is not None:
            raise RuntimeError("the model server is already running")
        started: concurrent.futures.Future[int] = concurrent.futures.Future()
        thread = threading.Thread(target=lambda: asyncio.run(self._serve(started)), name="model-server", daemon=True)
        thread.start()
        try:
            self._port = started.result(timeout=_STOP_TIMEOUT_S)
        except BaseException:
            thread.join(_STOP_TIMEOUT_S)
            raise
        self._thread = thread
        return self

    def stop(self) -> None:
        """Stop serving and end the loop thread; requests still in progress get a moment, then are cut off."""
        thread, loop, stop_requested = self._thread, self._loop, self._stop_requested
        if thread is None or loop is None or stop_requested is None:
            return
        loop.call_soon_threadsafe(stop_requested.set)
        thread.join(_STOP_TIMEOUT_S)
        if thread.is_alive():
            raise RuntimeError(f"the model server did not stop within {_STOP_TIMEOUT_S} s")
        self._thread = self._loop = self._stop_requested = None
        self._port = None

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def script(self, *replies: Reply) -> None:
        """Queue replies; each chat request takes the oldest one."""
        with self._changed:
            self._script.extend(replies)

    @property
    def requests(self) -> list[RequestRecord]:
        """Copies of the records of every chat request so far, in arrival order."""
        with self._changed:
            return [_copy(record) for record in self._records]

    def cancelled_requests(self) -> list[RequestRecord]:
        return [record for record in self.requests if record.cancelled]

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RequestRecord]:
        """The records once at least n chat requests have arrived; TimeoutError if they do not in time."""
        self._wait_until(lambda: len(self._records) >= n, timeout, f"{n} requests")
        return self.requests

    def wait_for_cancelled(self, n: int = 1, timeout: float = 5.0) -> list[RequestRecord]:
        """The cancelled records once at least n requests were cancelled by their clients."""
        self._wait_until(lambda: sum(r.cancelled for r in self._records) >= n, timeout, f"{n} cancelled requests")
        return self.cancelled_requests()

    def reset(self) -> None:
        """Forget scripted replies and records (request indexes start at 0 again)."""
        with self._changed:
            self._script.clear()
            self._records.clear()

    def _wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(predicate, timeout):
                raise TimeoutError(f"the model server did not see {what} within {timeout} s")

    # Everything below runs on the server's event loop.

    async def _serve(self, started: concurrent.futures.Future[int]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        self._stopping = False
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._list_models)
        # aiohttp 3.x leaves handlers running when their client disconnects; with handler_cancellation it cancels
        # them from connection_lost, which notices a closed stream at once, even while nothing is being written.
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_GRACE_S)
        await runner.setup()
        try:
            try:
                await web.TCPSite(runner, LOOPBACK, self._requested_port).start()
            except OSError as exc:
                started.set_exception(exc)
                return
            started.set_result(runner.addresses[0][1])
            await self._stop_requested.wait()
            self._stopping = True
        finally:
            await runner.cleanup()

    async def _list_models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error_response(_wrong_key())
        models = [
            {"id": name, "object": "model", "created": 0, "owned_by": "threadline-tests"} for name in self._models
        ]
        return web.json_response({"object": "list", "data": models})

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return _error_response(failure(400, "The request body is not a JSON object."))
        with self._changed:
            record = RequestRecord(
                index=len(self._records),
                body=body,
                authorization=request.headers.get("Authorization"),
                started_at=time.monotonic(),
            )
            self._records.append(record)
            if not self._authorized(request):
                record.reply = _wrong_key()
            elif unanswered := _unanswered_tool_calls(body):
                # As OpenAI does: a conversation whose tool calls are not all answered is refused.
                record.reply = failure(
                    400,
                    "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                    f"'tool_call_id'. The following tool_call_ids did not have response messages: {unanswered}",
                )
            else:
                record.reply = self._script.popleft() if self._script else smart_reply(body)
            reply = record.reply
            self._changed.notify_all()
        try:
            if isinstance(reply, FailureReply):
                self._note_write(record, last=True)
                return _error_response(reply)
            if record.stream:
                return await self._stream(request, record, reply)
            return await self._respond(request, record, reply)
        except asyncio.CancelledError:
            # With handler_cancellation, only a lost connection or our own shutdown cancels a handler.
            if not self._stopping:
                self._note_cancelled(record)
            raise

    async def _respond(self, request: web.Request, record: RequestRecord, reply: _Streamed) -> web.Response:
        deltas = _token_deltas(reply, record.index)
        await asyncio.sleep(self.token_delay_s * len(deltas))
        if isinstance(reply, StallReply):
            await _forever()
        if isinstance(reply, DropReply):
            _abort(request)
            return web.Response()  # never written: the connection is gone
        if isinstance(reply, StreamErrorReply):  # unstreamed, the failure is the HTTP status
            self._note_write(record, last=True)
            return _error_response(failure(500, reply.message))
        message: dict[str, Any]
        if isinstance(reply, ToolCallsReply):
            message = {"role": "assistant", "content": None, "tool_calls": _full_tool_calls(reply, record.index)}
        else:
            message = {"role": "assistant", "content": "".join(reply.tokens), "refusal": None}
        completion = {
            **_head(record, "chat.completion"),
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish_reason(reply)}],
            "usage": _usage(record.body, len(deltas)),
        }
        self._note_usage(record, completion["usage"])
        self._note_write(record, last=True)
        return web.json_response(completion)

    async def _stream(self, request: web.Request, record: RequestRecord, reply: _Streamed) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        head = _head(record, "chat.completion.chunk")
        deltas = _token_deltas(reply, record.index)
        # OpenAI sends the role on the first chunk; an empty reply's only chunk is its final one.
        role = {"role": "assistant"}
        try:
            await response.prepare(request)
            for position, delta in enumerate(deltas):
                await asyncio.sleep(self.token_delay_s)
                chunk = _choice(role | delta if position == 0 else delta)
                await self._write(response, record, {**head, "choices": [chunk]})
            if isinstance(reply, DropReply):
                _abort(request)
                return response
            if isinstance(reply, StallReply):
                await _forever()
            if isinstance(reply, StreamErrorReply):
                error = {"message": reply.message, "type": "server_error", "param": None, "code": None}
                await self._write(response, record, {"error": error}, last=True)
                await response.write_eof()
                return response
            final = _choice({} if deltas else role | {"content": ""}, _finish_reason(reply))
            await self._write(response, record, {**head, "choices": [final]})
            if (record.body.get("stream_options") or {}).get("include_usage"):
                usage = _usage(record.body, len(deltas))
                self._note_usage(record, usage)
                await self._write(response, record, {**head, "choices": [], "usage": usage})
            await self._write(response, record, "[DONE]", last=True)
        except ConnectionResetError:
            # aiohttp refuses to write to a closing transport: the client hung up between our awaits.
            self._note_cancelled(record)
            return response
        await response.write_eof()
        return response

    async def _write(
        self, response: web.StreamResponse, record: RequestRecord, data: Mapping[str, Any] | str, *, last: bool = False
    ) -> None:
        payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        # Noted before writing: once the bytes are out the client may look at the record before we run again.
        self._note_write(record, last=last)
        await response.write(f"data: {payload}\n\n".encode())

    def _note_write(self, record: RequestRecord, *, last: bool) -> None:
        with self._changed:
            record.chunk_times.append(time.monotonic())
            record.completed = last
            self._changed.notify_all()

    def _note_usage(self, record: RequestRecord, usage: dict[str, int]) -> None:
        with self._changed:
            record.usage = dict(usage)

    def _note_cancelled(self, record: RequestRecord) -> None:
        with self._changed:
            record.cancelled, record.cancelled_at, record.completed = True, time.monotonic(), False
            self._changed.notify_all()

    def _authorized(self, request: web.Request) -> bool:
        return self._api_key is None or request.headers.get("Authorization") == f"Bearer {self._api_key}"


def _copy(record: RequestRecord) -> RequestRecord:
    return dataclasses.replace(
        record, chunk_times=list(record.chunk_times), usage=None if record.usage is None else dict(record.usage)
    )


def _wrong_key() -> FailureReply:
    return failure(401, "Incorrect API key provided.")


def _error_response(reply: FailureReply) -> web.Response:
    body = {"error": {"message": reply.message, "type": reply.error_type, "param": None, "code": reply.code}}
    headers = {} if reply.retry_after_s is None else {"Retry-After": f"{reply.retry_after_s:g}"}
    return web.json_response(body, status=reply.status, headers=headers)


def _token_deltas(reply: _Streamed, request_index: int) -> list[dict[str, Any]]:
    """The deltas of a reply's token chunks, one per token (a tool call's name, then its argument fragments)."""
    if isinstance(reply, ToolCallsReply):
        deltas: list[dict[str, Any]] = []
        for position, call in enumerate(reply.calls):
            opening = {"index": position, "id": _call_id(call, request_index, position), "type": "function"}
            deltas.append({"tool_calls": [opening | {"function": {"name": call.name, "arguments": ""}}]})
            for start in range(0, len(call.arguments), _ARGUMENT_FRAGMENT_CHARS):
                fragment = call.arguments[start : start + _ARGUMENT_FRAGMENT_CHARS]
                deltas.append({"tool_calls": [{"index": position, "function": {"arguments": fragment}}]})
        return deltas
    words = reply.tokens if isinstance(reply, TextReply) else tokens(reply.after_tokens).tokens
    return [{"content": word} for word in words]


def _full_tool_calls(reply: ToolCallsReply, request_index: int) -> list[dict[str, Any]]:
    return [
        {
            "id": _call_id(call, request_index, position),
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for position, call in enumerate(reply.calls)
    ]


def _call_id(call: ToolCall, request_index: int, position: int) -> str:
    return call.call_id if call.call_id is not None else f"call_{request_index}_{position}"


def _finish_reason(reply: _Streamed) -> str:
    return "tool_calls" if isinstance(reply, ToolCallsReply) else "stop"


def _head(record: RequestRecord, kind: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{record.index}",
        "object": kind,
        "created": int(time.time()),
        "model": record.body.get("model", DEFAULT_MODELS[0]),
        "system_fingerprint": None,
    }


def _choice(delta: Mapping[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish_reason}


def _usage(body: Mapping[str, Any], completion_tokens: int) -> dict[str, int]:
    # Whitespace-separated words stand in for tokens: deterministic, and enough to tell requests apart.
    prompt_tokens = sum(len(_text_of(m.get("content")).split()) for m in body.get("messages") or [])
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


async def _forever() -> NoReturn:
    """Wait until cancelled: by the client closing the connection, or by the server stopping."""
    never: asyncio.Future[NoReturn] = asyncio.get_running_loop().create_future()
    await never


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.model_server", description="Serve the OpenAI-compatible test model."
    )
    parser.add_argument("--port", type=int, default=8000, help="loopback port (0: any free port)")
    parser.add_argument("--token-delay-ms", type=float, default=0.0, help="delay before each streamed token")
    parser.add_argument("--api-key", help="accept only this bearer key (default: any)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with ModelServer(port=args.port, token_delay_s=args.token_delay_ms / 1000, api_key=args.api_key) as server:
        print(f"OpenAI-compatible test model at {server.base_url}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
