"""What of a conversation the default agent sends its model: a budget of tokens, the newest first.

Checkpoints and History keep the whole conversation; only the model's view is cut. The window
keeps the system prompt, drops the oldest messages first and starts on a human message, so a tool
result is never sent without the tool call it answers. Tokens are counted with langchain-core's
`count_tokens_approximately` (characters / 4, plus a few per message): a real tokenizer needs the
model's encoding files, which a server offline cannot fetch, and the budget is a margin below the
model's context length, not an exact fill.

langchain-core's `trim_messages` makes the same cut, but counts over the whole conversation on
every call (22 ms a model call at 4,000 messages, on the event loop); this walks back from the
newest message and stops at the budget, so a call costs what its window holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.messages.utils import count_tokens_approximately


def model_view(messages: Sequence[BaseMessage], *, system_prompt: str, max_tokens: int) -> list[BaseMessage]:
    """The messages to send the model: the system prompt (if any), then the newest turns within max_tokens.

    The current turn (from the last human message on) is always sent whole, even alone over the
    budget: without it the model would answer nothing.
    """
    system = [SystemMessage(system_prompt)] if system_prompt else []
    if max_tokens <= 0:
        return [*system, *messages]
    budget = max_tokens - count_tokens_approximately(system)
    start: int | None = None  # the oldest human message whose turns all fit
    last_human: int | None = None
    index = len(messages)
    for index in range(len(messages) - 1, -1, -1):
        is_human = isinstance(messages[index], HumanMessage)
        last_human = index if last_human is None and is_human else last_human
        budget -= count_tokens_approximately([messages[index]])
        if budget < 0:
            break
        start = index if is_human else start
    if start is None:
        while last_human is None and index > 0:  # the walk stopped before the current question
            index -= 1
            last_human = index if isinstance(messages[index], HumanMessage) else None
        start = last_human or 0
    return [*system, *messages[start:]]
