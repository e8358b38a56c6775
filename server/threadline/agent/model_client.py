"""The model the default agent calls: the offline model, or ChatOpenAI over HTTP connections we own."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import openai
from langchain_core.language_models import BaseChatModel
from pydantic import SecretStr

from threadline.agent.offline_model import OfflineChatModel
from threadline.agent.settings import AgentSettings

if TYPE_CHECKING:
    import httpx2  # the openai SDK's HTTP library (DefaultAioHttpClient is one of its clients)

log = logging.getLogger(__name__)

OFFLINE_BANNER = """
************************************************************************
*  OFFLINE MODEL: no OPENAI_API_KEY is set (or --offline-model is on). *
*  Answers come from Threadline's built-in deterministic model, not an *
*  LLM. Set OPENAI_API_KEY (and OPENAI_BASE_URL, THREADLINE_MODEL for  *
*  vLLM, Ollama, llama.cpp, ...) to talk to a real model.              *
************************************************************************"""


@asynccontextmanager
async def open_chat_model(settings: AgentSettings) -> AsyncIterator[BaseChatModel]:
    """The model of the settings; the HTTP connections it opened are closed on exit.

    ChatOpenAI is used as langchain-openai configures it: streamed responses are read by the
    openai SDK's own stream, which also raises an error event as APIError and a transport failure
    as its connection and timeout errors (agent.model_failures maps them).
    """
    if settings.offline:
        log.warning(OFFLINE_BANNER)
        yield OfflineChatModel(token_delay_s=settings.offline_token_delay_s)
        return
    from langchain_openai import ChatOpenAI

    http_client = _async_http_client(settings.http_client)
    log.info(
        "model %s at %s (HTTP client: %s)",
        settings.model,
        settings.base_url or "the OpenAI API",
        settings.http_client,
    )
    try:
        chat_model = ChatOpenAI(
            model=settings.model,
            api_key=SecretStr(settings.api_key),
            base_url=settings.base_url or None,
            timeout=settings.timeout_s,
            max_retries=settings.max_retries,
            http_async_client=http_client,
            # The usage chunk (stream_options.include_usage) on streamed answers too: the tokens of
            # every request reach metrics and spans. langchain-openai asks for it by itself only
            # from OpenAI's own URL with its own client; vLLM, Ollama and llama.cpp send it too.
            stream_usage=True,
            **_stream_chunk_timeout(),
        )
        yield chat_model
    finally:
        if http_client is not None:
            await http_client.aclose()


def _async_http_client(kind: str) -> httpx2.AsyncClient | None:
    """The HTTP client of async model requests, or None for langchain-openai's own (httpx).

    aiohttp: the openai SDK's aiohttp transport (the `DefaultAioHttpClient` it documents for
    high concurrency). Reading a model's stream is the server's largest cost per token, and httpx's
    pure-Python HTTP/1.1 stack (with anyio's cancel scope on every read) is a good part of it;
    aiohttp parses in C. Measured with 16 streams of 50 tokens (docs/performance.md): a third less
    CPU per token, in the server and in process. langchain-openai's own client also sets TCP
    keepalive probes; with aiohttp a silent model is still cut off by the read timeout (model_timeout_s).
    """
    if kind == "aiohttp":
        return openai.DefaultAioHttpClient()
    return None


def _stream_chunk_timeout() -> dict[str, Any]:
    """langchain-openai's per-chunk stream timeout, where it does not break cancellation.

    It wraps every chunk read in asyncio.wait_for, which before Python 3.12 loses a cancellation that
    arrives as a chunk does (CPython gh-86296): a cancelled turn's model stream then runs on to its end.
    On 3.11 it is off; a silent stream is still bounded by the HTTP read timeout (model_timeout_s).
    """
    return {"stream_chunk_timeout": None} if sys.version_info < (3, 12) else {}
