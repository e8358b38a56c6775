"""How a long-running server process sets up Python's cyclic garbage collector.

The defaults suit short scripts, not a server: a collection of the youngest generation
every 700 net allocations, and a middle-generation pass every 10 of those, each pausing
every call in flight. Garbage is mostly freed by reference counting anyway; the collector
exists for cycles, which the thresholds below leave collected, only in bigger, rarer
batches. docs/performance.md has what this saves under load.
"""

from __future__ import annotations

import gc

# Allocations before a youngest-generation pass; passes before a middle one; middle ones before a full one.
THRESHOLDS = (50_000, 20, 10)


def settle_after_startup() -> None:
    """Freezes what start-up built, and sets the thresholds for serving.

    Start-up leaves long-lived objects (modules, the graph, gRPC) that every full
    collection would otherwise walk again; frozen, the collector only looks at what calls
    allocate.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
