"""Answers that fit a gRPC message, whatever a thread holds: budgets, truncation and pages of messages.

A response must stay under the server's largest message (THREADLINE_MAX_MESSAGE_BYTES) or the
caller gets RESOURCE_EXHAUSTED instead of an answer. So what carries a conversation returns its
newest messages that fit a byte budget (the rest is read with ListMessages), and a single message
larger than the budget on its own comes back cut, flagged `truncated`. Sizes are estimated from
UTF-8 lengths plus a fixed overhead per message: protobuf's framing adds a few bytes per field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from threadline.engine.views import MessageView, TurnResult

MESSAGE_OVERHEAD_BYTES = 64
"""Framing, role and ids of one message, beyond its text and tool calls (generous)."""
RESPONSE_MARGIN_BYTES = 16 * 1024
"""What a response holds besides its messages (checkpoints of a History page are bounded apart)."""


def size_of(message: MessageView) -> int:
    """The estimated encoded size of a message."""
    calls = sum(len(c.id) + len(c.name) + len(c.arguments_json.encode()) + 16 for c in message.tool_calls)
    return MESSAGE_OVERHEAD_BYTES + len(message.id) + len(message.text.encode()) + calls


def cut(message: MessageView, budget: int) -> MessageView:
    """message, with its text cut (and flagged) when the message alone is over budget bytes."""
    excess = size_of(message) - budget
    if excess <= 0:
        return message
    data = message.text.encode()
    kept = data[: max(0, len(data) - excess)].decode(errors="ignore")  # never half a character
    return dataclasses.replace(message, text=kept, truncated=True)


def newest_that_fit(messages: Sequence[MessageView], budget: int) -> tuple[MessageView, ...]:
    """The newest messages whose sizes sum to at most budget bytes, oldest first; at least the newest (cut)."""
    kept: list[MessageView] = []
    for message in reversed(messages):
        fitted = cut(message, budget) if not kept else message
        budget -= size_of(fitted)
        if budget < 0 and kept:
            break
        kept.append(fitted)
    return tuple(reversed(kept))


def page(messages: Sequence[MessageView], start: int, count: int, budget: int) -> tuple[MessageView, ...]:
    """Up to count messages from start on (in the order given) that fit budget bytes; at least one (cut)."""
    kept: list[MessageView] = []
    for message in messages[start : start + count]:
        fitted = cut(message, budget) if not kept else message
        budget -= size_of(fitted)
        if budget < 0 and kept:
            break
        kept.append(fitted)
    return tuple(kept)


def bounded_turn(result: TurnResult, budget: int) -> TurnResult:
    """A turn whose answer and messages fit budget bytes together: half for each, newest messages kept."""
    answer = result.answer.encode()
    if len(answer) + sum(size_of(m) for m in result.messages) <= budget:
        return result
    half = budget // 2
    return dataclasses.replace(
        result,
        answer=answer[:half].decode(errors="ignore"),
        messages=newest_that_fit(result.messages, half),
    )
