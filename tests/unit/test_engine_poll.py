"""Polling: every signal read once per cycle, at most ``max_concurrent_queries`` in flight
against one Prometheus."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from driftowner.config import Config
from driftowner.engine import poll
from driftowner.model import Sample, SourceResult

from .factories import T0, base_config


class CountingSource:
    """Answers every query with one fresh sample, and records the most reads in flight."""

    name = "prom"

    def __init__(self) -> None:
        self.in_flight = 0
        self.most_in_flight = 0
        self.reads = 0

    async def read(
        self, query: str, start: datetime, end: datetime, step: timedelta
    ) -> SourceResult:
        self.reads += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.001)
        self.in_flight -= 1
        return SourceResult(samples=(Sample(end, 0.95),))

    async def aclose(self) -> None:
        return None


def _many_systems(count: int, limit: int) -> Config:
    document: dict[str, Any] = base_config()
    document["sources"] = {
        "prom": {"type": "prometheus", "url": "http://127.0.0.1:9", "max_concurrent_queries": limit}
    }
    template = document["systems"].pop("fraud-scoring")
    template["disagreements"] = []
    template["signals"] = {
        "accuracy": {
            "layer": "model",
            "source": "prom",
            "query": "q",
            "bad": "down",
            "detect": {"threshold": {"min": 0.9}},
        }
    }
    for index in range(count):
        document["systems"][f"system-{index}"] = template
    return Config.model_validate(document)


async def test_one_prometheus_never_sees_more_than_its_concurrency_limit() -> None:
    """200 signals with max_concurrent_queries 5: each read once, never more than 5 at once,
    and every finding is there."""
    source = CountingSource()
    findings, stats = await poll(_many_systems(200, 5), {"prom": source}, T0)
    assert source.reads == 200
    assert 1 < source.most_in_flight <= 5
    assert sum(len(signals) for signals in findings.values()) == 200
    assert stats.up == {"prom": True}
