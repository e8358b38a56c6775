"""Engine views to threadline.v1 messages."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from threadline.agent.approval import Decision
from threadline.engine.views import (
    CheckpointView,
    HistoryPage,
    InterruptView,
    MessagesPage,
    MessageView,
    RewindResult,
    StateView,
    ThreadsPage,
    TokenEvent,
    ToolCallEvent,
    ToolCallView,
    ToolResultEvent,
    TurnCompleted,
    TurnEvent,
    TurnResult,
)
from threadline.errors import InvalidArgument
from threadline_client.v1 import threadline_pb2 as pb

_ROLES = {"human": pb.ROLE_HUMAN, "ai": pb.ROLE_AI, "tool": pb.ROLE_TOOL, "system": pb.ROLE_SYSTEM}
_SOURCES = {
    "input": pb.CHECKPOINT_SOURCE_INPUT,
    "loop": pb.CHECKPOINT_SOURCE_LOOP,
    "update": pb.CHECKPOINT_SOURCE_UPDATE,
    "fork": pb.CHECKPOINT_SOURCE_FORK,
}


def tool_call(view: ToolCallView) -> pb.ToolCall:
    return pb.ToolCall(id=view.id, name=view.name, arguments_json=view.arguments_json)


def message(view: MessageView) -> pb.Message:
    return pb.Message(
        id=view.id,
        role=_ROLES.get(view.role, pb.ROLE_UNSPECIFIED),
        text=view.text,
        tool_calls=[tool_call(c) for c in view.tool_calls],
        tool_call_id=view.tool_call_id,
        name=view.name,
        truncated=view.truncated,
    )


def messages(views: Iterable[MessageView]) -> list[pb.Message]:
    return [message(v) for v in views]


def turn(result: TurnResult) -> pb.Turn:
    return pb.Turn(
        thread_id=result.thread_id,
        answer=result.answer,
        checkpoint_id=result.checkpoint_id,
        messages=messages(result.messages),
        interrupts=interrupts(result.interrupts),
    )


def interrupts(views: Iterable[InterruptView]) -> list[pb.Interrupt]:
    return [
        pb.Interrupt(
            interrupt_id=i.interrupt_id, tool_calls=[tool_call(c) for c in i.tool_calls], value_json=i.value_json
        )
        for i in views
    ]


StreamMessage = TypeVar("StreamMessage", pb.StreamAskResponse, pb.StreamResumeResponse)


def stream_event(event: TurnEvent, message: type[StreamMessage]) -> StreamMessage:
    """One streamed event as `message` (StreamAskResponse or StreamResumeResponse: the same fields)."""
    if isinstance(event, TokenEvent):
        return message(token=pb.TokenDelta(text=event.text, message_id=event.message_id))
    if isinstance(event, ToolCallEvent):
        return message(tool_call=tool_call(event.call))
    if isinstance(event, ToolResultEvent):
        return message(
            tool_result=pb.ToolResult(
                tool_call_id=event.tool_call_id, name=event.name, content=event.content, is_error=event.is_error
            )
        )
    assert isinstance(event, TurnCompleted)
    return message(final=turn(event.turn))


def decision(request: pb.ResumeDecision) -> Decision:
    """The engine's Decision from the contract's; InvalidArgument when none is set."""
    kind = request.WhichOneof("decision")
    if kind == "approve":
        return Decision("approve")
    if kind == "reject":
        return Decision("reject", reason=request.reject.reason)
    if kind == "edit":
        return Decision("edit", arguments_json=dict(request.edit.arguments_json))
    if kind == "value_json":
        return Decision("value", value_json=request.value_json)
    raise InvalidArgument("decision", "set one of decision.approve, reject, edit or value_json")


def _timestamp(moment: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def checkpoint(view: CheckpointView) -> pb.Checkpoint:
    return pb.Checkpoint(
        checkpoint_id=view.checkpoint_id,
        parent_checkpoint_id=view.parent_checkpoint_id,
        step=view.step,
        create_time=_timestamp(view.created_at),
        nodes=list(view.nodes),
        source=_SOURCES.get(view.source, pb.CHECKPOINT_SOURCE_UNSPECIFIED),
        preview=view.preview,
        message_count=view.message_count,
        rpc=view.rpc,
        request_id=view.request_id,
        rewound_to_checkpoint_id=view.rewound_to_checkpoint_id,
        replica=view.replica,
    )


def history(page: HistoryPage) -> pb.HistoryResponse:
    return pb.HistoryResponse(
        thread_id=page.thread_id,
        messages=messages(page.messages),
        checkpoints=[checkpoint(c) for c in page.checkpoints],
        next_page_token=page.next_page_token,
        head_checkpoint_id=page.head_checkpoint_id,
        message_count=page.message_count,
    )


def rewind(result: RewindResult) -> pb.RewindResponse:
    return pb.RewindResponse(
        thread_id=result.thread_id,
        head=checkpoint(result.head),
        rewound_to_checkpoint_id=result.rewound_to_checkpoint_id,
        messages=messages(result.messages),
    )


def state(view: StateView) -> pb.GetStateResponse:
    return pb.GetStateResponse(
        thread_id=view.thread_id,
        checkpoint=checkpoint(view.checkpoint),
        messages=messages(view.messages),
        next=list(view.next),
        is_head=view.is_head,
        metadata_json=view.metadata_json,
        interrupts=interrupts(view.interrupts),
        message_count=view.message_count,
    )


def messages_page(page: MessagesPage) -> pb.ListMessagesResponse:
    return pb.ListMessagesResponse(
        thread_id=page.thread_id,
        checkpoint_id=page.checkpoint_id,
        messages=messages(page.messages),
        next_page_token=page.next_page_token,
        message_count=page.message_count,
    )


def threads(page: ThreadsPage) -> pb.ListThreadsResponse:
    return pb.ListThreadsResponse(
        threads=[
            pb.ThreadSummary(
                thread_id=t.thread_id,
                title=t.title,
                turn_count=t.turn_count,
                create_time=_timestamp(t.created_at),
                update_time=_timestamp(t.updated_at),
                head_checkpoint_id=t.head_checkpoint_id,
            )
            for t in page.threads
        ],
        next_page_token=page.next_page_token,
    )
