"""The outbox's delivery loop against a real store (a SQLite file, a PostgreSQL database):
it drains a backlog larger than one batch without waiting for a tick, keeps each
destination within its ``max_in_flight``, lets a 429 pause only its own destination, hands a
page that gives up to its fallback channel (a real webhook receiver answering 404, then a
real SMTP server) with the event on the incident, and exports how old the oldest owed
notification is."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from driftowner.channels import Channel, build_channel
from driftowner.config import Config
from driftowner.metrics import Metrics
from driftowner.model import Delivery, Notification
from driftowner.outbox import MAX_AGE, Deliverer
from driftowner.store import Changes, Settled, SqlStore, Store
from tests.fakes.mailbox import running_smtp
from tests.integration.postgres_server import (  # noqa: F401 (fixtures)
    postgres_database_url,
    postgres_url,
    store_url,
)
from tests.integration.test_channel_webhook import Receiver, receiver  # noqa: F401 (fixture)
from tests.integration.test_outbox import (  # noqa: F401 (fixtures)
    Clock,
    FakeChannel,
    WatchedStore,
    watched,
)
from tests.unit.factories import T0, ids, incident, make_config, notification

pytestmark = pytest.mark.integration


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:  # noqa: F811 (a fixture)
    opened = SqlStore(store_url)
    opened.open()
    opened.apply(Changes(opened=[incident()]))
    yield opened
    opened.close()


def _config(**channels: dict[str, Any]) -> Config:
    """The factories' config with extra channels (log channels unless a type is given)."""
    return make_config(
        {"channels": {name: {"type": "log", **spec} for name, spec in channels.items()}}
    )


def _queue(store: Store, count: int, channel: str = "console", prefix: str = "n") -> None:
    store.apply(
        Changes(
            notifications=[
                notification(f"{prefix}-{i:05d}", channel=channel, created_at=T0)
                for i in range(count)
            ]
        )
    )


def _delivered(store: Store) -> list[Notification]:
    return [n for n in store.notifications("inc-1") if n.delivered_at is not None]


async def test_a_backlog_larger_than_a_batch_drains_in_one_go(store: Store) -> None:
    """450 due notifications, leased 100 at a time: one drain delivers them all, leasing
    again as each batch gets under way, with no tick in between; nothing stays owed."""
    console = FakeChannel("console")
    clock = Clock(T0 + timedelta(seconds=1))
    _queue(store, 450)
    deliverer = Deliverer(store, {"console": console}, _config(), clock, batch=100)
    assert await deliverer.drain() == 450
    assert len(console.sent) == 450 and len({n.id for n in console.sent}) == 450
    assert store.outbox_pending() == 0


@dataclass
class Counting:
    """A channel that counts its sends and sets ``done`` when it has ``expect`` of them."""

    name: str
    expect: int
    sent: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, notification: Notification) -> Delivery:
        self.sent.append(notification.id)
        if len(self.sent) >= self.expect:
            self.done.set()
        return Delivery.delivered()

    async def aclose(self) -> None:
        """Nothing to release."""


async def test_the_running_loop_is_woken_by_new_pages_not_by_a_tick(store: Store) -> None:
    """The loop runs with nothing due; 250 pages are written and the loop woken (as an
    escalation does): it delivers all of them, more than one batch, on its own."""
    channel = Counting("console", 250)
    clock = Clock(T0 + timedelta(seconds=1))
    deliverer = Deliverer(store, {"console": channel}, _config(), clock, batch=100)
    running = asyncio.create_task(deliverer.run())
    try:
        await asyncio.sleep(0)  # the loop's first drain finds nothing
        _queue(store, 250)
        deliverer.wake()
        await asyncio.wait_for(channel.done.wait(), 30)
        await deliverer.stop(5)
    finally:
        running.cancel()
    assert sorted(channel.sent) == [f"n-{i:05d}" for i in range(250)]
    assert store.outbox_pending() == 0


@dataclass
class Gate:
    """A channel whose sends wait at a gate, recording how many were in flight at most."""

    name: str
    in_flight: int = 0
    most: int = 0
    sent: int = 0

    async def send(self, notification: Notification) -> Delivery:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        for _ in range(5):  # let every other ready send start meanwhile
            await asyncio.sleep(0)
        self.in_flight -= 1
        self.sent += 1
        return Delivery.delivered()

    async def aclose(self) -> None:
        """Nothing to release."""


@pytest.mark.parametrize("max_in_flight", [1, 3, 16])
async def test_a_destination_never_has_more_than_max_in_flight_sends(
    store: Store, max_in_flight: int
) -> None:
    """40 pages to one destination: at most ``max_in_flight`` sends run at once (and with
    16 allowed, more than one does), and all are delivered."""
    gate = Gate("pipe")
    _queue(store, 40, channel="pipe")
    config = _config(pipe={"max_in_flight": max_in_flight})
    deliverer = Deliverer(store, {"pipe": gate}, config, Clock(T0))
    assert await deliverer.drain() == 40
    assert gate.most == max_in_flight
    assert gate.sent == 40


async def test_a_reloaded_pace_applies_from_the_next_send(store: Store) -> None:
    """The loop works each channel's pace out once per config (not at every send): after
    :meth:`Deliverer.configure` with a reloaded config, the new ``max_in_flight`` holds."""
    gate = Gate("pipe")
    _queue(store, 20, channel="pipe")
    deliverer = Deliverer(store, {"pipe": gate}, _config(pipe={"max_in_flight": 1}), Clock(T0))
    assert await deliverer.drain() == 20
    assert gate.most == 1
    gate.most = 0
    _queue(store, 20, channel="pipe", prefix="m")
    deliverer.configure(_config(pipe={"max_in_flight": 4}), {"pipe": gate})
    assert await deliverer.drain() == 20
    assert gate.most == 4


async def test_a_429_on_one_destination_does_not_slow_another(store: Store) -> None:
    """``slow`` answers its first page 429 with Retry-After: 30; ``fast`` answers 200. In
    the same drain every fast page is delivered, while the slow destination's other pages
    are handed back unattempted, due when its pause ends (not retried one by one)."""
    slow = FakeChannel("slow", [Delivery.retry("429 rate limited", retry_after=30)])
    fast = FakeChannel("fast")
    _queue(store, 20, channel="slow", prefix="s")
    _queue(store, 20, channel="fast", prefix="f")
    config = _config(slow={"max_in_flight": 1}, fast={"max_in_flight": 1})
    clock = Clock(T0)
    deliverer = Deliverer(store, {"slow": slow, "fast": fast}, config, clock, pace_clock=clock)
    assert await deliverer.drain() == 20
    assert len(fast.sent) == 20 and len(slow.sent) == 1
    waiting = [n for n in store.notifications("inc-1") if n.channel == "slow"]
    assert {n.next_attempt_at for n in waiting} == {T0 + timedelta(seconds=30)}
    assert sorted(n.attempts for n in waiting) == [0] * 19 + [1]
    assert store.next_due() == T0 + timedelta(seconds=30)


def _falling_back_to_email(hook_url: str, smtp_port: int) -> Config:
    """alice is paged through the webhook ``hook`` with her email as its fallback; bob by
    email 15 minutes on. Email pages go in the drain that queues them (``group_wait: 0s``)."""
    return make_config(
        {
            "channels": {
                "hook": {"type": "webhook", "url": hook_url},
                "email": {
                    "type": "email",
                    "host": "127.0.0.1",
                    "port": smtp_port,
                    "starttls": False,
                    "from": "driftowner@example.com",
                    "group_wait": "0s",
                },
            },
            "escalation_chains": {
                "standard": {
                    "steps": [
                        {"notify": "owner", "via": [{"channel": "hook", "fallback": "email"}]},
                        {"after": "15m", "notify": ["bob"], "via": ["email"]},
                    ]
                }
            },
        }
    )


async def _drain_falling_back(
    store: Store, hook: Receiver, page: Notification, now: datetime
) -> int:
    """One drain at ``now`` of ``page`` (through the webhook ``hook``, falling back to
    email) against ``hook`` and a real SMTP server; returns how many mails alice got."""
    with running_smtp() as (mailbox, port):
        config = _falling_back_to_email(hook.url, port)
        channels: dict[str, Channel] = {
            name: build_channel(name, spec) for name, spec in config.channels.items()
        }
        store.apply(Changes(notifications=[page]))
        deliverer = Deliverer(store, channels, config, Clock(now), new_id=ids("fb"))
        try:
            assert await deliverer.drain() == 1
        finally:
            for channel in channels.values():
                await channel.aclose()
        return len(mailbox.to("alice@example.com"))


async def test_a_page_that_fails_for_good_falls_back_to_email(
    store: Store,
    receiver: Receiver,  # noqa: F811 (a fixture)
) -> None:
    """alice's step-1 page goes through a webhook that answers 404 (permanent): the outbox
    gives up on it and, in the same transaction, queues the page to alice's email; the same
    drain sends that through a real SMTP server. The incident records the fallback."""
    receiver.script.append((404, {}, "no such hook"))
    # Past the webhook's group_wait (3s): the lone page is sent, not held for a group.
    now = T0 + timedelta(seconds=5)
    mailed = await _drain_falling_back(store, receiver, notification("page-1", channel="hook"), now)
    assert mailed == 1
    assert len(receiver.requests) == 1
    page, fallback = store.notifications("inc-1")
    assert (page.id, page.failed_at, fallback.id, fallback.channel) == (
        "page-1",
        now,
        "fb-1",
        "email",
    )
    assert fallback.delivered_at == now and fallback.address == "alice@example.com"
    [event] = [e for e in store.events("inc-1") if "falling back" in e.detail]
    assert event.detail.startswith("page to alice via hook failed for good (")
    assert "404" in event.detail and event.detail.endswith("; falling back to email")


async def test_a_page_still_failing_at_its_maximum_age_falls_back_to_email(
    store: Store,
    receiver: Receiver,  # noqa: F811 (a fixture)
) -> None:
    """A page whose webhook still answers 503 (worth a retry) when the page reaches
    ``MAX_AGE`` gives up there and falls back, as a permanent failure does: the delivery loop
    queues alice's email page in the give-up's transaction and sends it through a real SMTP
    server; the incident records why."""
    receiver.script.append((503, {}, "busy"))
    now = T0 + MAX_AGE
    old = notification("page-1", channel="hook", attempts=3)
    assert await _drain_falling_back(store, receiver, old, now) == 1
    page, fallback = store.notifications("inc-1")
    assert (page.failed_at, page.delivered_at, fallback.channel) == (now, None, "email")
    assert page.last_error is not None and "undelivered for 24h" in page.last_error
    assert fallback.delivered_at == now
    [event] = [e for e in store.events("inc-1") if "falling back" in e.detail]
    assert "503" in event.detail and "undelivered for 24h" in event.detail


class SettlesDuringTheNextClaim(SqlStore):
    """A real store where the delivery loop's second claim reads the outbox (finding
    nothing), then the outcome of the first send is committed (its fallback page with it),
    and only then does that claim return: the order a slow fsync and a slow claim can give,
    made certain."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.claims = 0
        self.claim_read = threading.Event()
        self.settled = threading.Event()

    def lease_due(self, now: datetime, lease: timedelta, limit: int = 100) -> list[Notification]:
        leased = super().lease_due(now, lease, limit)
        self.claims += 1
        if self.claims == 2:
            self.claim_read.set()
            self.settled.wait(timeout=5)
            time.sleep(0.2)  # the loop sees the send's task end before this claim returns
        return leased

    def settle(self, outcomes: Sequence[Settled]) -> None:
        self.claim_read.wait(timeout=5)
        super().settle(outcomes)
        self.settled.set()


async def test_a_fallback_written_after_the_last_claim_is_still_sent_in_the_same_drain(
    store_url: str,  # noqa: F811 (a fixture)
) -> None:
    """The give-up's commit (with its fallback page) lands while the loop's next claim is
    under way, after that claim read nothing: the drain claims once more before it ends, so
    the fallback goes out in the same drain (it ended with the fallback unsent: the flake of
    the test above on PostgreSQL)."""
    store = SettlesDuringTheNextClaim(store_url)
    store.open()
    store.apply(Changes(opened=[incident()]))
    config = _falling_back_to_email("http://127.0.0.1:9/hook", 25)  # both answered by fakes
    hook = FakeChannel("hook", [Delivery.give_up("HTTP 404 no such hook")])
    email = FakeChannel("email")
    store.apply(Changes(notifications=[notification("page-1", channel="hook")]))
    deliverer = Deliverer(
        store,
        {"hook": hook, "email": email},
        config,
        Clock(T0 + timedelta(seconds=5)),
        new_id=ids("fb"),
    )
    try:
        assert await deliverer.drain() == 1
    finally:
        store.close()
    assert [n.id for n in hook.sent] == ["page-1"]
    assert [n.id for n in email.sent] == ["fb-1"]


async def test_a_give_up_is_not_committed_without_its_fallback(store: Store) -> None:
    """The fallback page is written in the give-up's transaction: when it cannot be written
    (its id is taken), the page is not marked failed either, and stays owed."""
    _queue(store, 2)
    taken = notification("n-00001", channel="email", address="alice@example.com")
    with pytest.raises(sa.exc.IntegrityError):
        store.mark_failed("n-00000", T0, "404", fallback=taken)
    assert all(n.failed_at is None for n in store.notifications("inc-1"))
    assert store.outbox_pending() == 2


def _gauge(metrics: Metrics, name: str) -> float:
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not exported")


async def test_the_oldest_owed_notification_age_is_exported(store: Store) -> None:
    """``driftowner_outbox_oldest_seconds`` is how long the oldest notification not yet
    delivered has waited (90 s here), and 0 once the outbox is drained."""
    clock = Clock(T0 + timedelta(seconds=90))
    metrics = Metrics(store, clock)
    assert _gauge(metrics, "driftowner_outbox_oldest_seconds") == 0
    _queue(store, 3)
    assert _gauge(metrics, "driftowner_outbox_oldest_seconds") == 90
    assert _gauge(metrics, "driftowner_outbox_pending") == 3
    deliverer = Deliverer(store, {"console": FakeChannel("console")}, _config(), clock, metrics)
    await deliverer.drain()
    assert _gauge(metrics, "driftowner_outbox_oldest_seconds") == 0


async def test_a_group_commit_with_one_unrecordable_outcome_records_the_others(
    watched: WatchedStore,  # noqa: F811 (a fixture)
) -> None:
    """Outcomes that finish together are committed together; when the store refuses one of
    them, the others are recorded one by one, and only the refused one stays owed."""
    _queue(watched, 30)
    watched.broken = {"n-00007"}
    deliverer = Deliverer(watched, {"console": FakeChannel("console")}, _config(), Clock(T0))
    with capture_logs() as logs:
        assert await deliverer.drain() == 29
    owed = [n.id for n in watched.notifications("inc-1") if n.delivered_at is None]
    assert owed == ["n-00007"]
    assert [e["notification"] for e in logs if e["log_level"] == "error"] == ["n-00007"]


@dataclass
class Ticking:
    """A pace clock that moves 0.25 s each time it is read: pacing waits cost no real time."""

    now: datetime = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=0.25)
        return self.now


@dataclass
class Stamping:
    """A channel recording, per address, the pace clock's reading when each send began."""

    name: str
    pace: Ticking
    starts: dict[str, list[datetime]] = field(default_factory=dict)

    async def send(self, notification: Notification) -> Delivery:
        self.starts.setdefault(notification.address, []).append(self.pace.now)
        return Delivery.delivered()

    async def aclose(self) -> None:
        """Nothing to release."""


async def test_slack_sends_one_message_a_second_per_conversation(store: Store) -> None:
    """Slack's default pace over the Web API: in each conversation one send at a time and
    at least a second between starts; two conversations go on side by side. The domain
    clock stays frozen throughout (pacing runs on its own clock), and the drain ends."""
    pace = Ticking()
    slack = Stamping("slack", pace)
    config = make_config({"channels": {"slack": {"type": "slack", "token": "xoxb-test"}}})
    store.apply(
        Changes(
            notifications=[
                notification(f"{room}-{i}", channel="slack", address=room)
                for i in range(4)
                for room in ("C-A", "C-B")
            ]
        )
    )
    deliverer = Deliverer(store, {"slack": slack}, config, Clock(T0), pace_clock=pace)
    assert await deliverer.drain() == 8
    for room in ("C-A", "C-B"):
        starts = slack.starts[room]
        assert len(starts) == 4
        gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
        assert all(gap >= timedelta(seconds=1) for gap in gaps), (room, gaps)
    assert slack.starts["C-B"][0] - slack.starts["C-A"][0] < timedelta(seconds=1)


async def test_handing_back_touches_only_notifications_whose_lease_is_still_ours(
    store: Store,
) -> None:
    """A worker hands back what it leased; one whose lease ran out and that another worker
    claimed since stays with that worker (not due again, so nobody sends it a third time)."""
    lease = timedelta(seconds=15)
    _queue(store, 2)
    mine = store.lease_due(T0, lease, 2)
    later = T0 + timedelta(seconds=20)
    [theirs] = store.lease_due(later, lease, 1)  # n-00000's lease ran out: re-claimed
    store.defer({n.id: (T0 + timedelta(minutes=1), T0 + lease) for n in mine})
    by_id = {n.id: n for n in store.notifications("inc-1")}
    assert theirs.id == "n-00000"
    assert by_id["n-00000"].next_attempt_at == T0  # still the other worker's, unchanged
    assert by_id["n-00001"].next_attempt_at == T0 + timedelta(minutes=1)
    assert store.lease_due(later, lease, 2) == []


class SlowCommits(SqlStore):
    """A real store whose outcome commits wait until ``release`` is set (a slow fsync)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.release = threading.Event()

    def settle(self, outcomes: Sequence[Settled]) -> None:
        self.release.wait(60)
        super().settle(outcomes)


async def test_the_next_send_starts_while_an_outcome_is_being_committed(
    store_url: str,  # noqa: F811 (a fixture)
) -> None:
    """One send at a time to a destination (``max_in_flight: 1``): the second page goes out
    as soon as the first send finishes, while the first outcome's commit is still being
    written, not after it; both outcomes are committed in the end."""
    slow = SlowCommits(store_url)
    slow.open()
    slow.apply(Changes(opened=[incident()]))
    _queue(slow, 2)
    channel = Counting("console", 2)
    config = _config(console={"max_in_flight": 1})
    deliverer = Deliverer(slow, {"console": channel}, config, Clock(T0 + timedelta(seconds=1)))
    draining = asyncio.create_task(deliverer.drain())
    try:
        await asyncio.wait_for(channel.done.wait(), 20)
        assert slow.outbox_pending() == 2  # both sent, neither outcome committed yet
    finally:
        slow.release.set()
        delivered = await asyncio.wait_for(draining, 60)
    assert delivered == 2
    assert slow.outbox_pending() == 0
    slow.close()


class SlowClaims(SqlStore):
    """A real store whose claims after the first wait until ``release`` is set (a claim
    queued behind another writer's commit)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.release = threading.Event()
        self.claims = 0
        self.answered = 0
        self.waiting = threading.Event()
        """Set once a claim waits for ``release``."""

    def lease_due(self, now: datetime, lease: timedelta, limit: int = 100) -> list[Notification]:
        self.claims += 1
        if self.claims > 1:
            self.waiting.set()
            self.release.wait(60)
        leased = super().lease_due(now, lease, limit)
        self.answered += 1
        return leased


@pytest.fixture
def slow_claims(store_url: str) -> Iterator[SlowClaims]:  # noqa: F811 (a fixture)
    opened = SlowClaims(store_url)
    opened.open()
    opened.apply(Changes(opened=[incident()]))
    yield opened
    opened.release.set()
    opened.close()


async def test_a_batch_is_sent_while_the_next_one_is_being_claimed(
    slow_claims: SlowClaims,
) -> None:
    """Batches of 10, one send at a time: when half the first batch is under way the next
    claim starts, and while it waits for the store every page of the first batch still goes
    out (a claim queued behind a commit's fsync used to leave the destination idle); then
    the second batch is delivered too."""
    _queue(slow_claims, 20)
    channel = Counting("console", 10)
    config = _config(console={"max_in_flight": 1})
    clock = Clock(T0 + timedelta(seconds=1))
    deliverer = Deliverer(slow_claims, {"console": channel}, config, clock, batch=10)
    draining = asyncio.create_task(deliverer.drain())
    try:
        await asyncio.wait_for(channel.done.wait(), 20)
        assert slow_claims.answered == 1  # the second claim has not come back
        assert channel.sent == [f"n-{i:05d}" for i in range(10)]
    finally:
        slow_claims.release.set()
        delivered = await asyncio.wait_for(draining, 60)
    assert delivered == 20
    assert slow_claims.outbox_pending() == 0


async def test_stopping_hands_back_what_a_claim_under_way_leased(
    slow_claims: SlowClaims,
) -> None:
    """An instance stopping while a claim waits for the store lets it finish, then hands
    what it leased back at once (due now, no attempt counted): another instance takes it
    without waiting for the lease to run out."""
    _queue(slow_claims, 20)
    gate = asyncio.Event()

    class Held:
        name = "console"

        async def send(self, notification: Notification) -> Delivery:
            await gate.wait()
            return Delivery.delivered()

        async def aclose(self) -> None:
            """Nothing to release."""

    clock = Clock(T0 + timedelta(seconds=1))
    config = _config(console={"max_in_flight": 10})
    deliverer = Deliverer(slow_claims, {"console": Held()}, config, clock, batch=10)
    draining = asyncio.create_task(deliverer.drain())
    await asyncio.wait_for(asyncio.to_thread(slow_claims.waiting.wait, 20), 30)
    stopping = asyncio.create_task(deliverer.stop(5))
    gate.set()
    slow_claims.release.set()
    await asyncio.wait_for(stopping, 30)
    await asyncio.wait_for(draining, 30)
    rows = {n.id: n for n in slow_claims.notifications("inc-1")}
    assert sum(1 for n in rows.values() if n.delivered_at is not None) == 10
    again = slow_claims.lease_due(clock(), timedelta(seconds=30), 100)
    assert sorted(n.id for n in again) == [f"n-{i:05d}" for i in range(10, 20)]
    assert all(n.attempts == 0 for n in again)
