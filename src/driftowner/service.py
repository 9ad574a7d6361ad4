"""Incident commands shared by the CLI, the HTTP API, signed links and Slack: acknowledge,
resolve, reassign, add a note, each recording who acted and through what; and the incidents'
public JSON views. Each command reads, decides with the pure core, and writes in one
transaction. The report lives in :mod:`driftowner.report`."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any, Literal

from driftowner import escalation, incidents
from driftowner.clock import rfc3339
from driftowner.config import Config
from driftowner.escalation import Links
from driftowner.ids import new_notification_id
from driftowner.model import Event, Finding, Handover, Incident, Notification, Purpose, Via
from driftowner.store import Changes, Conflict, Store

Action = Literal["ack", "resolve"]
"""What a person can do to an incident in one step (API, link, Slack button, CLI)."""


class NotFound(Exception):
    """No incident has that id."""


class BadRequest(Exception):
    """The request names something that does not exist (an unknown owner, ...).

    ``field`` names the request field at fault (``by``, ``to``).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


REFUSALS = (NotFound, BadRequest, incidents.LifecycleError, Conflict)
"""Every error a command may be refused with; the HTTP layer maps them to answers in one
place (:mod:`driftowner.api.errors`)."""

MAX_NAME_CHARS = 200
"""Longest owner key or actor name a request may give (``by``, ``to``)."""
MAX_TEXT_CHARS = 2000
"""Longest free text a request may give (``note``, ``reason``)."""


def text_problem(value: str, limit: int, *, required: bool = False) -> str | None:
    """Why ``value`` is not acceptable request text, or None: longer than ``limit``
    characters, not encodable as UTF-8 (a lone surrogate), holding a control character
    other than tab and newline (NUL cannot be stored), or, when ``required`` (a note on its
    own), blank."""
    if required and not value.strip():
        return "a note needs text"
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


def _valid_text(field: str, value: str, limit: int, *, required: bool = False) -> None:
    """Raises BadRequest naming ``field`` when ``value`` is not acceptable text."""
    problem = text_problem(value, limit, required=required)
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


def act(
    store: Store,
    config: Config,
    links: Links,
    action: Action,
    incident_id: str,
    by: str,
    note: str,
    now: datetime,
    via: Via,
    *,
    accept: bool = False,
) -> Incident:
    """Acknowledge or resolve an incident on behalf of the owner ``by``, through ``via``
    (``accept``: resolving, the signals' new levels are normal).

    Raises:
        NotFound, BadRequest, incidents.LifecycleError, store.Conflict.
    """
    if action == "ack":
        return acknowledge(store, config, incident_id, by, note, now, via, links)
    return resolve(store, config, incident_id, by, note, now, links, via, accept=accept)


def acknowledge(
    store: Store,
    config: Config,
    incident_id: str,
    by: str,
    note: str,
    now: datetime,
    via: Via,
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
            events=_through(transition.events, via),
            notifications=_follow_ups(
                store, config, transition.incident, "acknowledged", note, by, now, links
            ),
        )
    )
    return transition.incident


def add_note(
    store: Store,
    config: Config,
    incident_id: str,
    by: str,
    text: str,
    now: datetime,
    via: Via,
    links: Links | None = None,
) -> tuple[Incident, Event]:
    """Add ``by``'s note to an incident, in any state, without changing it: a ``note`` event
    (the text its detail) and, with ``links``, a ``noted`` notification to every conversation
    the incident started (its Slack threads and mail threads; contributor teams, informed only
    at opening and resolution, aside), in the same transaction. The incident is written back
    unchanged, so a note raced by an ack or a resolution is refused
    (:class:`~driftowner.store.Conflict`) rather than telling the conversations a state that
    no longer holds.

    Returns:
        The incident and the note's event.

    Raises:
        NotFound, BadRequest, store.Conflict.
    """
    _valid_text("note", text, MAX_TEXT_CHARS, required=True)
    _known_owner(config, "by", by)
    incident = get(store, incident_id)
    transition = incidents.add_note(incident, by, now, text)
    events = _through(transition.events, via)
    store.apply(
        Changes(
            updated=[incident],
            events=events,
            notifications=_follow_ups(
                store,
                config,
                incident,
                "noted",
                text,
                by,
                now,
                links,
                step=escalation.standing_step(incident),
            ),
        )
    )
    return incident, events[0]


def _follow_ups(
    store: Store,
    config: Config,
    incident: Incident,
    purpose: Purpose,
    note: str,
    by: str,
    now: datetime,
    links: Links | None,
    step: int = 0,
) -> tuple[Notification, ...]:
    """What an acknowledgement, reassignment or note tells the conversations the incident
    started (without ``links``, the messages carry no links; ``step``: the step they name)."""
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
        step,
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
    via: Via,
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
    return close(store, config, incident, by, note, now, links, via, accepted if accept else ())


def close(
    store: Store,
    config: Config,
    incident: Incident,
    by: str,
    note: str,
    now: datetime,
    links: Links,
    via: Via | None = None,
    extra: tuple[Event, ...] = (),
) -> Incident:
    """Resolve an incident and, in the same transaction, queue the notice to everyone who was
    notified of it (and log ``extra`` events with it). ``via`` may be omitted only when ``by``
    is driftowner itself.

    Raises:
        incidents.LifecycleError, store.Conflict.
    """
    transition = incidents.resolve(incident, by, now, note)
    store.apply(
        Changes(
            updated=[transition.incident],
            events=_through((*transition.events, *extra), via),
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


def _through(events: tuple[Event, ...], via: Via | None) -> list[Event]:
    """The events of a person's action, marked with what they acted through."""
    return [e if via is None else replace(e, via=via) for e in events]


def reassign(
    store: Store,
    config: Config,
    incident_id: str,
    to: str,
    reason: str,
    by: str,
    now: datetime,
    via: Via,
    links: Links | None = None,
) -> Incident:
    """Make ``to`` the accountable owner of one incident; escalation restarts with them. The
    handover (from, to, who, why) is recorded with the event, so each owner is credited with
    their own period. With ``links``, every conversation the incident started hears of it (a
    ``reassigned`` notification each, the reason as its note), in the same transaction.

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
    handover = Handover(incident.id, now, incident.owner, to, by, via, reason)
    store.apply(
        Changes(
            updated=[transition.incident],
            events=_through(transition.events, via),
            handovers=[handover],
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
    """The public JSON shape of a finding (incident evidence, ``evaluate --json``): its
    evidence (value, reference, statistic, limit, when the change began: RFC 3339 or null)."""
    return {
        "system": finding.system,
        "signal": finding.signal,
        "layer": finding.layer,
        "status": finding.status,
        "value": finding.value,
        "reference": finding.reference,
        "statistic": finding.statistic,
        "limit": finding.limit,
        "began_at": rfc3339(finding.began_at) if finding.began_at is not None else None,
        "detector": finding.detector,
        "reason": finding.reason,
    }


def event_json(event: Event) -> dict[str, Any]:
    """The public JSON shape of an event: ``via`` is null for events recorded by a person
    before driftowner kept it."""
    return {
        "at": rfc3339(event.at),
        "kind": event.kind,
        "actor": event.actor,
        "via": event.via,
        "detail": event.detail,
    }
