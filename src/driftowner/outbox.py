"""The outbox worker: lease due notifications, send each through its channel, record the
outcome, retry with backoff, and give up loudly. A notification is never dropped silently."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

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
FIRST_RETRY = timedelta(seconds=5)
LONGEST_RETRY = timedelta(minutes=15)


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


def next_attempt(attempts: int, now: datetime, retry_after: float | None) -> datetime:
    """Exponential backoff from 5 s to 15 min, never sooner than the server asked."""
    backoff: timedelta = min(FIRST_RETRY * 2 ** max(attempts - 1, 0), LONGEST_RETRY)
    if retry_after is not None:
        backoff = max(backoff, timedelta(seconds=retry_after))
    return now + backoff


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
    if now - notification.created_at >= MAX_AGE:
        return f"{delivery.detail} (gave up: undelivered for 24h)"
    return None


async def deliver_due(
    store: Store,
    channels: Mapping[str, Channel],
    clock: Callable[[], datetime],
    metrics: Metrics | None = None,
    limit: int = 100,
    lease: timedelta = LEASE,
) -> int:
    """One pass over the outbox. Returns how many notifications were delivered."""
    leased = store.lease_due(clock(), lease, limit)
    if not leased:
        return 0
    states = store.incident_states(n.incident_id for n in leased)
    sendable = []
    for notification in leased:
        reason = superseded(notification, states.get(notification.incident_id))
        if reason is None:
            sendable.append(notification)
            continue
        store.mark_superseded(notification.id, clock(), reason)
        _log(notification).info("notification superseded", reason=reason)
        if metrics is not None:
            metrics.notifications.labels(notification.channel, "superseded").inc()
    budget = max(lease - timedelta(seconds=5), lease / 2)
    outcomes = await asyncio.gather(*(_send(channels, n, budget) for n in sendable))
    delivered = 0
    for notification, delivery in zip(sendable, outcomes, strict=True):
        now = clock()
        if delivery.ok:
            store.mark_delivered(notification.id, now)
            delivered += 1
            outcome = "delivered"
            if metrics is not None:
                metrics.notification_latency.labels(notification.channel).observe(
                    max((now - notification.created_at).total_seconds(), 0.0)
                )
        elif (reason := gives_up(notification, delivery, now)) is not None:
            outcome = "failed"
            detail = (
                f"notification to {notification.recipient} via {notification.channel} "
                f"failed for good: {reason}"
            )
            store.mark_failed(
                notification.id,
                now,
                reason,
                Event(notification.incident_id, now, "note", AUTO, detail),
            )
            _log(notification).error("notification failed", error=reason)
        else:
            when = next_attempt(notification.attempts + 1, now, delivery.retry_after)
            store.mark_retry(notification.id, now, delivery.detail, when)
            outcome = "retry"
            _log(notification).warning(
                "notification will be retried",
                error=delivery.detail,
                next_attempt_at=when.isoformat(),
            )
        if metrics is not None:
            metrics.notifications.labels(notification.channel, outcome).inc()
    return delivered


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
