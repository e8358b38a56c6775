"""The audit trail: every checkpoint records which call wrote it.

The engine names the call (`recording(...)`) around each graph operation and the
saver mixin adds those fields to the metadata of every checkpoint written inside.
A context variable is used rather than the run config's metadata because
LangGraph's checkpoint copy (what Rewind uses) ignores the config's metadata.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata

RPC = "threadline_rpc"
REQUEST_ID = "threadline_request_id"
REWOUND_TO = "threadline_rewound_to"
REPLICA = "threadline_replica"
QUERY_SHA256 = "threadline_query_sha256"
TENANT = "threadline_tenant"
CALLER = "threadline_caller"

_current: ContextVar[Mapping[str, str]] = ContextVar("threadline_audit", default=MappingProxyType({}))


@contextmanager
def recording(**fields: str) -> Iterator[None]:
    """Adds fields (rpc=, request_id=, rewound_to=, replica=, query_sha256=, tenant=, caller=) to checkpoints
    written in the block."""
    names = {
        "tenant": TENANT,
        "caller": CALLER,
        "rpc": RPC,
        "request_id": REQUEST_ID,
        "rewound_to": REWOUND_TO,
        "replica": REPLICA,
        "query_sha256": QUERY_SHA256,
    }
    token = _current.set({names[key]: str(value) for key, value in fields.items() if value})
    try:
        yield
    finally:
        _current.reset(token)


class AuditedSaverMixin:
    """Put before a checkpoint saver class: merges the current audit fields into each checkpoint's metadata."""

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        audited: Any = {**metadata, **_current.get()}
        return await super().aput(config, checkpoint, audited, new_versions)  # type: ignore[misc,no-any-return]
