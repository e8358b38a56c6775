"""What the default agent (or a user graph) is built with; config.py fills it from the environment and flags."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AgentSettings:
    """The agent's settings. Defaults live in config.py, where each setting is declared once."""

    system_prompt: str
    """The default agent's system prompt; "" for none."""
    context_max_tokens: int
    """Most tokens (approximately) of conversation the default agent sends its model; 0: no limit."""
    graph: str
    """A user graph to serve instead of the default agent (package.module:attr), or ""."""
    approval_tools: tuple[str, ...]
    """Tools of the default agent that wait for a human's approval."""
    offline: bool
    """Answer with the built-in offline model instead of an OpenAI-compatible endpoint."""
    offline_token_delay_s: float
    """Pause between the offline model's tokens."""
    model: str
    """Model name sent to the endpoint."""
    api_key: str
    """The endpoint's API key (a secret: never logged)."""
    base_url: str
    """The endpoint's base URL; "" for the OpenAI API."""
    timeout_s: float
    """Upper bound of one model request."""
    max_retries: int
    """Retries langchain-openai makes on a failed model request."""
    http_client: str
    """The HTTP client of model requests: "aiohttp" or "httpx"."""
