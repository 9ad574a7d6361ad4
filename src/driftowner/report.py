"""The accountability report: per owner and system, what they hold now and how fast they acted
on what they held. ``driftowner report``, ``/api/v1/report`` and the ``/metrics`` histograms
all read :func:`holdings_from`, so they agree."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median, quantiles
from typing import Any

from driftowner.holding import Holding, holdings
from driftowner.model import Incident, Timing
from driftowner.store import Store


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One owner's record on one system. Counts by state are of the incidents the owner holds
    now; times, breaches and handovers are of every period they held one (after a handover
    each owner is credited with their own period only)."""

    owner: str
    system: str
    open: int
    acknowledged: int
    resolved: int
    ack_median_s: float | None
    ack_p90_s: float | None
    resolve_median_s: float | None
    resolve_p90_s: float | None
    ack_slo_breaches: int
    resolve_slo_breaches: int
    oldest_unresolved_s: float | None
    held_s: float = 0.0
    """Total time the owner held this system's incidents (to now for those still held)."""
    handovers_given: int = 0
    handovers_received: int = 0


def holdings_from(
    store: Store, now: datetime, opened_since: datetime | None = None
) -> tuple[list[Timing], list[Holding]]:
    """The incidents' numbers (opened since ``opened_since`` plus every unresolved one) and
    every period an owner held one of them."""
    timings = store.timings(opened_since=opened_since)
    handed = store.handovers()
    wanted = {t.incident_id for t in timings}
    acks = store.acknowledgements(i for i in handed if i in wanted)
    at = now.timestamp()
    held = [
        holding
        for t in timings
        for holding in holdings(t, handed.get(t.incident_id, ()), acks.get(t.incident_id, ()), at)
    ]
    return timings, held


def report(store: Store, since: timedelta, now: datetime) -> list[ReportRow]:
    """Per owner and system, over incidents opened within ``since`` plus every unresolved one:
    counts by state, median and p90 time to acknowledge and to resolve, SLO breaches, time
    held, handovers given and received, and the age of the oldest unresolved incident."""
    timings, held = holdings_from(store, now, now - since)
    return rows(timings, held, now.timestamp())


def rows(timings: Iterable[Timing], held: Iterable[Holding], now: float) -> list[ReportRow]:
    """The report's rows from incidents and their holdings. Pure."""
    current: dict[tuple[str, str], list[Timing]] = {}
    for timing in timings:
        current.setdefault((timing.owner, timing.system), []).append(timing)
    periods: dict[tuple[str, str], list[Holding]] = {}
    for holding in held:
        periods.setdefault((holding.owner, holding.system), []).append(holding)
    out = []
    for owner, system in sorted(current.keys() | periods.keys()):
        group = current.get((owner, system), [])
        mine = periods.get((owner, system), [])
        acks = [t for h in mine if (t := h.time_to_acknowledge) is not None]
        fixes = [t for h in mine if (t := h.time_to_resolve) is not None]
        unresolved_ages = [i.age(now) for i in group if i.unresolved]
        out.append(
            ReportRow(
                owner=owner,
                system=system,
                open=sum(i.state == "open" for i in group),
                acknowledged=sum(i.state == "acknowledged" for i in group),
                resolved=sum(i.state == "resolved" for i in group),
                ack_median_s=_median(acks),
                ack_p90_s=_p90(acks),
                resolve_median_s=_median(fixes),
                resolve_p90_s=_p90(fixes),
                ack_slo_breaches=sum(h.ack_breached for h in mine),
                resolve_slo_breaches=sum(h.resolve_breached for h in mine),
                oldest_unresolved_s=max(unresolved_ages) if unresolved_ages else None,
                held_s=sum(h.held(now) for h in mine),
                handovers_given=sum(h.handed_over for h in mine),
                handovers_received=sum(h.received for h in mine),
            )
        )
    return out


def breached_ack(incident: Incident, now: datetime) -> bool:
    """Acknowledged later than ``ack_within``, or still unacknowledged past it."""
    return incident.timing().ack_breached(now.timestamp())


def breached_resolve(incident: Incident, now: datetime) -> bool:
    """Resolved later than ``resolve_within``, or still unresolved past it."""
    return incident.timing().resolve_breached(now.timestamp())


def _median(values: list[float]) -> float | None:
    return median(values) if values else None


def _p90(values: list[float]) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return quantiles(values, n=10, method="inclusive")[-1]


def report_row_json(row: ReportRow) -> dict[str, Any]:
    """The public JSON shape of one report row."""
    return {
        "owner": row.owner,
        "system": row.system,
        "open": row.open,
        "acknowledged": row.acknowledged,
        "resolved": row.resolved,
        "time_to_acknowledge_seconds": {"median": row.ack_median_s, "p90": row.ack_p90_s},
        "time_to_resolve_seconds": {"median": row.resolve_median_s, "p90": row.resolve_p90_s},
        "slo_breaches": {"ack": row.ack_slo_breaches, "resolve": row.resolve_slo_breaches},
        "oldest_unresolved_seconds": row.oldest_unresolved_s,
        "held_seconds": row.held_s,
        "handovers": {"given": row.handovers_given, "received": row.handovers_received},
    }
