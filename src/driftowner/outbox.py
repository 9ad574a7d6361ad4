"""The outbox worker: lease due notifications, send each through its channel, record each
outcome as soon as its send finishes, retry with backoff, and give up loudly. A notification
is never dropped silently, and one notification's trouble never decides another's outcome."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog

from driftowner.channels import Channel
from driftowner.config import Config
from driftowner.metrics import Metrics
from driftowner.model import AUTO, Delivery, Event, Notification, State
from driftowner.store import Store

log = structlog.get_logger("driftowner.outbox")

LEASE = timedelta(minutes=2)
"""The lease when nothing better is known (tests, one-off tools)."""
SHORTEST_LEASE = timedelta(seconds=15)
MAX_ATTEMPTS = 12
MAX_AGE = timedelta(hours=24)
"""A notification still undelivered this long after it was made gives up (its last attempt
is scheduled no later than this: see :func:`next_attempt`)."""
FIRST_RETRY = timedelta(seconds=5)
LONGEST_RETRY = timedelta(minutes=15)
"""The longest wait of the outbox's own exponential backoff."""
LONGEST_SERVER_DELAY = timedelta(hours=1)
"""The longest wait a server's delay (``Retry-After``, Slack's ``ratelimited``) can impose.
A server's number is untrusted input: a longer, infinite or far-future one waits this long,
and a negative or NaN one is ignored (the backoff alone applies)."""
_MAX_DOUBLINGS = 20
"""Beyond this many doublings the backoff is at LONGEST_RETRY anyway; the bound keeps the
arithmetic finite for any attempt count."""


def lease_for(config: Config) -> timedelta:
    """How long a claimed notification stays claimed: long enough for the slowest channel's
    send to finish or time out, short enough that after a crash mid-send the page goes out
    again within seconds, not minutes."""
    timeouts = [
        timeout
        for channel in config.channels.values()
        if (timeout := getattr(channel, "timeout", None)) is not None
    ]
    longest = max(timeouts, default=timedelta(0))
    return max(SHORTEST_LEASE, 2 * longest + timedelta(seconds=10))


def server_delay(retry_after: float | None) -> timedelta:
    """A server's requested wait, made safe for datetime arithmetic.

    Args:
        retry_after: Seconds as the channel read them from the server (any float).

    Returns:
        The wait, between zero and LONGEST_SERVER_DELAY; zero when there is no usable hint
        (absent, NaN, negative).
    """
    if retry_after is None or math.isnan(retry_after) or retry_after <= 0:
        return timedelta(0)
    return timedelta(seconds=min(retry_after, LONGEST_SERVER_DELAY.total_seconds()))


def next_attempt(
    attempts: int, now: datetime, retry_after: float | None, give_up_at: datetime
) -> datetime:
    """When to try again: exponential backoff from 5 s to 15 min, never sooner than the
    server asked (capped at LONGEST_SERVER_DELAY), never later than the give-up time.

    Args:
        attempts: Attempts made so far, the failed one included.
        now: The time the failed attempt finished.
        retry_after: The server's requested delay in seconds, if any (untrusted).
        give_up_at: When the notification gives up (created + MAX_AGE): its last attempt is
            made then at the latest, so it gives up on schedule.
    """
    doublings = min(max(attempts - 1, 0), _MAX_DOUBLINGS)
    backoff = min(FIRST_RETRY * (1 << doublings), LONGEST_RETRY)
    return min(now + max(backoff, server_delay(retry_after)), max(give_up_at, now))


def give_up_at(notification: Notification) -> datetime:
    """When a notification still undelivered gives up: MAX_AGE after it was made."""
    return notification.created_at + MAX_AGE


def superseded(notification: Notification, state: State | None) -> str | None:
    """Why a notification must not be sent any more, or None. A page to act on an open
    incident is moot once it is acknowledged or resolved, and a reminder once the incident is
    no longer acknowledged; resolutions and contributor notices always go out."""
    purpose = notification.message.purpose
    if state is None:
        return None
    if purpose in ("opened", "reopened", "escalated") and state != "open":
        return f"incident {state} before the page was delivered"
    if purpose == "reminder" and state != "acknowledged":
        return f"incident {state} before the reminder was delivered"
    return None


def gives_up(notification: Notification, delivery: Delivery, now: datetime) -> str | None:
    """Why this failure is final, or None when it is worth another attempt."""
    if not delivery.recoverable:
        return delivery.detail
    if notification.attempts + 1 >= MAX_ATTEMPTS:
        return f"{delivery.detail} (gave up after {notification.attempts + 1} attempts)"
    if now >= give_up_at(notification):
        return f"{delivery.detail} (gave up: undelivered for 24h)"
    return None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one send means for its notification: ``delivered``; ``retry`` at
    ``next_attempt_at``; or ``failed`` for good. ``detail`` is the error kept with it."""

    kind: Literal["delivered", "retry", "failed"]
    detail: str = ""
    next_attempt_at: datetime | None = None
    ref: str | None = None
    """The reference of the message a delivery created (see ``Delivery.ref``)."""


def outcome_of(notification: Notification, delivery: Delivery, now: datetime) -> Outcome:
    """The outcome of one send of ``notification`` that finished at ``now`` with ``delivery``.

    Args:
        notification: The notification as leased (``attempts`` not counting this send).
        delivery: What its channel reported.
        now: When the send finished.
    """
    if delivery.ok:
        return Outcome("delivered", ref=delivery.ref)
    reason = gives_up(notification, delivery, now)
    if reason is not None:
        return Outcome("failed", reason)
    when = next_attempt(
        notification.attempts + 1, now, delivery.retry_after, give_up_at(notification)
    )
    return Outcome("retry", delivery.detail, when)


def sending_order(notifications: list[Notification]) -> list[Notification]:
    """Notifications in the order their sends start: the one due earliest (its
    ``next_attempt_at``, else its creation) first, then by creation and id."""
    return sorted(
        notifications,
        key=lambda n: (n.next_attempt_at or n.created_at, n.created_at, n.id),
    )


async def deliver_due(
    store: Store,
    channels: Mapping[str, Channel],
    clock: Callable[[], datetime],
    metrics: Metrics | None = None,
    limit: int = 100,
    lease: timedelta = LEASE,
) -> int:
    """One pass over the outbox: lease what is due, send it all concurrently, and record each
    outcome as soon as its own send finishes.

    Recording at once means a kill -9 mid-pass re-sends only the sends truly in flight, and a
    slow receiver never holds back the record of a fast one. Each notification is handled on
    its own: trouble in one send, its outcome's arithmetic or its record is logged and leaves
    that notification leased (sent again after the lease), never touching the others.

    Args:
        store: Where the outbox lives.
        channels: The configured channels by name.
        clock: The current time (called when each send finishes).
        metrics: Counters and latency histograms to update, if any.
        limit: The most notifications leased in one pass.
        lease: How long the leased notifications stay claimed.

    Returns:
        How many notifications were delivered.
    """
    leased = store.lease_due(clock(), lease, limit)
    if not leased:
        return 0
    states = store.incident_states(n.incident_id for n in leased)
    # Each notification learns the root message of its conversation, if one was delivered.
    threads = store.threads(leased)
    sendable = []
    for notification in sending_order(leased):
        notification = dataclasses.replace(notification, thread=threads.get(notification.id))
        reason = superseded(notification, states.get(notification.incident_id))
        if reason is None:
            sendable.append(notification)
        else:
            _supersede(store, notification, reason, clock(), metrics)
    budget = max(lease - timedelta(seconds=5), lease / 2)
    delivered = await asyncio.gather(
        *(_deliver(store, channels, n, budget, clock, metrics) for n in sendable)
    )
    return sum(delivered)


async def _deliver(
    store: Store,
    channels: Mapping[str, Channel],
    notification: Notification,
    budget: timedelta,
    clock: Callable[[], datetime],
    metrics: Metrics | None,
) -> bool:
    """Send one notification and record its outcome; True when delivered. Never raises (but
    for cancellation): a failure to decide or record is logged, and the lease, once it runs
    out, sends the notification again."""
    delivery = await _send(channels, notification, budget)
    try:
        now = clock()
        outcome = outcome_of(notification, delivery, now)
        # The store is synchronous: its commit runs in a worker thread so that the other
        # sends of the pass go on meanwhile.
        await asyncio.to_thread(_record, store, notification, outcome, now, metrics)
    except Exception:
        _log(notification).exception(
            "recording the outcome failed; the notification is sent again after its lease"
        )
        return False
    return outcome.kind == "delivered"


def _record(
    store: Store,
    notification: Notification,
    outcome: Outcome,
    now: datetime,
    metrics: Metrics | None,
) -> None:
    """Write one send's outcome to the store, log it, and count it."""
    if outcome.kind == "delivered":
        store.mark_delivered(notification.id, now, ref=outcome.ref)
        if metrics is not None:
            metrics.notification_latency.labels(notification.channel).observe(
                max((now - notification.created_at).total_seconds(), 0.0)
            )
    elif outcome.kind == "failed":
        detail = (
            f"notification to {notification.recipient} via {notification.channel} "
            f"failed for good: {outcome.detail}"
        )
        store.mark_failed(
            notification.id,
            now,
            outcome.detail,
            Event(notification.incident_id, now, "note", AUTO, detail),
        )
        _log(notification).error("notification failed", error=outcome.detail)
    else:
        assert outcome.next_attempt_at is not None
        store.mark_retry(notification.id, now, outcome.detail, outcome.next_attempt_at)
        _log(notification).warning(
            "notification will be retried",
            error=outcome.detail,
            next_attempt_at=outcome.next_attempt_at.isoformat(),
        )
    if metrics is not None:
        metrics.notifications.labels(notification.channel, outcome.kind).inc()


def _supersede(
    store: Store,
    notification: Notification,
    reason: str,
    now: datetime,
    metrics: Metrics | None,
) -> None:
    """Finish a notification made moot without sending it; a failure to record that is
    logged and leaves it leased (judged again after the lease), never stopping the pass."""
    try:
        store.mark_superseded(notification.id, now, reason)
    except Exception:
        _log(notification).exception("recording the superseded notification failed")
        return
    _log(notification).info("notification superseded", reason=reason)
    if metrics is not None:
        metrics.notifications.labels(notification.channel, "superseded").inc()


def _log(notification: Notification) -> Any:
    """The outbox logger bound to one notification's identity (never its text or address)."""
    return log.bind(
        notification=notification.id,
        incident=notification.incident_id,
        channel=notification.channel,
        recipient=notification.recipient,
    )


async def _send(
    channels: Mapping[str, Channel], notification: Notification, budget: timedelta
) -> Delivery:
    """Send through the notification's channel within ``budget``: a send still running when
    its lease would run out is abandoned and retried, never claimed twice while in flight
    (a relay answering each SMTP command slowly can outlast any per-command timeout)."""
    channel = channels.get(notification.channel)
    if channel is None:
        return Delivery.give_up(f"channel {notification.channel!r} is no longer configured")
    try:
        async with asyncio.timeout(budget.total_seconds()):
            return await channel.send(notification)
    except TimeoutError:
        return Delivery.retry(
            f"{notification.channel}: no delivery within {budget.total_seconds():g}s"
        )
    except Exception as error:  # a channel bug must not lose the notification
        log.exception("channel raised", channel=notification.channel)
        return Delivery.retry(f"{type(error).__name__} in channel {notification.channel!r}")
