"""Detectors: a signal's samples and spec in, one Finding out, with the clock passed in."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest

from driftowner.detect.detectors import judge, lookback, read_step
from driftowner.model import Sample, SourceResult, Status

from .factories import SYSTEM, T0, at, minutes, samples, signal


def _judge(spec: dict[str, Any], result: SourceResult, now: Any = T0) -> Any:
    return judge(SYSTEM, "accuracy", signal(**spec), result, now)


def _value(value: float) -> SourceResult:
    return SourceResult(samples=(Sample(T0, value),))


THRESHOLD_CASES = [
    # (bounds, value, status, limit, reason)
    ({"min": 0.9}, 0.95, "ok", None, "0.95 within min 0.9"),
    ({"min": 0.9}, 0.9, "ok", None, "0.9 within min 0.9"),
    ({"min": 0.9}, 0.71, "degraded", 0.9, "0.71 < min 0.9"),
    ({"max": 0.05}, 0.02, "ok", None, "0.02 within max 0.05"),
    ({"max": 0.05}, 0.05, "ok", None, "0.05 within max 0.05"),
    ({"max": 0.05}, 0.08, "degraded", 0.05, "0.08 > max 0.05"),
    ({"min": 0.1, "max": 0.9}, 0.5, "ok", None, "0.5 within min 0.1 max 0.9"),
    ({"min": 0.1, "max": 0.9}, 0.05, "degraded", 0.1, "0.05 < min 0.1"),
    ({"min": 0.1, "max": 0.9}, 0.95, "degraded", 0.9, "0.95 > max 0.9"),
]


@pytest.mark.parametrize(("bounds", "value", "status", "limit", "reason"), THRESHOLD_CASES)
def test_threshold_degrades_outside_min_max_or_both(
    bounds: dict[str, float], value: float, status: Status, limit: float | None, reason: str
) -> None:
    """The threshold detector is degraded exactly when the newest value is below ``min`` or
    above ``max`` (a value on the bound is fine), and names the bound it crossed."""
    found = _judge({"detect": {"threshold": bounds}}, _value(value))
    assert found.status == status
    assert found.value == value
    assert found.limit == limit
    assert found.reason == reason
    assert found.detector == "threshold"
    assert (found.system, found.signal, found.layer, found.at) == (SYSTEM, "accuracy", "model", T0)


def test_threshold_judges_the_newest_sample_only() -> None:
    """Older samples do not matter to a threshold: only the newest value is judged."""
    found = _judge(
        {"detect": {"threshold": {"min": 0.9}}}, SourceResult(samples=samples((-2, 0.5), (0, 0.95)))
    )
    assert (found.status, found.value) == ("ok", 0.95)


def _baseline(bad: str, latest: float, **spec: Any) -> Any:
    history = ((-50, 100.0), (-40, 100.0), (-30, 100.0))
    return _judge(
        {
            "bad": bad,
            "detect": {"baseline": {"reference": "1h", "max_change": "20%", **spec}},
        },
        SourceResult(samples=samples(*history, (0, latest))),
    )


BASELINE_CASES = [
    # (bad, latest, status, change)
    ("down", 79.0, "degraded", -0.21),
    ("down", 80.0, "ok", -0.20),
    ("down", 130.0, "ok", 0.30),
    ("up", 121.0, "degraded", 0.21),
    ("up", 120.0, "ok", 0.20),
    ("up", 50.0, "ok", -0.50),
    ("both", 79.0, "degraded", -0.21),
    ("both", 121.0, "degraded", 0.21),
    ("both", 100.0, "ok", 0.0),
]


@pytest.mark.parametrize(("bad", "latest", "status", "change"), BASELINE_CASES)
def test_baseline_degrades_when_change_exceeds_max_change_in_the_bad_direction(
    bad: str, latest: float, status: Status, change: float
) -> None:
    """The baseline detector compares the newest value with the mean of the reference window
    and is degraded only when the relative change exceeds ``max_change`` in the ``bad``
    direction (down, up, or both); exactly ``max_change`` is still fine."""
    found = _baseline(bad, latest)
    assert found.status == status
    assert found.detector == "baseline"
    assert found.reference == 100.0
    assert found.value == latest
    assert found.limit == pytest.approx(0.2)
    assert found.statistic == pytest.approx(change)
    assert "mean 100" in found.reason


def test_baseline_reference_excludes_samples_older_than_the_window() -> None:
    """Only samples within ``reference`` of the newest count toward the mean."""
    found = _judge(
        {"detect": {"baseline": {"reference": "1h", "max_change": "20%"}}},
        SourceResult(
            samples=samples((-120, 1000.0), (-50, 10.0), (-40, 10.0), (-30, 10.0), (0, 9.0))
        ),
    )
    assert found.reference == 10.0
    assert found.status == "ok"


@pytest.mark.parametrize(("count", "min_samples"), [(0, 3), (2, 3), (4, 5)])
def test_baseline_with_too_few_reference_samples_has_no_data(count: int, min_samples: int) -> None:
    """With fewer than ``min_samples`` reference samples there is no baseline to judge
    against: the finding is no_data (not ok, not degraded), and not a source error."""
    history = tuple((-10.0 * (i + 1), 100.0) for i in range(count))
    found = _judge(
        {
            "detect": {
                "baseline": {"reference": "1h", "max_change": "20%", "min_samples": min_samples}
            }
        },
        SourceResult(samples=samples(*history, (0, 10.0))),
    )
    assert found.status == "no_data"
    assert not found.source_error
    assert f"{count} reference samples, baseline needs {min_samples}" in found.reason


BASELINE_ZERO_CASES = [
    # (bad, latest, status, statistic)
    ("both", 0.0, "ok", 0.0),
    ("up", 5.0, "degraded", math.inf),
    ("both", 5.0, "degraded", math.inf),
    ("down", 5.0, "ok", math.inf),
    ("down", -5.0, "degraded", -math.inf),
]


@pytest.mark.parametrize(("bad", "latest", "status", "statistic"), BASELINE_ZERO_CASES)
def test_baseline_against_a_zero_reference_is_infinite_change_or_none(
    bad: str, latest: float, status: Status, statistic: float
) -> None:
    """A zero reference does not divide by zero: zero stays unchanged, anything else is an
    infinite change in its own direction, judged against ``bad``."""
    found = _judge(
        {"bad": bad, "detect": {"baseline": {"reference": "1h", "max_change": "20%"}}},
        SourceResult(samples=samples((-30, 0.0), (-20, 0.0), (-10, 0.0), (0, latest))),
    )
    assert found.reference == 0.0
    assert found.status == status
    assert found.statistic == statistic


STALE_CASES = [
    # (age of newest sample, stale_after, status)
    (minutes(10), "5m", "no_data"),
    (minutes(5), "5m", "ok"),
    (minutes(1), "5m", "ok"),
    (timedelta(days=30), None, "ok"),
]


@pytest.mark.parametrize(("age", "stale_after", "status"), STALE_CASES)
def test_a_newest_sample_older_than_stale_after_is_no_data(
    age: timedelta, stale_after: str | None, status: Status
) -> None:
    """A newest sample older than ``stale_after`` counts as no data (staleness, not a source
    error); without ``stale_after`` any sample counts, however old."""
    spec: dict[str, Any] = {"detect": {"threshold": {"min": 0.9}}}
    if stale_after is not None:
        spec["stale_after"] = stale_after
    found = _judge(spec, SourceResult(samples=(Sample(T0 - age, 0.95),)), now=T0)
    assert found.status == status
    assert not found.source_error
    if status == "no_data":
        assert found.detector == "staleness"
        assert found.reason == "newest sample is 10m old (stale_after 5m)"
        assert found.value == 0.95


@pytest.mark.parametrize("source_up", [False, True])
def test_a_source_error_is_no_data_marked_as_source_error(source_up: bool) -> None:
    """A query without a usable answer is no_data with ``source_error`` (the operator's
    problem, never stale), carrying the error and whether the source itself was up."""
    result = SourceResult(
        error="connection refused", error_reason="unreachable", source_up=source_up
    )
    found = _judge({"detect": {"threshold": {"min": 0.9}}}, result)
    assert found.status == "no_data"
    assert found.source_error
    assert found.source_up is source_up
    assert found.reason == "connection refused"
    assert found.value is None


def test_an_error_wins_over_samples() -> None:
    """A result with an error is a source error even when it carries samples."""
    result = SourceResult(samples=(Sample(T0, 0.5),), error="several series")
    found = _judge({"detect": {"threshold": {"min": 0.9}}}, result)
    assert (found.status, found.source_error) == ("no_data", True)


def test_an_empty_result_is_no_data_from_staleness() -> None:
    """A source that answered with no samples yields no_data that the stale rule watches
    (staleness, not a source error)."""
    found = _judge({"detect": {"threshold": {"min": 0.9}}}, SourceResult())
    assert found.status == "no_data"
    assert not found.source_error
    assert found.source_up
    assert found.detector == "staleness"
    assert found.reason == "the query returned no samples"


LOOKBACK_CASES = [
    # (detect spec, interval, lookback, read step)
    ({"threshold": {"min": 0.9}}, minutes(1), timedelta(0), minutes(1)),
    ({"baseline": {"reference": "1h", "max_change": "20%"}}, minutes(1), minutes(60), minutes(1)),
    (
        {"baseline": {"reference": "7d", "max_change": "20%"}},
        minutes(1),
        timedelta(days=7),
        timedelta(days=7) / 500,
    ),
    (
        {"baseline": {"reference": "7d", "max_change": "20%"}},
        minutes(30),
        timedelta(days=7),
        minutes(30),
    ),
]


@pytest.mark.parametrize(("detect", "interval", "window", "step"), LOOKBACK_CASES)
def test_lookback_and_read_step_fit_the_detector(
    detect: dict[str, Any], interval: timedelta, window: timedelta, step: timedelta
) -> None:
    """A threshold needs one instant (lookback 0, read at the interval); a baseline reads its
    reference window at the interval, or coarser so the window holds at most 500 points."""
    spec = signal(detect=detect)
    assert lookback(spec) == window
    assert read_step(spec, interval) == step
    if window > timedelta(0):
        assert window / read_step(spec, interval) <= 500


def test_the_finding_is_stamped_with_now_not_the_sample_time() -> None:
    """``at`` is the evaluation instant passed in, whatever the samples' times."""
    found = _judge(
        {"detect": {"threshold": {"min": 0.9}}},
        SourceResult(samples=(Sample(at(-3), 0.95),)),
        now=at(0),
    )
    assert found.at == T0
