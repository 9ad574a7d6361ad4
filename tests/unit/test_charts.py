"""Many charts judged at once as arrays (``detect.charts``) against the scalar charts, which
stay the reference: the same state, statistic, alarm sample and change start, bit for bit."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftowner.detect import charts
from driftowner.detect.changepoint import Cusum, Detection, Ewma, PageHinkley

MINUTE = timedelta(minutes=1)
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _values(rng: random.Random, shifts: list[tuple[int, float, float]], odd: float) -> list[float]:
    """A series of level segments with noise, some values NaN or infinite."""
    out: list[float] = []
    for count, level, noise in shifts:
        for _ in range(count):
            roll = rng.random()
            if roll < odd:
                out.append(rng.choice([math.nan, math.inf, -math.inf]))
            else:
                out.append(level + noise * rng.gauss(0, 1))
    return out


@settings(max_examples=80, deadline=None)
@given(
    shifts=st.lists(
        st.tuples(st.integers(1, 50), st.floats(-3, 3), st.sampled_from([0.0, 0.2, 1.0])),
        min_size=1,
        max_size=5,
    ),
    bad=st.sampled_from(["up", "down", "both"]),
    kind=st.sampled_from(["page_hinkley", "cusum"]),
    odd=st.sampled_from([0.0, 0.05]),
    charts_count=st.integers(1, 6),
    seed=st.integers(0, 10_000),
)
def test_the_vectorised_step_gives_exactly_the_scalar_charts(
    shifts: list[tuple[int, float, float]],
    bad: str,
    kind: str,
    odd: float,
    charts_count: int,
    seed: int,
) -> None:
    """Property: charts judged one sample a step as rows (:func:`charts.advance` on the held
    rows, the scalar update on :func:`charts.state_at` of every moved row, learning charts
    held again once judging) reach, after every step, exactly the state of the same charts
    run through the scalar update alone, and confirm the same changes (alarm sample, level,
    statistic, change start), on random series with shifts, constant stretches, NaN and
    infinities, repeated times, both ``bad`` directions and both vectorised charts."""
    rng = random.Random(seed)
    detector = (
        PageHinkley(bad=bad, warmup=5) if kind == "page_hinkley" else Cusum(bad=bad, warmup=5)
    )  # type: ignore[arg-type]
    series = [_values(random.Random(seed * 31 + c), shifts, odd) for c in range(charts_count)]
    steps = max(len(s) for s in series)
    scalar = [detector.start() for _ in range(charts_count)]
    own = [detector.start() for _ in range(charts_count)]  # the states of rows not held
    rows = charts.empty(charts_count, detector.warmup)
    for step in range(steps):
        index = [c for c in range(charts_count) if step < len(series[c])]
        # A repeated time now and then: not newer than the last, so skipped.
        at = T0 + (step - (rng.random() < 0.1)) * MINUTE
        values = [series[c][step] for c in index]
        expected: dict[int, Detection | None] = {}
        for c, value in zip(index, values, strict=True):
            scalar[c], expected[c] = detector.update(scalar[c], value, at)
        adopt = [c for c in index if not rows.held[c] and charts.judging(own[c])]
        rows = charts.hold(rows, adopt, [own[c] for c in adopt])
        moved = charts.advance(
            detector,
            rows,
            np.asarray(index, dtype=np.int64),
            np.asarray(values, dtype=np.float64),
            np.full(len(index), at.timestamp()),
        )
        rows = moved.rows
        got: dict[int, Detection | None] = dict.fromkeys(index)
        back = [c for c, m in zip(index, moved.moved, strict=True) if m]
        for c in back:
            state = charts.state_at(rows, c) if rows.held[c] else own[c]
            own[c], got[c] = detector.update(state, series[c][step], at)
        rows = charts.release(rows, back)
        assert got == expected
        for c in range(charts_count):
            assert (charts.state_at(rows, c) if rows.held[c] else own[c]) == scalar[c]


def test_a_constant_series_stays_held_and_equal() -> None:
    """A constant signal (scale at its floor) judged as a row keeps exactly the scalar state,
    sample after sample, without ever moving."""
    detector = PageHinkley(bad="both", warmup=5)
    state = detector.start()
    for minute in range(5):
        state, _ = detector.update(state, 0.5, T0 + minute * MINUTE)
    assert charts.judging(state)
    rows = charts.hold(charts.empty(1, 5), [0], [state])
    for minute in range(5, 60):
        at = T0 + minute * MINUTE
        state, found = detector.update(state, 0.5, at)
        step = charts.advance(
            detector, rows, np.array([0]), np.array([0.5]), np.array([at.timestamp()])
        )
        rows = step.rows
        assert found is None and not step.moved[0]
        assert charts.state_at(rows, 0) == state


def test_a_chart_still_learning_cannot_be_held() -> None:
    """Only a chart judging against a learned reference is held as a row: one still learning
    is refused with a clear error, and EWMA is not vectorised."""
    detector = PageHinkley(warmup=5)
    learning = detector.start()
    assert not charts.judging(learning)
    with pytest.raises(ValueError, match="still learning"):
        charts.hold(charts.empty(1, 5), [0], [learning])
    assert not charts.vectorised(Ewma())
    assert charts.vectorised(detector) and charts.vectorised(Cusum())
