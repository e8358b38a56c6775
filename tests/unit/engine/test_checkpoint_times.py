"""A checkpoint id's time (UUIDv6), as the start-up repair of the thread list dates a thread's first turn."""

from __future__ import annotations

import datetime as dt

from langgraph.checkpoint.base import empty_checkpoint

from threadline.engine.identifiers import checkpoint_id_at, checkpoint_time


def test_a_checkpoint_id_tells_when_it_was_made() -> None:
    before = dt.datetime.now(dt.UTC)
    made = checkpoint_time(empty_checkpoint()["id"])
    assert before - dt.timedelta(seconds=1) <= made <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    at = dt.datetime(2026, 12, 6, 1, 2, 3, 456789, tzinfo=dt.UTC)
    assert checkpoint_time(checkpoint_id_at(at.timestamp())) == at
