"""The outbox worker against a real store (each backend: a SQLite file, a PostgreSQL database)
and a scripted fake channel: delivered, retried with backoff, given up loudly with a note on
the incident, never dropped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from driftowner.channels import Channel
from driftowner.channels.slack import SlackWebApiChannel, SlackWebhookChannel
from driftowner.channels.webhook import WebhookChannel
from driftowner.metrics import Metrics
from driftowner.model import Delivery, Notification
from driftowner.outbox import (
    FIRST_RETRY,
    LONGEST_SERVER_DELAY,
    MAX_AGE,
    MAX_ATTEMPTS,
    deliver_due,
)
from driftowner.store import Changes, Settled, SqlStore, Store
from tests.fakes.slack import FakeSlack, api_rate_limited
from tests.integration.postgres_server import (  # noqa: F401 (fixtures)
    postgres_database_url,
    postgres_url,
    store_url,
)
from tests.unit.factories import T0, incident, notification


@dataclass
class FakeChannel:
    """A channel that records what it was asked to send and answers from a script (a
    Delivery, or an exception to raise); delivered once the script runs out."""

    name: str
    script: list[Delivery | Exception] = field(default_factory=list)
    sent: list[Notification] = field(default_factory=list)

    async def send(self, notification: Notification) -> Delivery:
        self.sent.append(notification)
        answer = self.script.pop(0) if self.script else Delivery.delivered()
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def aclose(self) -> None:
        """Nothing to release."""


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:  # noqa: F811 (a fixture)
    opened = SqlStore(store_url)
    opened.open()
    opened.apply(Changes(opened=[incident()]))
    yield opened
    opened.close()


def _queue(store: Store, *items: Notification) -> None:
    store.apply(Changes(notifications=list(items)))


def _only(store: Store) -> Notification:
    (stored,) = store.notifications("inc-1")
    return stored


def test_the_fake_channel_satisfies_the_channel_protocol() -> None:
    """The fake stands in for a real channel."""
    assert isinstance(FakeChannel("console"), Channel)


async def test_a_due_notification_is_delivered_once(store: Store) -> None:
    """A due notification is sent through its channel and marked delivered; the next pass
    sends nothing."""
    _queue(store, notification("n-1"))
    console = FakeChannel("console")
    clock = Clock(T0 + timedelta(seconds=1))
    assert await deliver_due(store, {"console": console}, clock) == 1
    assert [n.id for n in console.sent] == ["n-1"]
    assert console.sent[0] == notification("n-1")
    stored = _only(store)
    assert (stored.delivered_at, stored.attempts, stored.failed_at) == (clock.now, 1, None)
    assert store.outbox_pending() == 0
    clock.advance(3600)
    assert await deliver_due(store, {"console": console}, clock) == 0
    assert len(console.sent) == 1


async def test_a_recoverable_failure_is_retried_with_backoff(store: Store) -> None:
    """A recoverable failure schedules the next attempt 5 s later (then 10 s), keeps the
    error, and the notification is sent again only once that time comes."""
    _queue(store, notification("n-1"))
    console = FakeChannel("console", [Delivery.retry("503 unavailable"), Delivery.retry("503")])
    clock = Clock()
    assert await deliver_due(store, {"console": console}, clock) == 0
    stored = _only(store)
    assert stored.attempts == 1
    assert stored.next_attempt_at == T0 + timedelta(seconds=5)
    assert stored.last_error == "503 unavailable"
    assert stored.delivered_at is None and stored.failed_at is None
    assert store.outbox_pending() == 1
    clock.advance(4)
    await deliver_due(store, {"console": console}, clock)
    assert len(console.sent) == 1
    clock.advance(1)
    await deliver_due(store, {"console": console}, clock)
    assert len(console.sent) == 2
    assert _only(store).next_attempt_at == clock.now + timedelta(seconds=10)
    clock.advance(10)
    assert await deliver_due(store, {"console": console}, clock) == 1
    assert (_only(store).attempts, _only(store).delivered_at) == (3, clock.now)


async def test_retry_after_from_the_server_is_honoured(store: Store) -> None:
    """A rate limit's ``Retry-After`` pushes the next attempt out beyond the backoff."""
    _queue(store, notification("n-1"))
    console = FakeChannel("console", [Delivery.retry("429 rate_limited", retry_after=30)])
    await deliver_due(store, {"console": console}, Clock())
    assert _only(store).next_attempt_at == T0 + timedelta(seconds=30)


async def test_a_final_failure_is_recorded_noted_and_logged_never_dropped(store: Store) -> None:
    """A non-recoverable failure marks the notification failed (kept in the store with its
    error), appends a ``note`` event to the incident, and logs an error."""
    _queue(store, notification("n-1", channel="email", address="alice@example.com"))
    email = FakeChannel("email", [Delivery.give_up("550 no such user")])
    clock = Clock(T0 + timedelta(seconds=2))
    with capture_logs() as logs:
        assert await deliver_due(store, {"email": email}, clock) == 0
    stored = _only(store)
    assert (stored.failed_at, stored.attempts, stored.last_error) == (
        clock.now,
        1,
        "550 no such user",
    )
    assert stored.delivered_at is None
    assert store.outbox_pending() == 0
    (note,) = store.events("inc-1")
    assert (note.kind, note.actor, note.at) == ("note", "auto", clock.now)
    assert note.detail == "notification to alice via email failed for good: 550 no such user"
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert [(e["event"], e["notification"], e["incident"]) for e in errors] == [
        ("notification failed", "n-1", "inc-1")
    ]
    clock.advance(86400)
    assert await deliver_due(store, {"email": email}, clock) == 0
    assert len(email.sent) == 1


async def test_the_last_allowed_attempt_gives_up(store: Store) -> None:
    """A recoverable failure on the 12th attempt is final: failed, with a note."""
    _queue(store, notification("n-1", attempts=MAX_ATTEMPTS - 1))
    console = FakeChannel("console", [Delivery.retry("503")])
    await deliver_due(store, {"console": console}, Clock())
    stored = _only(store)
    assert stored.failed_at == T0 and stored.attempts == MAX_ATTEMPTS
    assert f"gave up after {MAX_ATTEMPTS} attempts" in (stored.last_error or "")
    assert [e.kind for e in store.events("inc-1")] == ["note"]


async def test_an_unknown_channel_gives_up_loudly(store: Store) -> None:
    """A notification for a channel no longer configured fails at once with a reason naming
    the channel, a note on the incident and an error log; it is not silently skipped."""
    _queue(store, notification("n-1", channel="pager"))
    console = FakeChannel("console")
    with capture_logs() as logs:
        await deliver_due(store, {"console": console}, Clock())
    stored = _only(store)
    assert stored.failed_at == T0
    assert stored.last_error == "channel 'pager' is no longer configured"
    assert console.sent == []
    (note,) = store.events("inc-1")
    assert "pager" in note.detail and note.kind == "note"
    assert any(e["log_level"] == "error" for e in logs)


async def test_a_channel_that_raises_is_retried(store: Store) -> None:
    """A channel bug (an exception instead of a Delivery) does not lose the notification: it
    is retried with backoff and the error names the exception."""
    _queue(store, notification("n-1"))
    console = FakeChannel("console", [RuntimeError("boom")])
    clock = Clock()
    with capture_logs():
        assert await deliver_due(store, {"console": console}, clock) == 0
    stored = _only(store)
    assert stored.attempts == 1
    assert stored.next_attempt_at == T0 + timedelta(seconds=5)
    assert stored.last_error == "RuntimeError in channel 'console'"
    assert stored.failed_at is None
    clock.advance(5)
    assert await deliver_due(store, {"console": console}, clock) == 1


async def test_each_notification_gets_its_own_outcome(store: Store) -> None:
    """In one pass, one delivered, one retried and one failed notification are each recorded
    as such; the pass counts only the delivered one and updates the metrics."""
    _queue(
        store,
        notification("n-ok", channel="console"),
        notification("n-retry", channel="email", address="alice@example.com"),
        notification("n-fail", channel="email", recipient="bob", address="bob@example.com"),
    )

    class ByAddress(FakeChannel):
        async def send(self, notification: Notification) -> Delivery:
            self.sent.append(notification)
            if notification.address == "bob@example.com":
                return Delivery.give_up("550 no such user")
            return Delivery.retry("421 try later")

    console = FakeChannel("console")
    email = ByAddress("email")
    clock = Clock(T0 + timedelta(seconds=3))
    metrics = Metrics(store, clock)
    with capture_logs():
        assert await deliver_due(store, {"console": console, "email": email}, clock, metrics) == 1
    by_id = {n.id: n for n in store.notifications("inc-1")}
    assert by_id["n-ok"].delivered_at == clock.now
    assert by_id["n-retry"].next_attempt_at == clock.now + timedelta(seconds=5)
    assert by_id["n-fail"].failed_at == clock.now
    assert store.outbox_pending() == 1
    sample = metrics.registry.get_sample_value
    for channel, outcome in (("console", "delivered"), ("email", "retry"), ("email", "failed")):
        assert (
            sample("driftowner_notifications_total", {"channel": channel, "outcome": outcome}) == 1
        )
    assert sample("driftowner_notification_latency_seconds_sum", {"channel": "console"}) == 3.0


@pytest.mark.parametrize(
    ("state", "purpose", "sent"),
    [
        ("acknowledged", "escalated", False),
        ("resolved", "opened", False),
        ("open", "escalated", True),
        ("acknowledged", "informed", True),
        ("acknowledged", "reminder", True),
        ("resolved", "reminder", False),
        ("resolved", "resolved", True),
        ("acknowledged", "stepped_up", False),
        ("resolved", "stepped_up", False),
        ("open", "stepped_up", True),
        ("acknowledged", "noted", True),
        ("resolved", "noted", True),
    ],
)
async def test_a_page_made_moot_by_an_ack_is_superseded_not_sent(
    store: Store, state: str, purpose: str, sent: bool
) -> None:
    """A page queued while open but still undelivered when the incident is acknowledged or
    resolved (a retrying relay, a slow webhook) is finished as superseded instead of paging
    someone to act on what is already handled; notices and resolutions still go out."""
    current = store.incident("inc-1")
    assert current is not None
    store.apply(Changes(updated=[replace(current, state=state)]))  # type: ignore[arg-type]
    _queue(store, notification("n-1", purpose=purpose))
    console = FakeChannel("console")
    metrics = Metrics(store, Clock())
    await deliver_due(store, {"console": console}, Clock(), metrics)
    assert bool(console.sent) is sent
    assert store.outbox_pending() == 0
    outcome = "delivered" if sent else "superseded"
    assert metrics.notifications.labels("console", outcome)._value.get() == 1


# -- one notification's trouble is its own ----------------------------------------------------

HOSTILE_RETRY_AFTER = [
    "1e12",  # OverflowError in the datetime arithmetic: the whole pass aborted
    "86400000",  # 1,000 days: parked past the 24 h give-up
    "Fri, 31 Dec 9999 23:59:59 GMT",  # an HTTP date 8,000 years off
    "1e400",  # too big for a float: infinite
    "-30",
    "nan",
]


def _answering_429(retry_after: str) -> httpx.MockTransport:
    """An HTTP endpoint that rate-limits every request with ``retry_after``."""
    return httpx.MockTransport(
        lambda request: httpx.Response(429, text="slow down", headers={"Retry-After": retry_after})
    )


async def _rate_limited_channel(kind: str, retry_after: str, slack: FakeSlack) -> Channel:
    """A real HTTP channel of ``kind`` whose server answers 429 with ``retry_after``."""
    url = SecretStr("https://hooks.example.com/T/B/SECRET")
    if kind == "webhook":
        return WebhookChannel(
            "hook", url, timeout=timedelta(seconds=3), transport=_answering_429(retry_after)
        )
    if kind == "slack-webhook":
        return SlackWebhookChannel(
            "hook", url, timeout=timedelta(seconds=3), transport=_answering_429(retry_after)
        )
    slack.answer_next(api_rate_limited(retry_after), times=10)
    return SlackWebApiChannel(
        "hook", SecretStr(slack.token), api_url=slack.api_url, timeout=timedelta(seconds=3)
    )


@pytest.mark.parametrize("kind", ["webhook", "slack-webhook", "slack-web-api"])
@pytest.mark.parametrize("retry_after", HOSTILE_RETRY_AFTER)
async def test_any_retry_after_is_capped_and_spoils_no_other_notification(
    store: Store, kind: str, retry_after: str
) -> None:
    """A rate-limited HTTP channel (webhook, Slack webhook, Slack Web API ``ratelimited``)
    answering with a huge, infinite, far-future, negative or NaN ``Retry-After`` does not
    abort the pass: the other channel's notification in the same batch is recorded delivered
    (not re-sent at the next lease), and the rate-limited one is retried within
    LONGEST_SERVER_DELAY, never sooner than the backoff."""
    _queue(
        store,
        notification("n-hook", channel="hook", address="U0ALICE"),
        notification("n-console", channel="console", created_at=T0 + timedelta(seconds=1)),
    )
    console = FakeChannel("console")
    clock = Clock(T0 + timedelta(seconds=2))
    with FakeSlack() as slack:
        hook = await _rate_limited_channel(kind, retry_after, slack)
        with capture_logs():
            delivered = await deliver_due(store, {"console": console, "hook": hook}, clock)
        await hook.aclose()
    assert delivered == 1
    by_id = {n.id: n for n in store.notifications("inc-1")}
    assert by_id["n-console"].delivered_at == clock.now
    limited = by_id["n-hook"]
    assert (limited.delivered_at, limited.failed_at, limited.attempts) == (None, None, 1)
    assert limited.next_attempt_at is not None
    assert clock.now + FIRST_RETRY <= limited.next_attempt_at
    assert limited.next_attempt_at <= clock.now + LONGEST_SERVER_DELAY
    assert "429" in (limited.last_error or "")
    clock.advance(3600)
    assert await deliver_due(store, {"console": console, "hook": FakeChannel("hook")}, clock) == 1
    assert len(console.sent) == 1, "the delivered notification is not sent again"


async def test_a_page_told_to_wait_1000_days_gives_up_at_24h_on_schedule(store: Store) -> None:
    """``Retry-After: 86400000`` half an hour before the give-up time: the retry is scheduled
    at the give-up time (created + MAX_AGE), not in 1,000 days, and failing then gives the
    notification up at that very time, with its note on the incident."""
    created = T0 - MAX_AGE + timedelta(minutes=30)
    _queue(store, notification("n-1", channel="hook", created_at=created, attempts=3))
    hook = WebhookChannel(
        "hook",
        SecretStr("https://hooks.example.com/x"),
        timeout=timedelta(seconds=3),
        transport=_answering_429("86400000"),
    )
    clock = Clock()
    with capture_logs():
        await deliver_due(store, {"hook": hook}, clock)
        assert _only(store).next_attempt_at == created + MAX_AGE
        clock.now = created + MAX_AGE
        await deliver_due(store, {"hook": hook}, clock)
    await hook.aclose()
    gave_up = _only(store)
    assert gave_up.failed_at == created + MAX_AGE
    assert "gave up: undelivered for 24h" in (gave_up.last_error or "")
    assert [e.kind for e in store.events("inc-1")] == ["note"]


async def test_a_page_rate_limited_for_ever_waits_at_most_the_cap_each_time(store: Store) -> None:
    """A server that answers every attempt with ``Retry-After: 86400000``: each retry comes
    LONGEST_SERVER_DELAY after the last, and the notification fails for good after
    MAX_ATTEMPTS attempts, well within 24 h, instead of being parked for years."""
    _queue(store, notification("n-1", channel="hook"))
    hook = WebhookChannel(
        "hook",
        SecretStr("https://hooks.example.com/x"),
        timeout=timedelta(seconds=3),
        transport=_answering_429("86400000"),
    )
    clock = Clock()
    with capture_logs():
        for _ in range(MAX_ATTEMPTS):
            await deliver_due(store, {"hook": hook}, clock)
            owed = _only(store)
            if owed.failed_at is not None:
                break
            assert owed.next_attempt_at == clock.now + LONGEST_SERVER_DELAY
            clock.now = owed.next_attempt_at
    await hook.aclose()
    gave_up = _only(store)
    assert gave_up.attempts == MAX_ATTEMPTS
    assert gave_up.failed_at == T0 + (MAX_ATTEMPTS - 1) * LONGEST_SERVER_DELAY
    assert gave_up.failed_at - T0 < MAX_AGE


class WatchedStore(SqlStore):
    """A real store that calls ``on_delivered(id)`` after each delivery is committed, and
    refuses to record the delivery of the ids in ``broken`` (a store error for one row)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.on_delivered: Callable[[str], None] = lambda _id: None
        self.broken: set[str] = set()

    def settle(self, outcomes: Sequence[Settled]) -> None:
        for outcome in outcomes:
            if outcome.kind == "delivered" and outcome.notification_id in self.broken:
                raise RuntimeError(f"disk I/O error recording {outcome.notification_id}")
        super().settle(outcomes)
        for outcome in outcomes:
            if outcome.kind == "delivered":
                self.on_delivered(outcome.notification_id)


@pytest.fixture
def watched(store_url: str) -> Iterator[WatchedStore]:  # noqa: F811 (a fixture)
    opened = WatchedStore(store_url)
    opened.open()
    opened.apply(Changes(opened=[incident()]))
    yield opened
    opened.close()


async def test_each_outcome_is_recorded_as_soon_as_its_send_finishes(
    watched: WatchedStore,
) -> None:
    """While a slow send is still in flight, a fast send of the same pass is already
    recorded delivered: a kill -9 at that moment re-sends only the slow one."""
    _queue(watched, notification("n-slow", channel="slow"), notification("n-fast"))
    loop = asyncio.get_running_loop()
    fast_recorded = asyncio.Event()

    def on_delivered(notification_id: str) -> None:  # in the recording thread
        if notification_id == "n-fast":
            loop.call_soon_threadsafe(fast_recorded.set)

    watched.on_delivered = on_delivered
    seen: dict[str, Any] = {}

    class Slow(FakeChannel):
        async def send(self, notification: Notification) -> Delivery:
            # Bounded: without per-send recording the record never comes.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fast_recorded.wait(), timeout=5)
            (fast,) = [n for n in watched.notifications("inc-1") if n.id == "n-fast"]
            seen["fast delivered while slow in flight"] = fast.delivered_at is not None
            return Delivery.delivered()

    clock = Clock()
    channels = {"console": FakeChannel("console"), "slow": Slow("slow")}
    assert await deliver_due(watched, channels, clock) == 2
    assert seen == {"fast delivered while slow in flight": True}


async def test_a_failure_to_record_one_outcome_spoils_no_other(watched: WatchedStore) -> None:
    """The store refuses to record one delivery: that error is logged and the notification
    stays owed (sent again after its lease), the pass does not raise, and the others' outcomes
    are all recorded."""
    _queue(
        watched,
        notification("n-broken"),
        notification("n-2", created_at=T0 + timedelta(seconds=1)),
        notification("n-3", created_at=T0 + timedelta(seconds=2)),
    )
    watched.broken = {"n-broken"}
    clock = Clock(T0 + timedelta(seconds=5))
    with capture_logs() as logs:
        assert await deliver_due(watched, {"console": FakeChannel("console")}, clock) == 2
    by_id = {n.id: n for n in watched.notifications("inc-1")}
    assert by_id["n-2"].delivered_at == clock.now
    assert by_id["n-3"].delivered_at == clock.now
    assert by_id["n-broken"].delivered_at is None and by_id["n-broken"].failed_at is None
    assert watched.outbox_pending() == 1
    (error,) = [e for e in logs if e["log_level"] == "error"]
    assert error["notification"] == "n-broken"
    assert "recording the outcome failed" in error["event"]


async def test_sends_start_in_the_order_the_notifications_fell_due(store: Store) -> None:
    """Leased together, the notification due earliest (its next attempt, then its creation)
    starts sending first, whatever order the store returned them in."""
    _queue(
        store,
        notification("n-retry", created_at=T0, next_attempt_at=T0 + timedelta(seconds=40)),
        notification("n-new", created_at=T0 + timedelta(seconds=10)),
        notification("n-newer", created_at=T0 + timedelta(seconds=20)),
        notification(
            "n-retry-2",
            created_at=T0 + timedelta(seconds=5),
            next_attempt_at=T0 + timedelta(seconds=30),
        ),
    )
    console = FakeChannel("console")
    await deliver_due(store, {"console": console}, Clock(T0 + timedelta(minutes=1)))
    assert [n.id for n in console.sent] == ["n-new", "n-newer", "n-retry-2", "n-retry"]
