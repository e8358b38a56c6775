"""The text of a LangChain message, as the agent and the engine read it."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import BaseMessage


def text_of(message: BaseMessage) -> str:
    """The message's text, whether its content is a string or a list of content blocks."""
    content: Any = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)
