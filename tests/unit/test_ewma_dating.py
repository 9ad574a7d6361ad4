"""The EWMA chart's change start (issue 6): dated at the most likely start of the shift among
the samples since E last crossed the centre, not at the crossing itself."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from driftowner.detect.changepoint import ChartState, Direction, Ewma, shift_start

from .test_changepoint import MINUTE, T0, run

STEP_AT = 300


def drift_then_step(seed: int, sign: float) -> list[float]:
    """100 samples of N(0, 1) (the warm-up learns them), 200 at 0.3 above that (E leans to
    that side long before the change), then a 3-sigma step at sample 300."""
    rng = random.Random(seed)
    levels = [0.0] * 100 + [0.3] * 200 + [3.3] * 100
    return [sign * (level + rng.gauss(0.0, 1.0)) for level in levels]


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_step_is_dated_within_a_few_samples_of_where_it_is(sign: float) -> None:
    """In each of 20 seeded series, a 3-sigma step at sample 300 that follows a slight lean
    to the same side is confirmed after it and dated within 5 samples of it. Dated at E's
    last crossing of the centre, 11 of the 20 were dated 8 to 150 samples early."""
    for seed in range(20):
        found = run(Ewma(), drift_then_step(seed, sign))
        assert found, f"seed {seed}: the step was not found"
        index, detection = found[0]
        assert index >= STEP_AT, f"seed {seed}: a change confirmed before the step"
        began = round((detection.began_at - T0) / MINUTE)
        assert abs(began - STEP_AT) <= 5, f"seed {seed}: dated at {began}"
        assert detection.direction == ("up" if sign > 0 else "down")


@dataclass(frozen=True, slots=True)
class _DatedAtTheCrossing(Ewma):
    """The chart as it was: the change began when E last crossed the centre."""

    def _dated(self, state: ChartState, direction: Direction) -> ChartState:
        return state


@pytest.mark.parametrize("seed", range(10))
def test_dating_moves_the_reported_start_never_the_confirmation(seed: int) -> None:
    """The first confirmed change comes at the same sample, in the same direction, with the
    same statistic whether dated at the crossing or at the shift's start; only the start
    moves, and never before the crossing nor after the confirming sample."""
    values = drift_then_step(seed, 1.0 if seed % 2 else -1.0)
    (index, dated), *_ = run(Ewma(), values)
    (crossing_index, crossing), *_ = run(_DatedAtTheCrossing(), values)
    assert (index, dated.direction, dated.statistic) == (
        crossing_index,
        crossing.direction,
        crossing.statistic,
    )
    assert crossing.began_at <= dated.began_at <= dated.at


@pytest.mark.parametrize(
    ("values", "sign", "start"),
    [
        ([3.0, 2.5, 3.5, 2.8, 3.1, 2.9], 1.0, 0),  # shifted from the first value: no later start
        ([0.1, -0.2, 0.3, 0.0, 3.0, 2.6, 3.4, 3.1], 1.0, 4),  # at the reference, then a step
        ([0.7, 0.5, 0.8, 0.6, 0.7, 0.6, 3.2, 2.9, 3.0], 1.0, 6),  # a lean of its own, then a step
        ([-0.1, 0.2, -0.3, -3.0, -2.7, -3.2], -1.0, 3),  # downward
        ([0.4, 0.2, 0.5, 0.3], 1.0, 0),  # too little to split
        ([0.5], 1.0, 0),
        ([], 1.0, 0),
        ([1.0, 2.0, 3.0], -1.0, 0),  # nothing in that direction
    ],
)
def test_shift_start(values: list[float], sign: float, start: int) -> None:
    """The start of a shift in standardised values is the split the information criterion
    prefers, and the first value when none beats "everything shifted"."""
    assert shift_start(values, sign) == start
