"""What the detector bank reads besides each cycle's newest samples: the history a chart's warm
start replays (range reads over its reference window), and the two windows of a classic
histogram that PSI and JS compare (``increase`` of its ``*_bucket`` series, summed by ``le``).

I/O only; the decisions are :mod:`driftowner.detect.bank`'s.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from driftowner.config import HISTOGRAM_DETECTORS, Config, SignalConfig
from driftowner.detect.bank import (
    Bank,
    HistogramReading,
    SignalKey,
    chart_for,
    reference_window,
)
from driftowner.detect.changepoint import Detector
from driftowner.detect.histogram import parse_le
from driftowner.model import Sample, SourceResult
from driftowner.sources import LabelledResult, LabelledSource, Source, supports_labels


@dataclass(frozen=True, slots=True)
class _Signals:
    """What :func:`prepare` walks, made once per config (``Bank.derived``): every signal, the
    chart each charted one runs, and the histogram ones."""

    keys: tuple[SignalKey, ...]
    charts: dict[SignalKey, Detector]
    histograms: tuple[SignalKey, ...]

    @classmethod
    def of(cls, config: Config) -> _Signals:
        interval = config.evaluation.interval
        keys: list[SignalKey] = []
        charts: dict[SignalKey, Detector] = {}
        histograms: list[SignalKey] = []
        for system_name, system in config.systems.items():
            for name, signal in system.signals.items():
                key = (system_name, name)
                keys.append(key)
                chart = chart_for(signal, interval)
                if signal.detect is not None and signal.detect.name in HISTOGRAM_DETECTORS:
                    histograms.append(key)
                elif chart is not None:
                    charts[key] = chart
        return cls(tuple(keys), charts, tuple(histograms))


async def prepare(bank: Bank, config: Config, sources: Mapping[str, Source], now: datetime) -> None:
    """Ready the bank for judging at ``now``: forget removed signals, warm-start every chart
    without state from its history, and read every histogram's two windows.

    The signals are walked once per config: at its first cycle the bank forgets the signals
    no longer configured and the watches running another chart (:meth:`Bank.forget_except`);
    from then on a chart has state exactly when it has a watch (the bank gives a signal only
    its config's chart), so a cycle looks up presence only (walking every signal's chart at
    every cycle cost ~20 ms at 10,000 signals)."""
    interval = config.evaluation.interval
    signals = bank.derived(config, "signals", lambda: _Signals.of(config))
    # Once per config (a derived value of None, remembered): forget what it no longer has.
    bank.derived(config, "forgotten", lambda: bank.forget_except(signals.keys, signals.charts))
    limits = {
        name: asyncio.Semaphore(getattr(spec, "max_concurrent_queries", 64))
        for name, spec in config.sources.items()
    }
    cold = bank.unwatched(signals.charts)
    histograms = [
        key
        for key in signals.histograms
        if reference_window(config.systems[key[0]].signals[key[1]], now, bank.accepted.get(key))
        is not None
    ]
    bank.histograms = {}
    plain, templated = _warm_reads(bank, config, cold, sources, now)

    async def warm(read: _WarmRead) -> None:
        async with limits[read.source]:
            if read.label is None:
                source = sources[read.source]
                found = {
                    read.members[0][0]: await source.read(read.query, read.start, now, interval)
                }
            else:
                found = await _read_shares(sources[read.source], read, now, interval)
        for key, start, _ in read.members:
            history = found[key]
            if history.error is None:
                # This cycle's own read of the newest sample is then skipped as not newer.
                samples = [sample for sample in history.samples if sample.at >= start]
                bank.warm(key, config.systems[key[0]].signals[key[1]], interval, samples)

    async def histogram(key: SignalKey) -> None:
        signal = config.systems[key[0]].signals[key[1]]
        async with limits[signal.source]:
            bank.histograms[key] = await read_histogram(
                sources[signal.source], signal, now, bank.accepted.get(key)
            )

    await asyncio.gather(
        *(warm(read) for read in (*plain, *templated)), *(histogram(k) for k in histograms)
    )


async def read_signal(
    source: Source, signal: SignalConfig, start: datetime, end: datetime, step: timedelta
) -> SourceResult:
    """A signal's samples within ``[start, end]``, one per ``step``. A template signal reads
    its own series through the template's query split by its label."""
    if signal.label is not None and supports_labels(source):
        label, value = signal.label
        split = await cast(LabelledSource, source).read_by_label(
            signal.query, start, end, step, label
        )
        return split.share(label, value)
    return await source.read(signal.query, start, end, step)


@dataclass(frozen=True, slots=True)
class _WarmRead:
    """One range read of a warm start: a plain signal's query, or a signal template's query
    for every system whose chart needs history (split by its label, as a cycle's read is)."""

    source: str
    query: str
    label: str | None
    start: datetime
    """The earliest start among the members."""
    members: tuple[tuple[SignalKey, datetime, str], ...]
    """(system, signal), where its own history begins (:meth:`Bank.history_start`), and its
    value of the template's label (unused for a plain read)."""


def _warm_reads(
    bank: Bank, config: Config, cold: list[SignalKey], sources: Mapping[str, Source], now: datetime
) -> tuple[list[_WarmRead], list[_WarmRead]]:
    """The range reads that warm-start ``cold``'s charts: one per plain signal, one per signal
    template however many systems use it (a read per system of a template's whole query made
    a first cycle over 2,000 systems send 2,000 copies of each)."""
    interval = config.evaluation.interval
    plain: list[_WarmRead] = []
    grouped: dict[tuple[str, str, str], list[tuple[SignalKey, datetime, str]]] = {}
    for key in cold:
        signal = config.systems[key[0]].signals[key[1]]
        start = bank.history_start(key, signal, interval, now)
        if signal.label is not None and supports_labels(sources[signal.source]):
            label, value = signal.label
            grouped.setdefault((signal.source, signal.query, label), []).append((key, start, value))
        else:
            read = _WarmRead(signal.source, signal.query, None, start, ((key, start, ""),))
            plain.append(read)
    templated = [
        _WarmRead(source, query, label, min(start for _, start, _ in members), tuple(members))
        for (source, query, label), members in grouped.items()
    ]
    return plain, templated


async def _read_shares(
    source: Source, read: _WarmRead, now: datetime, interval: timedelta
) -> dict[SignalKey, SourceResult]:
    """Each member's share of one template query's range read."""
    assert read.label is not None
    split = await cast(LabelledSource, source).read_by_label(
        read.query, read.start, now, interval, read.label
    )
    return {key: split.share(read.label, value) for key, _, value in read.members}


async def read_histogram(
    source: Source, signal: SignalConfig, now: datetime, accepted: datetime | None = None
) -> HistogramReading:
    """The bucket counts observed in the reference window (before the recent one, starting
    after the level was last ``accepted``) and in the recent window, summed over series by
    ``le`` (Prometheus handles counter resets)."""
    detect = signal.detect
    assert detect is not None
    spec = detect.psi if detect.psi is not None else detect.js
    assert spec is not None
    window = reference_window(signal, now, accepted)
    if window is None:
        return HistogramReading({}, {}, "no reference window since the accept")
    if not supports_labels(source):
        return HistogramReading({}, {}, f"source {source.name!r} cannot read buckets by le")
    labelled = cast(LabelledSource, source)
    reference, recent = await asyncio.gather(
        labelled.read_by_label(
            _window_query(signal.query, spec.recent, window), now, now, spec.recent, "le"
        ),
        labelled.read_by_label(
            _window_query(signal.query, spec.recent, None), now, now, spec.recent, "le"
        ),
    )
    for part in (reference, recent):
        if part.error is not None:
            return HistogramReading({}, {}, part.error)
    try:
        return HistogramReading(_counts(reference), _counts(recent))
    except ValueError as error:
        return HistogramReading({}, {}, f"histogram {signal.query}: {error}")


@dataclass(frozen=True, slots=True)
class HistogramHistory:
    """A histogram's two windows at every step of a range (what ``replay`` judges PSI and JS
    on): the reading the daemon would have made at each instant, or the read's error."""

    times: tuple[datetime, ...]
    readings: tuple[HistogramReading, ...]
    error: str | None = None

    def at(self, now: datetime) -> HistogramReading:
        """The reading of the latest step at or before ``now``."""
        if self.error is not None:
            return HistogramReading({}, {}, self.error)
        index = bisect_right(self.times, now)
        if index == 0:
            return HistogramReading({}, {})
        return self.readings[index - 1]


async def read_histogram_history(
    source: Source, signal: SignalConfig, start: datetime, end: datetime, step: timedelta
) -> HistogramHistory:
    """The reference and recent windows' bucket counts at every ``step`` of ``[start, end]``:
    the same two queries as :func:`read_histogram`, as range queries (no accept in a
    replay)."""
    detect = signal.detect
    assert detect is not None
    spec = detect.psi if detect.psi is not None else detect.js
    assert spec is not None
    if not supports_labels(source):
        return HistogramHistory((), (), f"source {source.name!r} cannot read buckets by le")
    labelled = cast(LabelledSource, source)
    reference, recent = await asyncio.gather(
        labelled.read_by_label(
            _window_query(signal.query, spec.recent, spec.reference), start, end, step, "le"
        ),
        labelled.read_by_label(
            _window_query(signal.query, spec.recent, None), start, end, step, "le"
        ),
    )
    for part in (reference, recent):
        if part.error is not None:
            return HistogramHistory((), (), part.error)
    try:
        before, after = _counts_by_time(reference), _counts_by_time(recent)
    except ValueError as error:
        return HistogramHistory((), (), f"histogram {signal.query}: {error}")
    times = tuple(sorted(before.keys() & after.keys()))
    return HistogramHistory(times, tuple(HistogramReading(before[t], after[t]) for t in times))


def _counts_by_time(result: LabelledResult) -> dict[datetime, dict[float, float]]:
    """Per step, ``le`` to the window's cumulative count (summed by the bound's value, as
    :func:`_counts` does)."""
    counts: dict[datetime, dict[float, float]] = {}
    for le, samples in result.series.items():
        bound = parse_le(le)
        for sample in samples:
            at_step = counts.setdefault(sample.at, {})
            at_step[bound] = at_step.get(bound, 0.0) + sample.value
    return counts


def _window_query(selector: str, recent: timedelta, reference: timedelta | None) -> str:
    """PromQL for the per-``le`` increase over the recent window, or over the ``reference``
    window before it."""
    if reference is not None:
        return (
            f"sum by (le) (increase({selector}[{_seconds(reference)}] offset {_seconds(recent)}))"
        )
    return f"sum by (le) (increase({selector}[{_seconds(recent)}]))"


def _seconds(duration: timedelta) -> str:
    return f"{max(1, round(duration.total_seconds()))}s"


def _counts(result: LabelledResult) -> dict[float, float]:
    """``le`` to the window's cumulative count, from one instant sample per bucket. One bound
    may be spelt several ways (``1``, ``1.0``, ``1e+00``: client libraries differ, and
    ``sum by (le)`` groups by the text), so counts add up by the bound's value."""
    counts: dict[float, float] = {}
    for le, samples in result.series.items():
        if samples:
            bound = parse_le(le)
            counts[bound] = counts.get(bound, 0.0) + _last(samples).value
    return counts


def _last(samples: tuple[Sample, ...]) -> Sample:
    return samples[-1]
