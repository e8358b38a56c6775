"""Turns the failures of our dependencies into Threadline errors, in one place.

The database drivers, the model SDK and LangGraph each raise their own exceptions; the
engine wraps every operation in `translated_failures()` so that what leaves it is a
ThreadlineError the transport knows how to report. Storage and the agent each translate
their own dependency's failures; this composes them and adds LangGraph's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from langgraph.errors import GraphRecursionError

from threadline.agent.model_failures import model_failures
from threadline.errors import StepLimitExceeded
from threadline.storage.failures import storage_failures


@contextmanager
def translated_failures(*, secrets: tuple[str, ...] = ()) -> Iterator[None]:
    """Re-raises storage, model and graph failures as ThreadlineErrors; secrets never reach a message."""
    try:
        with storage_failures(), model_failures(secrets=secrets):
            yield
    except GraphRecursionError as exc:
        raise StepLimitExceeded(
            "the turn ran more graph steps than the recursion limit allows (a model that keeps calling tools?)"
        ) from exc
