"""Early in a chart's life: charts that learned their reference from a short warm-up, judged in
control, confirm no more changes in their first samples than the false-alarm budget allows.

Many seeded charts are judged as rows (``detect.charts.advance``, bit for bit the scalar
update, so thousands of charts take a second); the bound is what a chart whose in-control run
length is geometric with the budget's mean (43,200 samples) allows: ``N (1 - (1 - 1/43,200)^K)``
of ``N`` charts within their first ``K`` samples. Counts, not times.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from driftowner.detect import charts
from driftowner.detect.changepoint import (
    DEFAULT_BUDGET,
    DEFAULT_INTERVAL,
    ChartState,
    Detector,
    PageHinkley,
    budget_run_length,
    default_detector,
)

CHARTS = 1000
JUDGED = 1000
MINUTE = 60.0


def _learned(detector: Detector, rng: np.random.Generator, phi: float) -> tuple[ChartState, float]:
    """One chart after its warm-up on an AR(1) series (unit marginal variance; 0: white), and
    the series' last value."""
    state = detector.start()
    x = float(rng.standard_normal())
    minute = 0
    while state.reference is None:
        x = phi * x + math.sqrt(1 - phi * phi) * float(rng.standard_normal())
        state, _ = detector.update(state, x, datetime.fromtimestamp(minute * MINUTE, UTC))
        minute += 1
    return state, x


def _early_alarms(phi: float, seed: int, detector: Detector | None = None) -> int:
    """How many of CHARTS charts (the default one unless given), learned and then judged in
    control, confirm a change within their first JUDGED samples."""
    detector = detector or default_detector()
    rng = np.random.default_rng(seed)
    learned = [_learned(detector, rng, phi) for _ in range(CHARTS)]
    rows = charts.hold(
        charts.empty(CHARTS, detector.warmup), range(CHARTS), [s for s, _ in learned]
    )
    x = np.array([value for _, value in learned])
    last = np.array([s.last_at for s, _ in learned], dtype=np.float64)
    active = np.arange(CHARTS)
    alarms = 0
    for judged in range(1, JUDGED + 1):
        x[active] = phi * x[active] + math.sqrt(1 - phi * phi) * rng.standard_normal(len(active))
        step = charts.advance(detector, rows, active, x[active], last[active] + MINUTE * judged)
        rows = step.rows
        alarms += int(np.count_nonzero(step.moved))
        active = active[~step.moved]
    return alarms


def _allowed() -> float:
    target = budget_run_length(DEFAULT_BUDGET, DEFAULT_INTERVAL)
    return CHARTS * (1 - (1 - 1 / target) ** JUDGED)


@pytest.mark.parametrize("phi", [0.0, 0.9])
def test_the_default_chart_stays_within_the_budget_in_its_first_samples(phi: float) -> None:
    """On white and strongly autocorrelated (phi=0.9) input, default charts that learned their
    reference from the default warm-up confirm fewer changes in their first 1,000 judged
    samples than the budget allows (~23 of 1,000)."""
    assert _early_alarms(phi, seed=11) <= _allowed()


@pytest.mark.parametrize(("phi", "seed"), [(0.3, 12), (0.5, 14)])
def test_the_default_chart_stays_within_the_budget_on_moderate_autocorrelation(
    phi: float, seed: int
) -> None:
    """On moderately autocorrelated AR(1) input (phi=0.3, 0.5) default charts stay within the
    budget in their first 1,000 judged samples too. Their warm-up counts its effective samples
    with phi widened by two standard errors: stopping on the point estimate chose windows
    whose phi looked low, underestimated the long-run scale, and ~4-5% of charts alarmed
    (about twice the ~2.3% allowed; this test fails on that rule)."""
    assert _early_alarms(phi, seed=seed) <= _allowed()


def test_a_chart_with_a_textbook_limit_exceeds_the_bound() -> None:
    """The count can fail: Page-Hinkley with the textbook threshold 5 (an in-control run length
    of a few hundred samples) confirms far more early changes than the budget allows."""
    assert _early_alarms(0.0, seed=13, detector=PageHinkley(threshold=5.0)) > 5 * _allowed()
