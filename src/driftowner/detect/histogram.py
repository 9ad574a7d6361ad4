"""Distribution drift over Prometheus classic histograms: PSI and Jensen-Shannon between a
reference window's distribution and the recent one. Pure.

A classic histogram is a set of ``*_bucket`` counter series, one per upper bound ``le``
(``+Inf`` last), each counting observations at or below it. The observations of a window are
the counters at its end less those at its start (:func:`window_counts`); the cumulative counts
become per-bin shares with every bin smoothed by half an observation, so an empty bin neither
divides by zero nor dominates (:func:`shares`). Use::

    drift = HistogramDrift(metric="psi", bad="both")
    verdict = drift.judge(window_counts(ref_start, ref_end), window_counts(now_start, now_end))

The limit, unless given, is the larger of a practical floor (PSI 0.25, the usual "major shift";
JS 0.05 bits, its equivalent for small shifts) and the sampling limit: with no drift, PSI
between samples of N and M observations is about ``(1/N + 1/M) * chi2(bins - 1)``, and the limit
is its quantile at the false-alarm budget's per-evaluation probability ``interval /
false_alarm_every`` (Wilson-Hilferty's chi-square quantile). Small windows thus need more
evidence; huge ones never page on shifts too small to matter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import NormalDist
from typing import Literal

from driftowner.detect.changepoint import DEFAULT_BUDGET, DEFAULT_INTERVAL, budget_run_length
from driftowner.model import BadDirection

Metric = Literal["psi", "js"]
SMOOTHING = 0.5
"""Observations added to every bin before shares are taken (Jeffreys' prior)."""
FLOOR: dict[Metric, float] = {"psi": 0.25, "js": 0.05}
"""The smallest limit: a shift below it is not worth a page however certain."""


def parse_le(text: str) -> float:
    """A bucket's ``le`` label as a number (``+Inf`` is infinity).

    Raises:
        ValueError: the label is not a number (the message quotes it).
    """
    try:
        bound = float(text)
    except ValueError:
        raise ValueError(f"le={text!r}: not a number") from None
    if math.isnan(bound):
        raise ValueError(f"le={text!r}: not a number")
    return bound


def window_counts(start: Mapping[float, float], end: Mapping[float, float]) -> dict[float, float]:
    """The cumulative counts observed between two readings of a histogram's buckets.

    Args:
        start: ``le`` to counter value at the window's start (empty: the counters' start).
        end: ``le`` to counter value at the window's end.

    Returns:
        ``le`` to the increase; after a counter reset (a decrease) the end value itself.

    Raises:
        ValueError: a count is negative or not finite, or the buckets differ.
    """
    if start and set(start) != set(end):
        raise ValueError("the two readings have different le buckets")
    reset = any(end[le] < start[le] for le in start)
    counts = {}
    for le, value in end.items():
        before = 0.0 if reset or not start else start[le]
        _check_count(le, value)
        _check_count(le, before)
        counts[le] = value - before
    return counts


def _check_count(le: float, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"le={le:g}: count {value!r} is not a non-negative number")


def shares(cumulative: Mapping[float, float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-bin shares from cumulative bucket counts.

    Args:
        cumulative: ``le`` to the count of observations at or below it; must include ``+Inf``.

    Returns:
        The upper bounds in ascending order, and each bin's smoothed share (summing to 1).

    Raises:
        ValueError: no ``+Inf`` bucket, a count that is not a finite non-negative number, or
            the counts decrease with ``le``.
    """
    bounds = tuple(sorted(cumulative))
    if not bounds or bounds[-1] != math.inf:
        raise ValueError("a classic histogram needs its le=+Inf bucket")
    counts = []
    below = 0.0
    for le in bounds:
        total = cumulative[le]
        _check_count(le, total)
        if total < below:
            raise ValueError(f"le={le:g}: cumulative count {total:g} is below the previous")
        counts.append(total - below)
        below = total
    smoothed = [c + SMOOTHING for c in counts]
    whole = sum(smoothed)
    return bounds, tuple(c / whole for c in smoothed)


def psi(reference: Sequence[float], recent: Sequence[float]) -> float:
    """Population stability index: ``sum((q - p) * ln(q / p))`` over bins (p reference)."""
    _same_bins(reference, recent)
    return sum((q - p) * math.log(q / p) for p, q in zip(reference, recent, strict=True))


def js(reference: Sequence[float], recent: Sequence[float]) -> float:
    """Jensen-Shannon divergence in bits, in [0, 1]."""
    _same_bins(reference, recent)
    total = 0.0
    for p, q in zip(reference, recent, strict=True):
        mid = (p + q) / 2
        total += (p * math.log2(p / mid) if p else 0.0) + (q * math.log2(q / mid) if q else 0.0)
    return total / 2


def _same_bins(reference: Sequence[float], recent: Sequence[float]) -> None:
    if len(reference) != len(recent):
        raise ValueError(f"{len(reference)} reference bins against {len(recent)} recent ones")


def centre_of(bounds: Sequence[float], shares_: Sequence[float]) -> float:
    """The distribution's approximate mean: each bin at its midpoint (the first bin at its
    bound, the ``+Inf`` bin at the last finite bound)."""
    finite = [b for b in bounds if math.isfinite(b)]
    if not finite:
        return 0.0
    total = 0.0
    lower = finite[0]
    for upper, share in zip(bounds, shares_, strict=True):
        point = lower if not math.isfinite(upper) else (lower + upper) / 2
        total += point * share
        lower = upper if math.isfinite(upper) else lower
    return total


@dataclass(frozen=True, slots=True)
class HistogramVerdict:
    """How far the recent distribution moved from the reference, and which way."""

    metric: Metric
    statistic: float
    limit: float
    direction: Literal["up", "down"]
    """Which way the approximate mean moved."""
    reference_centre: float
    recent_centre: float
    reference_count: float
    recent_count: float
    drifted: bool
    """The statistic is over the limit and the move is in the ``bad`` direction."""


@dataclass(frozen=True, slots=True)
class HistogramDrift:
    """PSI or JS drift between a reference and a recent window of one histogram."""

    metric: Metric = "psi"
    limit: float | None = None
    """None: the larger of the practical floor and the budget's sampling limit."""
    bad: BadDirection = "both"
    false_alarm_every: timedelta = DEFAULT_BUDGET
    interval: timedelta = DEFAULT_INTERVAL

    def __post_init__(self) -> None:
        if self.metric not in FLOOR:
            raise ValueError(f"metric: expected psi or js, got {self.metric!r}")
        if self.bad not in ("up", "down", "both"):
            raise ValueError(f"bad: expected up, down or both, got {self.bad!r}")
        if self.limit is not None and not self.limit > 0:
            raise ValueError(f"limit: must be positive, got {self.limit}")
        budget_run_length(self.false_alarm_every, self.interval)

    def limit_for(self, bins: int, reference_count: float, recent_count: float) -> float:
        """The limit for windows of these sizes (see the module docstring)."""
        if self.limit is not None:
            return self.limit
        freedom = max(bins - 1, 1)
        chance = 1 / budget_run_length(self.false_alarm_every, self.interval)
        z = NormalDist().inv_cdf(1 - min(chance, 0.5))
        spread = 2 / (9 * freedom)
        quantile = freedom * max(1 - spread + z * math.sqrt(spread), 0.0) ** 3
        sampling = (1 / max(reference_count, 1) + 1 / max(recent_count, 1)) * quantile
        if self.metric == "js":
            sampling /= 8 * math.log(2)  # JS in bits ~ PSI / (8 ln 2) for small shifts
        return max(FLOOR[self.metric], sampling)

    def judge(
        self, reference: Mapping[float, float], recent: Mapping[float, float]
    ) -> HistogramVerdict:
        """Compare two windows' cumulative bucket counts (see :func:`window_counts`).

        Raises:
            ValueError: the windows have different buckets, or bad counts.
        """
        if set(reference) != set(recent):
            raise ValueError("the reference and recent windows have different le buckets")
        bounds, before = shares(reference)
        _, after = shares(recent)
        measure = psi if self.metric == "psi" else js
        statistic = measure(before, after)
        ref_count, new_count = reference[math.inf], recent[math.inf]
        limit = self.limit_for(len(bounds), ref_count, new_count)
        was, now = centre_of(bounds, before), centre_of(bounds, after)
        direction: Literal["up", "down"] = "up" if now >= was else "down"
        return HistogramVerdict(
            metric=self.metric,
            statistic=statistic,
            limit=limit,
            direction=direction,
            reference_centre=was,
            recent_centre=now,
            reference_count=ref_count,
            recent_count=new_count,
            drifted=statistic > limit and self.bad in ("both", direction),
        )


def verdict_line(verdict: HistogramVerdict, signal: str, at: datetime) -> str:
    """One line, e.g. ``latency distribution moved up (psi 0.31 > 0.25; mean ~0.42 from
    ~0.18) at 09:40``."""
    return (
        f"{signal} distribution moved {verdict.direction} ({verdict.metric} "
        f"{verdict.statistic:.3g} {'>' if verdict.statistic > verdict.limit else '<='} "
        f"{verdict.limit:.3g}; mean ~{verdict.recent_centre:.3g} from "
        f"~{verdict.reference_centre:.3g}) at {at:%H:%M}"
    )
