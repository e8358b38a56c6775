"""Model and tool calls are measured under the tenant whose turn made them, turns of tenants running at once."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from threadline.config import Settings
from threadline.engine.context import RequestContext
from threadline.engine.engine import Engine
from threadline.transport.metrics import Metrics


def _by_tenant(registry: CollectorRegistry, metric: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == metric:
                tenant = sample.labels["tenant"]
                counts[tenant] = counts.get(tenant, 0) + sample.value
    return counts


def test_model_and_tool_calls_count_for_the_tenant_of_their_turn() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(tenant_label=True, registry=registry)

    async def turns() -> None:
        async with Engine.open(Settings(database_url="memory://").engine, observer=metrics) as engine:

            async def ask(tenant: str, thread: str) -> None:
                await engine.ask(RequestContext(rpc="Ask", tenant=tenant), thread, "What is 2+3?")

            # acme: three tool turns (a model request, the calculator, a model request each); zeta: one.
            await asyncio.gather(*(ask("acme", f"a{i}") for i in range(3)), ask("zeta", "z"))

    asyncio.run(turns())
    assert _by_tenant(registry, "threadline_model_requests_total") == {"acme": 6, "zeta": 2}
    assert _by_tenant(registry, "threadline_tool_calls_total") == {"acme": 3, "zeta": 1}
