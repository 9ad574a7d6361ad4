"""The store's contract: what the daemon, the API, the CLI and the evaluation cycle may ask of
any backend (in memory, SQLite, PostgreSQL), the writes that belong together, and the errors.
One contract suite (``tests/integration/test_store.py``) runs against every backend."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

from driftowner.model import (
    Accepted,
    Event,
    GroupKey,
    GroupState,
    Handover,
    Incident,
    Notification,
    Pending,
    ReceivedAlert,
    Silence,
    State,
    Timing,
)

Fingerprint = tuple[str, str]
"""(system, rule)."""


@dataclass(frozen=True, slots=True)
class Settled:
    """One send's outcome as the outbox records it: ``delivered`` (``ref``: the message it
    created, the root of its conversation if it has none yet); ``retry`` at
    ``next_attempt_at``; or ``failed`` for good, with the incident's ``event`` and the
    ``fallback`` page that takes over, written in the same transaction."""

    notification_id: str
    at: datetime
    kind: Literal["delivered", "retry", "failed"]
    error: str | None = None
    next_attempt_at: datetime | None = None
    event: Event | None = None
    fallback: Notification | None = None
    ref: str | None = None


class StoreError(Exception):
    """The store cannot be used (unreachable, newer schema, corrupt)."""


class StoreUnavailable(StoreError):
    """The store cannot be written (or read) now: its disk or database is full, it is
    read-only, locked past the busy timeout, or unreachable. The transaction was rolled back
    whole, so nothing was changed, and trying again once the cause is gone is safe."""


class Conflict(Exception):
    """An incident changed since it was read; the write was refused and nothing was applied."""


@dataclass(frozen=True, slots=True)
class Changes:
    """Writes that belong together: applied in one transaction, or not at all."""

    opened: Sequence[Incident] = ()
    updated: Sequence[Incident] = ()
    events: Sequence[Event] = ()
    handovers: Sequence[Handover] = ()
    notifications: Sequence[Notification] = ()
    pending_system: str | None = None
    """When set, the pending conditions of this system are replaced by ``pending``."""
    pending: Sequence[Pending] = ()


class StoreView(Protocol):
    """The reads one evaluation cycle makes: the store as the cycle sees it."""

    def incidents(
        self,
        *,
        state: State | None = None,
        owner: str | None = None,
        system: str | None = None,
        unresolved: bool = False,
        opened_since: datetime | None = None,
    ) -> list[Incident]:
        """Incidents matching every given filter, oldest first (by opening, then id)."""
        ...

    def recently_resolved(self, system: str, since: datetime) -> dict[Fingerprint, Incident]:
        """The newest incident of each of a system's fingerprints resolved at or after
        ``since`` (candidates to reopen)."""
        ...

    def pending(self, system: str) -> dict[Fingerprint, Pending]:
        """A system's pending conditions."""
        ...

    def pending_by_system(self) -> dict[str, dict[Fingerprint, Pending]]:
        """Every system's pending conditions, in one read (systems with none are absent): what
        :meth:`pending` gives for each, so an evaluation over thousands of quiet systems reads
        the table once rather than once per system."""
        ...

    def notifications(self, incident_id: str) -> list[Notification]:
        """An incident's notifications, oldest first (by creation, then id)."""
        ...

    def notifications_of(self, incident_ids: Iterable[str]) -> dict[str, list[Notification]]:
        """Each named incident's notifications, as :meth:`notifications` gives them, in one
        read (an incident with none has an empty list): what the escalation stage reads for
        every incident a storm's tick steps up, rather than one read each."""
        ...

    def events(self, incident_id: str) -> list[Event]:
        """An incident's events in the order they were appended."""
        ...

    def silences(self, active_at: datetime | None = None) -> list[Silence]:
        """Every silence (with ``active_at``, those holding at that instant), oldest first
        (by start, then id)."""
        ...


class Store(StoreView, Protocol):
    """Incidents, their append-only events, the notification outbox, pending conditions, a
    shared secret and the leader lease. Construction does no I/O; :meth:`open` does."""

    @property
    def single_instance(self) -> bool:
        """Whether one instance at a time serves this store (no leader election needed)."""
        ...

    def unwritable(self) -> str | None:
        """Why the store cannot be written now, or None."""
        ...

    def open(self) -> None:
        """Connect, create or check the schema.

        Raises:
            StoreError: the store cannot be used.
        """
        ...

    def close(self) -> None: ...

    def forget_unwritable(self, *works: str) -> None:
        """Stop reporting the failures of ``works`` (writes this process no longer makes)."""
        ...

    def secret(self, name: str) -> str:
        """A random secret kept in the store, created on first use, the same for every user."""
        ...

    def ping(self) -> bool:
        """True when the store answers."""
        ...

    def incident(self, incident_id: str) -> Incident | None: ...

    def timings(self, *, opened_since: datetime | None = None) -> list[Timing]:
        """The numbers of every incident (opened since ``opened_since``, plus every
        unresolved one when it is given)."""
        ...

    def outbox_pending(self) -> int:
        """Notifications neither delivered, nor given up on, nor superseded."""
        ...

    def handovers(self) -> dict[str, list[Handover]]:
        """Every incident's reassignments, oldest first, by incident id."""
        ...

    def acknowledgements(self, incident_ids: Iterable[str]) -> dict[str, list[float]]:
        """When each of these incidents was acknowledged (Unix seconds, every time, oldest
        first); an incident never acknowledged has an empty list."""
        ...

    def accepted_after(self, seq: int) -> list[Accepted]:
        """The ``accepted`` events logged after position ``seq``, oldest first, with the
        system and signals of their incidents (what the detector bank re-learns)."""
        ...

    def threads(self, notifications: Iterable[Notification]) -> dict[str, str]:
        """Notification id → the root reference of its conversation (incident, channel,
        address), for those whose conversation has one."""
        ...

    def conversations(self, incident_id: str) -> list[tuple[str, str, str]]:
        """``(channel, address, ref)`` of every conversation an incident started, oldest
        first."""
        ...

    def add_silence(self, silence: Silence) -> None:
        """Keep a new silence.

        Raises:
            Conflict: a silence with its id exists; nothing was written.
            StoreUnavailable: the store cannot be written now.
        """
        ...

    def expire_silence(self, silence_id: str, at: datetime, by: str) -> Silence | None:
        """End a silence at ``at`` (recording ``by``) and return it; one already expired is
        returned as it was. None when no silence has that id."""
        ...

    def apply(self, changes: Changes) -> None:
        """Write ``changes`` whole or not at all; an updated incident is written at its
        version plus one.

        Raises:
            Conflict: an updated incident changed since it was read, or an opening would make
                a second unresolved incident of a fingerprint; nothing was written.
            StoreUnavailable: the store cannot be written now; nothing was written.
        """
        ...

    def apply_each(self, batch: Sequence[Changes]) -> list[Conflict | None]:
        """Write each of ``batch`` whole or not at all, together (one transaction where the
        store has them): the entry of one refused is its :class:`Conflict`, and the others
        are written all the same; ``None`` for each written.

        Raises:
            StoreUnavailable: the store cannot be written now; nothing was written.
        """
        ...

    def lease_due(self, now: datetime, lease: timedelta, limit: int = 100) -> list[Notification]:
        """Claim notifications due for a delivery attempt for ``lease``, oldest first; no two
        callers claim one notification within a lease."""
        ...

    def incident_states(self, incident_ids: Iterable[str]) -> dict[str, State]:
        """The current state of each named incident (absent ids are left out)."""
        ...

    def mark_superseded(self, notification_id: str, at: datetime, reason: str) -> None: ...

    def mark_delivered(self, notification_id: str, at: datetime, ref: str | None = None) -> None:
        """Record a delivery; ``ref`` (the message it created) becomes the root of its
        conversation unless that conversation has one already."""
        ...

    def mark_retry(
        self, notification_id: str, at: datetime, error: str, next_attempt_at: datetime
    ) -> None: ...

    def mark_failed(
        self, notification_id: str, at: datetime, error: str, event: Event | None = None
    ) -> None:
        """Give up on a notification; ``event`` is written in the same transaction."""
        ...

    def settle(self, outcomes: Sequence[Settled]) -> None:
        """Record several sends' outcomes in one transaction (the outbox's group commit)."""
        ...

    def defer(self, due: Mapping[str, tuple[datetime, datetime]]) -> None:
        """Hand leased notifications back, due again, without counting an attempt: id →
        (due again at, the end of the caller's lease); one whose lease is no longer the
        caller's is left alone."""
        ...

    def groups(self, keys: Iterable[GroupKey]) -> dict[GroupKey, GroupState]:
        """The kept state of each named group (channel, recipient, address); groups never
        kept are left out."""
        ...

    def save_groups(self, states: Mapping[GroupKey, GroupState]) -> None:
        """Keep each group's state, replacing what was kept, in one transaction.

        Raises:
            StoreUnavailable: the store cannot be written now; nothing was written.
        """
        ...

    def outbox_oldest(self, now: datetime) -> float:
        """Seconds the oldest notification still owed has waited since it was made (0: none)."""
        ...

    def next_due(self) -> datetime | None:
        """When the next notification still owed falls due (its lease's end, else its next
        attempt, else its creation); None when none is owed."""
        ...

    def record_alerts(
        self, source: str, alerts: Sequence[ReceivedAlert], *, forget_before: datetime
    ) -> None:
        """Keep what one Alertmanager webhook reported to an alertmanager source, whole or not
        at all: one episode per fingerprint and start; a resolve is final for its episode (a
        later firing report of it changes nothing). Forget the source's episodes resolved
        before ``forget_before``.

        Raises:
            StoreUnavailable: the store cannot be written now; nothing was written.
        """
        ...

    def received_alerts(self, source: str, start: datetime, end: datetime) -> list[ReceivedAlert]:
        """The episodes of an alertmanager source's alerts that may fire within
        ``[start, end]`` (also every episode of an alert that has one without an end: a later
        episode ends it), oldest first (by start, then fingerprint)."""
        ...

    def try_lead(self, holder: str, ttl: timedelta, now: datetime) -> bool:
        """Claim or renew the leadership lease for ``holder`` until ``now + ttl``; True when
        ``holder`` leads."""
        ...

    def lease_holder(self, now: datetime) -> str | None:
        """Who holds the leadership lease at ``now``; None when nobody's lease runs."""
        ...

    def resign(self, holder: str, now: datetime) -> None:
        """End ``holder``'s lease at ``now``; nothing if it does not lead."""
        ...
