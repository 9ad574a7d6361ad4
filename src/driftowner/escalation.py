"""Escalation chain semantics: an incident, its snapshotted chain and ``now`` in; the steps due,
the notifications they owe and the events that record them out. Pure.

The escalation stage alone decides who is paged, so the paging policy lives here too: what
holds an incident's pages (a silence, a maintenance window, an open incident upstream that it
probably follows from), what a hold's end restarts, and what an SLO breach tells whom. What
may hold pages comes in as a typed :class:`Paging`, read by the cycle.

Timers are derived from the incident's stored timestamps (``escalation_epoch``,
``escalation_steps_done``, ``acknowledged_at``, ``last_reminded_at``) at every tick, so a
restart resumes exactly where escalation stood.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from driftowner.config import (
    WEEKDAYS,
    Config,
    MaintenanceConfig,
    format_duration,
    owner_contact,
    round_length,
    team_contact,
)
from driftowner.model import (
    AUTO,
    ChainSnapshot,
    ChainStep,
    Event,
    EventKind,
    Evidence,
    Incident,
    Message,
    Notification,
    Purpose,
    Silence,
    Slo,
    SloBreach,
    Upstream,
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


# --- the paging policy: holds and SLO breaches ---------------------------------------------


MAINTENANCE = "config"
"""Who a maintenance window's silence is by: the config that declares it."""


@dataclass(frozen=True, slots=True)
class Paging:
    """What may hold pages at a tick, as the cycle read it: the silences holding now (kept
    ones and maintenance windows), and every unresolved incident by id (to know whether an
    incident's probable cause upstream is still open)."""

    silences: tuple[Silence, ...] = ()
    unresolved: Mapping[str, Incident] = field(default_factory=dict)


NO_HOLDS = Paging()


@dataclass(frozen=True, slots=True)
class Hold:
    """Why an incident pages nobody now: a silence (``ref`` its id) or an open incident
    upstream (``ref`` that incident's id, ``upstream`` its facts). ``detail`` is the event
    log's account of it."""

    kind: Literal["silence", "upstream"]
    ref: str
    detail: str
    upstream: Upstream | None = None


def hold(config: Config, incident: Incident, paging: Paging, now: datetime) -> Hold | None:
    """What holds an incident's pages at ``now``, or None. A silence that covers its system
    (by name, by the system's owner or by its labels) comes first; then the incident it was
    linked to at opening (``caused_by``), while that stays unresolved."""
    system = config.systems.get(incident.system)
    owner = system.owner if system is not None else incident.owner
    labels = system.labels if system is not None else {}
    for silence in paging.silences:
        if silence.active(now) and silence.covers(incident.system, owner, labels):
            until = silence.ends_at if silence.expired_at is None else silence.expired_at
            return Hold(
                "silence",
                silence.id,
                f"{silence.id} ({silence.matcher}, by {silence.by}: {silence.reason}) holds the "
                f"pages until {until.isoformat(timespec='seconds')}",
            )
    upstream = paging.unresolved.get(incident.caused_by or "")
    if upstream is not None:
        return Hold(
            "upstream",
            upstream.id,
            f"probably caused by {upstream.id} on {upstream.system} (owner {upstream.owner}), "
            f"still {upstream.state}: {incident.owner} is informed, not paged; paging resumes "
            "if it resolves while this incident still holds",
            Upstream(upstream.id, upstream.system, upstream.owner, upstream.state),
        )
    return None


def _held(
    config: Config,
    incident: Incident,
    reason: Hold,
    now: datetime,
    new_id: Callable[[], str],
    links: Links,
) -> Escalation:
    """A tick of an incident whose pages are held: the hold is recorded when it begins (a
    ``silenced`` or ``inhibited`` event naming it), the owner of an incident held by its
    upstream is informed once, SLO breaches are recorded without pages; no step fires."""
    events: list[Event] = []
    notifications: list[Notification] = []
    if incident.held_by != reason.ref:
        kind: EventKind = "silenced" if reason.kind == "silence" else "inhibited"
        events.append(Event(incident.id, now, kind, AUTO, reason.detail))
        if reason.upstream is not None:
            notifications.extend(
                _informed_owner(config, incident, reason.upstream, now, new_id, links)
            )
        incident = replace(incident, held_by=reason.ref)
    return _with_breaches(
        config,
        Escalation(incident, tuple(events), tuple(notifications)),
        now,
        new_id,
        links,
        held_by=reason.ref,
    )


def _with_breaches(
    config: Config,
    escalation: Escalation,
    now: datetime,
    new_id: Callable[[], str],
    links: Links,
    held_by: str | None = None,
) -> Escalation:
    """A tick's escalation followed by the SLO breaches its incident reached by ``now``
    (:func:`slo_breaches`): their events and notifications come after the tick's."""
    breach = slo_breaches(config, escalation.incident, now, new_id, links, held_by=held_by)
    return replace(
        escalation,
        incident=breach.incident,
        events=(*escalation.events, *breach.events),
        notifications=(*escalation.notifications, *breach.notifications),
    )


def _informed_owner(
    config: Config,
    incident: Incident,
    upstream: Upstream,
    now: datetime,
    new_id: Callable[[], str],
    links: Links,
) -> list[Notification]:
    """The owner told of an incident without being paged: no acknowledge / resolve links;
    the message names the ``upstream`` incident that holds its pages."""
    told = _to_owners(
        config,
        incident,
        (incident.owner,),
        incident.chain.steps[0].via,
        "informed",
        0,
        now,
        new_id,
        links,
        paged=False,
    )
    return [replace(n, message=replace(n.message, held_by=upstream)) for n in told]


def _released(incident: Incident, now: datetime) -> tuple[Incident, Event]:
    """The hold on an incident ended: escalation restarts from step one (the owner first),
    timed from now, as after an expired ack. An acknowledged incident just stays so."""
    what = (
        f"upstream incident {incident.held_by} resolved while this one still holds"
        if incident.held_by == incident.caused_by
        else f"silence {incident.held_by} ended"
    )
    restarts = incident.state == "open"
    detail = what + ("; escalation restarts from step 1" if restarts else "")
    released = replace(incident, held_by=None)
    if restarts:
        released = replace(released, escalation_epoch=now, escalation_steps_done=0)
    return released, Event(incident.id, now, "released", AUTO, detail)


def slo_breaches(
    config: Config,
    incident: Incident,
    now: datetime,
    new_id: Callable[[], str],
    links: Links,
    held_by: str | None = None,
) -> Escalation:
    """The SLO breaches an incident reached by ``now`` and has not recorded yet: an
    ``slo_breached`` event each, once per SLO per incident. ``ack_within`` is breached when it
    passes unacknowledged (or the first ack came later: recorded, nobody chased);
    ``resolve_within`` when it passes unresolved. Each breach while unheld tells the owner and
    the chain's next step's recipients (or the system's or chain's ``on_breach``)."""
    events: list[Event] = []
    notifications: list[Notification] = []
    breached: list[Slo] = list(incident.slo_breached)
    slos: tuple[tuple[Slo, timedelta | None], ...] = (
        ("ack", incident.ack_within),
        ("resolve", incident.resolve_within),
    )
    for slo, within in slos:
        if within is None or slo in breached:
            continue
        deadline = incident.opened_at + within
        acked = incident.first_acknowledged_at
        if slo == "ack" and acked is not None and acked <= deadline:
            continue
        if now < deadline:
            continue
        breached.append(slo)
        name = f"{slo}_within {format_duration(within)}"
        if slo == "ack" and acked is not None:
            waited = format_duration(acked - incident.opened_at)
            detail = f"{name} passed: first acknowledged after {waited}"
            events.append(Event(incident.id, now, "slo_breached", AUTO, detail))
            continue
        state = "unacknowledged" if slo == "ack" else "unresolved"
        breach = SloBreach(slo, within.total_seconds(), (now - deadline).total_seconds())
        told = (
            []
            if held_by is not None
            else _breach_pages(config, incident, breach, now, new_id, links)
        )
        who = ", ".join(sorted({n.recipient for n in told}))
        detail = f"{name} passed {state}: " + (
            f"pages held by {held_by}" if held_by is not None else f"told {who or 'nobody'}"
        )
        events.append(Event(incident.id, now, "slo_breached", AUTO, detail))
        notifications.extend(told)
    return Escalation(
        replace(incident, slo_breached=tuple(breached)), tuple(events), tuple(notifications)
    )


def _breach_pages(
    config: Config,
    incident: Incident,
    breach: SloBreach,
    now: datetime,
    new_id: Callable[[], str],
    links: Links,
) -> list[Notification]:
    """One page per recipient and channel: the owner through the first step's channels, the
    chain's next step's recipients through its channels (or ``on_breach`` through every
    channel the chain uses). An ack breach reads as an escalation, a resolve breach as a
    reminder; each message carries the ``breach``."""
    chain = incident.chain
    steps = chain.steps
    targets: list[tuple[str, tuple[str, ...]]] = [(incident.owner, steps[0].via)]
    system = config.systems.get(incident.system)
    configured = config.escalation_chains.get(chain.name)
    on_breach = (system.on_breach if system is not None else None) or (
        configured.on_breach if configured is not None else None
    )
    if on_breach:
        every_via = tuple(dict.fromkeys(c for step in steps for c in step.via))
        targets += [(who, every_via) for who in on_breach]
    else:
        done = incident.escalation_steps_done
        following = steps[done % len(steps)] if done < len(steps) * rounds(chain) else steps[-1]
        targets += [(who, following.via) for who in following.recipients]
    purpose: Purpose = "escalated" if breach.slo == "ack" else "reminder"
    out: list[Notification] = []
    seen: set[tuple[str, str]] = set()
    for recipient, via in targets:
        fresh = tuple(c for c in via if (recipient, c) not in seen)
        seen.update((recipient, c) for c in fresh)
        told = _to_owners(config, incident, (recipient,), fresh, purpose, 0, now, new_id, links)
        out.extend(replace(n, message=replace(n.message, breach=breach)) for n in told)
    return out


def maintenance_silences(config: Config, now: datetime) -> tuple[Silence, ...]:
    """The silences of every maintenance window holding at ``now``, one per system named.
    A window's silence id is ``maintenance-<index>``; it starts and ends with the window."""
    held: list[Silence] = []
    for index, window in enumerate(config.maintenance):
        start = window_start(window, now)
        if start is None:
            continue
        end = start + window.for_
        for system in window.systems:
            held.append(
                Silence(
                    id=f"maintenance-{index}",
                    starts_at=start,
                    ends_at=end,
                    reason=f"{window.reason} ({window.every}, {format_duration(window.for_)})",
                    by=MAINTENANCE,
                    via="auto",
                    system=system,
                )
            )
    return tuple(held)


def window_start(window: MaintenanceConfig, now: datetime) -> datetime | None:
    """When the occurrence of ``window`` that holds at ``now`` began, or None when none
    does. Wall-clock times are in the window's time zone (a daylight-saving change moves the
    window with the local clock)."""
    zone = ZoneInfo(window.timezone)
    local = now.astimezone(zone)
    hour, minute = (int(part) for part in window.at.split(":"))
    period = 7 if window.every == "weekly" else 1
    # The latest start at or before now is at most one period back.
    for back in range(period + 1):
        day = (local - timedelta(days=back)).date()
        if window.day is not None and WEEKDAYS[day.weekday()] != window.day:
            continue
        start = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
        start_utc = start.astimezone(now.tzinfo)
        if start_utc <= now:
            return start_utc if now < start_utc + window.for_ else None
    return None


# --- the chain --------------------------------------------------------------------------------


def tick(
    config: Config,
    incident: Incident,
    now: datetime,
    new_id: Callable[[], str],
    links: Links,
    paging: Paging = NO_HOLDS,
) -> Escalation:
    """Everything escalation owes an unresolved incident at ``now``.

    A hold (see :func:`hold`) stops every page (:func:`_held`); when it ends, escalation
    restarts from step one. An expired ack reopens escalation from step one; while open, the
    due steps fire (several due at once, after downtime, are collapsed: see
    :func:`_fire_due_steps`); while acknowledged, reminders go to the owner every
    ``remind_every``. SLO breaches are recorded and told (:func:`slo_breaches`).
    """
    if incident.state == "resolved":
        return Escalation(incident)
    reason = hold(config, incident, paging, now)
    if reason is not None:
        return _held(config, incident, reason, now, new_id, links)
    events: list[Event] = []
    notifications: list[Notification] = []
    if incident.held_by is not None:
        incident, released = _released(incident, now)
        events.append(released)
    fired: tuple[int, ...] = ()
    collapsed: tuple[int, ...] = ()
    expired = _expired_ack(incident, now)
    if expired is not None:
        incident, unacknowledged = expired
        events.append(unacknowledged)
    if incident.state == "open":
        steps = _fire_due_steps(config, incident, now, new_id, links)
        incident = steps.incident
        events.extend(steps.events)
        notifications.extend(steps.notifications)
        fired, collapsed = steps.steps_fired, steps.steps_collapsed
    elif incident.state == "acknowledged":
        reminder = _reminder(config, incident, now, new_id, links)
        incident = reminder.incident
        events.extend(reminder.events)
        notifications.extend(reminder.notifications)
    return _with_breaches(
        config,
        Escalation(incident, tuple(events), tuple(notifications), fired, collapsed),
        now,
        new_id,
        links,
    )


def _expired_ack(incident: Incident, now: datetime) -> tuple[Incident, Event] | None:
    """An acknowledgement older than the chain's ``ack_timeout`` expires: the incident is
    open again and escalation restarts from step one, timed from now. None while it holds."""
    timeout = incident.chain.ack_timeout
    if (
        incident.state != "acknowledged"
        or timeout is None
        or incident.acknowledged_at is None
        or now < incident.acknowledged_at + timeout
    ):
        return None
    event = Event(
        incident.id,
        now,
        "unacknowledged",
        AUTO,
        f"ack by {incident.acknowledged_by} expired; escalation resumes",
    )
    reopened = replace(
        incident,
        state="open",
        acknowledged_at=None,
        acknowledged_by=None,
        escalation_epoch=now,
        escalation_steps_done=0,
    )
    return reopened, event


def _reminder(
    config: Config,
    incident: Incident,
    now: datetime,
    new_id: Callable[[], str],
    links: Links,
) -> Escalation:
    """An acknowledged incident's owner is reminded through the first step's channels every
    ``remind_every`` (since the last reminder, else the ack); nothing when none is due."""
    every = incident.chain.remind_every
    since = incident.last_reminded_at or incident.acknowledged_at or incident.opened_at
    if every is None or now < since + every:
        return Escalation(incident)
    first = incident.chain.steps[0]
    sent = _to_owners(
        config, incident, (incident.owner,), first.via, "reminder", 0, now, new_id, links
    )
    event = Event(
        incident.id, now, "reminded", AUTO, f"{incident.owner}: acknowledged but unresolved"
    )
    return Escalation(replace(incident, last_reminded_at=now), (event,), tuple(sent))


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


def escalated_step(outcome: Escalation) -> int | None:
    """The step (1-based) escalation stands at after a tick that stepped up: fired a step
    after the first of the current epoch (step 2 or later, or a later round of the chain),
    or None when it did not (nothing due, a reminder, an SLO breach alone, or a step 1:
    the opening or reopening page, and the restart of the chain after a reassignment, an
    expired ack or the end of a hold). Only a step up is told to the conversations the
    incident started (see :func:`tell_escalation`): a reassignment is told by its own
    follow-up, and an expired ack or a released hold pages step 1's recipients again, so
    "nobody has acknowledged" would be false news to them. So a tick that steps nothing up
    costs the cycle no read of who was notified."""
    if not outcome.steps_fired or outcome.incident.escalation_steps_done < 2:
        return None
    return standing_step(outcome.incident)


def tell_escalation(
    config: Config,
    outcome: Escalation,
    notified: Iterable[Notification],
    now: datetime,
    new_id: Callable[[], str],
    links: Links,
) -> Escalation:
    """A tick's ``outcome`` with the escalation it fired told to every conversation the
    incident started before: ``notified`` is who was notified of it (the store's record, read
    before this tick's notifications are written).

    Each earlier conversation gets one ``stepped_up`` follow-up (see :func:`follow_ups`: once
    per channel, recipient and address; informed teams and test messages aside) naming the
    step escalation stands at now, the latest when several fired at once; so a Slack thread
    gets a reply and its root shows the step, a mail thread a reply. A conversation this tick
    pages (same channel and address) gets its page instead. An outcome that did not step up
    (:func:`escalated_step`: a step 1 is never told as one) is returned as it is.
    """
    step = escalated_step(outcome)
    if step is None:
        return outcome
    paged = {(n.channel, n.address) for n in outcome.notifications}
    earlier = [n for n in notified if (n.channel, n.address) not in paged]
    told = follow_ups(
        config, outcome.incident, earlier, "stepped_up", now, new_id, links, actor=AUTO, step=step
    )
    return replace(outcome, notifications=(*outcome.notifications, *told))


def standing_step(incident: Incident) -> int:
    """The step (1-based, within the chain) escalation stands at: the last step fired in the
    current round, or 0 before any fired. A follow-up naming it keeps a thread's root showing
    the step."""
    done = incident.escalation_steps_done
    return 0 if done < 1 or not incident.chain.steps else (done - 1) % len(incident.chain.steps) + 1


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
    step: int = 0,
) -> tuple[Notification, ...]:
    """What happened to an incident (``acknowledged``, ``reassigned``, ``stepped_up``,
    ``noted``, ``resolved``), told to every conversation it started: once per channel,
    recipient and address that was notified of it (test messages aside), so each Slack thread
    and mail thread shows it. Contributor teams, informed only at opening and resolution, hear
    only of the resolution (not of a note: an open incident's card would offer them actions
    they are not paged for); a person paged gets the links still useful (resolve, after an
    acknowledgement). ``step`` is the escalation step
    the messages name (0: none; see :func:`standing_step`)."""
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
        message = build_message(config, incident, purpose, step, name, now, links, paged=paged)
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
        system=", ".join(owned),
        owner=owner_key,
        owner_name=owner.name,
        kind="drift",
        rule="test",
        state="open",
        layers=(),
        # No prose here: render says what a test message is (render.summary).
        summary="",
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
                _outbound(new_id(), message.incident_id, channel, owner_key, address, message, now)
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
    system = config.systems.get(incident.system)
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
        evidence=tuple(Evidence.of(f) for f in incident.evidence),
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
        upstreams=tuple(system.depends_on) if system is not None else (),
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
    *,
    paged: bool = True,
) -> list[Notification]:
    """A notification per recipient and channel they have a contact on. A recipient
    ``paged`` gets the acknowledge / resolve links, acting as them; otherwise only informed."""
    out: list[Notification] = []
    for recipient in recipients:
        name = _name(config, recipient)
        acting = recipient if paged else None
        message = build_message(config, incident, purpose, step, name, now, links, paged=acting)
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
    return _outbound(notification_id, incident.id, channel, recipient, address, message, now)


def _outbound(
    notification_id: str,
    incident_id: str,
    channel: str,
    recipient: str,
    address: str,
    message: Message,
    now: datetime,
) -> Notification:
    """The one place a notification is made: due at once, not yet attempted."""
    return Notification(
        id=notification_id,
        incident_id=incident_id,
        channel=channel,
        recipient=recipient,
        address=address,
        message=message,
        created_at=now,
        next_attempt_at=now,
    )


PAGES = ("opened", "reopened", "escalated")
"""Purposes of the messages that page a person (a fallback takes over only these)."""


def fallback_of(
    config: Config, notification: Notification, now: datetime, new_id: Callable[[], str]
) -> Notification | None:
    """The page that takes over when ``notification`` gives up, or None.

    The step that made the page (its message's step in the system's chain, as configured
    now) may name a fallback for the page's channel (``via: [{channel: slack, fallback:
    email}]``); the same person is then paged, with the same message, through the fallback,
    at once.
    """
    message = notification.message
    system = config.systems.get(message.system)
    if message.purpose not in PAGES or message.step < 1 or system is None:
        return None
    chain = config.escalation_chains.get(system.escalation)
    if chain is None:
        return None
    step = chain.steps[(message.step - 1) % len(chain.steps)]
    channel = step.fallbacks.get(notification.channel)
    address = None if channel is None else owner_contact(config, notification.recipient, channel)
    if channel is None or address is None:
        return None
    return _outbound(
        new_id(), notification.incident_id, channel, notification.recipient, address, message, now
    )


def _name(config: Config, key: str) -> str:
    owner = config.owners.get(key)
    return owner.name if owner else key
