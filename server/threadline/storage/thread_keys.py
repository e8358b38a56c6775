"""ThreadKey: which thread of which tenant; storage keys every checkpoint, hold and row by it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ThreadKey:
    """A tenant's thread. Two tenants may both have a thread "user-123": their keys differ.

    Tenant ids and thread ids never contain "/" (the engine checks both), so the storage id
    "tenant/thread_id" that LangGraph's checkpoint tables hold names one key only.
    """

    tenant: str
    thread_id: str

    @property
    def storage_id(self) -> str:
        """The thread id the checkpoint tables hold."""
        return f"{self.tenant}/{self.thread_id}"

    @classmethod
    def parse(cls, storage_id: str) -> ThreadKey:
        """The key of a thread id read from the checkpoint tables."""
        tenant, separator, thread_id = storage_id.partition("/")
        if not separator:
            raise ValueError(f"{storage_id!r} is not a tenant's thread id")
        return cls(tenant, thread_id)

    def __str__(self) -> str:
        return self.storage_id
