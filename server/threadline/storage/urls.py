"""Opens the storage named by a database URL.

sqlite:///PATH       the embedded default (storage.sqlite)
postgresql://...     production, any number of replicas (storage.postgres)
memory://            tests; nothing survives the process (storage.memory)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from threadline.errors import ConfigurationError
from threadline.redaction import redact
from threadline.storage.contract import Serialized, Storage
from threadline.storage.memory import open_memory
from threadline.storage.postgres import open_postgres
from threadline.storage.settings import StorageSettings
from threadline.storage.sqlite import open_sqlite


@asynccontextmanager
async def open_storage(
    url: str, settings: StorageSettings, *, on_serialized: Serialized | None = None
) -> AsyncIterator[Storage]:
    """Opens (and sets up the tables of) the storage named by url; closes it on exit.

    on_serialized is told the size of every value the saver serializes to write (contract.MeasuredSerializer).
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        async with open_memory(settings, on_serialized=on_serialized) as storage:
            yield storage
    elif scheme == "sqlite":
        async with open_sqlite(url, settings, on_serialized=on_serialized) as storage:
            yield storage
    elif scheme in ("postgres", "postgresql"):
        async with open_postgres(url, settings, on_serialized=on_serialized) as storage:
            yield storage
    else:
        raise ConfigurationError(
            f"THREADLINE_DATABASE_URL: unsupported scheme {scheme!r} in {redact(url)!r}; "
            "use sqlite:///PATH, postgresql://... or memory://"
        )
