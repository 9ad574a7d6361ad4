"""Frozen value types that move between the stages: samples, findings, conditions, incidents,
events, notifications and deliveries. No I/O, no behaviour beyond small derived properties."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Layer = Literal["data", "model", "engineering", "business"]
LAYERS: tuple[Layer, ...] = ("data", "model", "engineering", "business")
BadDirection = Literal["down", "up", "both"]
Status = Literal["ok", "degraded", "no_data"]
STATUSES: tuple[Status, ...] = ("ok", "degraded", "no_data")
Kind = Literal["drift", "disagreement", "stale"]
State = Literal["open", "acknowledged", "resolved"]
STATES: tuple[State, ...] = ("open", "acknowledged", "resolved")
EventKind = Literal[
    "opened",
    "notified",
    "escalated",
    "acknowledged",
    "unacknowledged",
    "reassigned",
    "condition_cleared",
    "condition_returned",
    "reminded",
    "resolved",
    "reopened",
    "note",
    "accepted",
    "slo_breached",
    "silenced",
    "inhibited",
    "released",
]
"""``slo_breached``: ``ack_within`` or ``resolve_within`` passed (once per SLO per incident);
``silenced``: a silence or maintenance window held the incident's pages; ``inhibited``: an
open incident upstream (``depends_on``) held them, the owner informed instead; ``released``:
the hold ended and escalation restarted from step one."""
Purpose = Literal[
    "opened",
    "reopened",
    "escalated",
    "reminder",
    "acknowledged",
    "reassigned",
    "stepped_up",
    "noted",
    "resolved",
    "informed",
    "test",
]
"""Why a notification is sent. ``acknowledged``, ``reassigned``, ``stepped_up`` (escalation
reached a later step, whose own recipients are paged with ``escalated``) and ``noted`` (a
person added a note to the incident) go only to the conversations an incident already started
(its Slack threads, mail threads, paging services), so that they show who acts on it now, how
far escalation went and what was said."""

AUTO = "auto"
"""The actor that stands for driftowner itself (auto-resolve, escalation)."""
Via = Literal["api", "cli", "link", "slack", "auto"]
"""Through what an action came: the HTTP API, the command line, a signed link, a Slack button,
or driftowner itself."""
VIAS: tuple[Via, ...] = ("api", "cli", "link", "slack", "auto")
Slo = Literal["ack", "resolve"]
"""An incident SLO: ``ack_within`` or ``resolve_within``."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one series at one instant (UTC)."""

    at: datetime
    value: float


@dataclass(frozen=True, slots=True)
class SourceResult:
    """What a source returned for one query: samples oldest first, or why there are none.

    ``error`` is set when the query produced no usable answer (unreachable, timeout, HTTP error,
    ``status: error``, several series, only NaN/Inf): the operator's problem, never the owner's,
    so it never opens a stale incident. ``source_up`` is false only when the source itself did
    not answer properly (unreachable, timeout, 5xx, unparseable body); a bad query against a
    healthy source keeps it up. An empty ``samples`` with no error means the source answered
    but has no data for the query: that is what the stale rule watches.
    """

    samples: tuple[Sample, ...] = ()
    error: str | None = None
    error_reason: str | None = None
    """A short, bounded label for ``driftowner_source_errors_total{reason}``."""
    source_up: bool = True


Direction = Literal["up", "down"]


@dataclass(frozen=True, slots=True)
class Change:
    """A change a detector confirmed in a signal's level: a shift, a recovery, a further shift."""

    at: datetime
    """When the detector confirmed it."""
    direction: Direction
    before: float
    """The level before: the detector's reference (or the last value it judged otherwise)."""
    after: float
    """The level after: the value that confirmed it (or the new level's estimate)."""
    began_at: datetime | None = None
    """When the change began, as its detector estimates it (a chart: the start of the
    excursion it confirmed); None when only the confirmation is known (a verdict's flip)."""


@dataclass(frozen=True, slots=True)
class ReceivedAlert:
    """One episode of one alert as an Alertmanager webhook reported it to an alertmanager
    source: from ``starts_at`` until ``ends_at`` (None: no end known yet)."""

    fingerprint: str
    """Alertmanager's fingerprint of the alert's labels."""
    labels: tuple[tuple[str, str], ...]
    """The alert's labels, sorted by name."""
    starts_at: datetime
    ends_at: datetime | None
    """When the alert ends: a resolve's time, or the end a firing alert was given; None while
    it fires with no end known (Alertmanager sends firing alerts without one)."""
    resolved: bool
    """Alertmanager reported it resolved: final for this episode."""
    received_at: datetime
    """When a webhook last reported this episode."""

    def firing_at(self, at: datetime) -> bool:
        """Whether this episode fires at ``at`` (an end that passed counts as resolved, as
        Alertmanager counts it)."""
        return self.starts_at <= at and (self.ends_at is None or at < self.ends_at)


@dataclass(frozen=True, slots=True)
class Finding:
    """One signal's verdict at one evaluation, with the evidence behind it."""

    system: str
    signal: str
    layer: Layer
    status: Status
    at: datetime
    value: float | None = None
    reference: float | None = None
    statistic: float | None = None
    limit: float | None = None
    detector: str = ""
    reason: str = ""
    """Human-readable, one line: why this status (``0.71 < min 0.90``)."""
    source_up: bool = True
    source_error: bool = False
    """The query produced no usable answer (source down, bad query). With ``source_up`` false
    it is the operator's problem; with the source up and a broken-query ``error_reason`` it is
    the owner's (a stale condition, see :func:`driftowner.detect.rules.broken_query`)."""
    error_reason: str | None = None
    """The source's bounded reason for ``source_error`` (``multiple_series``, ``timeout``, ...);
    None when there was no error or the reader gave none."""
    changes: tuple[Change, ...] = ()
    """The changes this evaluation confirmed, oldest first (see :func:`driftowner.cycle.judge`):
    a chart's confirmed changes, or a flip of another detector's verdict."""
    began_at: datetime | None = None
    """When the change behind a change-point verdict is estimated to have begun (an incident's
    ``condition_began_at``); None for detectors that judge one instant."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """An owner resolved an incident with ``--accept``: its signals' new levels are normal,
    and their detectors re-learn their references from ``at``."""

    seq: int
    """The event's position in the store's log (the bank reads those after the last seen)."""
    system: str
    signals: tuple[str, ...]
    at: datetime


@dataclass(frozen=True, slots=True)
class Condition:
    """A rule that holds for one system right now: the would-be incident of a fingerprint."""

    system: str
    rule: str
    """``drift:<signal>``, ``disagreement:<name>`` or ``stale:<signal>``."""
    kind: Kind
    layers: tuple[Layer, ...]
    signals: tuple[str, ...]
    hold_for: timedelta
    resolve_after: timedelta
    evidence: tuple[Finding, ...]
    summary: str

    @property
    def fingerprint(self) -> tuple[str, str]:
        return (self.system, self.rule)


@dataclass(frozen=True, slots=True)
class Pending:
    """A condition seen but not yet held for its ``for`` duration (persisted across restarts)."""

    system: str
    rule: str
    since: datetime
    last_seen_at: datetime


@dataclass(frozen=True, slots=True)
class ChainStep:
    """One step of an escalation chain, resolved to recipients at snapshot time."""

    after: timedelta
    recipients: tuple[str, ...]
    """Owner keys (``alice``); the accountable owner's key for step one."""
    via: tuple[str, ...]
    """Channel names; empty means every channel the recipient has a contact for."""


@dataclass(frozen=True, slots=True)
class ChainSnapshot:
    """The escalation chain as it was when the incident opened; later config changes don't
    rewrite history."""

    name: str
    steps: tuple[ChainStep, ...]
    repeat: int = 0
    remind_every: timedelta | None = None
    ack_timeout: timedelta | None = None


@dataclass(frozen=True, slots=True)
class Incident:
    """One problem of one system. ``escalation_epoch`` is when the current round of escalation
    began (opening, or an expired ack); ``escalation_steps_done`` counts steps fired since."""

    id: str
    system: str
    owner: str
    kind: Kind
    rule: str
    layers: tuple[Layer, ...]
    signals: tuple[str, ...]
    state: State
    opened_at: datetime
    summary: str
    chain: ChainSnapshot
    evidence: tuple[Finding, ...] = ()
    condition_began_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    first_acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    cleared_at: datetime | None = None
    """Set while the condition is clear but the incident not yet auto-resolved."""
    resolve_after: timedelta = timedelta(0)
    escalation_epoch: datetime | None = None
    escalation_steps_done: int = 0
    last_reminded_at: datetime | None = None
    ack_within: timedelta | None = None
    resolve_within: timedelta | None = None
    runbook: str | None = None
    reopened_at: datetime | None = None
    """When the incident last reopened (its fingerprint fired within reopen_within)."""
    caused_by: str | None = None
    """The upstream incident (of a system this one ``depends_on``) that was open when this one
    opened: probably its cause. While it stays unresolved this incident's owner is informed,
    not paged."""
    held_by: str | None = None
    """What holds this incident's pages now: a silence's id, or the upstream incident's id;
    None when nothing does. Set and cleared by the escalation stage."""
    slo_breached: tuple[Slo, ...] = ()
    """The SLOs (``ack``, ``resolve``) whose breach was already recorded and told."""
    version: int = 0
    """Optimistic-lock counter: a write based on a stale read is refused, never merged."""

    @property
    def fingerprint(self) -> tuple[str, str]:
        return (self.system, self.rule)

    @property
    def unresolved(self) -> bool:
        return self.state != "resolved"

    @property
    def time_to_acknowledge(self) -> timedelta | None:
        if self.first_acknowledged_at is None:
            return None
        return self.first_acknowledged_at - self.opened_at

    @property
    def time_to_resolve(self) -> timedelta | None:
        if self.resolved_at is None:
            return None
        return self.resolved_at - self.opened_at

    def age(self, now: datetime) -> timedelta:
        return (self.resolved_at or now) - self.opened_at

    def timing(self) -> Timing:
        return Timing(
            incident_id=self.id,
            owner=self.owner,
            system=self.system,
            kind=self.kind,
            state=self.state,
            opened_at=self.opened_at.timestamp(),
            first_acknowledged_at=_seconds_or_none(self.first_acknowledged_at),
            resolved_at=_seconds_or_none(self.resolved_at),
            ack_within=None if self.ack_within is None else self.ack_within.total_seconds(),
            resolve_within=(
                None if self.resolve_within is None else self.resolve_within.total_seconds()
            ),
        )


@dataclass(frozen=True, slots=True)
class Timing:
    """The numbers of one incident that the report and ``/metrics`` aggregate: instants as
    Unix seconds, SLOs as seconds. Read from plain store columns, so thousands are cheap.
    ``owner`` is the current accountable owner; :mod:`driftowner.holding` splits an incident
    handed over between owners into the periods each held it."""

    incident_id: str
    owner: str
    system: str
    kind: Kind
    state: State
    opened_at: float
    first_acknowledged_at: float | None
    resolved_at: float | None
    ack_within: float | None
    resolve_within: float | None

    @property
    def unresolved(self) -> bool:
        return self.state != "resolved"

    @property
    def time_to_acknowledge(self) -> float | None:
        if self.first_acknowledged_at is None:
            return None
        return self.first_acknowledged_at - self.opened_at

    @property
    def time_to_resolve(self) -> float | None:
        if self.resolved_at is None:
            return None
        return self.resolved_at - self.opened_at

    def age(self, now: float) -> float:
        return (self.resolved_at if self.resolved_at is not None else now) - self.opened_at

    def ack_breached(self, now: float) -> bool:
        """Acknowledged later than ``ack_within``, or unacknowledged past it (until resolved)."""
        if self.ack_within is None:
            return False
        waited = self.time_to_acknowledge
        if waited is None:
            waited = self.age(now)
        return waited > self.ack_within

    def resolve_breached(self, now: float) -> bool:
        """Resolved later than ``resolve_within``, or still unresolved past it."""
        return self.resolve_within is not None and self.age(now) > self.resolve_within


def _seconds_or_none(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of an incident's append-only log: who acted (``actor``) and through what
    (``via``). ``via`` is None only for events recorded before it was kept, by a person; an
    event whose actor is driftowner itself is always ``auto``."""

    incident_id: str
    at: datetime
    kind: EventKind
    actor: str
    detail: str = ""
    via: Via | None = None

    def __post_init__(self) -> None:
        if self.via is None and self.actor == AUTO:
            object.__setattr__(self, "via", "auto")


@dataclass(frozen=True, slots=True)
class Silence:
    """Hold the pages of the systems it covers from ``starts_at`` until ``ends_at`` (or until
    it is expired): incidents still open and are recorded, nobody is paged. It covers one
    system, every system of one owner, or every system whose ``labels`` include all of
    ``labels``; exactly one of the three is given."""

    id: str
    starts_at: datetime
    ends_at: datetime
    reason: str
    by: str
    """Who silenced: an owner key, or ``config`` for a maintenance window."""
    via: Via | None
    system: str | None = None
    owner: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    expired_at: datetime | None = None
    expired_by: str | None = None

    def active(self, now: datetime) -> bool:
        """Whether it holds pages at ``now``."""
        end = self.ends_at if self.expired_at is None else min(self.ends_at, self.expired_at)
        return self.starts_at <= now < end

    def covers(self, system: str, owner: str, labels: Mapping[str, str]) -> bool:
        """Whether it names this system (by name, by its owner, or by its labels)."""
        if self.system is not None:
            return self.system == system
        if self.owner is not None:
            return self.owner == owner
        return bool(self.labels) and all(labels.get(k) == v for k, v in self.labels)

    @property
    def matcher(self) -> str:
        """What it covers, as a person reads it: ``system fraud-scoring``, ``owner alice``,
        ``labels team=risk``."""
        if self.system is not None:
            return f"system {self.system}"
        if self.owner is not None:
            return f"owner {self.owner}'s systems"
        return "labels " + ",".join(f"{k}={v}" for k, v in self.labels)


@dataclass(frozen=True, slots=True)
class Handover:
    """One reassignment: the incident passed ``from_owner`` → ``to_owner`` at ``at``, done by
    ``by`` through ``via``, for ``reason``. The report credits each owner with the time they
    held the incident between handovers."""

    incident_id: str
    at: datetime
    from_owner: str
    to_owner: str
    by: str
    via: Via | None
    reason: str


@dataclass(frozen=True, slots=True)
class Evidence:
    """One signal's evidence as a message carries it: the facts of the finding behind the
    incident, not their wording (render says them)."""

    signal: str
    layer: Layer
    status: Status
    reason: str = ""
    """The detector's own one-line account of its verdict (``0.71 < min 0.90``)."""
    value: float | None = None
    reference: float | None = None
    limit: float | None = None

    @classmethod
    def of(cls, finding: Finding) -> Evidence:
        """What a message carries of ``finding``."""
        return cls(
            signal=finding.signal,
            layer=finding.layer,
            status=finding.status,
            reason=finding.reason,
            value=finding.value,
            reference=finding.reference,
            limit=finding.limit,
        )


@dataclass(frozen=True, slots=True)
class SloBreach:
    """An incident SLO that passed, as a message tells it: which, its length, and how far past
    its deadline the incident was when the message was made."""

    slo: Slo
    within_seconds: float
    """The SLO's length (``ack_within`` / ``resolve_within``)."""
    overdue_seconds: float
    """How long after the deadline (opening + the SLO) the message was made."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """The open incident upstream (of a system this one ``depends_on``) that probably caused a
    message's incident and holds its pages: its owner is informed, not paged."""

    incident_id: str
    system: str
    owner: str
    state: State


@dataclass(frozen=True, slots=True)
class Message:
    """What a notification says, channel-independent: facts only, every one a human needs to
    act. :mod:`driftowner.render` words them per channel."""

    purpose: Purpose
    incident_id: str
    system: str
    owner: str
    owner_name: str
    kind: Kind
    rule: str
    state: State
    layers: tuple[Layer, ...]
    summary: str
    """The incident's own summary (its rule's); empty for a test message (render says it)."""
    evidence: tuple[Evidence, ...]
    opened_at: datetime
    age_seconds: float
    step: int
    """1-based escalation step; 0 for messages outside the chain (resolution, test)."""
    recipient_name: str
    runbook: str | None = None
    incident_url: str | None = None
    ack_url: str | None = None
    resolve_url: str | None = None
    note: str = ""
    """What the person who acknowledged, resolved or reassigned the incident wrote, if
    anything."""
    actor: str = ""
    """Who acknowledged, resolved or reassigned it (an owner key or ``auto``), if known."""
    upstreams: tuple[str, ...] = ()
    """The systems this one ``depends_on`` (what a group's summary names as the common
    cause: "12 systems fed by features-v3")."""
    breach: SloBreach | None = None
    """The SLO whose breach this message tells of, if it does."""
    held_by: Upstream | None = None
    """The upstream incident that holds this incident's pages, for an owner informed instead
    of paged."""


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to one recipient through one channel; a row of the outbox."""

    id: str
    incident_id: str
    channel: str
    recipient: str
    """Owner or team key."""
    address: str
    """Where the channel sends it: email address, Slack member or channel id, URL alias."""
    message: Message
    created_at: datetime
    attempts: int = 0
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    failed_at: datetime | None = None
    last_error: str | None = None
    thread: str | None = None
    """The reference of the root message this notification's conversation (incident,
    channel, address) started, when one was delivered before: a Slack ``channel:ts``, a mail's
    ``Message-ID``. Filled by the outbox from the store just before sending; never stored with
    the notification."""


GroupKey = tuple[str, str, str]
"""What a group of notifications shares: (channel, recipient, address)."""


@dataclass(frozen=True, slots=True)
class GroupThread:
    """Where a group's message goes in its conversation: ``ref`` is the root message of the
    group's thread (None: this message starts one), ``listed`` every incident the root lists
    once this message is sent, each as its latest message says; the first ``root_size`` of
    them are those the root listed when first sent (what the thread is about: a mail
    thread's subject)."""

    ref: str | None = None
    listed: tuple[Message, ...] = ()
    root_size: int = 0


@dataclass(frozen=True, slots=True)
class GroupState:
    """What the store keeps of one group (see ``driftowner.grouping``), so that a restart or
    another instance keeps its timing and its thread."""

    flush_at: datetime | None = None
    """When the members waiting go out (None: nothing waits)."""
    last_sent: datetime | None = None
    """When the group's last message was put together."""
    thread: GroupThread = GroupThread()
    """The group's thread: its root message's reference and what the root lists."""
    members: frozenset[str] = frozenset()
    """The incidents (ids) the group has paged that are not yet resolved: while there are
    any, what the group meets waits for ``group_interval``; without, a page is lone."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one send. ``recoverable`` says whether retrying may help;
    ``retry_after`` is the server's hint (Slack 429), in seconds; ``ref`` is the reference
    of the message a delivery created, which later notifications of the same conversation
    thread under (see ``Notification.thread``)."""

    ok: bool
    recoverable: bool = False
    detail: str = ""
    retry_after: float | None = None
    ref: str | None = None

    @classmethod
    def delivered(cls, detail: str = "", ref: str | None = None) -> Delivery:
        return cls(ok=True, detail=detail, ref=ref)

    @classmethod
    def retry(cls, detail: str, retry_after: float | None = None) -> Delivery:
        return cls(ok=False, recoverable=True, detail=detail, retry_after=retry_after)

    @classmethod
    def give_up(cls, detail: str) -> Delivery:
        return cls(ok=False, recoverable=False, detail=detail)
