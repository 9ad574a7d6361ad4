"""Grouping: pages that reach the same recipient through the same channel within a short
window go out as one message, the way Alertmanager groups alerts.

The first notification of a group waits ``group_wait`` (from when it was made) for others to
join; everything due for the group by then goes out together. Later changes (new members,
acknowledgements, resolutions) wait until ``group_interval`` after the group last went out,
and go together as the next update. Every notification keeps its own row, lifecycle and
record: a group is only a way to deliver several rows as one message.

The decisions are pure, the time passed in; :class:`Grouper` keeps each group's schedule in
memory (a restart or another instance forgets it, and then sends what is due at once).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from driftowner.config import Config, OpsgenieChannelConfig, PagerDutyChannelConfig
from driftowner.model import Notification

GroupKey = tuple[str, str, str]
"""What a group shares: (channel, recipient, address)."""


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


@dataclass(slots=True)
class _Schedule:
    flush_at: datetime | None = None
    """When the waiting members go out (None: nothing is waiting)."""
    last_sent: datetime | None = None
    """When the group last went out."""


class Grouper:
    """When each group's members go out. Ask :meth:`due_at` for each notification as it is
    leased; tell :meth:`formed` when a group's message is put together."""

    def __init__(self) -> None:
        self._schedules: dict[GroupKey, _Schedule] = {}

    def due_at(self, notification: Notification, policy: GroupPolicy, now: datetime) -> datetime:
        """When ``notification`` goes out: ``now`` (with whatever else of its group is due
        now), or later, when its group does.

        A first member waits until ``group_wait`` after it was made; a member made after its
        group last went out waits until ``group_interval`` after that; a member already
        waiting when its group went out (a lease's limit split the group, a retry) goes at
        once.
        """
        if policy.off:
            return now
        schedule = self._schedules.setdefault(key_of(notification), _Schedule())
        if schedule.flush_at is not None:
            return max(schedule.flush_at, now)
        last = schedule.last_sent
        if last is not None and notification.created_at > last:
            when = last + policy.interval
        elif last is not None:
            when = now
        else:
            when = notification.created_at + policy.wait
        if when > now:
            schedule.flush_at = when
            return when
        return now

    def formed(self, key: GroupKey, now: datetime) -> None:
        """The group's members due now are going out together at ``now``."""
        schedule = self._schedules.setdefault(key, _Schedule())
        schedule.flush_at = None
        schedule.last_sent = now

    def forget(self, before: datetime) -> None:
        """Drop the schedules of groups idle since before ``before`` (nothing waits in them);
        keeps memory bounded by the groups active within an interval."""
        idle = [
            key
            for key, s in self._schedules.items()
            if s.flush_at is None and (s.last_sent is None or s.last_sent < before)
        ]
        for key in idle:
            del self._schedules[key]
