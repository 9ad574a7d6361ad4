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
from typing import Protocol

from driftowner.config import Config, owner_contact, round_length, team_contact
from driftowner.model import (
    AUTO,
    ChainSnapshot,
    ChainStep,
    Event,
    EventKind,
    Incident,
    Message,
    Notification,
    Purpose,
)


class Links(Protocol):
    """(incident id, action ``ack`` | ``resolve`` | ``view``, recipient) → URL, or None when
    not available. An ``ack`` / ``resolve`` link acts as its recipient, the owner key it was
    made for; without a recipient there is no such link."""

    def __call__(
        self, incident_id: str, action: str, recipient: str | None = None
    ) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Escalation:
    """The incident after a tick, with the events and notifications the tick owes."""

    incident: Incident
    events: tuple[Event, ...] = ()
    notifications: tuple[Notification, ...] = ()
    steps_fired: tuple[int, ...] = ()
    """1-based step numbers passed in this tick, in order, paged or collapsed (for
    ``driftowner_escalations_total``, which counts the steps an incident reached)."""
    steps_collapsed: tuple[int, ...] = ()
    """The 1-based step numbers among ``steps_fired`` that paged nobody because every page
    they owed was folded into a later step's page to the same recipient and channel."""


ORDER_GAP = timedelta(microseconds=1)
"""How far apart the order keys (``created_at``) of consecutive steps fired in one tick are:
the outbox leases by ``created_at``, so a later step's pages come after an earlier step's."""


def cycle_length(chain: ChainSnapshot) -> timedelta:
    """Time from the start of one round of the chain to the start of the next (repeat): the
    last step's ``after`` plus the gap before the last step."""
    return round_length([step.after for step in chain.steps])


def rounds(chain: ChainSnapshot) -> int:
    """How many times the chain runs: ``repeat + 1``, or once when it has no cycle (a single
    step at once)."""
    return chain.repeat + 1 if cycle_length(chain) > timedelta(0) else 1


def step_due_at(chain: ChainSnapshot, epoch: datetime, k: int) -> datetime | None:
    """When the ``k``-th step (0-based, counting repeats) falls due, or None past the chain."""
    n = len(chain.steps)
    if k >= n * rounds(chain):
        return None
    cycle, index = divmod(k, n)
    return epoch + cycle * cycle_length(chain) + chain.steps[index].after


def tick(
    config: Config,
    incident: Incident,
    now: datetime,
    new_id: Callable[[], str],
    links: Links,
) -> Escalation:
    """Everything escalation owes an unresolved incident at ``now``.

    An expired ack reopens escalation from step one; while open, the due steps fire (several
    due at once, after downtime, are collapsed: see :func:`_fire_due_steps`); while
    acknowledged, reminders go to the owner every ``remind_every``.
    """
    if incident.state == "resolved":
        return Escalation(incident)
    events: list[Event] = []
    notifications: list[Notification] = []
    fired: tuple[int, ...] = ()
    collapsed: tuple[int, ...] = ()
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
        steps = _fire_due_steps(config, incident, now, new_id, links)
        incident = steps.incident
        events.extend(steps.events)
        notifications.extend(steps.notifications)
        fired, collapsed = steps.steps_fired, steps.steps_collapsed
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
    return Escalation(incident, tuple(events), tuple(notifications), fired, collapsed)


Page = tuple[str, str]
"""(recipient, channel): who is paged, and how; the unit a collapse folds pages by."""


def _fire_due_steps(
    config: Config,
    incident: Incident,
    now: datetime,
    new_id: Callable[[], str],
    links: Links,
) -> Escalation:
    """Fire every step of an open incident that fell due since the last tick, in step order.

    The usual tick finds one step due and fires it. A tick that finds several due at once
    (the daemon was down, or the tick late) collapses them: each recipient, per channel, owed
    one or more pages gets one, for the latest step they were owed (the highest step reached,
    and the age and step that tell the truth now). A step whose pages were all folded into
    later ones pages nobody; one ``escalated`` event names those steps, and a step that paged
    someone names the pages it folded. Every due step still counts as done, so none fires
    again. Each paging step's notifications get an order key (``created_at``) one
    :data:`ORDER_GAP` after the previous step's, ending at ``now``, so the outbox leases them
    in step order.
    """
    chain = incident.chain
    epoch = incident.escalation_epoch or incident.opened_at
    done = incident.escalation_steps_done
    owed = range(done, _steps_due_by(chain, epoch, done, now))
    owed_pages = {k: _pages_of(config, chain.steps[k % len(chain.steps)]) for k in owed}
    latest = {page: k for k in owed for page in owed_pages[k]}
    paged: list[tuple[list[Notification], EventKind, str]] = []
    collapsed: list[int] = []
    for k in owed:
        step_number = k % len(chain.steps) + 1
        purpose = _call_purpose(incident, epoch, k)
        kept = [page for page in owed_pages[k] if latest[page] == k]
        folded = [page for page in owed_pages[k] if latest[page] != k]
        sent = [
            notification
            for recipient, channel in kept
            for notification in _to_owners(
                config,
                incident,
                (recipient,),
                (channel,),
                purpose,
                step_number,
                now,
                new_id,
                links,
            )
        ]
        if purpose != "escalated":
            sent += _to_contributors(
                config, incident, chain.steps[0].via, "informed", now, new_id, links
            )
        if folded and not sent:
            collapsed.append(k)
            continue
        who = ", ".join(sorted({f"{n.recipient} via {n.channel}" for n in sent})) or "nobody"
        detail = f"step {step_number}: {who}"
        if folded:
            detail += f"; folded into a later step: {_who(folded)}"
        paged.append((sent, "escalated" if purpose == "escalated" else "notified", detail))
    events = [_collapse_event(incident, chain, collapsed, len(owed), now)] if collapsed else []
    notifications: list[Notification] = []
    for index, (sent, kind, detail) in enumerate(paged):
        events.append(Event(incident.id, now, kind, AUTO, detail))
        key = now - (len(paged) - 1 - index) * ORDER_GAP
        notifications.extend(replace(n, created_at=key, next_attempt_at=key) for n in sent)
    return Escalation(
        replace(incident, escalation_steps_done=owed.stop, escalation_epoch=epoch),
        tuple(events),
        tuple(notifications),
        tuple(k % len(chain.steps) + 1 for k in owed),
        tuple(k % len(chain.steps) + 1 for k in collapsed),
    )


def _call_purpose(incident: Incident, epoch: datetime, k: int) -> Purpose:
    """``opened`` or ``reopened`` for the first call of a life (the opening, or a
    reopening); ``escalated`` for every later step, and for an expired ack's restart."""
    if k != 0 or epoch not in (incident.opened_at, incident.reopened_at):
        return "escalated"
    return "reopened" if epoch == incident.reopened_at else "opened"


def _steps_due_by(chain: ChainSnapshot, epoch: datetime, done: int, now: datetime) -> int:
    """How many steps (counting repeats) have fallen due by ``now``, ``done`` of them
    already fired."""
    k = done
    while (due := step_due_at(chain, epoch, k)) is not None and due <= now:
        k += 1
    return k


def _pages_of(config: Config, step: ChainStep) -> list[Page]:
    """The pages a step owes: each recipient on each of the step's channels they have a
    contact for, in the order they are sent."""
    return [
        (recipient, channel)
        for recipient in step.recipients
        for channel in step.via
        if owner_contact(config, recipient, channel) is not None
    ]


def _who(pages: Iterable[Page]) -> str:
    return ", ".join(sorted({f"{recipient} via {channel}" for recipient, channel in pages}))


def _collapse_event(
    incident: Incident, chain: ChainSnapshot, collapsed: list[int], owed: int, now: datetime
) -> Event:
    """The ``escalated`` event naming the steps (0-based, counting repeats) that paged nobody
    because each of their pages was folded into a later step's."""
    return Event(
        incident.id,
        now,
        "escalated",
        AUTO,
        f"{_step_labels(chain, collapsed)} collapsed: {owed} steps fell due at once (downtime "
        "or a late tick); each recipient is paged once, for the latest step they were owed",
    )


def _step_labels(chain: ChainSnapshot, ks: Iterable[int]) -> str:
    """Steps (0-based, counting repeats) as a reader counts them: ``steps 2-3``, or
    ``round 1 steps 2-3, round 2 step 1`` when the chain repeats."""
    n = len(chain.steps)
    by_round: dict[int, list[int]] = {}
    for k in ks:
        by_round.setdefault(k // n, []).append(k % n + 1)
    repeats = rounds(chain) > 1
    parts = []
    for round_index, numbers in by_round.items():
        noun = "step" if len(numbers) == 1 else "steps"
        where = f"round {round_index + 1} " if repeats else ""
        parts.append(f"{where}{noun} {_runs(numbers)}")
    return ", ".join(parts)


def _runs(numbers: list[int]) -> str:
    """Ascending numbers as runs: ``[1, 2, 3, 5]`` → ``1-3, 5``."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def on_resolved(
    config: Config,
    incident: Incident,
    notified: Iterable[Notification],
    now: datetime,
    new_id: Callable[[], str],
    links: Links,
    note: str = "",
) -> tuple[Notification, ...]:
    """A resolution notifies everyone who was notified of the incident, once per address."""
    return follow_ups(
        config, incident, notified, "resolved", now, new_id, links, note, incident.resolved_by
    )


def follow_ups(
    config: Config,
    incident: Incident,
    notified: Iterable[Notification],
    purpose: Purpose,
    now: datetime,
    new_id: Callable[[], str],
    links: Links,
    note: str = "",
    actor: str | None = None,
) -> tuple[Notification, ...]:
    """What happened to an incident (``acknowledged``, ``reassigned``, ``resolved``), told to
    every conversation it started: once per channel, recipient and address that was notified
    of it (test messages aside), so each Slack thread and mail thread shows it. Contributor
    teams, informed only at opening and resolution, hear only of the resolution; a person
    paged gets the links still useful (resolve, after an acknowledgement)."""
    seen: set[tuple[str, str, str]] = set()
    out: list[Notification] = []
    for earlier in notified:
        key = (earlier.channel, earlier.recipient, earlier.address)
        informed = earlier.message.purpose == "informed"
        if earlier.message.purpose == "test" or key in seen:
            continue
        if informed and purpose != "resolved":
            continue
        seen.add(key)
        name = _name(config, earlier.recipient)
        paged = None if informed or purpose == "resolved" else earlier.recipient
        message = build_message(config, incident, purpose, 0, name, now, links, paged=paged)
        message = replace(message, note=note, actor=actor or "")
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
    *,
    paged: str | None = None,
) -> Message:
    """What every notification says: system, accountable owner, layers, evidence, age, step,
    links.

    Only a message to ``paged``, the owner key of a person paged for the incident, carries
    acknowledge / resolve links, and they act as that person; anyone else (a contributor team
    being informed) gets the incident's view link only.
    """
    owner = config.owners.get(incident.owner)
    acts = paged is not None
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
        ack_url=links(incident.id, "ack", paged) if acts and incident.state == "open" else None,
        resolve_url=links(incident.id, "resolve", paged)
        if acts and incident.state != "resolved"
        else None,
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
            config, incident, purpose, step, _name(config, recipient), now, links, paged=recipient
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
        # Informed, never paged: no acknowledge / resolve links.
        message = build_message(config, incident, purpose, 0, team, now, links, paged=None)
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
