"""PSI and Jensen-Shannon drift over Prometheus classic histograms: bucket counts into shares,
the two measures, the limit from the budget, and the bad direction."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftowner.detect.histogram import (
    FLOOR,
    HistogramDrift,
    js,
    parse_le,
    psi,
    shares,
    window_counts,
)

INF = math.inf


def cumulative(*counts: float) -> dict[float, float]:
    """Buckets le=1, 2, 4, +Inf from per-bin counts."""
    total, result = 0.0, {}
    for le, count in zip((1.0, 2.0, 4.0, INF), counts, strict=True):
        total += count
        result[le] = total
    return result


def test_shares_turn_cumulative_counts_into_smoothed_bins() -> None:
    """Cumulative counts become per-bin shares; an empty bin gets half an observation."""
    bounds, parts = shares({1.0: 10, 2.0: 10, INF: 29})
    assert bounds == (1.0, 2.0, INF)
    assert parts == pytest.approx((10.5 / 30.5, 0.5 / 30.5, 19.5 / 30.5))


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        ({1.0: 3, 2.0: 5}, "le=\\+Inf bucket"),
        ({1.0: 5, 2.0: 3, INF: 6}, "le=2: cumulative count 3 is below"),
    ],
)
def test_malformed_buckets_are_refused(buckets: dict[float, float], message: str) -> None:
    """A histogram without +Inf, or with counts falling as le grows, is an error saying so."""
    with pytest.raises(ValueError, match=message):
        shares(buckets)


def test_le_labels_parse_and_bad_ones_are_named() -> None:
    """``+Inf`` and numbers parse; anything else is refused with the label quoted."""
    assert parse_le("+Inf") == INF
    assert parse_le("0.25") == 0.25
    with pytest.raises(ValueError, match="le='fast': not a number"):
        parse_le("fast")


def test_window_counts_subtract_and_survive_a_counter_reset() -> None:
    """A window's observations are end minus start; after a reset, the end counts alone."""
    start, end = cumulative(5, 5, 5, 5), cumulative(8, 9, 10, 11)
    assert window_counts(start, end) == {1.0: 3, 2.0: 7, 4.0: 12, INF: 18}
    assert window_counts(end, start) == start
    with pytest.raises(ValueError, match="different le buckets"):
        window_counts({1.0: 1, INF: 2}, {2.0: 1, INF: 2})


def test_psi_and_js_known_values() -> None:
    """Identical distributions score 0; PSI and JS match hand-computed values; JS is at most
    one bit."""
    p, q = (0.5, 0.5), (0.9, 0.1)
    assert psi(p, p) == 0 and js(p, p) == 0
    assert psi(p, q) == pytest.approx(0.4 * math.log(1.8) - 0.4 * math.log(0.2))
    expected_js = 0.5 * (
        0.5 * math.log2(0.5 / 0.7)
        + 0.5 * math.log2(0.5 / 0.3)
        + 0.9 * math.log2(0.9 / 0.7)
        + 0.1 * math.log2(0.1 / 0.3)
    )
    assert js(p, q) == pytest.approx(expected_js)
    assert js((1.0, 0.0), (0.0, 1.0)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2 reference bins against 3"):
        psi(p, (0.2, 0.3, 0.5))


@pytest.mark.parametrize("metric", ["psi", "js"])
def test_a_shift_up_drifts_only_when_up_is_bad(metric: str) -> None:
    """Mass moving to the higher buckets is drift for ``bad: up`` and ``both``, not for
    ``down``; the same distribution again is never drift."""
    before, after = cumulative(400, 300, 200, 100), cumulative(100, 200, 300, 400)
    for bad, drifted in (("up", True), ("both", True), ("down", False)):
        verdict = HistogramDrift(metric=metric, bad=bad).judge(before, after)  # type: ignore[arg-type]
        assert verdict.direction == "up"
        assert verdict.statistic > verdict.limit
        assert verdict.drifted is drifted
    same = HistogramDrift(metric=metric).judge(before, before)  # type: ignore[arg-type]
    assert not same.drifted and same.statistic == 0


def test_the_limit_needs_more_evidence_from_small_windows() -> None:
    """With thousands of observations the limit is the practical floor; with a handful the
    sampling limit is higher, so a few requests do not page."""
    drift = HistogramDrift()
    assert drift.limit_for(4, 100_000, 100_000) == FLOOR["psi"]
    assert drift.limit_for(4, 10, 10) > 1.0
    assert HistogramDrift(limit=0.1).limit_for(4, 10, 10) == 0.1
    few = HistogramDrift().judge(cumulative(4, 3, 2, 1), cumulative(1, 2, 3, 4))
    assert not few.drifted


def test_bad_parameters_are_refused() -> None:
    """An unknown metric, direction or a non-positive limit is an error naming it."""
    with pytest.raises(ValueError, match="metric: expected psi or js"):
        HistogramDrift(metric="kl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit: must be positive"):
        HistogramDrift(limit=0)
    with pytest.raises(ValueError, match="different le buckets"):
        HistogramDrift().judge({1.0: 1, INF: 2}, {2.0: 1, INF: 2})


counts = st.lists(st.integers(min_value=0, max_value=10_000), min_size=4, max_size=4)


@settings(max_examples=100, deadline=None)
@given(first=counts, second=counts)
def test_measures_are_non_negative_and_js_is_bounded(first: list[int], second: list[int]) -> None:
    """For any two histograms (empty bins included) PSI >= 0 and 0 <= JS <= 1."""
    _, p = shares(cumulative(*first))
    _, q = shares(cumulative(*second))
    assert psi(p, q) >= -1e-12
    assert -1e-12 <= js(p, q) <= 1 + 1e-12
