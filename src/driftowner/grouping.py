"""Grouping: pages that reach the same recipient through the same channel within a short
window go out as one message, the way Alertmanager groups alerts.

A group (channel, recipient, address) exists while it has members: the incidents it has
paged (in a group message, or alone through the grouper) that are not yet resolved. An
incident leaves its group when the delivery loop sees its resolution (in the group's next
message, or sent in the incident's own thread), or when the store says it is resolved and
none of its messages is on the way to the group (being put into it now, or waiting for the
group's flush time).

- **Lone**: a notification for a group without members waits until ``group_wait`` after it
  was made, no more; whatever else of its group falls due by then goes with it.
- **New member or update**: a notification for a group with members (a new incident, an
  ack, a reminder or a resolution of a member) waits until ``group_interval`` after the
  group last went out, and everything due by then goes together as the group's next
  update. Only a retry goes at once: its backoff spaced it already.
- **Flush time**: what waits goes at the group's flush time (``flush_at``), and so does
  whatever the group meets in the round its flush time comes (a page made while the loop
  was late). A flush time that passed before a notification was made is stale (everything
  that waited for it was superseded, an acknowledgement before the group went, so nothing
  went out and nothing cleared it): the notification is decided afresh, as if there were
  none, and :meth:`Grouper.forget` drops such a group like an idle one.

Every notification keeps its own row, lifecycle and record: a group is only a way to
deliver several rows as one message.

**Threads.** A group's message of several incidents is the root of the group's thread; its
later messages reply under it (a Slack thread whose root is updated to list the thread's
incidents with their current state; a mail thread), however long the group was idle, while
the group has members. The thread is over, and the group's next message starts a new one
(a lone page on its own), once a message in it leaves every incident it lists resolved, or
once the group has no member left: its last members resolved in the group's message (even
if that message then fails for good) or known resolved elsewhere (the store's record, a
resolution in the incident's own thread), so no message of the thread may ever show them
resolved. Only a retry of the thread's own last message (its notifications retried, its
incidents listed in the thread) goes again where it first went. A reply delivered in a
thread already over changes nothing.

What a thread lists (:func:`listing`) stays bounded however long it lasts: the root's own
incidents (the first ``root_size``, what the thread is about: its mail subject), the
incidents still unresolved, and those the message going out resolves; an incident whose
resolution an earlier message of the thread showed is no longer listed.

A lone page sent on its own is the root of its incident's own conversation instead; **an
incident with its own root bypasses grouping**: its later messages (acks, reminders,
escalations, its resolution) go at once, on their own, as replies under its root, never
into a group message.

The decisions are pure, the time passed in (:func:`due_at`, :func:`formed`, :func:`sent`,
:func:`resolved`). What they decide is kept in the store (:class:`~driftowner.model.GroupState`
per group), so a restart or a failover to another instance keeps ``group_wait``,
``group_interval``, the members and the thread; :class:`Grouper` is the leader's
write-through copy of it. A group message delivered after that copy was cleared (the
instance lost the lead, or the store failed) writes nothing: the store's state stands,
another instance's to change; a group with a message in flight is never dropped from the
copy as idle.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from driftowner.config import Config, OpsgenieChannelConfig, PagerDutyChannelConfig
from driftowner.model import GroupKey, GroupState, GroupThread, Message, Notification

__all__ = [
    "GROUPS_KEPT",
    "OFF",
    "GroupKey",
    "GroupPolicy",
    "Grouper",
    "due_at",
    "formed",
    "group_key",
    "key_of",
    "listing",
    "paged",
    "policy_of",
    "resolved",
    "sent",
    "stale",
]

GROUPS_KEPT = timedelta(hours=1)
"""A group idle this long leaves the :class:`Grouper`'s memory (bounding it by the groups
active within the hour); the store keeps its state, read again when the group is next met.
It ends neither the group nor its thread."""


@dataclass(frozen=True, slots=True)
class GroupPolicy:
    """How a channel groups: ``wait`` for the first member (zero: grouping is off), and
    ``interval`` between a group's messages."""

    wait: timedelta
    interval: timedelta

    @property
    def off(self) -> bool:
        """Whether this channel sends every notification on its own."""
        return self.wait <= timedelta(0)


OFF = GroupPolicy(timedelta(0), timedelta(0))


def policy_of(config: Config, channel: str) -> GroupPolicy:
    """The grouping of ``channel``: its own ``group_wait``/``group_interval``, else the
    ``grouping`` section's. PagerDuty and Opsgenie never group (each event is one incident,
    deduplicated by its key), nor does a channel no longer configured."""
    spec = config.channels.get(channel)
    if spec is None or isinstance(spec, PagerDutyChannelConfig | OpsgenieChannelConfig):
        return OFF
    wait = spec.group_wait if spec.group_wait is not None else config.grouping.wait
    interval = spec.group_interval if spec.group_interval is not None else config.grouping.interval
    return GroupPolicy(wait, interval)


def group_key(notifications: Sequence[Notification]) -> str:
    """A group's stable identity (its webhook ``Idempotency-Key``, its mail's Message-ID):
    the same members give the same key, so a retried group is recognisably the same."""
    ids = "\n".join(sorted(n.id for n in notifications))
    return "group-" + hashlib.sha256(ids.encode()).hexdigest()[:32]


def key_of(notification: Notification) -> GroupKey:
    """The group ``notification`` belongs to."""
    return (notification.channel, notification.recipient, notification.address)


def due_at(
    state: GroupState, notification: Notification, policy: GroupPolicy, now: datetime
) -> tuple[datetime, GroupState]:
    """When ``notification`` goes out, and its group's state after asking: ``now`` (with
    whatever else of its group is due now), or later, when its group does.

    As Alertmanager does it: a notification for a group without members (a lone incident)
    waits until ``group_wait`` after it was made; while the group has members (incidents it
    paged, unresolved), every notification it meets waits until ``group_interval`` after
    the group last went out, and all of them go together as the group's next update,
    however long after their making they reach the outbox (a storm written over many
    seconds by a loaded machine is still one update, not one per lease). Only a retry goes
    at once: its backoff spaced it already. A notification meeting a group whose members
    wait goes when they do (the group's flush time), unless that time passed before the
    notification was even made: then what waited for it was superseded, nothing went out,
    and the flush time is stale (see :func:`stale`); the notification is decided afresh.
    """
    if policy.off:
        return now, state
    if state.flush_at is not None and not stale(state, notification):
        return max(state.flush_at, now), state
    last = state.last_sent if state.members else None
    if last is None:
        when = notification.created_at + policy.wait
    elif notification.attempts > 0:
        when = now
    else:
        when = last + policy.interval
    if when > now:
        return when, replace(state, flush_at=when)
    return now, state


def stale(state: GroupState, notification: Notification) -> bool:
    """Whether the group's flush time passed before ``notification`` was made: had the
    members waiting for it gone out, the group would have no flush time; so they were all
    superseded (an acknowledgement before the group went), and it holds nothing."""
    return state.flush_at is not None and state.flush_at < notification.created_at


def formed(
    state: GroupState, messages: Sequence[Message], now: datetime, *, retried: bool = False
) -> GroupState:
    """The group's ``messages`` due now are going out together at ``now``: the group's
    members count their incidents (see :func:`paged`). The message goes in the group's
    thread while the group has members; without, the thread is over and the message starts
    afresh, unless it is ``retried`` (each of its notifications failed before and is sent
    again) and lists only incidents of the thread: the same message going again where it
    first went (a resolution ending the thread, answered 503)."""
    listed = {m.incident_id for m in state.thread.listed}
    again = retried and all(m.incident_id in listed for m in messages)
    thread = state.thread if state.members or again else GroupThread()
    members = paged(state.members, messages)
    return replace(state, flush_at=None, last_sent=now, members=members, thread=thread)


def paged(members: frozenset[str], messages: Sequence[Message]) -> frozenset[str]:
    """A group's ``members`` (incident ids) once ``messages`` went out in it: an incident
    whose newest message there is resolved leaves, any other incident is (or stays) in."""
    newest = {m.incident_id: m for m in messages}
    return frozenset(
        incident
        for incident in members | newest.keys()
        if incident not in newest or newest[incident].state != "resolved"
    )


def resolved(state: GroupState, incident_ids: Iterable[str]) -> GroupState:
    """The group's state once ``incident_ids`` are known resolved elsewhere (a resolution
    sent in the incident's own thread, the store's record): they are no longer members.
    Once no member is left, the group's thread is over (no message of it may ever show
    those incidents resolved): the group's next message starts afresh."""
    members = state.members.difference(incident_ids)
    if members == state.members:
        return state
    return replace(state, members=members, thread=state.thread if members else GroupThread())


def listing(thread: GroupThread, messages: Sequence[Message]) -> GroupThread:
    """The thread once ``messages`` go out in it: each incident already listed shows its
    newest message in its place, new incidents are added at the end. A message that starts
    the thread (no ``ref`` yet) is its root: every incident it lists counts in
    ``root_size``. An incident whose resolution an earlier message of the thread showed is
    no longer listed, unless the root listed it (the root's incidents say what the thread
    is about: its mail subject): the listing holds the root's incidents, the unresolved
    ones and those these ``messages`` resolve, however long the thread lasts."""
    newest = {m.incident_id: m for m in messages}
    listed = [
        newest.pop(m.incident_id, m)
        for i, m in enumerate(thread.listed)
        if i < thread.root_size or m.state != "resolved" or m.incident_id in newest
    ]
    listed += newest.values()
    root_size = thread.root_size if thread.ref is not None else len(listed)
    return GroupThread(thread.ref, tuple(listed), root_size)


def sent(state: GroupState, thread: GroupThread, ref: str | None) -> GroupState:
    """The group's state once its message (listing ``thread``) was delivered as ``ref`` (the
    root the channel answered, or None when it gives none). Once every incident it lists is
    resolved, or the group has no member left, the thread is over: the next message starts
    a new one. A reply in a thread that is over already (its members left meanwhile)
    changes nothing."""
    if thread.ref is not None and state.thread.ref != thread.ref:
        return state
    root = ref or thread.ref
    if root is None or not state.members or all(m.state == "resolved" for m in thread.listed):
        return replace(state, thread=GroupThread())
    return replace(state, thread=replace(thread, ref=root))


class Grouper:
    """The leader's copy of its groups' states, written through to the store: :meth:`load`
    what the store has (a restart, a failover), ask :meth:`due_at` for each notification as
    it is leased, tell :meth:`formed`, :meth:`sending` and :meth:`sent`; :meth:`changed`
    gives what to write."""

    def __init__(self) -> None:
        self._states: dict[GroupKey, GroupState] = {}
        self._changed: set[GroupKey] = set()
        self._going: set[GroupKey] = set()
        """Groups whose flush time came in this round: being put together (until
        :meth:`formed`), every notification they meet goes with them."""
        self._sending: dict[GroupKey, set[int]] = {}
        """The tickets of each group's messages in flight (see :meth:`sending`)."""
        self._tickets = itertools.count(1)

    def missing(self, keys: Iterable[GroupKey]) -> set[GroupKey]:
        """The ``keys`` this copy does not hold (to read from the store)."""
        return {key for key in keys if key not in self._states}

    def load(self, keys: Iterable[GroupKey], states: Mapping[GroupKey, GroupState]) -> None:
        """Take the store's states of groups this copy does not hold: ``states`` as read for
        ``keys``; a key the store has nothing of is a new group (not read again)."""
        for key in keys:
            self._states.setdefault(key, states.get(key, GroupState()))

    def state(self, key: GroupKey) -> GroupState:
        """The state of the group ``key`` (a new group's when unknown)."""
        return self._states.get(key, GroupState())

    def _set(self, key: GroupKey, state: GroupState) -> GroupState:
        if self._states.get(key) != state:
            self._states[key] = state
            self._changed.add(key)
        return state

    def due_at(self, notification: Notification, policy: GroupPolicy, now: datetime) -> datetime:
        """When ``notification`` goes out (see :func:`due_at`); with its group, at once, if
        the group's flush time came in this round (its waiting members go out now)."""
        key = key_of(notification)
        if key in self._going and not policy.off:
            return now
        before = self.state(key)
        when, state = due_at(before, notification, policy, now)
        if when <= now and before.flush_at is not None and not stale(before, notification):
            self._going.add(key)
        self._set(key, state)
        return when

    def formed(
        self, key: GroupKey, messages: Sequence[Message], now: datetime, *, retried: bool = False
    ) -> GroupState:
        """The group's ``messages`` due now go out together at ``now`` (see :func:`formed`)."""
        self._going.discard(key)
        return self._set(key, formed(self.state(key), messages, now, retried=retried))

    def resolved(self, key: GroupKey, incident_ids: Iterable[str]) -> None:
        """``incident_ids`` are resolved: no longer members of ``key`` (see :func:`resolved`)."""
        self._set(key, resolved(self.state(key), incident_ids))

    def members(self, keys: Iterable[GroupKey]) -> set[str]:
        """The incidents the groups ``keys`` count as members, together."""
        return {incident for key in keys for incident in self.state(key).members}

    def sending(self, key: GroupKey) -> int:
        """A message of the group ``key`` goes out: its ticket, for :meth:`sent` (or
        :meth:`unsent`). While it is in flight the group stays in memory (see
        :meth:`forget`), so a ticket :meth:`clear` has not dropped is the group's."""
        ticket = next(self._tickets)
        self._sending.setdefault(key, set()).add(ticket)
        return ticket

    def unsent(self, key: GroupKey, ticket: int) -> bool:
        """The message ``ticket`` of the group ``key`` is no longer in flight (delivered,
        failed, or handed back unsent). Returns whether this copy still held it: False once
        :meth:`clear` dropped it (another instance leads; the store's state stands)."""
        tickets = self._sending.get(key, set())
        held = ticket in tickets
        tickets.discard(ticket)
        if not tickets:
            self._sending.pop(key, None)
        return held

    def sent(self, key: GroupKey, ticket: int, thread: GroupThread, ref: str | None) -> None:
        """The group's message ``ticket``, listing ``thread``, was delivered as ``ref`` (see
        :func:`sent`). Nothing changes if this copy was cleared since it went out: the
        group's state is the store's, and another instance's to change."""
        if self.unsent(key, ticket):
            self._set(key, sent(self.state(key), thread, ref))

    def changed(self) -> dict[GroupKey, GroupState]:
        """The states changed and not yet :meth:`saved`: what to write to the store."""
        return {key: self._states[key] for key in self._changed}

    def saved(self, states: Mapping[GroupKey, GroupState]) -> None:
        """``states`` are in the store; a group changed again since stays to write."""
        self._changed -= {key for key, state in states.items() if self._states.get(key) == state}

    def clear(self) -> None:
        """Forget every state, and every message in flight (another instance leads now: the
        store has the truth)."""
        self._states.clear()
        self._changed.clear()
        self._going.clear()
        self._sending.clear()

    def forget(self, before: datetime) -> None:
        """Drop the copies of groups idle since before ``before`` (nothing waits in them or
        is in flight, nothing is left to write; a flush time before ``before`` is stale, its
        members superseded); the store keeps them, and they are read again when next met
        (:meth:`missing`). Bounds memory by the groups active within :data:`GROUPS_KEPT`."""
        idle = [
            key
            for key, s in self._states.items()
            if (s.flush_at is None or s.flush_at < before)
            and (s.last_sent is None or s.last_sent < before)
            and key not in self._changed
            and key not in self._going
            and key not in self._sending
        ]
        for key in idle:
            del self._states[key]
