"""What a failed model connection is reported as: the OS's reason when it gave one, a timeout only when it was one.

The real model client (open_chat_model, the openai SDK, either HTTP client) against a closed port and against
tests/model_server.py stalling; model_failures turns what it raises into the ModelError a caller sees.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.model_server import ModelServer, stall
from tests.support import free_port
from threadline.agent.model_client import open_chat_model
from threadline.agent.model_failures import model_failures
from threadline.config import Settings
from threadline.errors import ModelError, ModelUnavailable


@pytest.fixture(params=["aiohttp", "httpx"])
def http_client(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def model() -> Iterator[ModelServer]:
    with ModelServer() as server:
        yield server


async def _failure(base_url: str, http_client: str) -> ModelError:
    """The ModelError of one model call, without retries, that may take 0.5 s."""
    settings = Settings(
        openai_api_key="sk-test",
        openai_base_url=base_url,
        model="test-model",
        model_http_client=http_client,
        model_max_retries=0,
        model_timeout_s=0.5,
    )
    async with open_chat_model(settings.agent) as chat:
        with pytest.raises(ModelError) as caught, model_failures():
            await chat.ainvoke("Hi")
    return caught.value


async def test_a_refused_connection_is_reported_in_the_os_words(http_client: str) -> None:
    # The SDK's aiohttp client raises APITimeoutError for it; the OS said "refused".
    error = await _failure(f"http://127.0.0.1:{free_port()}/v1", http_client)
    assert isinstance(error, ModelUnavailable)
    assert error.message == "the model endpoint is unreachable: connection refused"


async def test_an_endpoint_that_does_not_answer_in_time_timed_out(model: ModelServer, http_client: str) -> None:
    model.reset()
    model.script(stall(after_tokens=0))
    error = await _failure(model.base_url, http_client)
    assert isinstance(error, ModelUnavailable)
    assert error.message == "the model endpoint timed out"
