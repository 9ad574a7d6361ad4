"""``PrometheusSource.read_by_label`` against a real Prometheus serving three hours of
``model_accuracy`` for models a, b and c on two instances: one query splits into one series per
model, instant and range, and a query that keeps the instance label gives ambiguous models."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

import tests.integration.test_source_prometheus as plain_reads
from driftowner.sources import supports_labels
from driftowner.sources.prometheus import PrometheusSource
from tests.integration.prometheus_server import Family, openmetrics, running_prometheus

pytestmark = pytest.mark.integration

MINUTE = 60
HISTORY_MINUTES = 180
BASE = {"a": 0.90, "b": 0.80, "c": 0.70}
INSTANCES = {"a": ("i1", "i2"), "b": ("i1", "i2"), "c": ("i1",)}
"""Model c runs on one instance only, so a query keeping ``instance`` leaves it unambiguous."""
INSTANCE_OFFSET = {"i1": 0.0, "i2": 0.02}
BY_MODEL = "avg by (model) (model_accuracy)"


def accuracy(model: str, instance: str, index: int) -> float:
    return BASE[model] + INSTANCE_OFFSET[instance] + (index % 5) / 100


def mean_accuracy(model: str, index: int) -> float:
    """What ``avg by (model)`` gives for ``model`` at the ``index``-th loaded minute."""
    values = [accuracy(model, instance, index) for instance in INSTANCES[model]]
    return sum(values) / len(values)


@dataclass(frozen=True)
class History:
    """What was loaded: the server, the instant the tests call now, and the loaded times."""

    url: str
    now: datetime
    times: list[datetime]
    """The loaded sample times, oldest first (one a minute, the newest 30 s before now)."""


def accuracy_history(times: list[int]) -> str:
    """OpenMetrics of ``model_accuracy{model, instance}`` at ``times`` (Unix seconds)."""
    samples = [
        ({"model": model, "instance": instance}, at, accuracy(model, instance, i))
        for model, instances in INSTANCES.items()
        for instance in instances
        for i, at in enumerate(times)
    ]
    return openmetrics(Family("model_accuracy", "gauge", samples))


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """Prometheus with ``model_accuracy{model, instance}`` once a minute for three hours, the
    newest sample 30 s before now."""
    now = int(time.time())
    times = [now - 30 - MINUTE * back for back in reversed(range(HISTORY_MINUTES))]
    text = accuracy_history(times)
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), text) as url:
        yield History(
            url=url,
            now=datetime.fromtimestamp(now, tz=UTC),
            times=[datetime.fromtimestamp(at, tz=UTC) for at in times],
        )


# The plain-read tests' fixture: a source on ``history.url``, closed afterwards.
source = plain_reads.source


async def test_instant_read_by_model_gives_each_models_newest_average(
    source: PrometheusSource, history: History
) -> None:
    """One instant query aggregated by model returns three series, a, b and c, each the average
    of its instances' newest samples, stamped at now."""
    assert supports_labels(source)
    result = await source.read_by_label(
        BY_MODEL, history.now, history.now, timedelta(minutes=1), "model"
    )
    assert result.error is None
    assert result.source_up
    assert (result.unlabelled, result.ambiguous) == (0, ())
    assert sorted(result.series) == ["a", "b", "c"]
    newest = len(history.times) - 1
    for model, samples in result.series.items():
        assert [s.at for s in samples] == [history.now]
        assert [s.value for s in samples] == pytest.approx([mean_accuracy(model, newest)])


async def test_range_read_by_model_gives_each_model_one_sample_per_step(
    source: PrometheusSource, history: History
) -> None:
    """A range over the last 10 loaded minutes, step 2 m, gives each model the six averages at
    those times, oldest first."""
    end = history.times[-1]
    start = end - timedelta(minutes=10)
    result = await source.read_by_label(BY_MODEL, start, end, timedelta(minutes=2), "model")
    assert result.error is None
    assert sorted(result.series) == ["a", "b", "c"]
    indices = [i for i, at in enumerate(history.times) if start <= at <= end][::2]
    assert len(indices) == 6
    for model, samples in result.series.items():
        assert [s.at for s in samples] == [history.times[i] for i in indices]
        assert [s.value for s in samples] == pytest.approx(
            [mean_accuracy(model, i) for i in indices]
        )
        assert all(s.at.tzinfo is UTC for s in samples)


async def test_query_keeping_the_instance_label_makes_shared_models_ambiguous(
    source: PrometheusSource, history: History
) -> None:
    """``model_accuracy`` is not aggregated by model: a and b have a series per instance, so
    they are ambiguous and left out; c, on one instance, comes back with its own value."""
    result = await source.read_by_label(
        "model_accuracy", history.now, history.now, timedelta(minutes=1), "model"
    )
    assert result.error is None
    assert result.ambiguous == ("a", "b")
    assert list(result.series) == ["c"]
    newest = len(history.times) - 1
    assert [s.value for s in result.series["c"]] == pytest.approx([accuracy("c", "i1", newest)])


async def test_query_where_every_model_is_ambiguous_is_multiple_series(
    source: PrometheusSource, history: History
) -> None:
    """Over a range, when every model has several series, nothing can be attributed: the whole
    result is the multiple_series error with the source up."""
    end = history.times[-1]
    result = await source.read_by_label(
        'model_accuracy{model!="c"}',
        end - timedelta(minutes=10),
        end,
        timedelta(minutes=1),
        "model",
    )
    assert result.series == {}
    assert result.error_reason == "multiple_series"
    assert result.source_up
    assert result.ambiguous == ("a", "b")


async def test_series_without_the_label_are_counted_beside_the_labelled(
    source: PrometheusSource, history: History
) -> None:
    """``... or sum(model_accuracy)`` adds one series without a model label: it is counted in
    ``unlabelled`` and the three models still come back."""
    result = await source.read_by_label(
        f"{BY_MODEL} or sum(model_accuracy)",
        history.now,
        history.now,
        timedelta(minutes=1),
        "model",
    )
    assert result.error is None
    assert sorted(result.series) == ["a", "b", "c"]
    assert result.unlabelled == 1


async def test_bad_promql_is_the_same_query_error_as_read(
    source: PrometheusSource, history: History
) -> None:
    """A real parse error from Prometheus is the query_error ``read`` gives, source up."""
    step = timedelta(minutes=1)
    read = await source.read("avg by (model (x)", history.now, history.now, step)
    result = await source.read_by_label("avg by (model (x)", history.now, history.now, step, "m")
    assert result.series == {}
    assert result.error_reason == read.error_reason == "query_error"
    assert result.error == read.error
    assert result.source_up
