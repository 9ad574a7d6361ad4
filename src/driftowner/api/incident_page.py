"""``GET /incidents/{id}``: the page every message links to. An owner paged at night sees the
drift: each signal's values over the evidence window, read at page time through the signal's
own source, drawn as SVG (:mod:`driftowner.chart`) with the reference level, the limits and a
mark where the change began; then the evidence and the event log. The JSON stays at
``/api/v1/incidents/{id}``.

A page's reads are bounded: at most :data:`MAX_CHART_POINTS` points per signal over at most
:data:`MAX_WINDOW`, each read cached for :data:`HISTORY_TTL_S` seconds and given up after
:data:`READ_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cachetools import TTLCache
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from driftowner import service
from driftowner.api.pages import owner_name, page, templates
from driftowner.api.runtime import Runtime
from driftowner.chart import Chart, Marker, number, svg, thin
from driftowner.config import SignalConfig
from driftowner.model import Event, Finding, Incident, SourceResult
from driftowner.render import format_age
from driftowner.sources.history import read_signal

MAX_CHART_POINTS = 400
MAX_WINDOW = timedelta(days=7)
HISTORY_TTL_S = 5.0
"""How long one read of a signal's history serves every page load of its incident."""
READ_TIMEOUT_S = 10.0
_CACHED_READS = 256

ReadKey = tuple[str, str, str, str]
"""(incident id, signal, source, query): what one cached read answered."""


@dataclass(frozen=True, slots=True)
class Window:
    """The evidence window a chart shows, and the spacing of the values it reads."""

    start: datetime
    end: datetime
    step: timedelta


def router(runtime: Runtime) -> APIRouter:
    """The incident page; its history reads share one short-lived cache."""
    r = APIRouter()
    cache: TTLCache[ReadKey, SourceResult] = TTLCache(
        maxsize=_CACHED_READS, ttl=HISTORY_TTL_S, timer=time.monotonic
    )

    @r.get("/incidents/{incident_id}", response_class=HTMLResponse, include_in_schema=False)
    async def incident_page(incident_id: str) -> HTMLResponse:
        """One incident: charts of its signals, its evidence and its event log."""
        try:
            incident, events = await run_in_threadpool(_load, runtime, incident_id)
        except service.NotFound as error:
            return page(runtime, "No such incident", error=str(error), status=404)
        now = runtime.clock()
        charts = await asyncio.gather(
            *(signal_chart(runtime, cache, incident, name, now) for name in incident.signals)
        )
        return HTMLResponse(render_incident_page(runtime, incident, events, charts, now))

    return r


def _load(runtime: Runtime, incident_id: str) -> tuple[Incident, list[Event]]:
    return service.get(runtime.store, incident_id), list(runtime.store.events(incident_id))


def evidence_window(incident: Incident, interval: timedelta, now: datetime) -> Window:
    """From as long before the change began as it has lasted (ten evaluation intervals at
    least, :data:`MAX_WINDOW` at most) to now, or a little past the resolution. Pure."""
    began = min(
        at
        for at in (
            incident.opened_at,
            incident.condition_began_at,
            *(f.began_at for f in incident.evidence),
        )
        if at is not None
    )
    end = now
    if incident.resolved_at is not None:
        end = min(now, incident.resolved_at + max(interval * 5, (incident.resolved_at - began) / 4))
    lasted = max(end - began, interval * 10)
    start = max(began - lasted, end - MAX_WINDOW)
    step = max(interval, (end - start) / (MAX_CHART_POINTS - 1))
    return Window(start, end, step)


def value_limits(
    finding: Finding, signal: SignalConfig | None
) -> tuple[float | None, float | None]:
    """The lower and upper limits of the values, where the detector has limits on the values'
    own scale: a threshold's ``min`` / ``max``; a baseline's reference ± ``max_change`` on the
    bad side. Change-point charts and histograms judge a statistic, not the value: none. The
    detector is the evidence's, or the signal's when the evidence names none. Pure."""
    configured = signal.detect if signal is not None else None
    detector = finding.detector or (configured.name if configured is not None else "")
    bad = signal.bad if signal is not None else "both"
    if detector == "threshold":
        spec = configured.threshold if configured is not None else None
        if spec is not None:
            return spec.min, spec.max
        if finding.limit is None:
            return None, None
        return (finding.limit, None) if bad == "down" else (None, finding.limit)
    if detector == "baseline" and finding.reference is not None and finding.limit is not None:
        delta = abs(finding.reference) * finding.limit
        return (
            finding.reference - delta if bad in ("down", "both") else None,
            finding.reference + delta if bad in ("up", "both") else None,
        )
    return None, None


async def signal_chart(
    runtime: Runtime,
    cache: TTLCache[ReadKey, SourceResult],
    incident: Incident,
    name: str,
    now: datetime,
) -> dict[str, Any]:
    """One signal's chart, or why there is none; with its evidence."""
    finding = next((f for f in incident.evidence if f.signal == name), None)
    system = runtime.config.systems.get(incident.system)
    signal = system.signals.get(name) if system is not None else None
    shown: dict[str, Any] = {
        "name": name,
        "layer": signal.layer if signal else (finding.layer if finding else ""),
        "evidence": _evidence(finding),
        "svg": None,
        "legend": None,
        "problem": None,
    }
    if signal is None:
        shown["problem"] = (
            f"{incident.system}.{name} is no longer in the config: its history cannot be read."
        )
        return shown
    window = evidence_window(incident, runtime.config.evaluation.interval, now)
    result = await _history(runtime, cache, incident, name, signal, window)
    if result.error is not None:
        shown["problem"] = f"The source {signal.source!r} could not be read: {result.error}"
        return shown
    if not result.samples:
        shown["problem"] = (
            f"The source {signal.source!r} has no values of {signal.query!r} "
            f"between {_utc(window.start)} and {_utc(window.end)}."
        )
    reference = finding.reference if finding else None
    lower, upper = value_limits(finding, signal) if finding else (None, None)
    began = change_start(incident, finding)
    samples = thin(result.samples, MAX_CHART_POINTS)
    chart = Chart(
        key=f"chart-{len(incident.signals)}-{incident.signals.index(name)}",
        title=f"{name} ({shown['layer']}) of {incident.system}",
        description=_described(name, samples, window, reference, lower, upper, began),
        samples=samples,
        start=window.start,
        end=window.end,
        reference=reference,
        lower_limit=lower,
        upper_limit=upper,
        began_at=began,
        markers=(Marker(incident.opened_at, "opened"),),
        gap_after=window.step * 3,
    )
    # Safe as markup: ElementTree escaped every text in it.
    shown["svg"] = Markup(svg(chart))
    shown["legend"] = {
        "reference": reference is not None,
        "limits": lower is not None or upper is not None,
        "change": began is not None,
    }
    return shown


def change_start(incident: Incident, finding: Finding | None) -> datetime | None:
    """Where a signal's chart marks the change: its detector's estimate, else the incident's
    condition start; none for a signal whose evidence was healthy (the steady side of a
    disagreement did not change). Pure."""
    if finding is not None and finding.began_at is not None:
        return finding.began_at
    if finding is not None and finding.status == "ok":
        return None
    return incident.condition_began_at


async def _history(
    runtime: Runtime,
    cache: TTLCache[ReadKey, SourceResult],
    incident: Incident,
    name: str,
    signal: SignalConfig,
    window: Window,
) -> SourceResult:
    """The signal's values over the window, through its own source, cached briefly."""
    key = (incident.id, name, signal.source, signal.query)
    cached = cache.get(key)
    if cached is not None:
        return cached
    source = runtime.sources.get(signal.source)
    if source is None:
        return SourceResult(error="the source is not running in this process")
    try:
        result = await asyncio.wait_for(
            read_signal(source, signal, window.start, window.end, window.step), READ_TIMEOUT_S
        )
    except TimeoutError:
        result = SourceResult(error=f"no answer within {READ_TIMEOUT_S:g} s")
    cache[key] = result
    return result


def _described(
    name: str,
    samples: tuple[Any, ...],
    window: Window,
    reference: float | None,
    lower: float | None,
    upper: float | None,
    began: datetime | None,
) -> str:
    """What the chart shows, in words, for a screen reader."""
    values = [s.value for s in samples]
    parts = [f"{name} from {_utc(window.start)} to {_utc(window.end)}"]
    if values:
        parts.append(
            f"{len(values)} values from {number(min(values))} to {number(max(values))}, "
            f"the last {number(values[-1])}"
        )
    if reference is not None:
        parts.append(f"reference {number(reference)}")
    limits = [
        f"{side} {number(v)}" for side, v in (("lower", lower), ("upper", upper)) if v is not None
    ]
    if limits:
        parts.append("limits " + " and ".join(limits))
    if began is not None:
        parts.append(f"the change began at {_utc(began)}")
    return "; ".join(parts) + "."


def _evidence(finding: Finding | None) -> dict[str, str] | None:
    if finding is None:
        return None
    return {
        "status": finding.status,
        "detector": finding.detector,
        "value": _number(finding.value),
        "reference": _number(finding.reference),
        "statistic": _number(finding.statistic),
        "limit": _number(finding.limit),
        "began_at": _utc(finding.began_at) if finding.began_at else "—",
        "reason": finding.reason,
    }


def render_incident_page(
    runtime: Runtime,
    incident: Incident,
    events: list[Event],
    charts: list[dict[str, Any]],
    now: datetime,
) -> str:
    """The incident page's HTML."""
    steps = len(incident.chain.steps)
    return (
        templates()
        .get_template("incident.html")
        .render(
            incident=incident,
            owner_name=owner_name(runtime.config, incident.owner),
            age=format_age(incident.age(now).total_seconds()),
            step=f"step {min(incident.escalation_steps_done, steps)} of {steps}",
            times=[
                (label, _utc(at), by)
                for label, at, by in (
                    ("Change began", incident.condition_began_at, None),
                    ("Opened", incident.opened_at, None),
                    ("Acknowledged", incident.acknowledged_at, incident.acknowledged_by),
                    ("Resolved", incident.resolved_at, incident.resolved_by),
                )
                if at is not None
            ],
            charts=charts,
            events=[
                {
                    "at": _utc(e.at),
                    "kind": e.kind,
                    "actor": e.actor,
                    "via": e.via or "—",
                    "detail": e.detail,
                }
                for e in events
            ],
            now=_utc(now),
        )
    )


def _number(value: float | None) -> str:
    return "—" if value is None else number(value)


def _utc(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")
