"""The three properties issue 6 asks of every detector, for the ones without a chart:
``threshold``, ``baseline`` (one signal's samples in, one verdict out) and ``psi`` / ``js``
(two windows of a classic histogram in, one verdict out). The charts (the default, ``cusum``,
``ewma``, ``page_hinkley``) have theirs in ``test_changepoint.py``.

- a constant series never alarms;
- NaN and infinities never crash (and are never judged as a value);
- a larger shift is never detected later than a smaller one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftowner.detect.detectors import judge
from driftowner.detect.histogram import HistogramDrift
from driftowner.model import Finding, SourceResult

from .factories import SYSTEM, T0, samples, signal

INF = math.inf
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
anything = st.one_of(st.floats(allow_nan=True, allow_infinity=True), finite)
bad_direction = st.sampled_from(["up", "down", "both"])


def _threshold(low: float, high: float) -> dict[str, Any]:
    return {"detect": {"threshold": {"min": low, "max": high}}}


def _baseline(bad: str) -> dict[str, Any]:
    return {"bad": bad, "detect": {"baseline": {"reference": "1h", "max_change": "20%"}}}


def _verdicts(spec: dict[str, Any], values: Sequence[float]) -> list[Finding]:
    """The detector's verdict after each sample, a sample a minute, the reference window
    being whatever an hour holds before it."""
    config = signal(**spec)
    points = [(float(i), v) for i, v in enumerate(values)]
    return [
        judge(SYSTEM, "accuracy", config, SourceResult(samples=samples(*points[: i + 1])), T0)
        for i in range(len(points))
    ]


def _first_degraded(verdicts: Sequence[Finding]) -> int | None:
    return next((i for i, found in enumerate(verdicts) if found.status == "degraded"), None)


@settings(max_examples=60, deadline=None)
@given(level=finite, width=st.floats(min_value=0, max_value=1e6), count=st.integers(1, 80))
def test_a_constant_series_never_breaches_a_threshold_around_it(
    level: float, width: float, count: int
) -> None:
    """A constant value within ``min``/``max`` is never degraded, however long it lasts."""
    verdicts = _verdicts(_threshold(level - width, level + width), [level] * count)
    assert all(found.status == "ok" for found in verdicts)


@settings(max_examples=60, deadline=None)
@given(level=finite, bad=bad_direction, count=st.integers(1, 80))
def test_a_constant_series_never_moves_from_its_baseline(
    level: float, bad: str, count: int
) -> None:
    """Against a reference of the same constant, the change is nil: never degraded."""
    verdicts = _verdicts(_baseline(bad), [level] * count)
    assert all(found.status in ("ok", "no_data") for found in verdicts)


@settings(max_examples=80, deadline=None)
@given(values=st.lists(anything, min_size=1, max_size=40), bad=bad_direction)
def test_nan_and_infinities_never_crash_and_are_never_judged(values: list[float], bad: str) -> None:
    """Whatever the samples, both detectors answer; a newest value that is not a finite
    number is no data (it is neither within nor beyond any limit), and a baseline's
    reference is made of finite values only."""
    for spec in (_threshold(-1.0, 1.0), _baseline(bad)):
        verdicts = _verdicts(spec, values)
        for value, found in zip(values, verdicts, strict=True):
            if not math.isfinite(value):
                assert found.status == "no_data"
                assert "not a finite number" in found.reason
            if found.reference is not None:
                assert math.isfinite(found.reference)


def test_a_baseline_of_values_too_large_to_add_still_has_a_mean() -> None:
    """Finite values whose sum overflows a float (hypothesis found them) give the reference's
    mean, not an OverflowError out of the cycle."""
    found = _verdicts(_baseline("both"), [1.7e308] * 40)[-1]
    assert found.reference == pytest.approx(1.7e308)
    assert found.status == "ok"


def _shifted(noise: Sequence[float], shift: float, start: int) -> list[float]:
    return [x + (shift if i >= start else 0.0) for i, x in enumerate(noise)]


@settings(max_examples=60, deadline=None)
@given(
    noise=st.lists(st.floats(min_value=-0.05, max_value=0.05), min_size=40, max_size=40),
    small=st.floats(min_value=0.0, max_value=2.0),
    extra=st.floats(min_value=0.0, max_value=2.0),
)
def test_a_larger_shift_is_never_found_later_by_threshold_or_baseline(
    noise: list[float], small: float, extra: float
) -> None:
    """On the same noise around 1, an upward shift at sample 20 that is larger is degraded
    no later than a smaller one (and whenever the smaller one is)."""
    base = [1.0 + x for x in noise]
    for spec in (_threshold(0.0, 1.3), _baseline("up")):
        weaker = _first_degraded(_verdicts(spec, _shifted(base, small, 20)))
        stronger = _first_degraded(_verdicts(spec, _shifted(base, small + extra, 20)))
        if weaker is not None:
            assert stronger is not None and stronger <= weaker


def _cumulative(counts: Sequence[float]) -> dict[float, float]:
    """Buckets le=1, 2, 4, 8, +Inf from per-bin counts."""
    total, result = 0.0, {}
    for le, count in zip((1.0, 2.0, 4.0, 8.0, INF), counts, strict=True):
        total += count
        result[le] = total
    return result


bins = st.lists(st.integers(min_value=0, max_value=5_000), min_size=5, max_size=5)
metrics = st.sampled_from(["psi", "js"])


@settings(max_examples=80, deadline=None)
@given(counts=bins, metric=metrics, bad=bad_direction, scale=st.integers(1, 50))
def test_an_unchanged_histogram_never_drifts(
    counts: list[int], metric: str, bad: str, scale: int
) -> None:
    """The same distribution in the recent window as in the reference (any number of
    observations in either) is never drift; with the same counts the statistic is 0 (with
    other counts the smoothing of empty bins leaves a little, under the limit)."""
    reference = _cumulative(counts)
    recent = _cumulative([c * scale for c in counts])
    if reference[INF] == 0:
        return
    verdict = HistogramDrift(metric=metric, bad=bad).judge(reference, recent)  # type: ignore[arg-type]
    assert not verdict.drifted
    if scale == 1:
        assert verdict.statistic == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=80, deadline=None)
@given(
    counts=st.lists(
        st.one_of(
            st.integers(0, 1000).map(float),
            st.sampled_from([math.nan, INF, -INF, -1.0, 1e308]),
            anything,
        ),
        min_size=5,
        max_size=5,
    ),
    metric=metrics,
)
def test_a_histogram_with_nan_or_infinite_counts_is_refused_never_crashes(
    counts: list[float], metric: str
) -> None:
    """Counts that are NaN, infinite or negative are a ValueError naming the bucket (the bank
    turns it into the signal's reason); no other exception escapes."""
    window = _cumulative([1.0, 2.0, 3.0, 4.0, 5.0])
    drift = HistogramDrift(metric=metric)  # type: ignore[arg-type]
    for reference, recent in ((_cumulative(counts), window), (window, _cumulative(counts))):
        try:
            verdict = drift.judge(reference, recent)
        except ValueError as error:
            assert "le=" in str(error) or "histogram" in str(error)
        else:
            assert math.isfinite(verdict.statistic) and verdict.statistic >= -1e-12


@settings(max_examples=80, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=50, max_value=5_000), min_size=5, max_size=5),
    small=st.floats(min_value=0.0, max_value=1.0),
    extra=st.floats(min_value=0.0, max_value=1.0),
    metric=metrics,
)
def test_a_larger_shift_of_a_histogram_is_drift_whenever_a_smaller_one_is(
    counts: list[int], small: float, extra: float, metric: str
) -> None:
    """Moving a larger share of the lowest bin's observations to the highest bin scores at
    least as high, so it is drift whenever the smaller move is (the windows are compared
    once a cycle: never later)."""
    drift = HistogramDrift(metric=metric, bad="up")  # type: ignore[arg-type]
    reference = _cumulative(counts)

    def moved(share: float) -> dict[float, float]:
        part = min(share, 1.0) * counts[0]
        return _cumulative([counts[0] - part, *counts[1:4], counts[4] + part])

    weaker = drift.judge(reference, moved(small))
    stronger = drift.judge(reference, moved(small + extra))
    assert stronger.statistic >= weaker.statistic - 1e-12
    if weaker.drifted:
        assert stronger.drifted
