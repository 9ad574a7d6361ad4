"""The incident lifecycle: conditions and open incidents in, transitions and events out.

Pure: the clock and the id generator are passed in. The shell persists what comes out in one
transaction before anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from driftowner.config import (
    ChainConfig,
    Config,
    SystemConfig,
    format_duration,
    step_channels,
    step_owner_keys,
)
from driftowner.detect.rules import undecided
from driftowner.model import (
    AUTO,
    ChainSnapshot,
    ChainStep,
    Condition,
    Event,
    Finding,
    Incident,
    Pending,
)

Fingerprint = tuple[str, str]


class LifecycleError(Exception):
    """A requested transition is not allowed from the incident's state (resolve twice, ...)."""


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """What one evaluation changes: incidents to insert or update, events to append, and the
    pending conditions that remain (the full set for the evaluated systems)."""

    opened: tuple[Incident, ...] = ()
    updated: tuple[Incident, ...] = ()
    events: tuple[Event, ...] = ()
    pending: tuple[Pending, ...] = field(default_factory=tuple)


def snapshot_chain(config: Config, system: SystemConfig, owner: str | None = None) -> ChainSnapshot:
    """The system's escalation chain resolved to owner keys and channels, frozen at opening.

    ``owner`` stands in for the system's accountable owner (after a reassignment).
    """
    chain: ChainConfig = config.escalation_chains[system.escalation]
    accountable = owner or system.owner
    return ChainSnapshot(
        name=system.escalation,
        steps=tuple(
            ChainStep(
                after=step.after,
                recipients=tuple(step_owner_keys(step, accountable)),
                via=tuple(step_channels(config, step)),
            )
            for step in chain.steps
        ),
        repeat=chain.repeat,
        remind_every=chain.remind_every,
        ack_timeout=chain.ack_timeout,
    )


def reconcile(
    config: Config,
    system_name: str,
    holding: Iterable[Condition],
    findings: Mapping[str, Finding],
    pending: Mapping[Fingerprint, Pending],
    unresolved: Mapping[Fingerprint, Incident],
    now: datetime,
    new_id: Callable[[], str],
    recently_resolved: Mapping[Fingerprint, Incident] | None = None,
) -> Reconciliation:
    """One system's evaluation applied to its pending conditions and unresolved incidents.

    - A condition that holds with no incident starts (or continues) pending, and opens an
      incident once it has held for its ``for`` duration; if the fingerprint's last incident
      was resolved within the system's ``reopen_within``, that incident reopens instead
      (``recently_resolved``: the newest resolved incident per fingerprint).
    - A condition that holds again on an incident whose condition had cleared: returned.
    - An incident whose condition no longer holds: cleared, then auto-resolved once clear for
      ``resolve_after``. While a signal it depends on has no data, it is left as it is.
    """
    system = config.systems[system_name]
    opened: list[Incident] = []
    updated: list[Incident] = []
    events: list[Event] = []
    still_pending: list[Pending] = []
    holding_by_fp = {c.fingerprint: c for c in holding}

    for fp, condition in holding_by_fp.items():
        incident = unresolved.get(fp)
        if incident is not None:
            if incident.cleared_at is not None:
                incident = replace(incident, cleared_at=None, evidence=condition.evidence)
                updated.append(incident)
                events.append(
                    Event(incident.id, now, "condition_returned", AUTO, condition.summary)
                )
            continue
        waiting = pending.get(fp)
        if waiting is None or now - waiting.last_seen_at > _max_gap(config):
            # A condition must hold *continuously* for its ``for``: after a gap in evaluation
            # (downtime) we cannot know it held, so it starts over.
            waiting = Pending(system_name, condition.rule, now, now)
        if now - waiting.since >= condition.hold_for:
            held = format_duration(_whole_seconds(now - waiting.since))
            earlier = (recently_resolved or {}).get(fp)
            if earlier is not None and _reopens(earlier, system.reopen_within, now):
                incident = _reopen(earlier, condition, waiting.since, now)
                updated.append(incident)
                events.append(
                    Event(incident.id, now, "reopened", AUTO, f"{condition.summary} (held {held})")
                )
                continue
            began = min([waiting.since, *(f.began_at for f in condition.evidence if f.began_at)])
            incident = _open(config, system, condition, began, now, new_id())
            opened.append(incident)
            events.append(
                Event(incident.id, now, "opened", AUTO, f"{condition.summary} (held {held})")
            )
        else:
            still_pending.append(replace(waiting, last_seen_at=now))

    for fp, incident in unresolved.items():
        if fp in holding_by_fp or incident.system != system_name:
            continue
        signals_gone = any(name not in system.signals for name in incident.signals)
        if not signals_gone and undecided(findings, incident.signals):
            continue
        clear, clear_events = _condition_clear(incident, now)
        events.extend(clear_events)
        # Still waiting out resolve_after: nothing changed, so nothing to write (a rewrite
        # would bump the version and make a concurrent ack fail with a conflict).
        if clear is not incident:
            updated.append(clear)

    return Reconciliation(tuple(opened), tuple(updated), tuple(events), tuple(still_pending))


def _condition_clear(incident: Incident, now: datetime) -> tuple[Incident, list[Event]]:
    """An incident whose condition no longer holds: cleared (from now, the first time),
    then auto-resolved once clear for ``resolve_after``. The same incident, unchanged, while
    it is still waiting out ``resolve_after``."""
    events: list[Event] = []
    cleared_at = incident.cleared_at
    if cleared_at is None:
        cleared_at = now
        incident = replace(incident, cleared_at=now)
        events.append(Event(incident.id, now, "condition_cleared", AUTO, "condition clear"))
    if now - cleared_at >= incident.resolve_after:
        clear_for = format_duration(incident.resolve_after)
        transition = resolve(incident, AUTO, now, f"condition clear for {clear_for}")
        incident = transition.incident
        events.extend(transition.events)
    return incident, events


def _reopens(earlier: Incident, reopen_within: timedelta, now: datetime) -> bool:
    return (
        earlier.state == "resolved"
        and earlier.resolved_at is not None
        and now - earlier.resolved_at <= reopen_within
        and reopen_within > timedelta(0)
    )


def _reopen(earlier: Incident, condition: Condition, began: datetime, now: datetime) -> Incident:
    """The same problem back soon after it was resolved: the incident opens again with its
    history, and escalation starts over from step one (the chain it was opened with)."""
    return replace(
        earlier,
        state="open",
        resolved_at=None,
        resolved_by=None,
        acknowledged_at=None,
        acknowledged_by=None,
        cleared_at=None,
        evidence=condition.evidence,
        summary=condition.summary,
        condition_began_at=began,
        reopened_at=now,
        escalation_epoch=now,
        escalation_steps_done=0,
        last_reminded_at=None,
    )


def _open(
    config: Config,
    system: SystemConfig,
    condition: Condition,
    began: datetime,
    now: datetime,
    incident_id: str,
) -> Incident:
    return Incident(
        id=incident_id,
        system=condition.system,
        owner=system.owner,
        kind=condition.kind,
        rule=condition.rule,
        layers=condition.layers,
        signals=condition.signals,
        state="open",
        opened_at=now,
        summary=condition.summary,
        chain=snapshot_chain(config, system),
        evidence=condition.evidence,
        condition_began_at=began,
        resolve_after=condition.resolve_after,
        escalation_epoch=now,
        escalation_steps_done=0,
        ack_within=system.ack_within,
        resolve_within=system.resolve_within,
        runbook=system.runbook,
    )


def acknowledge(incident: Incident, by: str, at: datetime, note: str = "") -> Transition:
    """The owner (or anyone acting for them) takes the incident: escalation stops.

    Raises:
        LifecycleError: when the incident is resolved or already acknowledged.
    """
    if incident.state == "resolved":
        raise LifecycleError(f"incident {incident.id} is resolved; it cannot be acknowledged")
    if incident.state == "acknowledged":
        raise LifecycleError(
            f"incident {incident.id} is already acknowledged by {incident.acknowledged_by}"
        )
    acked = replace(
        incident,
        state="acknowledged",
        acknowledged_at=at,
        acknowledged_by=by,
        first_acknowledged_at=incident.first_acknowledged_at or at,
        last_reminded_at=None,
    )
    return Transition(acked, (Event(incident.id, at, "acknowledged", by, note),))


def resolve(incident: Incident, by: str, at: datetime, note: str = "") -> Transition:
    """The problem is over, by a person's word or (``auto``) because the condition cleared.

    Raises:
        LifecycleError: when the incident is already resolved.
    """
    if incident.state == "resolved":
        raise LifecycleError(
            f"incident {incident.id} is already resolved by {incident.resolved_by}"
        )
    done = replace(incident, state="resolved", resolved_at=at, resolved_by=by)
    return Transition(done, (Event(incident.id, at, "resolved", by, note),))


def add_note(incident: Incident, by: str, at: datetime, text: str) -> Transition:
    """A person's note on the incident, in any state (a resolved incident takes notes too:
    what the cause was, what was rolled back). The incident itself is unchanged: a note stops
    no escalation and changes no owner."""
    return Transition(incident, (Event(incident.id, at, "note", by, text),))


def reassign(
    incident: Incident, to: str, reason: str, at: datetime, by: str, chain: ChainSnapshot
) -> Transition:
    """Hand the incident to another accountable owner; escalation restarts with them.

    Raises:
        LifecycleError: when the incident is resolved or already theirs.
    """
    if incident.state == "resolved":
        raise LifecycleError(f"incident {incident.id} is resolved; it cannot be reassigned")
    if incident.owner == to:
        raise LifecycleError(f"incident {incident.id} is already owned by {to}")
    moved = replace(
        incident,
        owner=to,
        state="open",
        chain=chain,
        acknowledged_at=None,
        acknowledged_by=None,
        escalation_epoch=at,
        escalation_steps_done=0,
    )
    detail = f"{incident.owner} → {to}: {reason}"
    return Transition(moved, (Event(incident.id, at, "reassigned", by, detail),))


def _max_gap(config: Config) -> timedelta:
    """The longest silence between two sightings of a pending condition that still counts as
    holding continuously: a few missed evaluations, not a restart after downtime."""
    return 3 * config.evaluation.interval + timedelta(seconds=5)


def _whole_seconds(value: timedelta) -> timedelta:
    return timedelta(seconds=round(value.total_seconds()))


@dataclass(frozen=True, slots=True)
class Transition:
    """An incident as it now is and the events that say how it got there."""

    incident: Incident
    events: tuple[Event, ...] = ()
