"""History and Rewind: the audit trail, pagination, and time travel that deletes nothing."""

from __future__ import annotations

import uuid

import grpc
import pytest

from threadline_client import ThreadlineClient, ThreadlineError, pb


def _three_turns(client: ThreadlineClient, ids: str = "") -> tuple[str, list[pb.Turn]]:
    # Request ids unique to the call: one without a thread_id names the thread it creates.
    ids = ids or uuid.uuid4().hex
    first = client.ask("My name is Ada.", request_id=f"{ids}-1")
    second = client.ask("My name is Grace.", thread_id=first.thread_id, request_id=f"{ids}-2")
    third = client.ask("My pet is Rex.", thread_id=first.thread_id, request_id=f"{ids}-3")
    return first.thread_id, [first, second, third]


def _all_checkpoints(client: ThreadlineClient, thread: str, page_size: int) -> list[pb.Checkpoint]:
    checkpoints: list[pb.Checkpoint] = []
    token = ""
    while True:
        page = client.history(thread, page_size=page_size, page_token=token)
        assert len(page.checkpoints) <= page_size
        checkpoints.extend(page.checkpoints)
        token = page.next_page_token
        if not token:
            return checkpoints


def _chain(checkpoints: list[pb.Checkpoint], head: str) -> list[str]:
    by_id = {c.checkpoint_id: c for c in checkpoints}
    chain, current = [], head
    while current:
        chain.append(current)
        current = by_id[current].parent_checkpoint_id
    return chain


def test_history_lists_the_conversation_and_every_checkpoint(client: ThreadlineClient) -> None:
    thread, turns = _three_turns(client, "turn")
    page = client.history(thread, page_size=100)
    assert [m.text for m in page.messages if m.role == pb.ROLE_HUMAN] == [
        "My name is Ada.", "My name is Grace.", "My pet is Rex."
    ]  # fmt: skip
    assert page.head_checkpoint_id == turns[-1].checkpoint_id
    newest = page.checkpoints[0]
    assert newest.checkpoint_id == turns[-1].checkpoint_id
    assert newest.nodes == ["agent"] and newest.source == pb.CHECKPOINT_SOURCE_LOOP
    assert newest.rpc == "Ask" and newest.request_id == "turn-3"
    assert newest.preview.startswith("ai: Noted: your pet is Rex")
    assert newest.message_count == 6
    # Newest first, one linear chain back to the thread's first input.
    steps = [c.step for c in page.checkpoints]
    assert steps == sorted(steps, reverse=True) and steps[-1] == -1
    assert page.checkpoints[-1].source == pb.CHECKPOINT_SOURCE_INPUT and not page.checkpoints[-1].parent_checkpoint_id
    assert _chain(list(page.checkpoints), page.head_checkpoint_id) == [c.checkpoint_id for c in page.checkpoints]
    for checkpoint in page.checkpoints:
        assert checkpoint.create_time.seconds > 0
        assert checkpoint.nodes, checkpoint


@pytest.mark.parametrize("page_size", [1, 2, 5])
def test_pagination_walks_every_checkpoint_exactly_once(client: ThreadlineClient, page_size: int) -> None:
    thread, _ = _three_turns(client)
    everything = client.history(thread, page_size=100).checkpoints
    walked = _all_checkpoints(client, thread, page_size)
    assert [c.checkpoint_id for c in walked] == [c.checkpoint_id for c in everything]
    assert len({c.checkpoint_id for c in walked}) == len(walked) == 9  # 3 per turn without tools


def test_later_pages_carry_no_conversation(client: ThreadlineClient) -> None:
    thread, _ = _three_turns(client)
    first = client.history(thread, page_size=2)
    second = client.history(thread, page_size=2, page_token=first.next_page_token)
    assert first.messages and not second.messages
    assert second.head_checkpoint_id == first.head_checkpoint_id


def test_rewind_by_checkpoint_id_forgets_what_came_after(client: ThreadlineClient) -> None:
    thread, turns = _three_turns(client)
    before = client.history(thread, page_size=100).checkpoints

    rewound = client.rewind(thread, checkpoint_id=turns[0].checkpoint_id, request_id="undo-1")
    assert rewound.rewound_to_checkpoint_id == turns[0].checkpoint_id
    assert [m.text for m in rewound.messages] == ["My name is Ada.", "Noted: your name is Ada."]
    assert rewound.head.source == pb.CHECKPOINT_SOURCE_FORK and rewound.head.rpc == "Rewind"
    assert rewound.head.request_id == "undo-1" and rewound.head.rewound_to_checkpoint_id == turns[0].checkpoint_id

    answer = client.ask("What is my name?", thread_id=thread).answer
    assert "Ada" in answer and "Grace" not in answer

    after = client.history(thread, page_size=100)
    listed = {c.checkpoint_id for c in after.checkpoints}
    assert {c.checkpoint_id for c in before} <= listed, "the abandoned branch stays in History"
    assert turns[2].checkpoint_id not in _chain(list(after.checkpoints), after.head_checkpoint_id)
    humans = [m.text for m in after.messages if m.role == pb.ROLE_HUMAN]
    assert humans == ["My name is Ada.", "What is my name?"]


def test_rewind_by_steps_back_follows_the_current_branch(client: ThreadlineClient) -> None:
    thread, turns = _three_turns(client)
    chain = _chain(list(client.history(thread, page_size=100).checkpoints), turns[-1].checkpoint_id)
    steps = chain.index(turns[0].checkpoint_id)  # from the head back to the end of the first turn

    rewound = client.rewind(thread, steps_back=steps)
    assert rewound.rewound_to_checkpoint_id == turns[0].checkpoint_id
    assert "Ada" in client.ask("What is my name?", thread_id=thread).answer

    # The copy made by Rewind is the head; one step back from it is the rewound-to state's parent.
    once_more = client.rewind(thread, steps_back=1)
    assert once_more.rewound_to_checkpoint_id != rewound.head.checkpoint_id


def test_rewind_can_return_to_an_abandoned_branch(client: ThreadlineClient) -> None:
    thread, turns = _three_turns(client)
    client.rewind(thread, checkpoint_id=turns[0].checkpoint_id)
    client.ask("My name is Linus.", thread_id=thread)
    client.rewind(thread, checkpoint_id=turns[1].checkpoint_id)
    assert "Grace" in client.ask("What is my name?", thread_id=thread).answer


def test_steps_back_past_the_first_checkpoint_is_out_of_range(client: ThreadlineClient) -> None:
    thread = client.ask("My name is Ada.").thread_id
    length = len(client.history(thread, page_size=100).checkpoints)
    client.rewind(thread, steps_back=length - 1)  # exactly the first checkpoint is fine
    with pytest.raises(ThreadlineError) as caught:
        client.rewind(thread, steps_back=1000)
    assert caught.value.code == grpc.StatusCode.OUT_OF_RANGE
    assert caught.value.reason == "STEPS_OUT_OF_RANGE" and "first checkpoint" in caught.value.message
