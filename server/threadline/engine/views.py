"""What the engine returns: plain, immutable values the transport turns into its own messages."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class ToolCallView:
    """A tool call the model asked for."""

    id: str
    name: str
    arguments_json: str


@dataclass(frozen=True)
class MessageView:
    """One message of a thread."""

    id: str
    role: str
    """"human", "ai", "tool", "system" (or LangChain's type name for anything else)."""
    text: str
    tool_calls: tuple[ToolCallView, ...] = ()
    tool_call_id: str = ""
    name: str = ""
    truncated: bool = False
    """True when `text` was cut to fit a response (engine.message_pages); the stored message is whole."""


@dataclass(frozen=True)
class CheckpointView:
    """One checkpoint of a thread and what wrote it."""

    checkpoint_id: str
    parent_checkpoint_id: str
    step: int
    created_at: dt.datetime
    nodes: tuple[str, ...]
    source: str
    """LangGraph's metadata source: "input", "loop", "update" or "fork"."""
    preview: str
    message_count: int
    rpc: str
    request_id: str
    rewound_to_checkpoint_id: str
    replica: str


@dataclass(frozen=True)
class InterruptView:
    """A pause of a turn, waiting for a human."""

    interrupt_id: str
    tool_calls: tuple[ToolCallView, ...]
    value_json: str


@dataclass(frozen=True)
class TurnResult:
    """A completed (or paused) turn."""

    thread_id: str
    answer: str
    checkpoint_id: str
    messages: tuple[MessageView, ...]
    interrupts: tuple[InterruptView, ...] = ()


@dataclass(frozen=True)
class TokenEvent:
    """A piece of text the model produced."""

    text: str
    message_id: str


@dataclass(frozen=True)
class ToolCallEvent:
    """The model asked to run a tool."""

    call: ToolCallView


@dataclass(frozen=True)
class ToolResultEvent:
    """A tool finished."""

    tool_call_id: str
    name: str
    content: str
    is_error: bool


@dataclass(frozen=True)
class TurnCompleted:
    """The last event of a streamed turn."""

    turn: TurnResult


TurnEvent = TokenEvent | ToolCallEvent | ToolResultEvent | TurnCompleted


@dataclass(frozen=True)
class HistoryPage:
    """One page of a thread's history."""

    thread_id: str
    messages: tuple[MessageView, ...]
    checkpoints: tuple[CheckpointView, ...]
    next_page_token: str
    head_checkpoint_id: str
    message_count: int
    """Messages in the whole conversation at the head (on the first page; 0 on later pages)."""


@dataclass(frozen=True)
class RewindResult:
    """A thread after Rewind."""

    thread_id: str
    head: CheckpointView
    rewound_to_checkpoint_id: str
    messages: tuple[MessageView, ...]


@dataclass(frozen=True)
class StateView:
    """A thread's full state at one checkpoint."""

    thread_id: str
    checkpoint: CheckpointView
    messages: tuple[MessageView, ...]
    next: tuple[str, ...]
    is_head: bool
    metadata_json: str
    interrupts: tuple[InterruptView, ...]
    message_count: int
    """Messages in the conversation at the checkpoint; `messages` holds the newest that fit a response."""


@dataclass(frozen=True)
class MessagesPage:
    """One page of the messages at a checkpoint."""

    thread_id: str
    checkpoint_id: str
    messages: tuple[MessageView, ...]
    next_page_token: str
    message_count: int


@dataclass(frozen=True)
class ThreadSummary:
    """What ListThreads says about one thread."""

    thread_id: str
    title: str
    turn_count: int
    created_at: dt.datetime
    updated_at: dt.datetime
    head_checkpoint_id: str


@dataclass(frozen=True)
class ThreadsPage:
    """One page of a tenant's threads."""

    threads: tuple[ThreadSummary, ...]
    next_page_token: str
