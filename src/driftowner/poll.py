"""Polling: every signal's read at one instant, from its source, concurrently, with how each
source fared. The I/O edge of the evaluation cycle (:mod:`driftowner.cycle` judges what it
reads)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import numpy as np
import structlog

from driftowner import cycle
from driftowner.config import HISTOGRAM_DETECTORS, Config, SignalConfig
from driftowner.cycle import Findings, Layout, Reads, SignalKey, TemplateValues
from driftowner.detect import charts, detectors
from driftowner.detect.bank import Bank, RowValues, chart_for
from driftowner.detect.changepoint import Detector
from driftowner.model import SourceResult
from driftowner.sources import (
    LabelledResult,
    LabelledSource,
    LabelledValues,
    Source,
    ValuesSource,
    history,
    supports_labels,
    supports_values,
)

log = structlog.get_logger("driftowner.poll")


@dataclass(frozen=True, slots=True)
class SourceStats:
    """How each source fared in one poll (for ``driftowner_source_*``)."""

    up: dict[str, bool]
    errors: dict[tuple[str, str], int]
    durations: dict[str, list[float]]
    failing: dict[tuple[str, str], str] = field(default_factory=dict)
    """(system, signal) → error, for every query that failed in this poll."""
    unmatched: dict[tuple[str, str], str] = field(default_factory=dict)
    """(system, signal) → why a template query that answered has no series for it."""

    def failed(self, source: str, reason: str | None, signal: SignalKey, error: str) -> None:
        """Count a failed query against its source (by ``reason``) and mark ``signal``
        failing with ``error``."""
        counted = (source, reason or "other")
        self.errors[counted] = self.errors.get(counted, 0) + 1
        self.failing[signal] = error


def log_query_failures(
    previous: Mapping[tuple[str, str], str], current: Mapping[tuple[str, str], str]
) -> None:
    """Log a failing query when it starts failing (or fails differently) and when it
    recovers, not at every cycle: a source down for an hour is two lines, not thousands."""
    for (system, signal), error in current.items():
        if previous.get((system, signal)) != error:
            log.warning("source query failed", system=system, signal=signal, error=error)
    for system, signal in previous.keys() - current.keys():
        log.info("source query recovered", system=system, signal=signal)


@dataclass(frozen=True, slots=True, eq=False)
class TemplateRead:
    """One query that serves every system using a signal template, split by its label. Made
    once per config; compared by identity (it names its charts' rows in the bank)."""

    source: str
    query: str
    label: str
    lookback: timedelta
    step: timedelta
    members: tuple[tuple[SignalKey, str], ...]
    """((system, signal), this system's label value) for every signal the query serves."""
    keys: tuple[SignalKey, ...] = ()
    """The members' signals, in member order."""
    signals: tuple[SignalConfig, ...] = ()
    """Their configs, in member order."""
    index: Mapping[str, int] = field(default_factory=dict)
    """Label value → member: the row of its value in an answer read as arrays."""
    layout: Layout = field(default_factory=dict)
    """System → (row, signal) of its members: where their verdicts go."""
    chart: Detector | None = None
    """The chart every member runs when an instant answer can be judged as arrays
    (:func:`driftowner.detect.charts.vectorised`, no ``stale_after``, one member per label
    value); None otherwise."""


def _template_read(
    config: Config, key: tuple[str, str, str, timedelta, timedelta], members: list[Any]
) -> TemplateRead:
    """The read of one template, with what judging its answer as arrays needs."""
    source, query, label, lookback, step = key
    keys = tuple(member for member, _ in members)
    signals = tuple(config.systems[system].signals[name] for system, name in keys)
    index = {value: row for row, (_, value) in enumerate(members)}
    layout: dict[str, list[tuple[int, str]]] = {}
    for row, (system, name) in enumerate(keys):
        layout.setdefault(system, []).append((row, name))
    found = {chart_for(signal, config.evaluation.interval) for signal in signals}
    chart = found.pop() if len(found) == 1 else None
    if (
        chart is None
        or not charts.vectorised(chart)
        or lookback > timedelta(0)
        or len(index) < len(members)
        or any(signal.stale_after is not None for signal in signals)
    ):
        chart = None
    return TemplateRead(
        source, query, label, lookback, step, tuple(members), keys, signals, index, layout, chart
    )


def plan_reads(config: Config) -> tuple[list[SignalKey], list[TemplateRead]]:
    """Which reads one cycle makes: one per plain signal, and one per signal template (per
    distinct window), however many systems use it. The same for every cycle of one config:
    :func:`read` plans once per config (``Bank.derived``)."""
    interval = config.evaluation.interval
    plain: list[SignalKey] = []
    grouped: dict[tuple[str, str, str, timedelta, timedelta], list[tuple[SignalKey, str]]] = {}
    for system_name, system in config.systems.items():
        for signal_name, signal in system.signals.items():
            if signal.template is None or signal.label is None:
                plain.append((system_name, signal_name))
                continue
            label, value = signal.label
            key = (
                signal.source,
                signal.query,
                label,
                detectors.lookback(signal),
                detectors.read_step(signal, interval),
            )
            grouped.setdefault(key, []).append(((system_name, signal_name), value))
    templated = [_template_read(config, key, members) for key, members in grouped.items()]
    return plain, templated


def _limits(config: Config) -> dict[str, asyncio.Semaphore]:
    """Per source, how many of its queries may be in flight at once."""
    return {
        name: asyncio.Semaphore(getattr(spec, "max_concurrent_queries", 64))
        for name, spec in config.sources.items()
    }


async def read(
    config: Config, sources: Mapping[str, Source], now: datetime, bank: Bank
) -> tuple[dict[SignalKey, SourceResult], SourceStats]:
    """Read every signal of every system at ``now``. Queries run concurrently, at most
    ``max_concurrent_queries`` per source; a signal template is one query for all the systems
    that use it. First the ``bank`` is readied for judging (:func:`history.prepare`: charts
    without state warm-started from history, histograms read)."""
    await history.prepare(bank, config, sources, now)
    stats = SourceStats(up={name: True for name in config.sources}, errors={}, durations={})
    limits = _limits(config)
    plain, templated = bank.derived(config, "reads", lambda: plan_reads(config))
    results = Reads()

    def account(
        source: str,
        started: float,
        up: bool,
        error: str | None,
        reason: str | None,
        failing: SignalKey,
    ) -> None:
        stats.durations.setdefault(source, []).append(time.perf_counter() - started)
        if not up:
            stats.up[source] = False
        if error is not None:
            stats.failed(source, reason, failing, error)

    async def read_plain(key: SignalKey) -> None:
        signal = config.systems[key[0]].signals[key[1]]
        if signal.detect is not None and signal.detect.name in HISTOGRAM_DETECTORS:
            results[key] = SourceResult()  # its buckets were read by history.prepare
            return
        window = detectors.lookback(signal)
        step = detectors.read_step(signal, config.evaluation.interval)
        async with limits[signal.source]:
            started = time.perf_counter()
            result = await sources[signal.source].read(signal.query, now - window, now, step)
        account(signal.source, started, result.source_up, result.error, result.error_reason, key)
        results[key] = result

    async def read_template(read: TemplateRead) -> None:
        source = sources[read.source]
        async with limits[read.source]:
            started = time.perf_counter()
            labelled: LabelledValues | LabelledResult
            if read.chart is not None and supports_values(source):
                labelled = await cast(ValuesSource, source).read_values_by_label(
                    read.query, now, read.label, read.index
                )
            elif supports_labels(source):
                labelled = await cast(LabelledSource, source).read_by_label(
                    read.query, now - read.lookback, now, read.step, read.label
                )
            else:  # the config refuses this; kept so a wrong wiring is an error, not a crash
                labelled = LabelledResult(
                    series={},
                    error=f"source {read.source!r} cannot split a query by label",
                    error_reason="query_error",
                )
        # A failing template query is one failure (logged once), not one per system.
        failing = ("*", f"template query {read.query}")
        if isinstance(labelled, LabelledValues):  # answered: arrays come only from success
            account(read.source, started, True, None, None, failing)
            _share_values(read, labelled, results, stats)
            return
        up, error, reason = labelled.source_up, labelled.error, labelled.error_reason
        account(read.source, started, up, error, reason, failing)
        _share_template(read, labelled, results, stats)

    await asyncio.gather(
        *(read_plain(key) for key in plain), *(read_template(read) for read in templated)
    )
    return results, stats


def _share_values(
    read: TemplateRead, answer: LabelledValues, results: Reads, stats: SourceStats
) -> None:
    """A template's answer read as arrays: the members with a finite value into
    ``results.templates`` (judged together), every other member's share into ``results``
    exactly as :func:`_share_template` gives it (only NaN/Inf, no series)."""
    assert read.chart is not None
    finite = np.isfinite(answer.values)
    raw = answer.stamps[finite]
    times, moment = np.unique(raw, return_inverse=True)
    # Each time as a Sample's datetime (as the source's own parsing makes it), and as the
    # scalar update reads it (``at.timestamp()``, which may differ from the raw seconds).
    moments = tuple(datetime.fromtimestamp(t, UTC) for t in times.tolist())
    stamps = np.array([at.timestamp() for at in moments], dtype=np.float64)[moment]
    rows = answer.rows[finite]
    results.templates.append(
        TemplateValues(
            read,
            read.keys,
            read.signals,
            read.chart,
            RowValues(rows, answer.values[finite], stamps),
            read.layout,
            moments,
            moment.astype(np.intp),
        )
    )
    answered = np.zeros(len(read.members), dtype=np.bool_)
    answered[answer.rows] = True
    odd = [*answer.rows[~finite].tolist(), *np.flatnonzero(~answered).tolist()]
    if not odd:
        return
    # The rare members left (only NaN/Inf, no series): shared as the per-series reading
    # shares them, from the label values the answer has.
    # Every value the answer has, none with samples: a member among them held only NaN/Inf
    # (a present, empty series), one missing from them has no series.
    names = (*(read.members[row][1] for row in answer.rows.tolist()), *answer.others)
    labelled = LabelledResult(series=dict.fromkeys(names, ()))
    _share_template(
        replace(read, members=tuple(read.members[row] for row in odd)), labelled, results, stats
    )


def _share_template(
    read: TemplateRead,
    labelled: LabelledResult,
    results: dict[SignalKey, SourceResult],
    stats: SourceStats,
) -> None:
    """Each member system's share of a template query's answer, into ``results``; a system
    the answer has no series for is noted in ``stats.unmatched``."""
    for key, value in read.members:
        results[key] = labelled.share(read.label, value)
        mine = results[key]
        missing = unmatched_label(labelled, read.label, value)
        if missing is not None:
            stats.unmatched[key] = missing
        if labelled.error is None and mine.error is not None:
            # One system's share failed (ambiguous, only NaN): visible and logged per
            # system, like a plain signal's failure.
            stats.failed(read.source, mine.error_reason, key, mine.error)


async def poll(
    config: Config, sources: Mapping[str, Source], now: datetime, bank: Bank | None = None
) -> tuple[Findings, SourceStats]:
    """Every signal read and judged at ``now``: :func:`read`, then :func:`cycle.judge`. With
    no ``bank`` (``driftowner evaluate``: one look) a fresh one, warm-started from history."""
    bank = Bank() if bank is None else bank
    results, stats = await read(config, sources, now, bank)
    return explain_unmatched(cycle.judge(config, results, bank, now), stats.unmatched), stats


def unmatched_label(labelled: LabelledResult, label: str, value: str) -> str | None:
    """Why a template query that answered has no series for one system (its ``label`` value
    matches none of the query's series while others do), or None when it has one, or the query
    failed, or returned nothing for anyone (no data: nothing to tell apart)."""
    # A lookup first: the answer is walked only for a system it has no series for (walking
    # it for every member made a template of 2,000 systems cost 2,000 sorts a cycle).
    if labelled.error is not None or value in labelled.series or value in labelled.ambiguous:
        return None
    others = sorted({*labelled.series, *labelled.ambiguous} - {value})
    if not others:
        return None
    shown = ", ".join(f"{label}={other!r}" for other in others[:3])
    more = f" and {len(others) - 3} more" if len(others) > 3 else ""
    return (
        f"the template query returns no series with {label}={value!r} (it has {shown}{more}): "
        f"the system stopped reporting, or its labels.{label} matches nothing"
    )


def explain_unmatched(findings: Findings, unmatched: Mapping[SignalKey, str]) -> Findings:
    """``findings`` with the no-data reason of each signal whose template label matched no
    series replaced by that explanation (the stale rule pages its owner with it)."""
    for (system, name), why in unmatched.items():
        held = findings.get(system)
        found = None if held is None else held.get(name)
        if (
            held is not None
            and found is not None
            and found.detector == "staleness"
            and found.value is None
        ):
            held[name] = replace(found, reason=why)
    return findings
