"""Incident operations shared by the CLI and the HTTP API: list, show, acknowledge, resolve,
reassign, report. Each reads, decides with the pure core, and writes in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median, quantiles
from typing import Any

from driftowner import escalation, incidents
from driftowner.clock import rfc3339
from driftowner.config import Config
from driftowner.escalation import Links
from driftowner.ids import new_notification_id
from driftowner.model import Event, Finding, Incident, Notification, Purpose, Timing
from driftowner.store import Changes, Store


class NotFound(Exception):
    """No incident has that id."""


class BadRequest(Exception):
    """The request names something that does not exist (an unknown owner, ...).

    ``field`` names the request field at fault (``by``, ``to``).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


MAX_NAME_CHARS = 200
"""Longest owner key or actor name a request may give (``by``, ``to``)."""
MAX_TEXT_CHARS = 2000
"""Longest free text a request may give (``note``, ``reason``)."""


def text_problem(value: str, limit: int) -> str | None:
    """Why ``value`` is not acceptable request text, or None: longer than ``limit``
    characters, not encodable as UTF-8 (a lone surrogate), or holding a control character
    other than tab and newline (NUL cannot be stored)."""
    if len(value) > limit:
        return f"at most {limit} characters (got {len(value)})"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"not valid text: a lone surrogate at character {error.start}"
    for position, char in enumerate(value):
        if (ord(char) < 32 and char not in "\t\n\r") or char == "\x7f":
            return f"not valid text: control character U+{ord(char):04X} at character {position}"
    return None


def _valid_text(field: str, value: str, limit: int) -> None:
    """Raises BadRequest naming ``field`` when ``value`` is not acceptable text."""
    problem = text_problem(value, limit)
    if problem is not None:
        raise BadRequest(field, f"{field}: {problem}")


def get(store: Store, incident_id: str) -> Incident:
    """The incident with that id.

    Raises:
        NotFound: no such incident.
    """
    incident = store.incident(incident_id)
    if incident is None:
        raise NotFound(f"no incident {incident_id!r}")
    return incident


def _known_owner(config: Config, field: str, who: str) -> None:
    _valid_text(field, who, MAX_NAME_CHARS)
    if who not in config.owners:
        known = ", ".join(sorted(config.owners))
        raise BadRequest(field, f"unknown owner {who!r} (known: {known})")


def acknowledge(
    store: Store,
    config: Config,
    incident_id: str,
    by: str,
    note: str,
    now: datetime,
    links: Links | None = None,
) -> Incident:
    """Acknowledge an incident on behalf of ``by``: escalation stops. With ``links``, every
    conversation the incident started hears of it (an ``acknowledged`` notification each),
    in the same transaction.

    Raises:
        NotFound, BadRequest, incidents.LifecycleError, store.Conflict.
    """
    _valid_text("note", note, MAX_TEXT_CHARS)
    _known_owner(config, "by", by)
    transition = incidents.acknowledge(get(store, incident_id), by, now, note)
    store.apply(
        Changes(
            updated=[transition.incident],
            events=transition.events,
            notifications=_follow_ups(
                store, config, transition.incident, "acknowledged", note, by, now, links
            ),
        )
    )
    return transition.incident


def _follow_ups(
    store: Store,
    config: Config,
    incident: Incident,
    purpose: Purpose,
    note: str,
    by: str,
    now: datetime,
    links: Links | None,
) -> tuple[Notification, ...]:
    """What an acknowledgement or reassignment tells the conversations the incident started
    (without ``links``, the messages carry no links)."""
    return escalation.follow_ups(
        config,
        incident,
        store.notifications(incident.id),
        purpose,
        now,
        new_notification_id,
        links or _no_links,
        note,
        by,
    )


def _no_links(incident_id: str, action: str, recipient: str | None = None) -> str | None:
    """Links when the caller has none to give: every link absent."""
    return None


def resolve(
    store: Store,
    config: Config,
    incident_id: str,
    by: str,
    note: str,
    now: datetime,
    links: Links,
    *,
    accept: bool = False,
) -> Incident:
    """Resolve an incident on behalf of ``by``; everyone who was notified hears of it.
    ``accept``: the signals' new levels are normal; an ``accepted`` event in the same
    transaction tells the daemon's detectors to re-learn their references from ``now``.

    Raises:
        NotFound, BadRequest, incidents.LifecycleError, store.Conflict.
    """
    _valid_text("note", note, MAX_TEXT_CHARS)
    _known_owner(config, "by", by)
    incident = get(store, incident_id)
    accepted = (
        Event(incident.id, now, "accepted", by, "new level accepted: detectors re-learn from here"),
    )
    return close(store, config, incident, by, note, now, links, accepted if accept else ())


def close(
    store: Store,
    config: Config,
    incident: Incident,
    by: str,
    note: str,
    now: datetime,
    links: Links,
    extra: tuple[Event, ...] = (),
) -> Incident:
    """Resolve an incident and, in the same transaction, queue the notice to everyone who was
    notified of it (and log ``extra`` events with it).

    Raises:
        incidents.LifecycleError, store.Conflict.
    """
    transition = incidents.resolve(incident, by, now, note)
    store.apply(
        Changes(
            updated=[transition.incident],
            events=[*transition.events, *extra],
            notifications=escalation.on_resolved(
                config,
                transition.incident,
                store.notifications(incident.id),
                now,
                new_notification_id,
                links,
                note,
            ),
        )
    )
    return transition.incident


def reassign(
    store: Store,
    config: Config,
    incident_id: str,
    to: str,
    reason: str,
    by: str,
    now: datetime,
    links: Links | None = None,
) -> Incident:
    """Make ``to`` the accountable owner of one incident; escalation restarts with them.
    With ``links``, every conversation the incident started hears of it (a ``reassigned``
    notification each, the reason as its note), in the same transaction.

    Raises:
        NotFound, BadRequest, incidents.LifecycleError, store.Conflict.
    """
    _valid_text("reason", reason, MAX_TEXT_CHARS)
    _valid_text("by", by, MAX_NAME_CHARS)
    _known_owner(config, "to", to)
    if not reason.strip():
        raise BadRequest("reason", "a reassignment needs a reason")
    incident = get(store, incident_id)
    system = config.systems.get(incident.system)
    chain = (
        incidents.snapshot_chain(config, system, owner=to) if system is not None else incident.chain
    )
    transition = incidents.reassign(incident, to, reason, now, by, chain)
    store.apply(
        Changes(
            updated=[transition.incident],
            events=transition.events,
            notifications=_follow_ups(
                store, config, transition.incident, "reassigned", reason, by, now, links
            ),
        )
    )
    return transition.incident


def incident_json(incident: Incident, now: datetime) -> dict[str, Any]:
    """The public JSON shape of an incident (CLI ``--json`` and the HTTP API)."""
    tta = incident.time_to_acknowledge
    ttr = incident.time_to_resolve
    return {
        "id": incident.id,
        "system": incident.system,
        "owner": incident.owner,
        "kind": incident.kind,
        "rule": incident.rule,
        "layers": list(incident.layers),
        "signals": list(incident.signals),
        "state": incident.state,
        "summary": incident.summary,
        "opened_at": rfc3339(incident.opened_at),
        "condition_began_at": rfc3339(incident.condition_began_at),
        "acknowledged_at": rfc3339(incident.acknowledged_at),
        "acknowledged_by": incident.acknowledged_by,
        "first_acknowledged_at": rfc3339(incident.first_acknowledged_at),
        "resolved_at": rfc3339(incident.resolved_at),
        "resolved_by": incident.resolved_by,
        "age_seconds": round(incident.age(now).total_seconds(), 3),
        "time_to_acknowledge_seconds": None if tta is None else tta.total_seconds(),
        "time_to_resolve_seconds": None if ttr is None else ttr.total_seconds(),
        "escalation": {
            "chain": incident.chain.name,
            "steps_done": incident.escalation_steps_done,
            "steps": len(incident.chain.steps),
        },
        "evidence": [finding_json(f) for f in incident.evidence],
        "runbook": incident.runbook,
    }


def finding_json(finding: Finding) -> dict[str, Any]:
    """The public JSON shape of a finding (incident evidence, ``evaluate --json``)."""
    return {
        "system": finding.system,
        "signal": finding.signal,
        "layer": finding.layer,
        "status": finding.status,
        "value": finding.value,
        "reference": finding.reference,
        "limit": finding.limit,
        "detector": finding.detector,
        "reason": finding.reason,
    }


def event_json(event: Event) -> dict[str, Any]:
    return {
        "at": rfc3339(event.at),
        "kind": event.kind,
        "actor": event.actor,
        "detail": event.detail,
    }


@dataclass(frozen=True, slots=True)
class ReportRow:
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


def report(store: Store, since: timedelta, now: datetime) -> list[ReportRow]:
    """Per owner and system, over incidents opened within ``since`` plus every unresolved one:
    counts by state, median and p90 time to acknowledge and to resolve, SLO breaches, and the
    age of the oldest unresolved incident."""
    at = now.timestamp()
    groups: dict[tuple[str, str], list[Timing]] = {}
    for timing in store.timings(opened_since=now - since):
        groups.setdefault((timing.owner, timing.system), []).append(timing)
    rows = []
    for (owner, system), group in sorted(groups.items()):
        acks = [t for i in group if (t := i.time_to_acknowledge) is not None]
        fixes = [t for i in group if (t := i.time_to_resolve) is not None]
        unresolved_ages = [i.age(at) for i in group if i.unresolved]
        rows.append(
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
                ack_slo_breaches=sum(i.ack_breached(at) for i in group),
                resolve_slo_breaches=sum(i.resolve_breached(at) for i in group),
                oldest_unresolved_s=max(unresolved_ages) if unresolved_ages else None,
            )
        )
    return rows


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
    }
