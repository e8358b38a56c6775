"""What kind of call wrote a checkpoint: recorded in its audit metadata and read back by retries."""

from __future__ import annotations

from enum import StrEnum


class TurnKind(StrEnum):
    """The kind of call that wrote a checkpoint.

    The values are stored in checkpoint metadata (storage.audit.RPC) by every version, so
    they are part of the storage format: never rename one, only add.
    """

    ASK = "Ask"
    STREAM_ASK = "StreamAsk"
    FORK = "Fork"
    """An Ask or StreamAsk with a checkpoint_id: a new branch from an earlier checkpoint."""
    RESUME = "Resume"
    STREAM_RESUME = "StreamResume"
    REWIND = "Rewind"

    @classmethod
    def of_question(cls, *, streamed: bool, forked: bool) -> TurnKind:
        """The kind of a turn that asks a question."""
        if forked:
            return cls.FORK
        return cls.STREAM_ASK if streamed else cls.ASK

    @classmethod
    def of_resume(cls, *, streamed: bool) -> TurnKind:
        """The kind of a turn that continues after a human's decision."""
        return cls.STREAM_RESUME if streamed else cls.RESUME


QUESTION_KINDS = frozenset({TurnKind.ASK, TurnKind.STREAM_ASK, TurnKind.FORK})
"""Kinds whose request_id a retried Ask or StreamAsk may name."""

RESUME_KINDS = frozenset({TurnKind.RESUME, TurnKind.STREAM_RESUME})
"""Kinds whose request_id a retried Resume or StreamResume may name."""
