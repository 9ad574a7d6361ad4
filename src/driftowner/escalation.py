"""Escalation chain semantics: an incident, its snapshotted chain and ``now`` in; the steps due,
the notifications they owe and the events that record them out. Pure.

Timers are derived from the incident's stored timestamps (``escalation_epoch``,
``escalation_steps_done``, ``acknowledged_at``, ``last_reminded_at``) at every tick, so a
restart resumes exactly where escalation stood.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from driftowner.config import Config, owner_contact, round_length, team_contact
from driftowner.model import (
    AUTO,
    ChainSnapshot,
    Event,
    EventKind,
    Incident,
    Message,
    Notification,
    Purpose,
)

Links = Callable[[str, str], str | None]
"""(incident id, action ``ack`` | ``resolve`` | ``view``) → URL, or None when not available."""


@dataclass(frozen=True, slots=True)
class Escalation:
    """The incident after a tick, with the events and notifications the tick owes."""

    incident: Incident
    events: tuple[Event, ...] = ()
    notifications: tuple[Notification, ...] = ()
    steps_fired: tuple[int, ...] = ()
    """1-based step numbers fired in this tick (for ``driftowner_escalations_total``)."""


def cycle_length(chain: ChainSnapshot) -> timedelta:
    """Time from the start of one round of the chain to the start of the next (repeat): the
    last step's ``after`` plus the gap before the last step."""
    return round_length([step.after for step in chain.steps])


def step_due_at(chain: ChainSnapshot, epoch: datetime, k: int) -> datetime | None:
    """When the ``k``-th step (0-based, counting repeats) falls due, or None past the chain."""
    n = len(chain.steps)
    length = cycle_length(chain)
    rounds = chain.repeat + 1 if length > timedelta(0) else 1
    if k >= n * rounds:
        return None
    cycle, index = divmod(k, n)
    return epoch + cycle * length + chain.steps[index].after


def tick(
    config: Config,
    incident: Incident,
    now: datetime,
    new_id: Callable[[], str],
    links: Links,
) -> Escalation:
    """Everything escalation owes an unresolved incident at ``now``.

    An expired ack reopens escalation from step one; while open, every due step fires (after a
    long outage the owed steps all fire, in order); while acknowledged, reminders go to the
    owner every ``remind_every``.
    """
    if incident.state == "resolved":
        return Escalation(incident)
    events: list[Event] = []
    notifications: list[Notification] = []
    fired: list[int] = []
    chain = incident.chain
    if (
        incident.state == "acknowledged"
        and chain.ack_timeout is not None
        and incident.acknowledged_at is not None
        and now >= incident.acknowledged_at + chain.ack_timeout
    ):
        events.append(
            Event(
                incident.id,
                now,
                "unacknowledged",
                AUTO,
                f"ack by {incident.acknowledged_by} expired; escalation resumes",
            )
        )
        incident = replace(
            incident,
            state="open",
            acknowledged_at=None,
            acknowledged_by=None,
            escalation_epoch=now,
            escalation_steps_done=0,
        )
    if incident.state == "open":
        epoch = incident.escalation_epoch or incident.opened_at
        k = incident.escalation_steps_done
        while (due := step_due_at(chain, epoch, k)) is not None and due <= now:
            step_number = k % len(chain.steps) + 1
            # The first call of a life: the opening, or a reopening (an expired ack's restart
            # is an escalation).
            first_call = k == 0 and epoch in (incident.opened_at, incident.reopened_at)
            purpose: Purpose = (
                "escalated"
                if not first_call
                else ("reopened" if epoch == incident.reopened_at else "opened")
            )
            step = chain.steps[k % len(chain.steps)]
            sent = _to_owners(
                config,
                incident,
                step.recipients,
                step.via,
                purpose,
                step_number,
                now,
                new_id,
                links,
            )
            if first_call:
                sent += _to_contributors(config, incident, step.via, "informed", now, new_id, links)
            notifications.extend(sent)
            who = ", ".join(sorted({f"{n.recipient} via {n.channel}" for n in sent})) or "nobody"
            kind: EventKind = "notified" if first_call else "escalated"
            events.append(Event(incident.id, now, kind, AUTO, f"step {step_number}: {who}"))
            fired.append(step_number)
            k += 1
        incident = replace(incident, escalation_steps_done=k, escalation_epoch=epoch)
    elif incident.state == "acknowledged" and chain.remind_every is not None:
        since = incident.last_reminded_at or incident.acknowledged_at or incident.opened_at
        if now >= since + chain.remind_every:
            first = chain.steps[0]
            sent = _to_owners(
                config, incident, (incident.owner,), first.via, "reminder", 0, now, new_id, links
            )
            notifications.extend(sent)
            events.append(
                Event(
                    incident.id,
                    now,
                    "reminded",
                    AUTO,
                    f"{incident.owner}: acknowledged but unresolved",
                )
            )
            incident = replace(incident, last_reminded_at=now)
    return Escalation(incident, tuple(events), tuple(notifications), tuple(fired))


def on_resolved(
    config: Config,
    incident: Incident,
    notified: Iterable[Notification],
    now: datetime,
    new_id: Callable[[], str],
    links: Links,
) -> tuple[Notification, ...]:
    """A resolution notifies everyone who was notified of the incident, once per address."""
    seen: set[tuple[str, str, str]] = set()
    out: list[Notification] = []
    for earlier in notified:
        key = (earlier.channel, earlier.recipient, earlier.address)
        if earlier.message.purpose == "test" or key in seen:
            continue
        seen.add(key)
        name = _name(config, earlier.recipient)
        message = build_message(config, incident, "resolved", 0, name, now, links)
        out.append(
            _notification(
                new_id(),
                incident,
                earlier.channel,
                earlier.recipient,
                earlier.address,
                message,
                now,
            )
        )
    return tuple(out)


def test_notifications(
    config: Config, owner_key: str, now: datetime, new_id: Callable[[], str]
) -> tuple[Notification, ...]:
    """One test message to an owner through every channel they have a contact on, naming
    the systems they are accountable for: proof that a page would reach them."""
    owner = config.owners[owner_key]
    owned = sorted(name for name, system in config.systems.items() if system.owner == owner_key)
    message = Message(
        purpose="test",
        incident_id=f"test-{new_id()}",
        system=", ".join(owned) or "(no system yet)",
        owner=owner_key,
        owner_name=owner.name,
        kind="drift",
        rule="test",
        state="open",
        layers=(),
        summary=f"Test notification for {owner.name}: driftowner can reach you here.",
        evidence=(),
        opened_at=now,
        age_seconds=0.0,
        step=0,
        recipient_name=owner.name,
    )
    out = []
    for channel in config.channels:
        address = owner_contact(config, owner_key, channel)
        if address is not None:
            out.append(
                Notification(
                    id=new_id(),
                    incident_id=message.incident_id,
                    channel=channel,
                    recipient=owner_key,
                    address=address,
                    message=message,
                    created_at=now,
                )
            )
    return tuple(out)


def build_message(
    config: Config,
    incident: Incident,
    purpose: Purpose,
    step: int,
    recipient_name: str,
    now: datetime,
    links: Links,
) -> Message:
    """What every notification says: system, accountable owner, layers, evidence, age, step,
    links."""
    owner = config.owners.get(incident.owner)
    return Message(
        purpose=purpose,
        incident_id=incident.id,
        system=incident.system,
        owner=incident.owner,
        owner_name=owner.name if owner else incident.owner,
        kind=incident.kind,
        rule=incident.rule,
        state=incident.state,
        layers=incident.layers,
        summary=incident.summary,
        evidence=tuple(
            f"{f.signal} ({f.layer}): {f.status} — {f.reason}" for f in incident.evidence
        ),
        opened_at=incident.opened_at,
        age_seconds=incident.age(now).total_seconds(),
        step=step,
        recipient_name=recipient_name,
        runbook=incident.runbook,
        incident_url=links(incident.id, "view"),
        ack_url=links(incident.id, "ack") if incident.state == "open" else None,
        resolve_url=links(incident.id, "resolve") if incident.state != "resolved" else None,
    )


def _to_owners(
    config: Config,
    incident: Incident,
    recipients: Iterable[str],
    via: Iterable[str],
    purpose: Purpose,
    step: int,
    now: datetime,
    new_id: Callable[[], str],
    links: Links,
) -> list[Notification]:
    out: list[Notification] = []
    for recipient in recipients:
        message = build_message(
            config, incident, purpose, step, _name(config, recipient), now, links
        )
        for channel in via:
            address = owner_contact(config, recipient, channel)
            if address is not None:
                out.append(
                    _notification(new_id(), incident, channel, recipient, address, message, now)
                )
    return out


def _to_contributors(
    config: Config,
    incident: Incident,
    via: Iterable[str],
    purpose: Purpose,
    now: datetime,
    new_id: Callable[[], str],
    links: Links,
) -> list[Notification]:
    system = config.systems.get(incident.system)
    if system is None:
        return []
    teams = sorted(
        {system.contributors[layer] for layer in incident.layers if layer in system.contributors}
    )
    out: list[Notification] = []
    for team in teams:
        message = build_message(config, incident, purpose, 0, team, now, links)
        for channel in via:
            address = team_contact(config, team, channel)
            if address:
                out.append(_notification(new_id(), incident, channel, team, address, message, now))
    return out


def _notification(
    notification_id: str,
    incident: Incident,
    channel: str,
    recipient: str,
    address: str,
    message: Message,
    now: datetime,
) -> Notification:
    return Notification(
        id=notification_id,
        incident_id=incident.id,
        channel=channel,
        recipient=recipient,
        address=address,
        message=message,
        created_at=now,
        next_attempt_at=now,
    )


def _name(config: Config, key: str) -> str:
    owner = config.owners.get(key)
    return owner.name if owner else key
