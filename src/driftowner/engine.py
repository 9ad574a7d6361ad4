"""The evaluation and escalation cycles: poll sources, judge signals, reconcile incidents,
fire due escalation steps. I/O at the edges (sources, store); decisions in the pure core."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import cast

import structlog

from driftowner import escalation, incidents, service
from driftowner.config import HISTOGRAM_DETECTORS, Config
from driftowner.detect import detectors, rules
from driftowner.detect.bank import Bank
from driftowner.escalation import Links
from driftowner.metrics import Metrics
from driftowner.model import AUTO, Finding, Incident, Notification, SourceResult
from driftowner.service import new_incident_id, new_notification_id
from driftowner.sources import (
    LabelledResult,
    LabelledSource,
    Source,
    history,
    supports_labels,
)
from driftowner.store import Changes, Conflict, Store

log = structlog.get_logger("driftowner.engine")

Findings = dict[str, dict[str, Finding]]
"""system → signal → finding."""


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


SignalKey = tuple[str, str]
"""(system, signal)."""


@dataclass(frozen=True, slots=True)
class TemplateRead:
    """One query that serves every system using a signal template, split by its label."""

    source: str
    query: str
    label: str
    lookback: timedelta
    step: timedelta
    members: tuple[tuple[SignalKey, str], ...]
    """((system, signal), this system's label value) for every signal the query serves."""


def plan_reads(config: Config) -> tuple[list[SignalKey], list[TemplateRead]]:
    """Which reads one cycle makes: one per plain signal, and one per signal template (per
    distinct window), however many systems use it."""
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
    templated = [
        TemplateRead(source, query, label, lookback, step, tuple(members))
        for (source, query, label, lookback, step), members in grouped.items()
    ]
    return plain, templated


async def poll(
    config: Config, sources: Mapping[str, Source], now: datetime, bank: Bank | None = None
) -> tuple[Findings, SourceStats]:
    """Read every signal of every system at ``now`` and judge it. Queries run concurrently,
    at most ``max_concurrent_queries`` per source; a signal template is one query for all
    the systems that use it. ``bank`` holds the change-point charts between cycles (a fresh
    one, warm-started from history, when not given)."""
    bank = Bank() if bank is None else bank
    await history.prepare(bank, config, sources, now)
    stats = SourceStats(up={name: True for name in config.sources}, errors={}, durations={})
    limits = {
        name: asyncio.Semaphore(getattr(spec, "max_concurrent_queries", 64))
        for name, spec in config.sources.items()
    }
    plain, templated = plan_reads(config)
    results: dict[SignalKey, SourceResult] = {}

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
            counted = (source, reason or "other")
            stats.errors[counted] = stats.errors.get(counted, 0) + 1
            stats.failing[failing] = error

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
            if supports_labels(source):
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
        account(
            read.source,
            started,
            labelled.source_up,
            labelled.error,
            labelled.error_reason,
            ("*", f"template query {read.query}"),
        )
        for key, value in read.members:
            results[key] = labelled.share(read.label, value)
            mine = results[key]
            missing = unmatched_label(labelled, read.label, value)
            if missing is not None:
                stats.unmatched[key] = missing
            if labelled.error is None and mine.error is not None:
                # One system's share failed (ambiguous, only NaN): visible and logged per
                # system, like a plain signal's failure.
                counted = (read.source, mine.error_reason or "other")
                stats.errors[counted] = stats.errors.get(counted, 0) + 1
                stats.failing[key] = mine.error

    await asyncio.gather(
        *(read_plain(key) for key in plain), *(read_template(read) for read in templated)
    )
    findings: Findings = {system: {} for system in config.systems}
    for (system, name), result in results.items():
        signal = config.systems[system].signals[name]
        findings[system][name] = bank.judge(
            system, name, signal, result, now, config.evaluation.interval
        )
    return explain_unmatched(findings, stats.unmatched), stats


def unmatched_label(labelled: LabelledResult, label: str, value: str) -> str | None:
    """Why a template query that answered has no series for one system (its ``label`` value
    matches none of the query's series while others do), or None when it has one, or the query
    failed, or returned nothing for anyone (no data: nothing to tell apart)."""
    others = sorted({*labelled.series, *labelled.ambiguous} - {value})
    if labelled.error is not None or value in labelled.series or value in labelled.ambiguous:
        return None
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
        found = findings.get(system, {}).get(name)
        if found is not None and found.detector == "staleness" and found.value is None:
            findings[system][name] = replace(found, reason=why)
    return findings


def record(
    store: Store,
    config: Config,
    findings: Findings,
    now: datetime,
    links: Links,
) -> list[Incident]:
    """Reconcile each system's conditions with its incidents and persist the outcome, one
    transaction per system. Returns the incidents opened or changed."""
    changed: list[Incident] = []
    by_system: dict[str, dict[incidents.Fingerprint, Incident]] = {}
    for incident in store.incidents(unresolved=True):
        by_system.setdefault(incident.system, {})[incident.fingerprint] = incident
    changed.extend(_retire_removed(store, config, by_system, now, links))
    for system_name, system_findings in findings.items():
        holding = rules.conditions(system_name, config.systems[system_name], system_findings)
        unresolved = by_system.get(system_name, {})
        reopen_within = config.systems[system_name].reopen_within
        # Only a condition without an unresolved incident can reopen one.
        may_reopen = any(c.fingerprint not in unresolved for c in holding)
        recent = (
            store.recently_resolved(system_name, now - reopen_within)
            if reopen_within > timedelta(0) and may_reopen
            else {}
        )
        outcome = incidents.reconcile(
            config,
            system_name,
            holding,
            system_findings,
            store.pending(system_name),
            unresolved,
            now,
            new_incident_id,
            recent,
        )
        notifications: list[Notification] = []
        for incident in outcome.updated:
            if incident.state == "resolved":
                notifications.extend(
                    escalation.on_resolved(
                        config,
                        incident,
                        store.notifications(incident.id),
                        now,
                        new_notification_id,
                        links,
                    )
                )
        try:
            store.apply(
                Changes(
                    opened=outcome.opened,
                    updated=outcome.updated,
                    events=outcome.events,
                    notifications=notifications,
                    pending_system=system_name,
                    pending=outcome.pending,
                )
            )
        except Conflict as conflict:
            # Someone acted on an incident between our read and write; the next cycle
            # sees their change and decides again.
            log.info("evaluation deferred", system=system_name, reason=str(conflict))
            continue
        for incident in outcome.opened:
            log.info(
                "incident opened",
                incident=incident.id,
                system=incident.system,
                owner=incident.owner,
                kind=incident.kind,
                summary=incident.summary,
            )
        for incident in outcome.updated:
            if incident.state == "resolved":
                log.info(
                    "incident resolved",
                    incident=incident.id,
                    system=incident.system,
                    owner=incident.owner,
                    by=incident.resolved_by,
                    time_to_resolve=_seconds(incident),
                )
        for event in outcome.events:
            if event.kind == "reopened":
                log.info(
                    "incident reopened",
                    incident=event.incident_id,
                    system=system_name,
                    summary=event.detail,
                )
        changed.extend([*outcome.opened, *outcome.updated])
    return changed


def _retire_removed(
    store: Store,
    config: Config,
    by_system: Mapping[str, Mapping[incidents.Fingerprint, Incident]],
    now: datetime,
    links: Links,
) -> list[Incident]:
    """Resolve the incidents of systems no longer in the config (a decommissioned model, a
    deleted systems_dir file): nothing can confirm or clear them any more, and they must
    not escalate forever. Everyone who was notified hears of it."""
    retired: list[Incident] = []
    for system_name, unresolved in by_system.items():
        if system_name in config.systems:
            continue
        for incident in unresolved.values():
            try:
                closed = service.close(
                    store, config, incident, AUTO, "system removed from the config", now, links
                )
            except Conflict:
                continue
            log.info(
                "incident resolved",
                incident=incident.id,
                system=system_name,
                owner=incident.owner,
                by=AUTO,
                reason="system removed from the config",
            )
            retired.append(closed)
    return retired


def escalate(
    store: Store,
    config: Config,
    now: datetime,
    links: Links,
    metrics: Metrics | None = None,
) -> int:
    """Fire every due escalation step, expired ack and reminder; one transaction per incident.
    Returns the number of notifications queued."""
    queued = 0
    for incident in store.incidents(unresolved=True):
        if incident.system not in config.systems:
            continue  # retired by the next evaluation; a removed system escalates no further
        outcome = escalation.tick(config, incident, now, new_notification_id, links)
        if not outcome.events:
            continue
        try:
            store.apply(
                Changes(
                    updated=[outcome.incident],
                    events=outcome.events,
                    notifications=outcome.notifications,
                )
            )
        except Conflict:
            continue  # acknowledged or changed meanwhile: decide again next tick
        queued += len(outcome.notifications)
        if outcome.steps_fired and not outcome.notifications:
            log.warning(
                "escalation reached nobody",
                incident=incident.id,
                system=incident.system,
                steps=list(outcome.steps_fired),
                hint="a channel or contact named by the chain is no longer configured",
            )
        if outcome.steps_collapsed:
            log.warning(
                "escalation steps collapsed",
                incident=incident.id,
                system=incident.system,
                steps=list(outcome.steps_collapsed),
                hint="several steps fell due at once (downtime or a late tick): each "
                "recipient was paged once, for the latest step they were owed",
            )
        # Every step passed counts, collapsed or not: the counter says how far incidents
        # escalate, whether or not the daemon was running when a step fell due.
        for step in outcome.steps_fired:
            if metrics is not None:
                metrics.escalations.labels(incident.system, str(step)).inc()
            log.info(
                "escalation step",
                incident=incident.id,
                system=incident.system,
                owner=incident.owner,
                step=step,
            )
    return queued


def _seconds(incident: Incident) -> float | None:
    ttr = incident.time_to_resolve
    return None if ttr is None else round(ttr.total_seconds(), 1)


Clock = Callable[[], datetime]
