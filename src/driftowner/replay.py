"""Backtest (``driftowner replay``): the incidents the rules would have opened and resolved over
a stretch of history, with the time each condition began, and every change a detector confirmed.
Sends nothing, stores nothing.

:func:`replay` reads each signal's history once, for the whole range, and hands it to
:func:`backtest`. :func:`backtest` steps a clock through the range: at every evaluation instant
it rebuilds the :class:`~driftowner.model.SourceResult` the daemon's read at that instant would
have returned, and runs the daemon's own cycle over it (:func:`driftowner.cycle.judge`, then
:func:`driftowner.cycle.evaluate`) against a :class:`~driftowner.store.MemoryStore`, without
the escalation stage: nothing is paged, nothing outlives the replay.

Where a backtest can differ from what the daemon saw:

- A baseline's newest value is the newest sample of the range read at or before the instant.
  The range is read at :func:`~driftowner.detect.detectors.read_step` (a 7-day reference at a
  1-minute interval: about 20 minutes), so that value may be up to one such step older than
  the daemon's, and a condition's start may show up to one step late.
- A read asks for at most :data:`~driftowner.sources.MAX_POINTS` points: over a long range the
  source widens the step (a threshold signal at 1m beyond about 7.6 days), and instants between
  two points see the older one.
- A query that works at one instant may fail over a long range (a Prometheus sample limit, the
  source's timeout): the signal is then no data at every instant, counted in
  ``failed_queries`` with the error in ``failures``.
"""

from __future__ import annotations

import asyncio
import itertools
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

from driftowner import cycle, runner
from driftowner.clock import rfc3339
from driftowner.config import HISTOGRAM_DETECTORS, Config, SignalConfig, format_duration
from driftowner.cycle import Findings, SignalKey
from driftowner.detect import detectors
from driftowner.detect.bank import Bank
from driftowner.model import Direction, Incident, Kind, Layer, Sample, SourceResult
from driftowner.sources import (
    LabelledResult,
    LabelledSource,
    Source,
    as_utc,
    clamp_step,
    reads_any_age,
    supports_labels,
)
from driftowner.sources.history import HistogramHistory, read_histogram_history
from driftowner.store import MemoryStore

INSTANT_LOOKBACK = timedelta(minutes=5)
"""How old a sample an instant query still answers with: Prometheus's default lookback delta."""

_BEGINNING = datetime.min.replace(tzinfo=UTC)
_NO_SAMPLES = SourceResult()


@dataclass(frozen=True, slots=True)
class ReplayedIncident:
    """An incident the rules would have opened during the replayed range.

    ``resolved_at`` is None when it would still be open at the end of the range. Nobody
    acknowledges during a replay, so there is no acknowledgement time.
    """

    system: str
    rule: str
    kind: Kind
    layers: tuple[Layer, ...]
    owner: str
    summary: str
    condition_began_at: datetime
    """The first evaluation at which the condition held (the start of its ``for``)."""
    opened_at: datetime
    resolved_at: datetime | None
    id: str
    """Deterministic within one replay (``replay-1``, ``replay-2``, ... in opening order)."""

    @property
    def state(self) -> Literal["open", "resolved"]:
        return "open" if self.resolved_at is None else "resolved"


@dataclass(frozen=True, slots=True)
class ReplayedChange:
    """A change a signal's detector confirmed during the replayed range: a shift, a recovery,
    or a further shift inside an open incident."""

    system: str
    signal: str
    at: datetime
    direction: Direction
    before: float
    after: float
    began_at: datetime | None = None
    """When the change began as its detector estimates it (a chart's excursion start); None
    when only its confirmation is known (a threshold or baseline verdict's flip)."""


@dataclass(frozen=True, slots=True)
class QueryFailure:
    """A signal whose history could not be read: it was no data at every instant."""

    system: str
    signal: str
    error: str


@dataclass(frozen=True, slots=True)
class Replay:
    """The outcome of a backtest over ``[start, end]`` at one evaluation every ``interval``."""

    start: datetime
    end: datetime
    interval: timedelta
    incidents: tuple[ReplayedIncident, ...]
    """In opening order."""
    changes: tuple[ReplayedChange, ...]
    """Every change a detector confirmed, in time order (then config order)."""
    evaluations: int
    """Evaluation instants replayed (each evaluates every system)."""
    failed_queries: int
    """Signals whose history read failed (the operator's problem: they open no incident)."""
    failures: tuple[QueryFailure, ...] = ()
    """What went wrong with each of them, in config order."""


@dataclass(frozen=True, slots=True)
class HistoryRead:
    """The one range read a replay makes for a signal."""

    source: str
    query: str
    start: datetime
    end: datetime
    step: timedelta
    label: str | None = None
    """A signal template's system_label: one read serves every system using the template."""


async def replay(
    config: Config,
    sources: Mapping[str, Source],
    start: datetime,
    end: datetime,
    *,
    interval: timedelta | None = None,
) -> Replay:
    """Run the rules over ``[start, end]`` as the daemon would have, from history.

    Reads each signal's source once for the whole range (concurrently; signals with the same
    source, query and range share one read), then runs :func:`backtest`. The caller owns the
    sources and closes them.

    Args:
        config: The config whose systems, signals and rules are replayed.
        sources: Source name → source, for every source the signals use.
        start: The first evaluation instant (naive means UTC).
        end: The last possible evaluation instant, inclusive.
        interval: Between two evaluations; default ``evaluation.interval``.

    Returns:
        The incidents that would have opened, with when each condition began and when each
        incident would have resolved.

    Raises:
        ValueError: ``start`` is after ``end``, or ``interval`` is not positive.
    """
    start, end, interval = _checked(config, start, end, interval)
    ageless = frozenset(name for name, source in sources.items() if reads_any_age(source))
    bucketed = {
        (system_name, signal_name): signal
        for system_name, system in config.systems.items()
        for signal_name, signal in system.signals.items()
        if signal.detect is not None and signal.detect.name in HISTOGRAM_DETECTORS
    }
    plans = {
        (system_name, signal_name): history_read(signal, start, end, interval, ageless)
        for system_name, system in config.systems.items()
        for signal_name, signal in system.signals.items()
        if (system_name, signal_name) not in bucketed
    }
    # PSI and JS read their two windows at every instant: two range queries per signal.
    windows = await asyncio.gather(
        *(
            read_histogram_history(sources[signal.source], signal, start, end, interval)
            for signal in bucketed.values()
        )
    )
    histograms = dict(zip(bucketed, windows, strict=True))
    unique = list(dict.fromkeys(plans.values()))
    answers = await asyncio.gather(*(_read(sources[plan.source], plan) for plan in unique))
    read = dict(zip(unique, answers, strict=True))
    histories: dict[SignalKey, SourceResult] = {}
    for key, plan in plans.items():
        answer = read[plan]
        if isinstance(answer, SourceResult):
            histories[key] = answer
        else:
            system, signal_name = key
            label = config.systems[system].signals[signal_name].label
            assert label is not None and plan.label == label[0]
            histories[key] = answer.share(label[0], label[1])
    for key, history in histograms.items():
        histories[key] = SourceResult(error=history.error)
    return backtest(config, histories, start, end, interval, ageless=ageless, histograms=histograms)


async def _read(source: Source, plan: HistoryRead) -> SourceResult | LabelledResult:
    if plan.label is None:
        return await source.read(plan.query, plan.start, plan.end, plan.step)
    if not supports_labels(source):  # the config refuses templates on such sources
        return SourceResult(
            error=f"source {plan.source!r} cannot split a query by label",
            error_reason="query_error",
        )
    labelled = cast(LabelledSource, source)
    return await labelled.read_by_label(plan.query, plan.start, plan.end, plan.step, plan.label)


def history_read(
    signal: SignalConfig,
    start: datetime,
    end: datetime,
    interval: timedelta,
    ageless: Collection[str] = (),
) -> HistoryRead:
    """The range read that covers every read the daemon would have made of ``signal`` at the
    instants of ``[start, end]``: from ``start`` minus its lookback, at its read step.
    ``ageless`` names the sources whose instant read answers at any age (see
    :func:`~driftowner.sources.reads_any_age`)."""
    window = detectors.lookback(signal)
    read_start = start - window
    if window <= timedelta(0) and signal.source in ageless:
        # Such a source's instant read answers the newest sample at any age (stale_after
        # judges its age), so the sample in force at ``start`` may be far older than it.
        read_start = _BEGINNING
    return HistoryRead(
        signal.source,
        signal.query,
        read_start,
        end,
        detectors.read_step(signal, interval),
        signal.label[0] if signal.label else None,
    )


def backtest(
    config: Config,
    histories: Mapping[SignalKey, SourceResult],
    start: datetime,
    end: datetime,
    interval: timedelta,
    *,
    ageless: Collection[str] = (),
    histograms: Mapping[SignalKey, HistogramHistory] | None = None,
) -> Replay:
    """The core of :func:`replay`: the evaluation cycle run over history already read, at
    every instant of ``[start, end]``, against a store in memory. No I/O.

    Args:
        config: As for :func:`replay`.
        histories: (system, signal) → what the signal's :func:`history_read` returned; a
            signal missing here counts as a failed source (it neither fires nor clears).
        start: First evaluation instant.
        end: Last possible evaluation instant, inclusive.
        interval: Between two evaluations. It also stands in for ``evaluation.interval`` in
            the lifecycle, so a coarser replay does not count its own steps as downtime.
        ageless: The sources whose instant read answers the newest sample at any age (see
            :func:`~driftowner.sources.reads_any_age`).
        histograms: (system, signal) → a PSI or JS signal's two windows at every step.

    Raises:
        ValueError: ``start`` is after ``end``, or ``interval`` is not positive.
    """
    start, end, interval = _checked(config, start, end, interval)
    if interval != config.evaluation.interval:
        config = config.model_copy(
            update={"evaluation": config.evaluation.model_copy(update={"interval": interval})}
        )
    views, failures = _views(config, histories, (start, end), ageless)

    store = MemoryStore()
    new_id = _ids()
    lives: list[ReplayedIncident] = []
    reopened_at: dict[str, datetime] = {}
    every: dict[str, Incident] = {}
    changes: list[ReplayedChange] = []
    evaluations = 0
    bank = Bank()
    for now in _instants(start, end, interval):
        evaluations += 1
        results = {key: view.read(now) for key, view in views.items()}
        bank.histograms = {key: h.at(now) for key, h in (histograms or {}).items()}
        findings = cycle.judge(config, results, bank, now)
        changes.extend(_changes(findings))
        # No pager: a replay runs no escalation stage, so it pages nobody.
        steps = cycle.evaluate(config, findings, store, now, new_id, pager=None)
        for step in runner.apply(store, steps):
            for event in step.changes.events:
                if event.kind == "reopened":
                    # The earlier life ends as it was; the reopened one starts now.
                    lives.append(_replayed(every[event.incident_id]))
                    reopened_at[event.incident_id] = now
            for incident in (*step.changes.opened, *step.changes.updated):
                every[incident.id] = incident

    replayed = sorted(
        (*lives, *(_replayed(i, reopened_at.get(i.id)) for i in every.values())),
        key=lambda i: (i.opened_at, i.system, i.rule),
    )
    return Replay(
        start=start,
        end=end,
        interval=interval,
        incidents=tuple(replayed),
        changes=tuple(changes),
        evaluations=evaluations,
        failed_queries=len(failures),
        failures=tuple(failures),
    )


def _views(
    config: Config,
    histories: Mapping[SignalKey, SourceResult],
    span: tuple[datetime, datetime],
    ageless: Collection[str],
) -> tuple[dict[SignalKey, _History], list[QueryFailure]]:
    """Each read signal's history as the daemon's reads would have seen it, and the signals
    whose history read failed, in config order."""
    views: dict[SignalKey, _History] = {}
    failures: list[QueryFailure] = []
    for system_name, system in config.systems.items():
        for signal_name, signal in system.signals.items():
            result = histories.get((system_name, signal_name))
            if result is None:
                continue
            if result.error is not None:
                failures.append(QueryFailure(system_name, signal_name, result.error))
            views[(system_name, signal_name)] = _history(config, signal, result, span, ageless)
    return views, failures


def replay_json(r: Replay) -> dict[str, Any]:
    """The ``driftowner replay --json`` document: the range, counts, failures and incidents
    (times RFC 3339 UTC; ``acknowledged_at`` always null, since nobody acknowledges)."""
    return {
        "from": rfc3339(r.start),
        "to": rfc3339(r.end),
        "interval": format_duration(r.interval),
        "evaluations": r.evaluations,
        "failed_queries": r.failed_queries,
        "failures": [
            {"system": f.system, "signal": f.signal, "error": f.error} for f in r.failures
        ],
        "incidents": [_incident_json(incident) for incident in r.incidents],
        "changes": [
            {
                "system": c.system,
                "signal": c.signal,
                "at": rfc3339(c.at),
                "direction": c.direction,
                "before": c.before,
                "after": c.after,
                "began_at": rfc3339(c.began_at),
            }
            for c in r.changes
        ],
    }


def _incident_json(incident: ReplayedIncident) -> dict[str, Any]:
    resolved = incident.resolved_at
    return {
        "id": incident.id,
        "system": incident.system,
        "owner": incident.owner,
        "kind": incident.kind,
        "rule": incident.rule,
        "layers": list(incident.layers),
        "state": incident.state,
        "summary": incident.summary,
        "condition_began_at": rfc3339(incident.condition_began_at),
        "opened_at": rfc3339(incident.opened_at),
        "acknowledged_at": None,
        "resolved_at": rfc3339(resolved),
        "time_to_resolve_seconds": (
            None if resolved is None else (resolved - incident.opened_at).total_seconds()
        ),
    }


class _History:
    """One signal's history, answering what the daemon's read at an instant would have got."""

    __slots__ = ("_error", "_fresh_within", "_restamp", "_samples", "_times", "_window")

    def __init__(
        self,
        result: SourceResult,
        *,
        window: timedelta,
        fresh_within: timedelta | None,
        restamp: bool,
    ) -> None:
        self._error = result if result.error is not None else None
        self._samples = tuple(sorted(result.samples, key=lambda s: s.at))
        self._times = [s.at for s in self._samples]
        self._window = window
        self._fresh_within = fresh_within
        self._restamp = restamp

    def read(self, now: datetime) -> SourceResult:
        if self._error is not None:
            return self._error
        last = bisect_right(self._times, now)
        if self._window > timedelta(0):
            first = bisect_left(self._times, now - self._window)
            return SourceResult(samples=self._samples[first:last])
        if last == 0:
            return _NO_SAMPLES
        newest = self._samples[last - 1]
        if self._fresh_within is not None and now - newest.at > self._fresh_within:
            return _NO_SAMPLES
        # An instant query's answer is stamped at the query time, not the sample's.
        return SourceResult(samples=(Sample(now, newest.value) if self._restamp else newest,))


def _history(
    config: Config,
    signal: SignalConfig,
    result: SourceResult,
    span: tuple[datetime, datetime],
    ageless: Collection[str],
) -> _History:
    """How the daemon's read of ``signal`` at an instant would have answered.

    A range read (baseline): the samples within its window. An instant read: for a source in
    ``ageless`` (a file), the newest sample at any age, with its own time; for Prometheus (and
    the demo), the newest
    point at or before the instant, if within the lookback delta (or the point spacing, when
    the source had to read coarser), stamped at the instant.
    """
    window = detectors.lookback(signal)
    if signal.source in ageless:
        return _History(result, window=window, fresh_within=None, restamp=False)
    plan = history_read(signal, *span, config.evaluation.interval)
    spacing = clamp_step(plan.start, plan.end, plan.step)
    return _History(
        result, window=window, fresh_within=max(INSTANT_LOOKBACK, spacing), restamp=True
    )


def _changes(findings: Findings) -> Iterator[ReplayedChange]:
    for system, name, change in findings.changes():
        yield ReplayedChange(
            system,
            name,
            change.at,
            change.direction,
            change.before,
            change.after,
            change.began_at,
        )


def _replayed(incident: Incident, reopened_at: datetime | None = None) -> ReplayedIncident:
    """One life of an incident; a reopened one is reported from its reopening."""
    return ReplayedIncident(
        system=incident.system,
        rule=incident.rule,
        kind=incident.kind,
        layers=incident.layers,
        owner=incident.owner,
        summary=incident.summary,
        condition_began_at=incident.condition_began_at or incident.opened_at,
        opened_at=reopened_at or incident.opened_at,
        resolved_at=incident.resolved_at,
        id=incident.id,
    )


def _instants(start: datetime, end: datetime, interval: timedelta) -> Iterator[datetime]:
    # Multiplied, not accumulated: no drift over a long range of odd intervals.
    for k in itertools.count():
        now = start + k * interval
        if now > end:
            return
        yield now


def _ids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"replay-{next(counter)}"


def _checked(
    config: Config, start: datetime, end: datetime, interval: timedelta | None
) -> tuple[datetime, datetime, timedelta]:
    start, end = as_utc(start), as_utc(end)
    if interval is None:
        interval = config.evaluation.interval
    if start > end:
        raise ValueError(f"the replay starts ({rfc3339(start)}) after it ends ({rfc3339(end)})")
    if interval <= timedelta(0):
        raise ValueError("the replay interval must be longer than 0s")
    return start, end, interval
