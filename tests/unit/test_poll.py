"""Polling: every signal read once per cycle, at most ``max_concurrent_queries`` in flight
against one Prometheus."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from driftowner.config import Config
from driftowner.model import Sample, SourceResult
from driftowner.poll import poll
from driftowner.sources import LabelledResult

from .factories import T0, TemplateOnlySource, base_config, templated_document


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
    assert source.most_in_flight > 1, "reads do overlap"
    assert source.most_in_flight <= 5
    assert sum(len(signals) for signals in findings.values()) == 200
    assert stats.up == {"prom": True}


class LabelledFake(TemplateOnlySource):
    """A Prometheus stand-in for templates: answers read_by_label from a table, counting
    calls; refuses plain reads (a template must never be read per system)."""

    def __init__(self, result: LabelledResult) -> None:
        self.result = result
        self.calls: list[tuple[str, str]] = []

    async def read_by_label(
        self, query: str, start: datetime, end: datetime, step: timedelta, label: str
    ) -> LabelledResult:
        self.calls.append((query, label))
        return self.result


def _templated(count: int) -> Config:
    document, system = templated_document("http://127.0.0.1:9")
    for index in range(count):
        document["systems"][f"model-{index}"] = system
    return Config.model_validate(document)


async def test_a_signal_template_is_one_query_for_every_system() -> None:
    """Fifty systems on one template: one query per cycle, each system judged on its own
    series; a series of only NaN and an ambiguous value are query errors, counted and
    logged per system, never stale."""
    series = {f"model-{i}": (Sample(T0, 0.95 if i % 2 else 0.5),) for i in range(48)}
    series["model-48"] = ()  # its series held only NaN
    fake = LabelledFake(LabelledResult(series=series, ambiguous=("model-49",)))
    findings, stats = await poll(_templated(50), {"prom": fake}, T0)
    assert fake.calls == [("avg by (model) (model_accuracy)", "model")]
    assert findings["model-1"]["accuracy"].status == "ok"
    assert findings["model-2"]["accuracy"].status == "degraded"
    nan_only = findings["model-48"]["accuracy"]
    assert nan_only.status == "no_data" and nan_only.source_error, "NaN is never stale"
    ambiguous = findings["model-49"]["accuracy"]
    assert ambiguous.status == "no_data" and ambiguous.source_error
    assert "several series have model='model-49'" in ambiguous.reason
    assert stats.up == {"prom": True}
    assert stats.errors == {("prom", "non_finite"): 1, ("prom", "multiple_series"): 1}
    assert set(stats.failing) == {("model-48", "accuracy"), ("model-49", "accuracy")}


async def test_a_system_missing_from_the_template_result_has_no_data() -> None:
    """A model with no series at all (not scraped any more) has no data from a source that
    answered: the stale rule watches it."""
    fake = LabelledFake(LabelledResult(series={"model-0": (Sample(T0, 0.95),)}))
    findings, _ = await poll(_templated(2), {"prom": fake}, T0)
    missing = findings["model-1"]["accuracy"]
    assert missing.status == "no_data" and not missing.source_error
    assert missing.detector == "staleness"


async def test_a_template_label_that_matches_nothing_is_explained() -> None:
    """A system whose label value matches none of the series a template query returns (while
    other systems' do) has no data, and its finding says which label matched nothing and
    what the query does return: the evidence its owner's stale incident carries."""
    series = {f"model-{i}": (Sample(T0, 0.95),) for i in (0, 2, 3, 4)}
    fake = LabelledFake(LabelledResult(series=series, ambiguous=("model-5",)))
    findings, stats = await poll(_templated(2), {"prom": fake}, T0)
    missing = findings["model-1"]["accuracy"]
    assert missing.status == "no_data" and missing.detector == "staleness"
    assert missing.reason == (
        "the template query returns no series with model='model-1' (it has model='model-0', "
        "model='model-2', model='model-3' and 2 more): the system stopped reporting, or its "
        "labels.model matches nothing"
    )
    assert findings["model-0"]["accuracy"].status == "ok"
    assert stats.unmatched == {("model-1", "accuracy"): missing.reason}


async def test_a_template_query_with_no_series_at_all_keeps_the_plain_no_data_reason() -> None:
    """When the template query returns nothing for anyone there is nothing to tell apart: the
    plain no-samples reason stays."""
    fake = LabelledFake(LabelledResult(series={}))
    findings, stats = await poll(_templated(1), {"prom": fake}, T0)
    assert findings["model-0"]["accuracy"].reason == "the query returned no samples"
    assert stats.unmatched == {}


async def test_a_failing_template_query_fails_each_system_once_and_logs_once() -> None:
    """The template's query fails: every system using it has no data from a source error (no
    stale page), the source is down, and the failure is one error, not fifty."""
    fake = LabelledFake(
        LabelledResult(
            series={},
            error="prometheus: connection refused",
            error_reason="unreachable",
            source_up=False,
        )
    )
    findings, stats = await poll(_templated(50), {"prom": fake}, T0)
    assert len(fake.calls) == 1
    assert all(f["accuracy"].source_error for f in findings.values())
    assert stats.up == {"prom": False}
    assert stats.errors == {("prom", "unreachable"): 1}
    assert len(stats.failing) == 1


class _CountedSeries(dict[str, tuple[Sample, ...]]):
    """A template answer's series that counts how often all of it is walked through."""

    walks = 0

    def __iter__(self) -> Any:
        type(self).walks += 1
        return super().__iter__()


def test_a_system_found_in_the_template_answer_costs_one_lookup() -> None:
    """Regression: explaining unmatched labels walked (and sorted) the whole answer once per
    member system, even for systems whose series is there: 2,000 systems of a template made
    2,000 sorts of 2,000 labels a cycle (7 of 9 s of a profiled cycle). A system whose series
    is in the answer is now a lookup; the answer is walked only to explain one that is not."""
    from driftowner.poll import unmatched_label

    series = _CountedSeries({f"model-{i}": (Sample(T0, 0.95),) for i in range(50)})
    answer = LabelledResult(series=series)
    _CountedSeries.walks = 0
    for i in range(50):
        assert unmatched_label(answer, "model", f"model-{i}") is None
    assert _CountedSeries.walks == 0
    assert unmatched_label(answer, "model", "model-99") is not None
    assert _CountedSeries.walks == 1
