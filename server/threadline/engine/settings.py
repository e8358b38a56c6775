"""What the engine is opened with; config.py fills it from the environment and flags."""

from __future__ import annotations

from dataclasses import dataclass

from threadline.agent.settings import AgentSettings
from threadline.storage.settings import StorageSettings


@dataclass(frozen=True)
class EngineSettings:
    """The engine's settings and its layers'. Defaults live in config.py, where each setting is declared once."""

    database_url: str
    """Where threads are kept: sqlite:///PATH, postgresql://... or memory://."""
    storage: StorageSettings
    agent: AgentSettings
    max_query_chars: int
    """Longest query accepted."""
    wait_when_busy: bool
    """A turn on a busy thread waits (within its deadline) instead of failing at once."""
    max_starting_turns: int | None
    """Turns of this process starting at once (None: any number)."""
    max_response_bytes: int
    """Largest response the transport may send: what carries messages is cut to fit it."""
    traced: bool = False
    """Whether turns make spans of their graph's nodes, model calls and tool calls (OpenTelemetry is set up)."""
