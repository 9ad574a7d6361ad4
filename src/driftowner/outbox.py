"""The outbox worker: lease due notifications, send each through its channel, record each
outcome as soon as its send finishes, retry with backoff, and give up loudly. A notification
is never dropped silently, and one notification's trouble never decides another's outcome."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import structlog

from driftowner.channels import Channel, GroupChannel
from driftowner.config import Config, SlackChannelConfig
from driftowner.escalation import fallback_of
from driftowner.grouping import GROUPS_KEPT, Grouper, GroupKey, key_of, listing, policy_of
from driftowner.ids import new_notification_id
from driftowner.metrics import Metrics
from driftowner.model import AUTO, Delivery, Event, GroupThread, Notification, State
from driftowner.store import Settled, Store, StoreUnavailable

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
JITTER = 0.5
"""The share of a backoff that is random: a retry waits between 50% and 100% of it."""
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
    attempts: int,
    now: datetime,
    retry_after: float | None,
    give_up_at: datetime,
    jitter: float = 1.0,
) -> datetime:
    """When to try again: exponential backoff from 5 s to 15 min with jitter, never sooner
    than the server asked (capped at LONGEST_SERVER_DELAY), never later than the give-up time.

    Jitter spreads the retries of pages that failed together (a receiver that was down) so
    they do not all come back at once: the wait is between half and all of the backoff.

    Args:
        attempts: Attempts made so far, the failed one included.
        now: The time the failed attempt finished.
        retry_after: The server's requested delay in seconds, if any (untrusted).
        give_up_at: When the notification gives up (created + MAX_AGE): its last attempt is
            made then at the latest, so it gives up on schedule.
        jitter: A draw in [0, 1] (the shell passes a random one); 1 waits the whole backoff,
            0 half of it. Values outside are clamped.
    """
    doublings = min(max(attempts - 1, 0), _MAX_DOUBLINGS)
    backoff = min(FIRST_RETRY * (1 << doublings), LONGEST_RETRY)
    draw = min(max(jitter, 0.0), 1.0) if not math.isnan(jitter) else 1.0
    backoff = backoff * (1 - JITTER + JITTER * draw)
    return min(now + max(backoff, server_delay(retry_after)), max(give_up_at, now))


def give_up_at(notification: Notification) -> datetime:
    """When a notification still undelivered gives up: MAX_AGE after it was made."""
    return notification.created_at + MAX_AGE


def superseded(notification: Notification, state: State | None) -> str | None:
    """Why a notification must not be sent any more, or None. A page to act on an open
    incident is moot once it is acknowledged or resolved, as is the news of an escalation step
    (``stepped_up``), and a reminder once the incident is no longer acknowledged; resolutions,
    a person's notes (``noted``: news whatever the state) and contributor notices always go
    out."""
    purpose = notification.message.purpose
    if state is None:
        return None
    if purpose in ("opened", "reopened", "escalated") and state != "open":
        return f"incident {state} before the page was delivered"
    if purpose == "stepped_up" and state != "open":
        return f"incident {state} before the escalation's news was delivered"
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


def outcome_of(
    notification: Notification, delivery: Delivery, now: datetime, jitter: float = 1.0
) -> Outcome:
    """The outcome of one send of ``notification`` that finished at ``now`` with ``delivery``.

    Args:
        notification: The notification as leased (``attempts`` not counting this send).
        delivery: What its channel reported.
        now: When the send finished.
        jitter: The retry's random draw in [0, 1] (see :func:`next_attempt`).
    """
    if delivery.ok:
        return Outcome("delivered", ref=delivery.ref)
    reason = gives_up(notification, delivery, now)
    if reason is not None:
        return Outcome("failed", reason)
    when = next_attempt(
        notification.attempts + 1, now, delivery.retry_after, give_up_at(notification), jitter
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
    outcome as soon as its own send finishes. Each notification goes on its own: grouping is
    the delivery loop's (:class:`Deliverer`), which the daemon runs.

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
        notification = _threaded(notification, threads.get(notification.id))
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
    return await _settle(recorder(store), notification, delivery, clock, metrics)


Record = Callable[[Settled], Awaitable[None]]
"""Writes one outcome to the store (at once, or in a group commit); raises if it could not."""


def recorder(store: Store) -> Record:
    """A :data:`Record` that commits each outcome on its own, in a worker thread."""

    async def record(settled: Settled) -> None:
        await asyncio.to_thread(store.settle, [settled])

    return record


async def _settle(
    record: Record,
    notification: Notification,
    delivery: Delivery,
    clock: Callable[[], datetime],
    metrics: Metrics | None,
    jitter: float = 1.0,
    fallback: Callable[[Notification, datetime], Notification | None] | None = None,
) -> bool:
    """Decide and record one finished send's outcome; True when delivered. A failure to
    decide or record is logged, and the lease, once it runs out, sends it again."""
    try:
        now = clock()
        outcome = outcome_of(notification, delivery, now, jitter)
        successor = None
        if outcome.kind == "failed" and fallback is not None:
            successor = fallback(notification, now)
        # The store is synchronous: its commit runs in a worker thread so that the other
        # sends go on meanwhile.
        await record(settled_of(notification, outcome, now, successor))
    except Exception:
        _log(notification).exception(
            "recording the outcome failed; the notification is sent again after its lease"
        )
        return False
    _recorded(notification, outcome, now, metrics, successor)
    return outcome.kind == "delivered"


def settled_of(
    notification: Notification,
    outcome: Outcome,
    now: datetime,
    fallback: Notification | None = None,
) -> Settled:
    """What the store records of one send: its outcome, and for a give-up the incident's
    event and the fallback page that takes over."""
    if outcome.kind == "delivered":
        return Settled(notification.id, now, "delivered", ref=outcome.ref)
    if outcome.kind == "retry":
        return Settled(notification.id, now, "retry", outcome.detail, outcome.next_attempt_at)
    if fallback is None:
        detail = (
            f"notification to {notification.recipient} via {notification.channel} "
            f"failed for good: {outcome.detail}"
        )
    else:
        detail = (
            f"page to {notification.recipient} via {notification.channel} failed for "
            f"good ({outcome.detail}); falling back to {fallback.channel}"
        )
    event = Event(notification.incident_id, now, "note", AUTO, detail)
    return Settled(notification.id, now, "failed", outcome.detail, None, event, fallback)


def _recorded(
    notification: Notification,
    outcome: Outcome,
    now: datetime,
    metrics: Metrics | None,
    fallback: Notification | None,
) -> None:
    """Log and count one recorded outcome."""
    if outcome.kind == "failed":
        _log(notification).error(
            "notification failed",
            error=outcome.detail,
            fallback=None if fallback is None else fallback.channel,
        )
    elif outcome.kind == "retry":
        assert outcome.next_attempt_at is not None
        _log(notification).warning(
            "notification will be retried",
            error=outcome.detail,
            next_attempt_at=outcome.next_attempt_at.isoformat(),
        )
    if metrics is not None:
        if outcome.kind == "delivered":
            metrics.notification_latency.labels(notification.channel).observe(
                max((now - notification.created_at).total_seconds(), 0.0)
            )
        metrics.notifications.labels(notification.channel, outcome.kind).inc()


class GroupCommit:
    """Records outcomes as their sends finish, many to a transaction: while one commit is
    being written, the outcomes that finish meanwhile wait and go together in the next. With
    a durable store (SQLite's synchronous=FULL) a commit costs an fsync, so this is what lets
    thousands of sends a second each be recorded, none waiting for a batch to fill."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: list[tuple[Settled, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, settled: Settled) -> None:
        """Record ``settled`` in the next commit; raises what the store raised for it."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((settled, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        await done

    async def _write(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await asyncio.to_thread(self.store.settle, [s for s, _ in batch])
            except StoreUnavailable as error:
                for _, done in batch:
                    _resolve(done, error)
            except Exception:
                # One outcome's trouble (a fallback that cannot be written) must not decide
                # the others': each is tried on its own.
                for settled, done in batch:
                    try:
                        await asyncio.to_thread(self.store.settle, [settled])
                    except Exception as error:
                        _resolve(done, error)
                    else:
                        _resolve(done, None)
            else:
                for _, done in batch:
                    _resolve(done, None)


def _resolve(done: asyncio.Future[None], error: Exception | None) -> None:
    """Settle a recorder's future unless its waiter has gone (cancelled)."""
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


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


def _threaded(notification: Notification, thread: str | None) -> Notification:
    """``notification`` told the root message of its conversation (copied only when it has
    one: most pages start no conversation, and a copy per page is a cost per page)."""
    if thread == notification.thread:
        return notification
    return dataclasses.replace(notification, thread=thread)


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


async def _send_group(
    channels: Mapping[str, Channel],
    members: tuple[Notification, ...],
    thread: GroupThread,
    budget: timedelta,
) -> Delivery:
    """Send a group's members as one message in its ``thread`` within ``budget`` (see
    :func:`_send`)."""
    name = members[0].channel
    channel = channels.get(name)
    if not isinstance(channel, GroupChannel):
        return Delivery.retry(f"channel {name!r} can no longer send groups")
    try:
        async with asyncio.timeout(budget.total_seconds()):
            return await channel.send_group(members, thread)
    except TimeoutError:
        return Delivery.retry(f"{name}: no delivery within {budget.total_seconds():g}s")
    except Exception as error:  # a channel bug must not lose the notifications
        log.exception("channel raised", channel=name)
        return Delivery.retry(f"{type(error).__name__} in channel {name!r}")


# -- pacing: per destination, concurrency, rate and a server's pause ----------------------------

Destination = tuple[str, str]
"""Where sends contend: (channel, conversation) for Slack's Web API, whose limit is per
conversation; (channel, "") otherwise, where every send goes to one webhook, relay or URL."""


def destination_of(config: Config, notification: Notification) -> Destination:
    """The destination ``notification`` is paced by."""
    spec = config.channels.get(notification.channel)
    if isinstance(spec, SlackChannelConfig) and spec.token is not None:
        return (notification.channel, notification.address)
    return (notification.channel, "")


@dataclass(frozen=True, slots=True)
class Pace:
    """A destination's limits: sends in flight at once, and sends started per second (None:
    no limit)."""

    max_in_flight: int
    rate: float | None = None


def pace_of(config: Config, channel: str) -> Pace:
    """The configured pace of a channel (a channel no longer configured: one at a time)."""
    spec = config.channels.get(channel)
    if spec is None:
        return Pace(1)
    return Pace(spec.max_in_flight, spec.rate)


@dataclass(slots=True)
class _Lane:
    in_flight: int = 0
    next_start: datetime | None = None
    paused_until: datetime | None = None
    send_seconds: float = 0.0
    """A moving average of how long a send takes here (to foresee a backlog)."""


class Throttle:
    """Per-destination pacing decisions, the clock passed in: how many sends run at once, how
    often one may start, and a pause a server asked for (a 429 pauses its destination, not
    everyone)."""

    def __init__(self, pace: Callable[[Destination], Pace]) -> None:
        self._pace = pace
        self._lanes: dict[Destination, _Lane] = {}

    def _lane(self, destination: Destination) -> _Lane:
        lane = self._lanes.get(destination)
        if lane is None:
            lane = self._lanes[destination] = _Lane()
        return lane

    def start_at(self, destination: Destination, now: datetime) -> datetime | None:
        """When the next send to ``destination`` may start: ``now`` or later (its rate, a
        pause), or None while its ``max_in_flight`` sends are running."""
        lane = self._lane(destination)
        if lane.in_flight >= self._pace(destination).max_in_flight:
            return None
        return max(now, lane.next_start or now, lane.paused_until or now)

    def start(self, destination: Destination, now: datetime) -> None:
        """Count a send to ``destination`` started at ``now``."""
        lane = self._lane(destination)
        rate = self._pace(destination).rate
        lane.in_flight += 1
        if rate is not None:
            lane.next_start = max(now, lane.next_start or now) + timedelta(seconds=1 / rate)

    def finish(
        self,
        destination: Destination,
        now: datetime,
        seconds: float,
        retry_after: float | None = None,
    ) -> None:
        """Count a send finished at ``now`` after ``seconds``; a server's ``retry_after``
        (seconds, untrusted: see :func:`server_delay`) pauses the destination."""
        lane = self._lane(destination)
        lane.in_flight = max(lane.in_flight - 1, 0)
        if math.isfinite(seconds) and seconds >= 0:
            lane.send_seconds = (
                seconds if not lane.send_seconds else (0.8 * lane.send_seconds + 0.2 * seconds)
            )
        pause = server_delay(retry_after)
        if pause:
            lane.paused_until = max(lane.paused_until or now, now + pause)

    def clears_at(self, destination: Destination, waiting: int, now: datetime) -> datetime:
        """When ``waiting`` more sends to ``destination`` will have started, foreseen from
        its rate, its pause and how long its sends take."""
        lane = self._lane(destination)
        pace = self._pace(destination)
        begin = max(now, lane.next_start or now, lane.paused_until or now)
        by_rate = waiting / pace.rate if pace.rate is not None else 0.0
        by_pipe = (waiting // pace.max_in_flight) * lane.send_seconds
        return begin + timedelta(seconds=max(by_rate, by_pipe))

    def idle(self) -> bool:
        """No send is in flight anywhere."""
        return all(lane.in_flight == 0 for lane in self._lanes.values())


# -- the delivery loop ---------------------------------------------------------------------------


def _monotonic() -> datetime:
    """Elapsed real time as a datetime (its epoch is arbitrary): what pacing measures."""
    return datetime.min.replace(tzinfo=UTC) + timedelta(seconds=time.monotonic())


BATCH = 200
"""Notifications leased at once; the loop leases again as soon as they are under way."""
IDLE_POLL = timedelta(seconds=1)
"""With nothing due, the loop still looks this often (writes by the API, another instance's
retries); an escalation that writes pages wakes it at once."""
SEND_MARGIN = timedelta(seconds=5)
"""A send must finish this long before its lease runs out."""
FORMING_LIMIT = 5000
"""Group members held at most while the rest of their groups is leased; past this many the
groups go out as they are."""


@dataclass(frozen=True, slots=True)
class _Claimed:
    """One claim's result: the notifications leased at ``now`` until ``leased_until`` (up
    to ``room``), their incidents' states and the roots of their conversations."""

    now: datetime
    leased_until: datetime
    room: int
    leased: list[Notification]
    states: dict[str, State]
    threads: dict[str, str]


@dataclass(slots=True)
class _Waiting:
    notification: Notification
    leased_until: datetime
    members: tuple[Notification, ...] = ()
    """A group's notifications (``notification`` is the first), sent as one message; empty
    for a notification sent on its own."""
    thread: GroupThread = field(default_factory=GroupThread)
    """A group's thread as it will be once this message is sent (see
    :func:`~driftowner.grouping.listing`)."""
    ticket: int | None = None
    """A group message's ticket while it is in flight (see
    :meth:`~driftowner.grouping.Grouper.sending`)."""

    def ids(self) -> list[str]:
        """The ids of the notifications this send delivers."""
        return [n.id for n in self.members] if self.members else [self.notification.id]


class Deliverer:
    """The outbox's delivery loop: while work is due it leases in batches and sends, each
    destination paced by its channel's ``max_in_flight`` and ``rate``; it records each
    outcome as its send finishes, and sleeps until woken (:meth:`wake`) or until the next
    notification falls due. What a destination cannot take within its lease is handed back
    to the store, due when the destination will be free, so a lease never runs out on a page
    waiting in memory and another instance never sends it twice."""

    def __init__(
        self,
        store: Store,
        channels: Mapping[str, Channel],
        config: Config,
        clock: Callable[[], datetime],
        metrics: Metrics | None = None,
        *,
        lease: timedelta | None = None,
        batch: int = BATCH,
        leading: Callable[[], bool] = lambda: True,
        jitter: Callable[[], float] = random.random,
        new_id: Callable[[], str] = new_notification_id,
        pace_clock: Callable[[], datetime] | None = None,
        report: Callable[[StoreUnavailable | None], None] = lambda problem: None,
    ) -> None:
        self.store = store
        self.pace_clock = pace_clock or _monotonic
        """The time pacing runs on (rates, pauses, send durations): real elapsed time, so a
        test's frozen ``clock`` never stalls a rate-limited destination."""
        self.report = report
        """Told of each drain whether the store could be written (the daemon's health)."""
        self.clock = clock
        self.metrics = metrics
        self.batch = batch
        self.leading = leading
        self._jitter = jitter
        self._new_id = new_id
        self._lease_override = lease
        self.configure(config, channels)
        self.throttle = Throttle(lambda d: self._paces.get(d[0]) or pace_of(self.config, d[0]))
        self._queues: dict[Destination, list[_Waiting]] = {}
        self.grouper = Grouper()
        self._forming: dict[GroupKey, list[_Waiting]] = {}
        """Group members due now, held until every member due now is leased."""
        self._group_writes = asyncio.Lock()
        """One write of the groups' states at a time, so an older never lands after a newer."""
        self._commits = GroupCommit(store)
        self._sends: set[asyncio.Task[bool]] = set()
        self._claiming: asyncio.Task[_Claimed] | None = None
        """The claim under way, if any (see :meth:`drain`)."""
        self._sends_over = 0
        """Sends whose outcome is committed, counted; compared with :attr:`_claim_mark`."""
        self._claim_mark = 0
        """:attr:`_sends_over` when the last claim began: a send settled after it (a fallback
        queued, a retry due at once) may have written what that claim could not see."""
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self.delivered = 0
        self._stopping = False

    def configure(self, config: Config, channels: Mapping[str, Channel]) -> None:
        """Use a reloaded config and its channels from the next send on."""
        self.config = config
        self.channels = channels
        self.lease = self._lease_override or lease_for(config)
        # Read at every send's start and finish: worked out once per config.
        self._paces = {name: pace_of(config, name) for name in config.channels}

    def wake(self) -> None:
        """Look for due notifications now (escalation or the API just wrote some)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver while leading, until cancelled or :meth:`stop`."""
        while not self._stopping:
            self._wake.clear()
            if self.leading():
                await self.deliver_now()
            await self._idle()

    async def deliver_now(self) -> int:
        """:meth:`drain`, its store trouble reported rather than raised; what it could not
        send stays in the store for the next drain (or, once its lease ends, another
        instance). Returns how many notifications were delivered."""
        try:
            delivered = await self.drain()
        except StoreUnavailable as error:
            self.report(error)
            await self._release_waiting()
            return 0
        except Exception:
            log.exception("delivery failed")
            await self._release_waiting()
            return 0
        self.report(None)
        return delivered

    async def _idle(self) -> None:
        """Sleep until woken, until the next notification is due, or IDLE_POLL."""
        wait = IDLE_POLL.total_seconds()
        with contextlib.suppress(Exception):
            due = await asyncio.to_thread(self.store.next_due) if self.leading() else None
            if due is not None:
                wait = min(wait, max((due - self.clock()).total_seconds(), 0.0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), wait)

    async def drain(self) -> int:
        """Deliver until nothing is due, in flight or waiting for its destination.

        The next batch is claimed while the last is being sent: a claim waits for the
        store (SQLite's write lock, held through a group commit's fsync, then its own
        commit), and the destinations keep sending from their queues meanwhile.

        Returns:
            How many notifications were delivered.
        """
        delivered_before = self.delivered
        more = True
        while not self._stopping:
            self._changed.clear()
            if not self.leading():
                # Another instance leads now: what waits here is its to send.
                await self._release_waiting()
                more = False
            if self._claiming is not None and self._claiming.done():
                claiming, self._claiming = self._claiming, None
                claimed = claiming.result()  # the store's trouble is raised here
                more = len(claimed.leased) == claimed.room
                await self._enqueue(claimed, complete=not more)
            waiting = sum(len(q) for q in self._queues.values())
            # Refill in chunks, not one lease per finished send.
            if more and self._claiming is None and waiting <= self.batch // 2 and self.leading():
                self._claim_mark = self._sends_over
                self._claiming = asyncio.create_task(self._claim(self.batch - waiting))
                self._claiming.add_done_callback(lambda _: self._changed.set())
            wake_at = await self._pump()
            if not self._sends and not any(self._queues.values()) and self._claiming is None:
                if self._sends_over != self._claim_mark and self.leading():
                    more = True  # claim once more: see what the last outcomes wrote
                    continue
                if not more or not self.leading():
                    break
                continue
            waiting = sum(len(q) for q in self._queues.values())
            if more and self._claiming is None and waiting <= self.batch // 2:
                continue  # the pump took the queue down: claim the next batch now
            timeout = None
            if wake_at is not None:
                timeout = max((wake_at - self.pace_clock()).total_seconds(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
            more = True
        return self.delivered - delivered_before

    async def _claim(self, room: int) -> _Claimed:
        """Lease up to ``room`` due notifications, with what deciding on them needs: their
        incidents' states and their conversations' roots (store reads, in worker threads)."""
        now, lease = self.clock(), self.lease
        leased = await asyncio.to_thread(self.store.lease_due, now, lease, room)
        if not leased:
            return _Claimed(now, now + lease, room, [], {}, {})
        states = await asyncio.to_thread(
            self.store.incident_states, (n.incident_id for n in leased)
        )
        threads = await asyncio.to_thread(self.store.threads, leased)
        return _Claimed(now, now + lease, room, leased, states, threads)

    async def _enqueue(self, claimed: _Claimed, complete: bool) -> None:
        """Queue leased notifications by destination; finish the moot ones; hold a group's
        members until ``complete`` (nothing more is due: every member due now is leased);
        hand back what a destination cannot start within the lease."""
        now = claimed.now
        later: dict[str, tuple[datetime, datetime]] = {}
        sends = await self._sendable(claimed, later) if claimed.leased else []
        forming = sum(len(members) for members in self._forming.values())
        if self._forming and (complete or forming >= FORMING_LIMIT):
            sends += await self._formed(now)
        paced_now = self.pace_clock()
        horizon = self.lease - SEND_MARGIN - self._send_budget_floor()
        for waiting in sends:
            destination = destination_of(self.config, waiting.notification)
            queue = self._queues.setdefault(destination, [])
            starts_in = self.throttle.clears_at(destination, len(queue), paced_now) - paced_now
            if starts_in > horizon:
                later.update({i: (now + starts_in, waiting.leased_until) for i in waiting.ids()})
                self._unsent(waiting)
            else:
                queue.append(waiting)
        if later:
            await asyncio.to_thread(self.store.defer, later)

    async def _sendable(
        self, claimed: _Claimed, later: dict[str, tuple[datetime, datetime]]
    ) -> list[_Waiting]:
        """The claimed notifications to send on their own now; the moot ones finished, group
        members held (see :meth:`_grouped`)."""
        now = claimed.now
        # Each notification learns the root message of its conversation, if one was delivered.
        leased = [_threaded(n, claimed.threads.get(n.id)) for n in claimed.leased]
        sendable: list[Notification] = []
        for notification in sending_order(leased):
            reason = superseded(notification, claimed.states.get(notification.incident_id))
            if reason is not None:
                await asyncio.to_thread(
                    _supersede, self.store, notification, reason, now, self.metrics
                )
            else:
                sendable.append(notification)
        return await self._grouped(sendable, now, later)

    async def _grouped(
        self,
        notifications: list[Notification],
        now: datetime,
        later: dict[str, tuple[datetime, datetime]],
    ) -> list[_Waiting]:
        """The notifications (leased at ``now``) to send on their own now: their channel
        does not group, or their incident's conversation has its own root (a reply under it,
        at once; a resolution there takes the incident out of its group). A group's member
        due now joins its group in ``_forming``, sent once every member due now is leased;
        one due later goes into ``later``. Each group's state comes from the store the first
        time this instance meets the group (a restart, a failover); members the store knows
        resolved leave it; what changed is written back before any member is handed back."""
        self.grouper.forget(now - GROUPS_KEPT)
        sends: list[_Waiting] = []
        grouped: list[tuple[Notification, _Waiting]] = []
        ended: list[Notification] = []
        for notification in notifications:
            channel = self.channels.get(notification.channel)
            waiting = _Waiting(notification, now + self.lease)
            if policy_of(self.config, notification.channel).off or not isinstance(
                channel, GroupChannel
            ):
                sends.append(waiting)
            elif notification.thread is not None:
                sends.append(waiting)
                if notification.message.state == "resolved":
                    ended.append(notification)
            else:
                grouped.append((notification, waiting))
        keys = {key_of(n) for n, _ in grouped} | {key_of(n) for n in ended}
        held = (w.notification for members in self._forming.values() for w in members)
        going = {n.incident_id for n, _ in grouped} | {n.incident_id for n in held}
        await self._load_groups(keys, going, now)
        for notification in ended:
            self.grouper.resolved(key_of(notification), [notification.incident_id])
        for notification, waiting in grouped:
            policy = policy_of(self.config, notification.channel)
            due = self.grouper.due_at(notification, policy, now)
            if due > now:
                later[notification.id] = (due, waiting.leased_until)
            else:
                self._forming.setdefault(key_of(notification), []).append(waiting)
        await self._save_groups()
        return sends

    async def _load_groups(self, keys: set[GroupKey], going: set[str], now: datetime) -> None:
        """Know the states of the groups ``keys``: those this instance does not hold read
        from the store; then every member the store has as resolved taken out (its
        resolution went elsewhere, or was never delivered here), but for the incidents
        ``going`` out in their groups now (leased, or held from an earlier batch), and not
        while a group's flush time is ahead (what waits for it may be their resolutions):
        they leave when their resolution goes out, so that a resolution follows
        ``group_interval`` as any update does, in the group's thread. A group left without
        members has no thread (see :func:`~driftowner.grouping.resolved`)."""
        missing = self.grouper.missing(keys)
        if missing:
            self.grouper.load(missing, await asyncio.to_thread(self.store.groups, missing))
        settled = {
            key
            for key in keys
            if (flush_at := self.grouper.state(key).flush_at) is None or flush_at <= now
        }
        members = self.grouper.members(settled) - going
        if not members:
            return
        states = await asyncio.to_thread(self.store.incident_states, members)
        over = {incident for incident, state in states.items() if state == "resolved"}
        if over:
            for key in settled:
                self.grouper.resolved(key, over)

    async def _formed(self, now: datetime) -> list[_Waiting]:
        """Every group held in ``_forming``, going out now, as one send each; its lease is
        its members' earliest. A group of one is sent on its own (the root of its incident's
        own conversation), unless its group's thread goes on (then it is the thread's next
        message; see :func:`~driftowner.grouping.formed`)."""
        sends = []
        for key, held in self._forming.items():
            members = tuple(w.notification for w in held)
            messages = [n.message for n in members]
            retried = all(n.attempts > 0 for n in members)
            thread = self.grouper.formed(key, messages, now, retried=retried).thread
            leased_until = min(w.leased_until for w in held)
            if len(members) > 1 or thread.ref is not None:
                listed = listing(thread, messages)
                ticket = self.grouper.sending(key)
                sends.append(_Waiting(members[0], leased_until, members, listed, ticket))
            else:
                sends.append(_Waiting(members[0], leased_until))
        await self._save_groups()
        self._forming.clear()
        return sends

    async def _send_group(self, waiting: _Waiting, budget: timedelta) -> Delivery:
        """Send a group's message in its thread; once delivered, the group's thread (the
        root the channel answered, what it lists) is kept, unless this instance's copy of its
        groups was cleared since it went out (it lost the lead, or the store failed): then
        the group's state in the store stands. The root is the group's, not any member
        incident's: it starts no incident's conversation."""
        delivery = Delivery.retry("the group's send was interrupted")
        try:
            delivery = await _send_group(self.channels, waiting.members, waiting.thread, budget)
        finally:
            if not delivery.ok:
                self._unsent(waiting)
        if not delivery.ok:
            return delivery
        if waiting.ticket is not None:
            key = key_of(waiting.notification)
            self.grouper.sent(key, waiting.ticket, waiting.thread, delivery.ref)
        try:
            await self._save_groups()
        except Exception:
            # Delivered all the same; unkept, the group's next message starts a new thread.
            _log(waiting.notification).exception("keeping the group's thread failed")
        return dataclasses.replace(delivery, ref=None)

    def _unsent(self, waiting: _Waiting) -> None:
        """A group message is no longer in flight: its ticket goes (see
        :meth:`~driftowner.grouping.Grouper.unsent`)."""
        if waiting.ticket is not None:
            self.grouper.unsent(key_of(waiting.notification), waiting.ticket)

    async def _save_groups(self) -> None:
        """Write the groups' states changed since the last write."""
        async with self._group_writes:
            changed = self.grouper.changed()
            if changed:
                await asyncio.to_thread(self.store.save_groups, changed)
                self.grouper.saved(changed)

    def _send_budget_floor(self) -> timedelta:
        """The least time a send is given: its channel's timeout, as :func:`lease_for` has it."""
        return max((self.lease - timedelta(seconds=10)) / 2, timedelta(seconds=1))

    async def _pump(self) -> datetime | None:
        """Start every send the destinations allow now; hand back queues a pause holds past
        their lease. Returns when (on the pace clock) the next send may start; None when only
        a finished send frees one."""
        now, paced_now = self.clock(), self.pace_clock()
        wake_at: datetime | None = None
        for destination, queue in self._queues.items():
            while queue:
                at = self.throttle.start_at(destination, paced_now)
                if at is None:
                    break
                if at > paced_now:
                    starts = now + (at - paced_now)
                    if starts + self._send_budget_floor() > queue[0].leased_until - SEND_MARGIN:
                        due = {i: (starts, w.leased_until) for w in queue for i in w.ids()}
                        for w in queue:
                            self._unsent(w)
                        queue.clear()
                        await asyncio.to_thread(self.store.defer, due)
                    else:
                        wake_at = at if wake_at is None else min(wake_at, at)
                    break
                waiting = queue.pop(0)
                self.throttle.start(destination, paced_now)
                task = asyncio.create_task(self._send_one(destination, waiting, now, paced_now))
                self._sends.add(task)
                task.add_done_callback(self._finished)
        return wake_at

    async def _send_one(
        self, destination: Destination, waiting: _Waiting, started: datetime, paced: datetime
    ) -> bool:
        members = waiting.members or (waiting.notification,)
        budget = max(waiting.leased_until - SEND_MARGIN - started, timedelta(seconds=1))
        try:
            if waiting.members:
                delivery = await self._send_group(waiting, budget)
            else:
                delivery = await _send(self.channels, waiting.notification, budget)
            finished = self.pace_clock()
            self.throttle.finish(
                destination,
                finished,
                (finished - paced).total_seconds(),
                None if delivery.ok else delivery.retry_after,
            )
            # The destination has room again: its next send starts while this outcome is
            # committed, not after (else a commit's fsync paces every destination).
            self._changed.set()
            # One draw for the whole group: its members retry together, as a group again.
            jitter = self._jitter()
            settling = [
                _settle(
                    self._commits.record,
                    notification,
                    delivery,
                    self.clock,
                    self.metrics,
                    jitter,
                    lambda n, now: fallback_of(self.config, n, now, self._new_id),
                )
                for notification in members
            ]
            # A lone page settles in this task: gather would start a task for it.
            settled = [await settling[0]] if len(settling) == 1 else await asyncio.gather(*settling)
            self.delivered += sum(settled)
            return all(settled)
        finally:
            self._changed.set()

    def _finished(self, task: asyncio.Task[bool]) -> None:
        """A send's task is over: forget it, and wake :meth:`drain`, which may have looked
        at the set of sends (this task still in it) after the send's own wake-up."""
        self._sends.discard(task)
        self._sends_over += 1
        self._changed.set()

    async def stop(self, grace: float) -> None:
        """Start nothing more; let the sends in flight finish and record (within ``grace``
        seconds); hand back what waits, so another instance takes it at once."""
        self._stopping = True
        self._wake.set()
        self._changed.set()
        if self._sends:
            await asyncio.wait(set(self._sends), timeout=grace)
        await self._release_waiting()

    async def _release_waiting(self) -> None:
        """Hand every notification waiting for its destination back to the store, due now,
        and those of a claim under way once it is made (best effort: unreleased, its lease
        runs out soon anyway)."""
        due: dict[str, tuple[datetime, datetime]] = {}
        if self._claiming is not None:
            claiming, self._claiming = self._claiming, None
            with contextlib.suppress(Exception):
                claimed = await claiming
                due.update({n.id: (claimed.now, claimed.leased_until) for n in claimed.leased})
        now = self.clock()
        held = [w for q in self._queues.values() for w in q]
        held += [w for members in self._forming.values() for w in members]
        due.update({i: (now, w.leased_until) for w in held for i in w.ids()})
        self._queues.clear()
        self._forming.clear()
        # What this instance knew of its groups may be stale by the next drain: read again.
        self.grouper.clear()
        if due:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.defer, due)
