"""The store in memory: what ``replay`` runs the evaluation cycle against, and a real fake for
tests. It keeps the contract of the SQL store (one contract suite runs both): writes that
belong together apply whole or not at all, a stale update or a second unresolved incident of a
fingerprint is a :class:`~driftowner.store.base.Conflict`, incidents are kept in the SQL
store's own encoding (so they read back exactly as from a database), and one lock makes it
safe to share between threads. Nothing survives the process."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

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
from driftowner.store.base import Changes, Conflict, Fingerprint, Settled
from driftowner.store.codec import incident_from_json, incident_to_json


@dataclass(slots=True)
class _Stored:
    """One incident as a database row holds it: the encoded body at a version."""

    body: str
    version: int
    incident: Incident
    """The decoded body (at ``version``), kept so reads do not decode again."""


@dataclass(slots=True)
class _Outbound:
    """One outbox row: the notification and what delivery has done with it."""

    notification: Notification
    leased_until: datetime | None = None
    superseded_at: datetime | None = None

    @property
    def unfinished(self) -> bool:
        n = self.notification
        return n.delivered_at is None and n.failed_at is None and self.superseded_at is None


class MemoryStore:
    """The :class:`~driftowner.store.base.Store` held in this process's memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._incidents: dict[str, _Stored] = {}
        self._holders: dict[Fingerprint, str] = {}
        """Fingerprint → the id of its unresolved incident (at most one, as the SQL index)."""
        self._events: dict[str, list[Event]] = {}
        self._log: list[Event] = []
        """Every event in the order appended: an event's position (from 1) is its ``seq``."""
        self._handovers: dict[str, list[Handover]] = {}
        self._conversations: dict[tuple[str, str, str], tuple[str, datetime]] = {}
        """(incident, channel, address) → the root message's reference and when it was sent."""
        self._outbox: dict[str, _Outbound] = {}
        self._pending: dict[str, dict[Fingerprint, Pending]] = {}
        self._secrets: dict[str, str] = {}
        self._leases: dict[str, tuple[str, datetime]] = {}
        self._silences: dict[str, Silence] = {}
        self._alerts: dict[str, dict[tuple[str, datetime], ReceivedAlert]] = {}
        self._groups: dict[GroupKey, GroupState] = {}
        """Source → (fingerprint, start) → the episode as last reported."""

    # -- lifecycle: nothing to connect to ---------------------------------------------------

    @property
    def single_instance(self) -> bool:
        """Always: only this process can see it."""
        return True

    def unwritable(self) -> str | None:
        """Never: memory is always writable."""
        return None

    def open(self) -> None:
        """Nothing to open."""

    def close(self) -> None:
        """Nothing to release; the contents stay readable."""

    def forget_unwritable(self, *works: str) -> None:
        """Nothing is ever unwritable."""

    def ping(self) -> bool:
        return True

    def secret(self, name: str) -> str:
        with self._lock:
            return self._secrets.setdefault(name, secrets.token_urlsafe(32))

    # -- reads -------------------------------------------------------------------------------

    def incident(self, incident_id: str) -> Incident | None:
        with self._lock:
            stored = self._incidents.get(incident_id)
            return None if stored is None else stored.incident

    def incidents(
        self,
        *,
        state: State | None = None,
        owner: str | None = None,
        system: str | None = None,
        unresolved: bool = False,
        opened_since: datetime | None = None,
    ) -> list[Incident]:
        with self._lock:
            found = [
                i
                for stored in self._incidents.values()
                if (i := stored.incident)
                and (state is None or i.state == state)
                and (not unresolved or i.unresolved)
                and (owner is None or i.owner == owner)
                and (system is None or i.system == system)
                and (opened_since is None or i.opened_at >= opened_since)
            ]
        return sorted(found, key=lambda i: (i.opened_at, i.id))

    def timings(self, *, opened_since: datetime | None = None) -> list[Timing]:
        with self._lock:
            every = [stored.incident for stored in self._incidents.values()]
        return [
            i.timing()
            for i in every
            if opened_since is None or i.opened_at >= opened_since or i.unresolved
        ]

    def recently_resolved(self, system: str, since: datetime) -> dict[Fingerprint, Incident]:
        with self._lock:
            found = [
                i
                for stored in self._incidents.values()
                if (i := stored.incident).system == system
                and i.state == "resolved"
                and i.resolved_at is not None
                and i.resolved_at >= since
            ]
        found.sort(key=lambda i: i.resolved_at or since)
        return {incident.fingerprint: incident for incident in found}

    def events(self, incident_id: str) -> list[Event]:
        with self._lock:
            return list(self._events.get(incident_id, ()))

    def pending(self, system: str) -> dict[Fingerprint, Pending]:
        with self._lock:
            return dict(self._pending.get(system, {}))

    def pending_by_system(self) -> dict[str, dict[Fingerprint, Pending]]:
        with self._lock:
            return {system: dict(held) for system, held in self._pending.items() if held}

    def notifications(self, incident_id: str) -> list[Notification]:
        return self.notifications_of([incident_id])[incident_id]

    def notifications_of(self, incident_ids: Iterable[str]) -> dict[str, list[Notification]]:
        found: dict[str, list[Notification]] = {i: [] for i in sorted(set(incident_ids))}
        with self._lock:
            for row in self._outbox.values():
                if (kept := found.get(row.notification.incident_id)) is not None:
                    kept.append(row.notification)
        for kept in found.values():
            kept.sort(key=lambda n: (n.created_at, n.id))
        return found

    def outbox_pending(self) -> int:
        with self._lock:
            return sum(row.unfinished for row in self._outbox.values())

    def handovers(self) -> dict[str, list[Handover]]:
        with self._lock:
            return {incident_id: list(found) for incident_id, found in self._handovers.items()}

    def acknowledgements(self, incident_ids: Iterable[str]) -> dict[str, list[float]]:
        with self._lock:
            return {
                incident_id: [
                    e.at.timestamp()
                    for e in self._events.get(incident_id, ())
                    if e.kind == "acknowledged"
                ]
                for incident_id in sorted(set(incident_ids))
            }

    def accepted_after(self, seq: int) -> list[Accepted]:
        with self._lock:
            return [
                Accepted(position, incident.system, incident.signals, event.at)
                for position, event in enumerate(self._log[seq:], start=seq + 1)
                if event.kind == "accepted"
                and (incident := self._incidents[event.incident_id].incident)
            ]

    def threads(self, notifications: Iterable[Notification]) -> dict[str, str]:
        with self._lock:
            return {
                n.id: root[0]
                for n in notifications
                if (root := self._conversations.get((n.incident_id, n.channel, n.address)))
            }

    def conversations(self, incident_id: str) -> list[tuple[str, str, str]]:
        with self._lock:
            found = [
                (at, channel, address, ref)
                for (incident, channel, address), (ref, at) in self._conversations.items()
                if incident == incident_id
            ]
        return [(channel, address, ref) for _, channel, address, ref in sorted(found)]

    def incident_states(self, incident_ids: Iterable[str]) -> dict[str, State]:
        with self._lock:
            return {
                incident_id: stored.incident.state
                for incident_id in set(incident_ids)
                if (stored := self._incidents.get(incident_id)) is not None
            }

    def silences(self, active_at: datetime | None = None) -> list[Silence]:
        with self._lock:
            found = [s for s in self._silences.values() if active_at is None or s.active(active_at)]
        return sorted(found, key=lambda s: (s.starts_at, s.id))

    # -- writes ------------------------------------------------------------------------------

    def add_silence(self, silence: Silence) -> None:
        with self._lock:
            if silence.id in self._silences:
                raise Conflict(f"refused by the store: silence {silence.id} exists")
            self._silences[silence.id] = silence

    def expire_silence(self, silence_id: str, at: datetime, by: str) -> Silence | None:
        with self._lock:
            silence = self._silences.get(silence_id)
            if silence is not None and silence.expired_at is None:
                silence = replace(silence, expired_at=at, expired_by=by)
                self._silences[silence_id] = silence
            return silence

    def record_alerts(
        self, source: str, alerts: Sequence[ReceivedAlert], *, forget_before: datetime
    ) -> None:
        with self._lock:
            kept = self._alerts.setdefault(source, {})
            for alert in alerts:
                held = kept.get((alert.fingerprint, alert.starts_at))
                if held is not None and held.resolved and not alert.resolved:
                    continue  # a resolve is final for its episode
                kept[(alert.fingerprint, alert.starts_at)] = alert
            for key, held in list(kept.items()):
                if held.resolved and held.ends_at is not None and held.ends_at < forget_before:
                    del kept[key]

    def received_alerts(self, source: str, start: datetime, end: datetime) -> list[ReceivedAlert]:
        with self._lock:
            kept = list(self._alerts.get(source, {}).values())
        open_ended = {alert.fingerprint for alert in kept if alert.ends_at is None}
        return sorted(
            (
                alert
                for alert in kept
                if alert.starts_at <= end
                and (
                    alert.ends_at is None
                    or alert.ends_at > start
                    or alert.fingerprint in open_ended
                )
            ),
            key=lambda alert: (alert.starts_at, alert.fingerprint),
        )

    def apply(self, changes: Changes) -> None:
        with self._lock:
            self._refuse_conflicts(changes)
            for incident in changes.opened:
                self._put(incident, 0)
            for incident in changes.updated:
                self._put(incident, incident.version + 1)
            for event in changes.events:
                self._append(event)
            for handover in changes.handovers:
                self._handovers.setdefault(handover.incident_id, []).append(handover)
            for notification in changes.notifications:
                self._outbox[notification.id] = _Outbound(notification)
            if changes.pending_system is not None:
                self._pending[changes.pending_system] = {
                    (p.system, p.rule): p for p in changes.pending
                }

    def apply_each(self, batch: Sequence[Changes]) -> list[Conflict | None]:
        refused: list[Conflict | None] = []
        for changes in batch:
            try:
                self.apply(changes)
            except Conflict as conflict:
                refused.append(conflict)
            else:
                refused.append(None)
        return refused

    def _refuse_conflicts(self, changes: Changes) -> None:
        """Raise :class:`Conflict` for what a database would refuse, before anything is
        written: a stale update, a taken id, a second unresolved incident of a fingerprint,
        an event or notification of an unknown incident."""
        touched: dict[str, Incident] = {}
        for incident in changes.updated:
            stored = self._incidents.get(incident.id)
            if stored is None or stored.version != incident.version:
                raise Conflict(f"incident {incident.id} changed since it was read")
            touched[incident.id] = incident
        for incident in changes.opened:
            if incident.id in self._incidents or incident.id in touched:
                raise Conflict(f"refused by the store: incident {incident.id} exists")
            touched[incident.id] = incident
        holders = {
            incident.fingerprint: self._holders.get(incident.fingerprint)
            for incident in touched.values()
        }
        for incident in touched.values():  # resolutions first: they free their fingerprint
            if not incident.unresolved and holders[incident.fingerprint] == incident.id:
                holders[incident.fingerprint] = None
        for incident in touched.values():
            if incident.unresolved:
                holder = holders[incident.fingerprint]
                if holder is not None and holder != incident.id:
                    raise Conflict(
                        "refused by the store: a second unresolved incident of "
                        f"{incident.system} {incident.rule}"
                    )
                holders[incident.fingerprint] = incident.id
        for notification in changes.notifications:
            if notification.id in self._outbox:
                raise Conflict(f"refused by the store: notification {notification.id} exists")
        owners = {e.incident_id for e in changes.events}
        owners |= {h.incident_id for h in changes.handovers}
        owners |= {n.incident_id for n in changes.notifications}
        unknown = sorted(owners - self._incidents.keys() - touched.keys())
        if unknown:
            raise Conflict(f"refused by the store: no incident {unknown[0]}")

    def _append(self, event: Event) -> None:
        self._events.setdefault(event.incident_id, []).append(event)
        self._log.append(event)

    def _put(self, incident: Incident, version: int) -> None:
        body = incident_to_json(incident)
        self._incidents[incident.id] = _Stored(body, version, incident_from_json(body, version))
        fingerprint = incident.fingerprint
        if incident.unresolved:
            self._holders[fingerprint] = incident.id
        elif self._holders.get(fingerprint) == incident.id:
            del self._holders[fingerprint]

    # -- outbox ------------------------------------------------------------------------------

    def lease_due(self, now: datetime, lease: timedelta, limit: int = 100) -> list[Notification]:
        with self._lock:
            due = sorted(
                (
                    row
                    for row in self._outbox.values()
                    if row.unfinished
                    and (
                        row.notification.next_attempt_at is None
                        or row.notification.next_attempt_at <= now
                    )
                    and (row.leased_until is None or row.leased_until <= now)
                ),
                key=lambda row: (row.notification.created_at, row.notification.id),
            )[:limit]
            for row in due:
                row.leased_until = now + lease
            return [row.notification for row in due]

    def mark_superseded(self, notification_id: str, at: datetime, reason: str) -> None:
        with self._lock:
            row = self._outbox.get(notification_id)
            if row is not None:
                row.superseded_at, row.leased_until = at, None
                row.notification = replace(row.notification, last_error=reason)

    def mark_delivered(self, notification_id: str, at: datetime, ref: str | None = None) -> None:
        self._finish(
            notification_id, lambda n: replace(n, delivered_at=at, last_error=None), root=ref
        )

    def mark_retry(
        self, notification_id: str, at: datetime, error: str, next_attempt_at: datetime
    ) -> None:
        self._finish(
            notification_id,
            lambda n: replace(n, next_attempt_at=next_attempt_at, last_error=error),
        )

    def mark_failed(
        self, notification_id: str, at: datetime, error: str, event: Event | None = None
    ) -> None:
        self._finish(notification_id, lambda n: replace(n, failed_at=at, last_error=error), event)

    def _finish(
        self,
        notification_id: str,
        outcome: Callable[[Notification], Notification],
        event: Event | None = None,
        root: str | None = None,
    ) -> None:
        """One delivery attempt's ``outcome``: the attempt counts and the lease ends; the
        incident's ``event`` about it, and the ``root`` of its conversation (unless it has
        one), are written under the same lock."""
        with self._lock:
            row = self._outbox.get(notification_id)
            if row is not None:
                counted = replace(row.notification, attempts=row.notification.attempts + 1)
                row.notification = outcome(counted)
                row.leased_until = None
                n = row.notification
                if root is not None and n.delivered_at is not None:
                    key = (n.incident_id, n.channel, n.address)
                    self._conversations.setdefault(key, (root, n.delivered_at))
            if event is not None:
                self._append(event)

    def settle(self, outcomes: Sequence[Settled]) -> None:
        # One process, one event loop: checked first, nothing is written if a fallback's
        # id is taken (as the SQL backends' transaction would roll back).
        with self._lock:
            taken = [
                o.fallback.id for o in outcomes if o.fallback and o.fallback.id in self._outbox
            ]
        if taken:
            raise Conflict(f"notification {taken[0]} exists already; nothing was recorded")
        for o in outcomes:
            if o.kind == "delivered":
                outcome = _delivered(o.at)
            elif o.kind == "failed":
                outcome = _failed(o.at, o.error)
            else:
                outcome = _retry(o.next_attempt_at, o.error)
            self._finish(o.notification_id, outcome, o.event, o.ref)
            if o.fallback is not None:
                with self._lock:
                    self._outbox[o.fallback.id] = _Outbound(o.fallback)

    def defer(self, due: Mapping[str, tuple[datetime, datetime]]) -> None:
        with self._lock:
            for notification_id, (until, held) in due.items():
                row = self._outbox.get(notification_id)
                if row is not None and row.unfinished and row.leased_until == held:
                    row.leased_until = None
                    row.notification = replace(row.notification, next_attempt_at=until)

    def groups(self, keys: Iterable[GroupKey]) -> dict[GroupKey, GroupState]:
        with self._lock:
            return {key: self._groups[key] for key in set(keys) if key in self._groups}

    def save_groups(self, states: Mapping[GroupKey, GroupState]) -> None:
        with self._lock:
            self._groups.update(states)

    def outbox_oldest(self, now: datetime) -> float:
        with self._lock:
            made = [r.notification.created_at for r in self._outbox.values() if r.unfinished]
        return max((now - min(made)).total_seconds(), 0.0) if made else 0.0

    def next_due(self) -> datetime | None:
        with self._lock:
            due = [
                r.leased_until or r.notification.next_attempt_at or r.notification.created_at
                for r in self._outbox.values()
                if r.unfinished
            ]
        return min(due, default=None)

    # -- leadership --------------------------------------------------------------------------

    def try_lead(self, holder: str, ttl: timedelta, now: datetime) -> bool:
        with self._lock:
            held = self._leases.get("daemon")
            if held is not None and held[0] != holder and held[1] > now:
                return False
            self._leases["daemon"] = (holder, now + ttl)
            return True

    def lease_holder(self, now: datetime) -> str | None:
        with self._lock:
            held = self._leases.get("daemon")
        return held[0] if held is not None and held[1] > now else None

    def resign(self, holder: str, now: datetime) -> None:
        with self._lock:
            held = self._leases.get("daemon")
            if held is not None and held[0] == holder:
                self._leases["daemon"] = (holder, now)


def _delivered(at: datetime) -> Callable[[Notification], Notification]:
    return lambda n: replace(n, delivered_at=at, last_error=None)


def _failed(at: datetime, error: str | None) -> Callable[[Notification], Notification]:
    return lambda n: replace(n, failed_at=at, last_error=error)


def _retry(when: datetime | None, error: str | None) -> Callable[[Notification], Notification]:
    return lambda n: replace(n, next_attempt_at=when, last_error=error)
