"""The Prometheus source against a real Prometheus serving three hours of loaded history:
instant, range and aggregating queries, and the errors a real server produces."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from statistics import mean

import pytest

from driftowner.sources.prometheus import PrometheusSource
from tests.integration.prometheus_server import Family, openmetrics, running_prometheus

pytestmark = pytest.mark.integration

MINUTE = 60
HISTORY_MINUTES = 180
ACCURACY = 'model_accuracy{model="fraud"}'


@dataclass(frozen=True)
class History:
    """What was loaded: the server, the instant the tests call now, and the fraud gauge."""

    url: str
    now: datetime
    accuracy: list[tuple[datetime, float]]
    """``(time, value)`` of ``model_accuracy{model="fraud"}``, oldest first."""


def accuracy_value(index: int) -> float:
    return 0.90 + (index % 7) / 100


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """Prometheus with one sample a minute for three hours, the newest 30 s before now."""
    now = int(time.time())
    last = now - 30
    times = [last - (HISTORY_MINUTES - 1 - i) * MINUTE for i in range(HISTORY_MINUTES)]
    gauge = Family(
        "model_accuracy",
        "gauge",
        [({"model": "fraud"}, at, accuracy_value(i)) for i, at in enumerate(times)]
        + [({"model": "other"}, at, 0.5) for at in times],
        help="Offline accuracy of the model.",
    )
    alerts = Family("fraud_alerts", "counter", [({}, at, 100.0 * i) for i, at in enumerate(times)])
    actioned = Family(
        "fraud_alerts_actioned", "counter", [({}, at, 62.0 * i) for i, at in enumerate(times)]
    )
    text = openmetrics(gauge, alerts, actioned)
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), text) as url:
        yield History(
            url=url,
            now=datetime.fromtimestamp(now, tz=UTC),
            accuracy=[
                (datetime.fromtimestamp(at, tz=UTC), accuracy_value(i))
                for i, at in enumerate(times)
            ],
        )


@pytest.fixture
async def source(history: History) -> AsyncIterator[PrometheusSource]:
    prometheus = PrometheusSource("prom", history.url, timeout=timedelta(seconds=10))
    yield prometheus
    await prometheus.aclose()


async def test_instant_read_at_now_gives_the_newest_value(
    source: PrometheusSource, history: History
) -> None:
    """An instant query at now sees the newest loaded sample (30 s old) stamped at now."""
    result = await source.read(ACCURACY, history.now, history.now, timedelta(minutes=1))
    assert result.error is None
    assert [s.at for s in result.samples] == [history.now]
    assert [s.value for s in result.samples] == pytest.approx([history.accuracy[-1][1]])


async def test_range_read_returns_one_sample_per_step(
    source: PrometheusSource, history: History
) -> None:
    """A range over the last 10 loaded minutes, step 2 m, gives the six samples at those times."""
    end = history.accuracy[-1][0]
    start = end - timedelta(minutes=10)
    result = await source.read(ACCURACY, start, end, timedelta(minutes=2))
    assert result.error is None
    expected = [(at, value) for at, value in history.accuracy if start <= at <= end][::2]
    assert len(expected) == 6
    assert [s.at for s in result.samples] == [at for at, _ in expected]
    assert [s.value for s in result.samples] == pytest.approx([v for _, v in expected])
    assert all(s.at.tzinfo is UTC for s in result.samples)


async def test_range_read_with_too_fine_a_step_is_widened_not_refused(
    source: PrometheusSource, history: History
) -> None:
    """Four hours at 1 s would be 14,401 points, over Prometheus's 11,000: the step is widened
    so the read still answers, covering the whole loaded history."""
    start = history.now - timedelta(hours=4)
    result = await source.read(ACCURACY, start, history.now, timedelta(seconds=1))
    assert result.error is None
    assert 0 < len(result.samples) <= 11_000
    assert result.samples[0].at >= start
    assert result.samples[-1].at <= history.now


async def test_avg_over_time_query_averages_the_last_hour(
    source: PrometheusSource, history: History
) -> None:
    """``avg_over_time(...[1h])`` at now equals the mean of the 60 samples of the last hour."""
    query = f"avg_over_time({ACCURACY}[1h])"
    result = await source.read(query, history.now, history.now, timedelta(minutes=1))
    assert result.error is None
    window = [v for at, v in history.accuracy if at > history.now - timedelta(hours=1)]
    assert len(window) == 60
    assert [s.value for s in result.samples] == [pytest.approx(mean(window))]


async def test_counter_ratio_query_gives_the_adoption_rate(
    source: PrometheusSource, history: History
) -> None:
    """The design's adoption query (ratio of two counters' rates) reads as one value, 0.62."""
    query = "sum(rate(fraud_alerts_actioned_total[1h])) / sum(rate(fraud_alerts_total[1h]))"
    result = await source.read(query, history.now, history.now, timedelta(minutes=1))
    assert result.error is None
    assert [s.value for s in result.samples] == [pytest.approx(0.62)]


async def test_bad_promql_is_a_query_error_with_the_source_up(
    source: PrometheusSource, history: History
) -> None:
    """Unparseable PromQL comes back as query_error carrying Prometheus's parse error, and the
    server counts as up."""
    result = await source.read("sum(model_accuracy", history.now, history.now, timedelta(minutes=1))
    assert result.samples == ()
    assert result.error_reason == "query_error"
    assert result.source_up
    assert result.error is not None
    assert "bad_data" in result.error
    assert "parse error" in result.error


async def test_missing_metric_is_empty_without_error(
    source: PrometheusSource, history: History
) -> None:
    """A metric nobody exports is "no data": empty samples, no error, source up."""
    start = history.now - timedelta(hours=1)
    for begin in (history.now, start):
        result = await source.read("no_such_metric", begin, history.now, timedelta(minutes=1))
        assert result.samples == ()
        assert result.error is None
        assert result.source_up


async def test_query_matching_two_series_is_multiple_series(
    source: PrometheusSource, history: History
) -> None:
    """``model_accuracy`` without a model label matches two series: refused as multiple_series."""
    result = await source.read("model_accuracy", history.now, history.now, timedelta(minutes=1))
    assert result.error_reason == "multiple_series"
    assert result.source_up
    assert result.error is not None
    assert 'model="other"' in result.error


async def test_closed_port_is_unreachable_and_the_source_down() -> None:
    """Nothing listening on the port: unreachable, source down, no exception."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = PrometheusSource("prom", f"http://127.0.0.1:{port}", timeout=timedelta(seconds=5))
    now = datetime.now(tz=UTC)
    try:
        result = await closed.read("up", now, now, timedelta(minutes=1))
    finally:
        await closed.aclose()
    assert result.error_reason == "unreachable"
    assert not result.source_up
    assert result.error is not None
    assert f"127.0.0.1:{port}" in result.error
