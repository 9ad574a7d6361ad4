"""Detectors: one signal's samples and spec in, one Finding out. Pure; the clock is passed in."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta
from statistics import fmean

from driftowner.config import BaselineConfig, SignalConfig, ThresholdConfig, format_duration
from driftowner.model import BadDirection, Change, Direction, Finding, Sample, SourceResult


def lookback(signal: SignalConfig) -> timedelta:
    """How much history a signal's detector needs: 0 means one instant read suffices."""
    if signal.detect is not None and signal.detect.baseline is not None:
        return signal.detect.baseline.reference
    return timedelta(0)


def read_step(signal: SignalConfig, interval: timedelta) -> timedelta:
    """The resolution of a range read: the evaluation interval, or coarser so a window holds
    at most 500 points (a 7-day reference at a 1-minute interval is read at ~20 minutes)."""
    window = lookback(signal)
    if window <= timedelta(0):
        return interval
    return max(interval, window / 500)


def judge(
    system: str, signal_name: str, signal: SignalConfig, result: SourceResult, now: datetime
) -> Finding:
    """The verdict of a stateless detector (threshold, baseline) on one signal at ``now`` from
    what its source returned. Change-point charts keep state: see :mod:`driftowner.detect.bank`
    (which also reports a flip of a stateless verdict as a change: :func:`flip`)."""
    found = unusable(system, signal_name, signal, result, now)
    if found is not None:
        return found
    base = Finding(system=system, signal=signal_name, layer=signal.layer, status="no_data", at=now)
    latest = result.samples[-1]
    if not math.isfinite(latest.value):  # neither within nor beyond any limit
        return replace(base, reason=f"the newest value is not a finite number ({latest.value})")
    if signal.alerts:
        return alerting(base, signal.query, latest)
    detect = signal.detect
    if detect is not None and detect.threshold is not None:
        return threshold(base, detect.threshold, latest)
    if detect is None or detect.baseline is None:
        raise ValueError(f"{signal_name}: {detect and detect.name} is not a stateless detector")
    return baseline(base, detect.baseline, signal.bad, result.samples)


FLIP = frozenset({"ok", "degraded"})
"""The two verdicts a flip goes between (no data is no verdict)."""


def flip(decided: Finding | None, found: Finding) -> Change | None:
    """The change a detector without a chart (threshold, baseline, psi, js) confirms: its
    verdict flipped between ``ok`` and ``degraded`` since ``decided``, its last verdict (a
    shift, or a recovery), from the level before (the reference, or the value last judged) to
    the value now. No data in between changes nothing."""
    if decided is None or found.value is None or {decided.status, found.status} != FLIP:
        return None
    before = found.reference if found.reference is not None else decided.value
    if before is None:
        return None
    direction: Direction = "up" if found.value > before else "down"
    return Change(found.at, direction, before, found.value)


def unusable(
    system: str, signal_name: str, signal: SignalConfig, result: SourceResult, now: datetime
) -> Finding | None:
    """The ``no_data`` finding when the source failed, returned nothing, or its newest sample
    is older than ``stale_after``; None when there is something to judge."""
    samples = result.samples
    if result.error is None and samples and signal.stale_after is None:
        return None  # the common case, decided before any finding is built
    base = Finding(system=system, signal=signal_name, layer=signal.layer, status="no_data", at=now)
    if result.error is not None:
        return replace(
            base,
            reason=result.error,
            source_up=result.source_up,
            source_error=True,
            error_reason=result.error_reason,
        )
    if not result.samples:
        return replace(base, reason="the query returned no samples", detector="staleness")
    latest = result.samples[-1]
    if signal.stale_after is not None and now - latest.at > signal.stale_after:
        age = format_duration(timedelta(seconds=round((now - latest.at).total_seconds())))
        limit = format_duration(signal.stale_after)
        return replace(
            base,
            value=latest.value,
            detector="staleness",
            reason=f"newest sample is {age} old (stale_after {limit})",
        )
    return None


def alerting(base: Finding, selector: str, latest: Sample) -> Finding:
    """An alert signal: degraded while any of its alerts fires (the sample's value is how many
    fire), healthy once they resolve."""
    firing = round(latest.value)
    found = replace(base, value=latest.value, detector="alert", limit=0.0)
    if firing > 0:
        alerts = "1 alert" if firing == 1 else f"{firing} alerts"
        return replace(found, status="degraded", reason=f"{alerts} firing: {selector}")
    return replace(found, status="ok", reason=f"no alert firing: {selector}")


def threshold(base: Finding, spec: ThresholdConfig, latest: Sample) -> Finding:
    """Degraded when the newest value is below ``min`` or above ``max``."""
    value = latest.value
    found = replace(base, value=value, detector="threshold", status="ok")
    if spec.min is not None and value < spec.min:
        return replace(
            found, status="degraded", limit=spec.min, reason=f"{_fmt(value)} < min {_fmt(spec.min)}"
        )
    if spec.max is not None and value > spec.max:
        return replace(
            found, status="degraded", limit=spec.max, reason=f"{_fmt(value)} > max {_fmt(spec.max)}"
        )
    bounds = [f"min {_fmt(spec.min)}" if spec.min is not None else ""]
    bounds.append(f"max {_fmt(spec.max)}" if spec.max is not None else "")
    return replace(found, reason=f"{_fmt(value)} within {' '.join(b for b in bounds if b)}")


def baseline(
    base: Finding, spec: BaselineConfig, bad: BadDirection, samples: tuple[Sample, ...]
) -> Finding:
    """Degraded when the newest value moved more than ``max_change`` from the mean of the
    reference window (the finite samples before it) in the ``bad`` direction."""
    latest = samples[-1]
    history = [
        s.value
        for s in samples[:-1]
        if s.at >= latest.at - spec.reference and math.isfinite(s.value)
    ]
    found = replace(base, value=latest.value, detector="baseline", limit=spec.max_change)
    if len(history) < spec.min_samples:
        return replace(
            found,
            status="no_data",
            detector="baseline",
            reason=f"{len(history)} reference samples, baseline needs {spec.min_samples}",
        )
    reference = _mean(history)
    change = _relative_change(latest.value, reference)
    breached = {
        "down": change < -spec.max_change,
        "up": change > spec.max_change,
        "both": abs(change) > spec.max_change,
    }[bad]
    reason = (
        f"{_fmt(latest.value)} is {_percent(change)} against the "
        f"{format_duration(spec.reference)} mean {_fmt(reference)} "
        f"(limit {'±' if bad == 'both' else ('-' if bad == 'down' else '+')}"
        f"{_percent(spec.max_change, signed=False)})"
    )
    return replace(
        found,
        status="degraded" if breached else "ok",
        reference=reference,
        statistic=change,
        reason=reason,
    )


def _mean(values: list[float]) -> float:
    """The mean of finite values, also when their sum overflows a float (each is divided by
    the count before adding, so the total stays within the largest of them)."""
    try:
        return fmean(values)
    except OverflowError:
        return math.fsum(v / len(values) for v in values)


def _relative_change(value: float, reference: float) -> float:
    if reference == 0:
        if value == 0:
            return 0.0
        return math.copysign(math.inf, value)
    return (value - reference) / abs(reference)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _percent(value: float, *, signed: bool = True) -> str:
    if math.isinf(value):
        return "+inf%" if value > 0 else "-inf%"
    text = f"{value * 100:+.1f}%" if signed else f"{value * 100:.1f}%"
    return text.replace(".0%", "%")
