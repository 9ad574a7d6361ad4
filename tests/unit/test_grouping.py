"""Grouping: the pure schedule (:class:`Grouper`), each channel's policy, the group's words,
and the delivery loop sending a group as one message with a frozen, injected clock (a
MemoryStore; no sleeps, no wall clock in any assertion)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from driftowner import render
from driftowner.channels.email import MailTemplates
from driftowner.config import Config
from driftowner.grouping import Grouper, GroupPolicy, key_of, listing, paged, policy_of, sent
from driftowner.model import Delivery, GroupState, GroupThread, Notification
from driftowner.outbox import Deliverer
from driftowner.store import Changes, MemoryStore
from tests.unit.factories import (
    T0,
    full_message,
    incident,
    make_config,
    message,
    notification,
)

WAIT = timedelta(seconds=3)
INTERVAL = timedelta(seconds=30)
POLICY = GroupPolicy(WAIT, INTERVAL)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- the schedule: a table of (lease time, made at) -> due time ---------------------------------


@pytest.mark.parametrize(
    ("name", "steps"),
    [
        # A lone incident made at 0 and leased at once waits group_wait, no more.
        ("lone", [(0, 0, 3), (3, 0, 3)]),
        # A burst within the window all goes at the first member's group_wait.
        ("burst", [(0, 0, 3), (1, 1, 3), (2.5, 2.5, 3), (3, 0, 3), (3, 1, 3), (3, 2.5, 3)]),
        # A member leased late (the daemon was busy) and overdue goes at once.
        ("overdue", [(10, 0, 10)]),
        # After the group went out at 3 (paging a), a new member waits for group_interval.
        ("later member", [(0, 0, 3), (3, 0, 3), "formed@3:a", (10, 10, 33), (20, 20, 33)]),
        # ... and at 33 everything due goes together.
        ("next update", [(0, 0, 3), "formed@3:a", (10, 10, 33), "formed@33:b", (40, 40, 63)]),
        # A member made before its group went out but leased after (a storm a loaded machine
        # writes over seconds) waits for the next update, as later members do.
        ("straggler", [(0, 0, 3), "formed@3:a", (3.2, 1, 33), (20, 0, 33)]),
        # An update of a member hours later (a reminder, an ack): its interval is long over.
        ("update hours later", [(0, 0, 3), "formed@3:a", (7200, 7200, 7200)]),
        # a's resolution went out at 33: nothing is unresolved, so the next one is lone.
        ("lone again", [(0, 0, 3), "formed@3:a", "formed@33:-a", (40, 40, 43)]),
        # ... unless another member is still unresolved.
        ("one left", [(0, 0, 3), "formed@3:a,b", "formed@33:-a", (40, 40, 63)]),
        # a was resolved in its own thread (bypassing the group): lone again at once.
        ("resolved elsewhere", [(0, 0, 3), "formed@3:a", "resolved:a", (10, 10, 13)]),
        # A group never sent has no members: a page is lone whenever it comes.
        ("never sent", [(7200, 7200, 7203)]),
        # The group's flush time came (3) and it goes late (3.5): a page made meanwhile goes
        # with it.
        ("late flush", [(0, 0, 3), (3.5, 0, 3.5), (3.5, 3.2, 3.5)]),
        # The page held until 3 was superseded and never asked again: the flush time is
        # stale for a page made later, lone, which waits group_wait.
        ("superseded", [(0, 0, 3), (1000, 1000, 1003), (1000.5, 1000.5, 1003)]),
    ],
)
def test_grouper_schedule(name: str, steps: list[Any]) -> None:
    """Each step leases a notification (made at ``made``) at ``now`` and expects it due at
    ``due``; ``formed@t:a,-b`` is the group going out at t with a message of incident a
    (open) and one of b (resolved); ``resolved:a`` is a's resolution seen outside the group."""
    grouper = Grouper()
    key = key_of(notification())
    for step in steps:
        if isinstance(step, str):
            what, _, incidents = step.partition(":")
            if what == "resolved":
                grouper.resolved(key, [incidents])
                continue
            messages = [
                dataclasses.replace(
                    message(one.lstrip("-")), state="resolved" if one[0] == "-" else "open"
                )
                for one in incidents.split(",")
            ]
            grouper.formed(key, messages, _at(float(what.split("@")[1])))
            continue
        now, made, due = step
        member = notification(created_at=_at(made))
        assert grouper.due_at(member, POLICY, _at(now)) == _at(due), (name, step)


@pytest.mark.parametrize(
    ("members", "messages", "after"),
    [
        ([], ["a:open", "b:acknowledged"], ["a", "b"]),
        (["a", "b"], ["a:resolved"], ["b"]),
        (["a"], ["a:resolved", "a:open"], ["a"]),  # reopened in the same update: the newest
        (["a"], ["a:open", "a:resolved"], []),
        (["a"], ["c:resolved"], ["a"]),  # resolved before it was ever paged here
    ],
)
def test_paged_counts_the_unresolved_incidents(
    members: list[str], messages: list[str], after: list[str]
) -> None:
    """A group's members once a message goes out in it: each incident by its newest
    message there, resolved ones out."""
    sent_now = [
        dataclasses.replace(message(spec.split(":")[0]), state=spec.split(":")[1])
        for spec in messages
    ]
    assert paged(frozenset(members), sent_now) == frozenset(after)


def test_grouping_off_never_waits() -> None:
    """With ``group_wait: 0s`` every notification is due the moment it is leased."""
    grouper = Grouper()
    off = GroupPolicy(timedelta(0), INTERVAL)
    assert grouper.due_at(notification(created_at=T0), off, T0) == T0


def test_forget_drops_idle_groups_only() -> None:
    """A group idle for long leaves the grouper's memory (to be read from the store when
    next met); a group with a member waiting is kept, its flush time with it."""
    grouper = Grouper()
    idle, waiting = notification(recipient="bob"), notification(recipient="alice")
    grouper.formed(key_of(idle), [idle.message], T0)
    grouper.saved(grouper.changed())
    assert grouper.due_at(waiting, POLICY, T0) == _at(3)
    grouper.forget(_at(3600))
    assert grouper.missing([key_of(idle), key_of(waiting)]) == {key_of(idle)}
    assert grouper.due_at(waiting, POLICY, _at(4000)) == _at(4000)


# -- the policy per channel ----------------------------------------------------------------------


def _config(hook: dict[str, Any] | None = None, grouping: dict[str, Any] | None = None) -> Config:
    patch: dict[str, Any] = {
        "channels": {
            "hook": {"type": "webhook", "url": "http://127.0.0.1:9/hook", **(hook or {})},
            "pd": {"type": "pagerduty", "routing_key": "k" * 32},
        }
    }
    if grouping is not None:
        patch["grouping"] = grouping
    return make_config(patch)


@pytest.mark.parametrize(
    ("hook", "grouping", "channel", "expected"),
    [
        (None, None, "hook", GroupPolicy(WAIT, INTERVAL)),
        (
            None,
            {"wait": "10s", "interval": "2m"},
            "hook",
            GroupPolicy(timedelta(seconds=10), timedelta(minutes=2)),
        ),
        (
            {"group_wait": "1s"},
            {"wait": "10s"},
            "hook",
            GroupPolicy(timedelta(seconds=1), INTERVAL),
        ),
        ({"group_wait": "0s"}, None, "hook", GroupPolicy(timedelta(0), INTERVAL)),
        (None, None, "pd", GroupPolicy(timedelta(0), timedelta(0))),
        (None, None, "gone", GroupPolicy(timedelta(0), timedelta(0))),
    ],
)
def test_policy_of(
    hook: dict[str, Any] | None,
    grouping: dict[str, Any] | None,
    channel: str,
    expected: GroupPolicy,
) -> None:
    """A channel's own setting wins over the ``grouping`` section, whose defaults are 3s and
    30s; PagerDuty and an unknown channel never group."""
    assert policy_of(_config(hook, grouping), channel) == expected


def test_a_bad_group_wait_is_a_located_error() -> None:
    """A group_wait that is no duration is refused, naming where it is."""
    with pytest.raises(ValueError, match="group_wait"):
        _config({"group_wait": "soon"})


# -- the words ------------------------------------------------------------------------------------


def test_group_summary_names_the_shared_upstream_and_counts() -> None:
    """Twelve systems fed by features-v3: the summary names the upstream and the tally."""
    messages = [
        full_message(system=f"model-{i}", upstreams=("features-v3",), purpose="opened")
        for i in range(10)
    ] + [
        full_message(system=f"model-{i}", upstreams=("features-v3", "x"), purpose="resolved")
        for i in range(10, 12)
    ]
    summary = render.group_summary(messages)
    assert summary.startswith("12 systems fed by features-v3")
    assert "10 OPEN, 2 RESOLVED" in summary


def test_group_summary_falls_back_to_rule_then_layer() -> None:
    """Without a shared upstream the common rule, else the common layer, is named."""
    same_rule = [full_message(system=s, rule="drift:psi") for s in ("a", "b")]
    assert "breaching drift:psi" in render.group_summary(same_rule)
    same_layer = [
        full_message(system="a", rule="r1", layers=("data", "model")),
        full_message(system="b", rule="r2", layers=("data",)),
    ]
    assert "in the data layer" in render.group_summary(same_layer)


def test_a_group_mail_lists_each_incident_with_its_evidence_and_own_links() -> None:
    """The packaged group templates list every incident of a group mail, in the text and
    the HTML part alike: its system, its evidence line and its own action links."""
    messages = [
        dataclasses.replace(message(f"inc-{i}"), system=f"model-{i}", ack_url=f"http://a/{i}")
        for i in range(5)
    ]
    _subject, text, html = MailTemplates().render_group(messages)
    for part in (text, html):
        for i in range(5):
            assert f"model-{i}" in part and f"http://a/{i}" in part
        assert "accuracy (model): degraded" in part


# -- the delivery loop -----------------------------------------------------------------------------


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class GroupFake:
    """A channel that can send groups; records each message (a list of notification ids)
    and answers from a script."""

    name: str
    script: list[Delivery] = field(default_factory=list)
    messages: list[list[str]] = field(default_factory=list)
    threads: list[GroupThread | None] = field(default_factory=list)
    """The thread each group message was sent in."""
    replies: list[tuple[str, str | None]] = field(default_factory=list)
    """Each notification sent on its own, with the root of its own conversation it replies
    under (None: it starts one)."""

    def _answer(self) -> Delivery:
        return self.script.pop(0) if self.script else Delivery.delivered(ref="msg")

    async def send(self, notification: Notification) -> Delivery:
        self.messages.append([notification.id])
        self.replies.append((notification.id, notification.thread))
        return self._answer()

    async def send_group(
        self, notifications: Sequence[Notification], thread: GroupThread | None = None
    ) -> Delivery:
        self.messages.append([n.id for n in notifications])
        self.threads.append(thread)
        return self._answer()

    async def aclose(self) -> None:
        """Nothing to release."""


def _loop(
    hook: dict[str, Any] | None = None, batch: int = 200
) -> tuple[MemoryStore, GroupFake, Clock, Deliverer]:
    store, channel, clock = MemoryStore(), GroupFake("hook"), Clock()
    deliverer = Deliverer(
        store,
        {"hook": channel},
        _config(hook),
        clock,
        pace_clock=clock,
        jitter=lambda: 1.0,
        batch=batch,
    )
    return store, channel, clock, deliverer


def _page(store: MemoryStore, nid: str, at: float, **fields: Any) -> None:
    made = _at(at)
    store.apply(Changes(opened=[incident(id=f"inc-{nid}", system=f"model-{nid}")]))
    store.apply(
        Changes(
            notifications=[
                notification(
                    nid, incident_id=f"inc-{nid}", channel="hook", created_at=made, **fields
                )
            ]
        )
    )


def _rows(store: MemoryStore, nids: Sequence[str]) -> list[Notification]:
    return [n for nid in nids for n in store.notifications(f"inc-{nid}")]


async def _drain_at(deliverer: Deliverer, clock: Clock, seconds: float) -> None:
    clock.now = _at(seconds)
    await deliverer.drain()


async def test_a_lone_incident_waits_group_wait_and_goes_alone() -> None:
    """Leased at once, a lone page is held (due at group_wait), then sent on its own."""
    store, channel, clock, deliverer = _loop()
    _page(store, "a", 0)
    await _drain_at(deliverer, clock, 0)
    assert channel.messages == [] and store.next_due() == _at(3)
    await _drain_at(deliverer, clock, 3)
    assert channel.messages == [["a"]]
    assert _rows(store, ["a"])[0].delivered_at == _at(3)


async def test_a_burst_is_one_message_and_every_row_is_delivered() -> None:
    """Five pages to one recipient within group_wait go out as one message at the first's
    group_wait; each row is delivered; a page to someone else is its own message."""
    store, channel, clock, deliverer = _loop()
    for i, nid in enumerate("abcde"):
        _page(store, nid, i * 0.5)
        await _drain_at(deliverer, clock, i * 0.5)
    _page(store, "z", 1, recipient="bob", address="bob")
    await _drain_at(deliverer, clock, 1)
    assert channel.messages == []
    await _drain_at(deliverer, clock, 3)
    assert sorted(map(sorted, channel.messages)) == [list("abcde")]
    await _drain_at(deliverer, clock, 4)
    assert sorted(map(sorted, channel.messages)) == [list("abcde"), ["z"]]
    assert all(n.delivered_at is not None for n in _rows(store, "abcdez"))


async def test_later_members_acks_and_resolutions_join_the_next_update() -> None:
    """After the group went out at 3, a new page (10s) and a resolution of a member (20s)
    wait for group_interval and go together at 33, as one update."""
    store, channel, clock, deliverer = _loop()
    await _lone(store, deliverer, clock, "a", 0)
    _page(store, "b", 10)
    await _drain_at(deliverer, clock, 10)
    _page(store, "r", 20, purpose="resolved")
    await _drain_at(deliverer, clock, 20)
    assert channel.messages == [["a"]] and store.next_due() == _at(33)
    await _drain_at(deliverer, clock, 33)
    assert channel.messages == [["a"], ["b", "r"]]


async def test_a_failed_group_retries_as_a_group() -> None:
    """A group answered 503 has every member scheduled for the same retry, and the retry is
    again one message."""
    store, channel, clock, deliverer = _loop()
    channel.script = [Delivery.retry("503")]
    _page(store, "a", 0)
    await _lone(store, deliverer, clock, "b", 0)
    retries = {n.next_attempt_at for n in _rows(store, "ab")}
    assert len(retries) == 1 and all(n.attempts == 1 for n in _rows(store, "ab"))
    (when,) = retries
    assert when is not None
    await _drain_at(deliverer, clock, (when - T0).total_seconds())
    assert channel.messages == [["a", "b"], ["a", "b"]]
    assert all(n.delivered_at is not None for n in _rows(store, "ab"))


async def test_grouping_off_sends_each_at_once() -> None:
    """With ``group_wait: 0s`` each page goes at once and on its own."""
    store, channel, clock, deliverer = _loop({"group_wait": "0s"})
    _page(store, "a", 0)
    _page(store, "b", 0)
    await _drain_at(deliverer, clock, 0)
    assert sorted(channel.messages) == [["a"], ["b"]]


async def test_a_group_bigger_than_a_lease_batch_is_still_one_message() -> None:
    """Seven pages each to alice and bob fall due together and are leased 4 at a time: each
    recipient still gets one message (a regression: each lease batch was sent as its own
    group)."""
    store, channel, clock, deliverer = _loop(batch=4)
    nids = [f"a{i}" for i in range(7)] + [f"b{i}" for i in range(7)]
    for nid in nids:
        who = "alice" if nid.startswith("a") else "bob"
        _page(store, nid, 0, recipient=who, address=who)
    await _drain_at(deliverer, clock, 0)
    await _drain_at(deliverer, clock, 3)
    assert sorted(map(sorted, channel.messages)) == [nids[:7], nids[7:]]
    assert all(n.delivered_at is not None for n in _rows(store, nids))


# -- what survives a restart or a failover: the group's timing and thread in the store ----------


def _restarted(store: MemoryStore, channel: GroupFake, clock: Clock) -> Deliverer:
    """A new delivery loop over the same store: the daemon restarted, or another instance
    took over; nothing of the old loop's memory is left."""
    return Deliverer(
        store, {"hook": channel}, _config(), clock, pace_clock=clock, jitter=lambda: 1.0
    )


async def test_a_restart_keeps_group_interval_for_a_later_member() -> None:
    """The group went out at 3; a page made at 10 and first leased after a restart still
    waits for group_interval (33), not group_wait from its making (13), which a restarted
    loop used to send at once because the group's timing lived only in memory."""
    store, channel, clock, deliverer = _loop()
    await _lone(store, deliverer, clock, "a", 0)
    _page(store, "b", 10)
    restarted = _restarted(store, channel, clock)
    await _drain_at(restarted, clock, 10)
    await _drain_at(restarted, clock, 13)
    assert channel.messages == [["a"]] and store.next_due() == _at(33)
    await _drain_at(restarted, clock, 33)
    assert channel.messages == [["a"], ["b"]]


async def test_a_failover_keeps_the_flush_time_of_a_waiting_group() -> None:
    """One instance held a page made at 10 until the group's next update at 33; another
    instance taking over leases a page made at 20: it joins the same update at 33 (the old
    loop, knowing nothing, sent it at 23 on its own)."""
    store, channel, clock, first = _loop()
    _page(store, "a", 0)
    await _drain_at(first, clock, 0)
    await _drain_at(first, clock, 3)
    _page(store, "b", 10)
    await _drain_at(first, clock, 10)
    _page(store, "c", 20)
    other = _restarted(store, channel, clock)
    await _drain_at(other, clock, 20)
    await _drain_at(other, clock, 23)
    assert channel.messages == [["a"]]
    await _drain_at(other, clock, 33)
    assert channel.messages == [["a"], ["b", "c"]]


def _resolved(nid: str) -> Notification:
    return notification(
        f"r{nid}",
        incident_id=f"inc-{nid}",
        channel="hook",
        message=dataclasses.replace(
            message(f"inc-{nid}", "resolved"), state="resolved", system=f"model-{nid}"
        ),
    )


async def test_a_groups_later_messages_reply_in_its_thread_after_a_restart() -> None:
    """A group of two goes out at 3 as a thread's root (the channel answers ``root-1``);
    after a restart, the resolution of one member (made at 10) goes at 33 as a reply in that
    thread, the root listing both incidents with the resolved one's newest message. The
    root is the group's: no member incident's own conversation starts from it."""
    store, channel, clock, deliverer = _loop()
    channel.script = [Delivery.delivered(ref="root-1")]
    _page(store, "a", 0)
    await _lone(store, deliverer, clock, "b", 0)
    assert channel.threads == [GroupThread(None, tuple(n.message for n in _rows(store, "ab")), 2)]
    resolution = dataclasses.replace(_resolved("a"), created_at=_at(10))
    store.apply(Changes(notifications=[resolution]))
    restarted = _restarted(store, channel, clock)
    await _drain_at(restarted, clock, 10)
    await _drain_at(restarted, clock, 33)
    assert channel.messages == [["a", "b"], ["ra"]]
    update = channel.threads[-1]
    assert update is not None and update.ref == "root-1"
    assert [(m.incident_id, m.state) for m in update.listed] == [
        ("inc-a", "resolved"),
        ("inc-b", "open"),
    ]
    assert store.conversations("inc-a") == [] and store.conversations("inc-b") == []


async def test_a_thread_whose_incidents_are_all_resolved_is_over() -> None:
    """Once the group's message lists every incident resolved, the next page to the same
    recipient starts a new thread (no ``ref``), as a lone page on its own."""
    store, channel, clock, deliverer = _loop()
    channel.script = [Delivery.delivered(ref="root-1"), Delivery.delivered(ref="root-1")]
    _page(store, "a", 0)
    await _lone(store, deliverer, clock, "b", 0)
    store.apply(
        Changes(
            notifications=[dataclasses.replace(_resolved(nid), created_at=_at(10)) for nid in "ab"]
        )
    )
    await _drain_at(deliverer, clock, 10)
    await _drain_at(deliverer, clock, 33)
    _page(store, "c", 40)
    await _drain_at(deliverer, clock, 40)
    await _drain_at(deliverer, clock, 63)
    assert channel.messages == [["a", "b"], ["ra", "rb"], ["c"]]
    assert [t.ref if t else None for t in channel.threads] == [None, "root-1"]


@pytest.mark.parametrize(
    ("earlier", "now", "expected"),
    [
        # New incidents are added at the end, in the order they go out.
        ([], ["a:open", "b:open"], ["a:open", "b:open"]),
        # A listed incident shows its newest message in its place.
        (["a:open", "b:open"], ["b:resolved", "c:open"], ["a:open", "b:resolved", "c:open"]),
        # Two messages of one incident in one update: the later one counts.
        (["a:open"], ["a:acknowledged", "a:resolved"], ["a:resolved"]),
        (["a:open"], ["b:open", "b:acknowledged"], ["a:open", "b:acknowledged"]),
    ],
)
def test_listing(earlier: list[str], now: list[str], expected: list[str]) -> None:
    """What a group thread's root lists once a message goes out in it."""

    def messages(specs: list[str]) -> list[Any]:
        out = []
        for spec in specs:
            incident_id, state = spec.split(":")
            out.append(dataclasses.replace(message(incident_id), state=state))
        return out

    thread = listing(GroupThread("root", tuple(messages(earlier))), messages(now))
    assert thread.ref == "root"
    assert [f"{m.incident_id}:{m.state}" for m in thread.listed] == expected


@pytest.mark.parametrize(
    ("earlier", "now", "expected"),
    [
        # c's resolution was shown by an earlier message: no longer listed; the root's stay.
        (["a:open", "b:resolved", "c:resolved", "d:open"], ["e:open"], ["a", "b", "d", "e"]),
        # An incident this message resolves is listed, resolved, this once.
        (["a:open", "b:open", "d:open"], ["d:resolved"], ["a", "b", "d"]),
        # A resolved incident that reopens in this message stays in its place.
        (["a:open", "b:open", "c:resolved"], ["c:open"], ["a", "b", "c"]),
    ],
)
def test_listing_drops_what_an_earlier_message_showed_resolved(
    earlier: list[str], now: list[str], expected: list[str]
) -> None:
    """A thread rooted in a and b (``root_size`` 2) lists the root's incidents, the
    unresolved ones and those resolved by this message; not one shown resolved before."""

    def messages(specs: list[str]) -> list[Any]:
        return [
            dataclasses.replace(message(spec.split(":")[0]), state=spec.split(":")[1])
            for spec in specs
        ]

    thread = listing(GroupThread("root", tuple(messages(earlier)), 2), messages(now))
    assert [m.incident_id for m in thread.listed] == expected
    assert thread.root_size == 2


@pytest.mark.parametrize(
    ("ref_before", "answered", "states", "members", "ref_after"),
    [
        (None, "root-1", ["open"], [0], "root-1"),  # the first message becomes the root
        ("root-1", None, ["open"], [0], "root-1"),  # a reply keeps the root
        ("root-1", "root-1", ["resolved", "open"], [1], "root-1"),
        ("root-1", "root-1", ["resolved", "resolved"], [], None),  # all resolved: over
        (None, None, ["open"], [0], None),  # a channel without threads keeps none
        # No member left (the store had them resolved): over, though listed open.
        ("root-1", "root-1", ["open", "open"], [], None),
    ],
)
def test_sent_keeps_the_root_until_every_incident_is_resolved(
    ref_before: str | None,
    answered: str | None,
    states: list[str],
    members: list[int],
    ref_after: str | None,
) -> None:
    """The thread a group keeps after its message was delivered: the root, while the
    message leaves an incident unresolved and the group has members."""
    listed = tuple(
        dataclasses.replace(message(f"inc-{i}"), state=state) for i, state in enumerate(states)
    )
    before = GroupState(
        last_sent=T0,
        thread=GroupThread(ref_before, listed[:-1], 1),
        members=frozenset(f"inc-{i}" for i in members),
    )
    after = sent(before, GroupThread(ref_before, listed), answered)
    assert after.thread.ref == ref_after
    assert after.last_sent == T0
    assert after.thread.listed == (listed if ref_after else ())


def test_a_reply_in_a_thread_already_over_changes_nothing() -> None:
    """A reply delivered in ``root-1`` after the group's members all left (its thread is
    over, a new one may have begun) keeps the group's thread as it is."""
    listed = (message("inc-a"),)
    now = GroupState(last_sent=T0, thread=GroupThread("root-2", listed, 1), members=frozenset())
    assert sent(now, GroupThread("root-1", listed, 1), "root-1") == now


async def test_a_storm_written_slowly_is_at_most_two_messages_per_owner() -> None:
    """A storm's pages are all made at one evaluation's ``now`` (0), but a loaded machine
    commits them over 20 s: 3 of each owner's 12 every 5 s, leased 4 at a time, the loop
    draining every second. Each owner still hears of all 12 in at most 2 messages: one at
    group_wait (3) with those written by then, one at group_interval (33) with the rest (a
    regression: a member made before its group went out but leased after was sent at once,
    so each drain that leased some made another message per owner, 5 each here)."""
    store, channel, clock, deliverer = _loop(batch=4)
    owners = ("alice", "bob", "dana")
    written: list[str] = []
    for second in range(61):
        if second % 5 == 0 and second <= 20:
            for who in owners:
                for k in range(3):
                    nid = f"{who}-{second}-{k}"
                    _page(store, nid, 0, recipient=who, address=who)
                    written.append(nid)
        await _drain_at(deliverer, clock, second)
    by_owner: dict[str, list[list[str]]] = {}
    for one in channel.messages:
        by_owner.setdefault(one[0].split("-")[0], []).append(one)
    assert sorted(by_owner) == sorted(owners)
    for who, messages in by_owner.items():
        assert len(messages) <= 2, (who, messages)
        assert sorted(nid for m in messages for nid in m) == sorted(
            nid for nid in written if nid.startswith(who)
        )
    delivered = [n.delivered_at for n in _rows(store, written)]
    assert all(at is not None and at <= _at(33) for at in delivered)


async def test_a_retried_member_goes_at_once_not_at_the_next_interval() -> None:
    """A member that failed on its own and is retried after its group went out is sent when
    its backoff ends, not held for group_interval: its backoff already spaced it."""
    store, channel, clock, deliverer = _loop()
    _page(store, "a", 0)
    _page(store, "b", 0, attempts=1, next_attempt_at=_at(5))
    await _drain_at(deliverer, clock, 0)
    await _drain_at(deliverer, clock, 3)
    assert channel.messages == [["a"]]
    await _drain_at(deliverer, clock, 5)
    assert channel.messages == [["a"], ["b"]]


# -- how long a thread lasts, whose thread a message goes in, and what waits --------------------


async def _lone(
    store: MemoryStore, deliverer: Deliverer, clock: Clock, name: str, seconds: float
) -> None:
    """Page ``name`` made at ``seconds`` to a group without members: it waits group_wait
    (3 s) from its making, no more, and goes then."""
    _page(store, name, seconds)
    await _drain_at(deliverer, clock, seconds)
    assert store.next_due() == _at(seconds + 3)
    await _drain_at(deliverer, clock, seconds + 3)


def _resolve(store: MemoryStore, name: str, seconds: float, *told: Notification) -> None:
    """The store records incident ``name`` resolved at ``seconds``, with the notifications
    ``told`` of it (none: its resolution reaches no group)."""
    (opened,) = store.incidents(system=f"model-{name}")
    done = dataclasses.replace(opened, state="resolved", resolved_at=_at(seconds))
    store.apply(Changes(updated=[done], notifications=list(told)))


def _follow_up(nid: str, incident: str, state: str, at: float, **fields: Any) -> Notification:
    """A later message of ``inc-<incident>`` (an ack, a reminder, its resolution) to alice
    through the grouping channel, made at ``at``."""
    purpose = {"acknowledged": "acknowledged", "resolved": "resolved"}.get(state, "reminder")
    return notification(
        nid,
        incident_id=f"inc-{incident}",
        channel="hook",
        created_at=_at(at),
        message=dataclasses.replace(
            message(f"inc-{incident}", purpose), state=state, system=f"model-{incident}"
        ),
        **fields,
    )


async def test_a_groups_thread_goes_on_however_long_it_was_idle() -> None:
    """A group of two goes out at 3 as root ``root-1``; an ack of one member made two hours
    later (a reminder's interval; drift incidents last hours) goes at once as a reply in
    that thread, the root listing it acknowledged; the resolutions, hours later still, go
    in it too, and only then is the thread over (a regression: a group idle for an hour
    was forgotten, so the ack went out as a new top-level message and the root showed the
    incident open for ever)."""
    store, channel, clock, deliverer = _loop()
    channel.script = [Delivery.delivered(ref="root-1")] * 3  # a reply answers its root
    _page(store, "a", 0)
    _page(store, "b", 0.5)
    await _drain_at(deliverer, clock, 0.5)
    await _drain_at(deliverer, clock, 3)
    store.apply(Changes(notifications=[_follow_up("ack-a", "a", "acknowledged", 7200)]))
    await _drain_at(deliverer, clock, 7200)
    assert channel.messages[-1] == ["ack-a"]
    ack = channel.threads[-1]
    assert ack is not None and ack.ref == "root-1"
    assert [(m.incident_id, m.state) for m in ack.listed] == [
        ("inc-a", "acknowledged"),
        ("inc-b", "open"),
    ]
    resolutions = [_follow_up(f"r{x}", x, "resolved", 4 * 3600) for x in "ab"]
    done = [
        dataclasses.replace(i, state="resolved", resolved_at=_at(4 * 3600))
        for x in "ab"
        for i in store.incidents(system=f"model-{x}")
    ]
    store.apply(Changes(updated=done, notifications=resolutions))
    await _drain_at(deliverer, clock, 4 * 3600)
    assert [t.ref if t else None for t in channel.threads] == [None, "root-1", "root-1"]
    assert deliverer.grouper.state(key_of(_rows(store, "a")[0])).thread == GroupThread()


async def test_an_incident_paged_alone_keeps_its_own_thread() -> None:
    """a and b are paged alone, ten minutes apart: each page is the root of its incident's
    own conversation. Their acks, made together later, go at once, each on its own as a
    reply under its own root, never as one new group message (a regression: they went out
    as a new group message, leaving both incidents' threads without their ack)."""
    store, channel, clock, deliverer = _loop()
    channel.script = [Delivery.delivered(ref="C1:1.1"), Delivery.delivered(ref="C1:2.2")]
    await _lone(store, deliverer, clock, "a", 0)
    _page(store, "b", 600)  # a new member: group_interval after a went out is long past
    await _drain_at(deliverer, clock, 600)
    await _drain_at(deliverer, clock, 603)
    assert channel.messages == [["a"], ["b"]] and channel.threads == []
    acks = [_follow_up(f"ack-{x}", x, "acknowledged", 610) for x in "ab"]
    store.apply(Changes(notifications=acks))
    await _drain_at(deliverer, clock, 610)
    assert channel.threads == []
    assert sorted(channel.replies[2:]) == [("ack-a", "C1:1.1"), ("ack-b", "C1:2.2")]
    assert all(n.delivered_at == _at(610) for n in store.notifications("inc-a")[1:])


async def test_an_incident_with_its_own_thread_resolved_ends_the_group() -> None:
    """a, paged alone with its own root, is resolved: the resolution replies under a's
    root at once, and takes a out of its group, so the next incident, c, is lone again
    and waits group_wait from its making, no more."""
    store, channel, clock, deliverer = _loop()
    channel.script = [Delivery.delivered(ref="C1:1.1")]
    await _lone(store, deliverer, clock, "a", 0)
    store.apply(Changes(notifications=[_follow_up("ra", "a", "resolved", 5)]))
    await _drain_at(deliverer, clock, 5)
    assert channel.replies == [("a", None), ("ra", "C1:1.1")]
    await _lone(store, deliverer, clock, "c", 6)
    assert channel.messages == [["a"], ["ra"], ["c"]]


async def test_a_lone_incident_waits_group_wait_even_after_an_earlier_page() -> None:
    """a went out at 3 and its resolution at 33 (group_interval: a was the group's until
    its resolution went out, though the store has it resolved from 10); with nothing of
    the recipient's unresolved, c made at 40 is lone: it goes at 43, group_wait after its
    making (a regression: it waited for group_interval after the group's last message,
    until 63, while the docs promised group_wait at most)."""
    store, channel, clock, deliverer = _loop()
    channel.script = [Delivery.delivered(ref=None), Delivery.delivered(ref=None)]
    await _lone(store, deliverer, clock, "a", 0)
    _resolve(store, "a", 10, _follow_up("ra", "a", "resolved", 10))
    await _drain_at(deliverer, clock, 10)
    assert store.next_due() == _at(33)
    await _drain_at(deliverer, clock, 33)
    assert channel.messages == [["a"], ["ra"]]
    await _lone(store, deliverer, clock, "c", 40)
    assert channel.messages == [["a"], ["ra"], ["c"]]


async def test_a_member_the_store_has_resolved_leaves_its_group() -> None:
    """a went out at 3 and was then resolved without its resolution ever reaching this
    group (it gave up, or went to another address): the store's record takes a out, so c
    made at 40 is lone and goes at 43, not at group_interval after the group's last
    message (and not held for ever by a member that will never be seen resolved)."""
    store, channel, clock, deliverer = _loop()
    channel.script = [Delivery.delivered(ref=None)]
    await _lone(store, deliverer, clock, "a", 0)
    _resolve(store, "a", 20)
    await _lone(store, deliverer, clock, "c", 25)
    assert channel.messages == [["a"], ["c"]]


# -- a thread ends with its group's members; its listing stays bounded ---------------------------


async def _both_out_then_resolved(store: MemoryStore, deliverer: Deliverer, clock: Clock) -> None:
    """a (made at 0) and b (at 0.5) go out as one group message at 3; at 10 the store has
    both resolved and their resolutions are queued (they wait for group_interval, till 33)."""
    _page(store, "a", 0)
    _page(store, "b", 0.5)
    await _drain_at(deliverer, clock, 0.5)
    await _drain_at(deliverer, clock, 3)
    for nid in "ab":
        _resolve(store, nid, 10)
    store.apply(Changes(notifications=[_follow_up(f"r{x}", x, "resolved", 10) for x in "ab"]))
    await _drain_at(deliverer, clock, 10)


async def test_a_thread_whose_resolutions_failed_for_good_is_over_for_a_lone_page() -> None:
    """a and b go out together as root ``root-1``; their resolutions, in one group message,
    fail for good, so no message of the thread ever lists them resolved. The group has no
    members left, so its thread is over: c, paged much later, goes alone as its own root (a
    regression: c went into root-1, whose root was updated to show a and b open with live
    buttons)."""
    store, channel, clock, deliverer = _loop()
    channel.script = [Delivery.delivered(ref="root-1"), Delivery.give_up("400 invalid_blocks")]
    await _both_out_then_resolved(store, deliverer, clock)
    await _drain_at(deliverer, clock, 33)
    assert channel.messages == [["a", "b"], ["ra", "rb"]]
    await _lone(store, deliverer, clock, "c", 4000)
    assert channel.messages[-1] == ["c"]
    assert channel.replies == [("c", None)]
    assert [t.ref if t else None for t in channel.threads] == [None, "root-1"]


async def test_a_thread_whose_members_the_store_resolved_is_over() -> None:
    """a and b go out together as root ``root-1``, then the store has both resolved without
    their resolutions reaching the group (they went elsewhere): the group has no members,
    its thread is over, and c goes alone as its own root at group_wait (a regression: c
    replied in root-1, whose root was updated to list a and b open)."""
    store, channel, clock, deliverer = _loop()
    channel.script = [Delivery.delivered(ref="root-1")]
    _page(store, "a", 0)
    _page(store, "b", 0.5)
    await _drain_at(deliverer, clock, 0.5)
    await _drain_at(deliverer, clock, 3)
    for nid in "ab":
        _resolve(store, nid, 20)
    await _lone(store, deliverer, clock, "c", 25)
    assert channel.messages == [["a", "b"], ["c"]]
    assert channel.replies == [("c", None)]
    assert deliverer.grouper.state(key_of(_rows(store, "c")[0])).members == {"inc-c"}


async def test_a_retried_resolution_goes_again_in_its_thread() -> None:
    """The resolutions of a and b (the group's last members) are answered 503: their retry
    is the same message, so it goes again in the thread ``root-1`` (ending it), not as a new
    root, though the group counted no member once the resolutions were first put out."""
    store, channel, clock, deliverer = _loop()
    channel.script = [Delivery.delivered(ref="root-1"), Delivery.retry("503")]
    _page(store, "a", 0)
    _page(store, "b", 0.5)
    await _drain_at(deliverer, clock, 0.5)
    await _drain_at(deliverer, clock, 3)
    store.apply(Changes(notifications=[_follow_up(f"r{x}", x, "resolved", 10) for x in "ab"]))
    await _drain_at(deliverer, clock, 10)
    await _drain_at(deliverer, clock, 33)
    (when,) = {n.next_attempt_at for n in _rows(store, "ab") if n.id.startswith("r")}
    assert when is not None
    await _drain_at(deliverer, clock, (when - T0).total_seconds())
    assert channel.messages == [["a", "b"], ["ra", "rb"], ["ra", "rb"]]
    assert [t.ref if t else None for t in channel.threads] == [None, "root-1", "root-1"]
    assert deliverer.grouper.state(key_of(_rows(store, "a")[0])).thread == GroupThread()


def test_a_threads_listing_keeps_its_root_and_what_is_unresolved() -> None:
    """One incident acknowledged for weeks keeps its group's thread going while 500 more
    incidents are paged and resolved in it: the thread lists the root's own incidents, and
    each later one only until a message of the thread has shown it resolved (a regression:
    every incident stayed listed for good, 501 here, each save rewriting them all)."""
    old = dataclasses.replace(message("inc-old"), state="acknowledged")
    members = frozenset({"inc-old", "inc-0"})
    state = sent(GroupState(members=members), listing(GroupThread(), [old, message("inc-0")]), "r")
    for i in range(1, 500):
        new = message(f"inc-{i}")
        state = sent(state, listing(state.thread, [new]), None)
        shown = listing(state.thread, [dataclasses.replace(new, state="resolved")])
        assert [m.incident_id for m in shown.listed] == ["inc-old", "inc-0", f"inc-{i}"]
        state = sent(state, shown, None)
    assert state.thread.ref == "r" and state.thread.root_size == 2
    last = listing(state.thread, [dataclasses.replace(old, state="open")])
    assert [m.incident_id for m in last.listed] == ["inc-old", "inc-0"]


# -- what a group's state keeps when a send outlives the lead, or its waiting members -----------


@dataclass
class HeldFake(GroupFake):
    """A grouping channel whose group sends wait until ``gate`` opens (``started`` is set
    as one begins): a send in flight while the test changes the loop's state."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def send_group(
        self, notifications: Sequence[Notification], thread: GroupThread | None = None
    ) -> Delivery:
        self.started.set()
        await self.gate.wait()
        return await super().send_group(notifications, thread)


class WatchedGrouper(Grouper):
    """A :class:`Grouper` that tells when it was cleared."""

    def __init__(self) -> None:
        super().__init__()
        self.cleared = asyncio.Event()

    def clear(self) -> None:
        super().clear()
        self.cleared.set()


async def test_a_group_delivered_after_the_lead_was_lost_writes_nothing() -> None:
    """a and b's group message is in flight when this instance loses the lead (its groups'
    copy is cleared); once delivered, it writes nothing to the group's state: the store
    keeps the members and the time the group went out (a regression: a default, empty state
    was written over them, from an instance that no longer led)."""
    store, clock = MemoryStore(), Clock()
    channel = HeldFake("hook", script=[Delivery.delivered(ref="root-1")])
    leading = [True]
    deliverer = Deliverer(
        store,
        {"hook": channel},
        _config(),
        clock,
        pace_clock=clock,
        jitter=lambda: 1.0,
        leading=lambda: leading[0],
    )
    grouper = deliverer.grouper = WatchedGrouper()
    _page(store, "a", 0)
    _page(store, "b", 0.5)
    await _drain_at(deliverer, clock, 0.5)
    clock.now = _at(3)
    draining = asyncio.create_task(deliverer.drain())
    await channel.started.wait()
    key = key_of(_rows(store, "a")[0])
    before = store.groups([key])[key]
    assert before.members == {"inc-a", "inc-b"} and before.last_sent == _at(3)
    leading[0] = False
    deliverer._changed.set()  # what a finished send or a claim does: the loop looks again
    await grouper.cleared.wait()
    channel.gate.set()
    await draining
    assert channel.messages == [["a", "b"]]
    assert all(n.delivered_at == _at(3) for n in _rows(store, "ab"))
    assert store.groups([key])[key] == before


def test_forget_keeps_a_group_with_a_send_in_flight() -> None:
    """A group whose message is being sent stays in memory however long ago it went out (a
    clock jump, a channel timeout of hours), so its delivery keeps the root it answers."""
    grouper = Grouper()
    key = key_of(notification())
    grouper.formed(key, [message("inc-a"), message("inc-b")], T0)
    ticket = grouper.sending(key)
    grouper.saved(grouper.changed())
    grouper.forget(_at(7200))
    assert grouper.missing([key]) == set()
    grouper.sent(key, ticket, GroupThread(None, (message("inc-a"), message("inc-b")), 2), "r")
    assert grouper.state(key).thread.ref == "r"


async def test_a_flush_time_whose_members_were_superseded_is_stale() -> None:
    """a is held until 3, then acknowledged: at 3 it is superseded and nothing goes out, so
    its group's flush time (3) stays. c, a lone page made at 1000, still waits group_wait
    (1003), and d, made at 1000.5, goes with it (a regression: the stale flush time sent c
    at once and held d for group_interval)."""
    store, channel, clock, deliverer = _loop()
    _page(store, "a", 0)
    await _drain_at(deliverer, clock, 0)
    (opened,) = store.incidents(system="model-a")
    acked = dataclasses.replace(opened, state="acknowledged", acknowledged_at=_at(1))
    store.apply(Changes(updated=[acked]))
    await _drain_at(deliverer, clock, 3)
    assert deliverer.grouper.state(key_of(_rows(store, "a")[0])).flush_at == _at(3)
    _page(store, "c", 1000)
    await _drain_at(deliverer, clock, 1000)
    _page(store, "d", 1000.5)
    await _drain_at(deliverer, clock, 1000.5)
    assert channel.messages == [] and store.next_due() == _at(1003)
    await _drain_at(deliverer, clock, 1003)
    assert channel.messages == [["c", "d"]]


def test_forget_drops_a_group_whose_flush_time_is_stale() -> None:
    """A group whose flush time passed an hour ago with nothing sent (its members were
    superseded) leaves the grouper's memory like any idle group."""
    grouper = Grouper()
    waiting = notification()
    assert grouper.due_at(waiting, POLICY, T0) == _at(3)
    grouper.saved(grouper.changed())
    grouper.forget(_at(3600))
    assert grouper.missing([key_of(waiting)]) == {key_of(waiting)}


async def test_resolutions_waiting_for_the_groups_update_reply_in_its_thread() -> None:
    """a and b go out as root ``root-1``; both are resolved at 10 (the store has them
    resolved; their resolutions wait for group_interval, until 33); c, paged at 20, is
    leased meanwhile. The store's record does not take a and b out while their resolutions
    wait: at 33 the resolutions and c go as one reply in root-1, not as a new root."""
    store, channel, clock, deliverer = _loop()
    channel.script = [Delivery.delivered(ref="root-1")] * 2
    await _both_out_then_resolved(store, deliverer, clock)
    _page(store, "c", 20)
    await _drain_at(deliverer, clock, 20)
    await _drain_at(deliverer, clock, 33)
    assert channel.messages == [["a", "b"], ["ra", "rb", "c"]]
    update = channel.threads[-1]
    assert update is not None and update.ref == "root-1"
    assert deliverer.grouper.state(key_of(_rows(store, "c")[0])).members == {"inc-c"}


async def test_resolutions_leased_in_several_batches_reply_in_their_thread() -> None:
    """Four incidents went out as root ``root-1`` and are all resolved; their resolutions
    are leased two at a time at 33. Those held from the first batch are on their way to the
    group, so the second batch's look at the store does not take them out: the four go as
    one reply in root-1, which ends the thread."""
    store, channel, clock, deliverer = _loop(batch=2)
    channel.script = [Delivery.delivered(ref="root-1")] * 2
    for nid in "abcd":
        _page(store, nid, 0)
    await _drain_at(deliverer, clock, 3)
    for nid in "abcd":
        _resolve(store, nid, 10)
    store.apply(Changes(notifications=[_follow_up(f"r{x}", x, "resolved", 10) for x in "abcd"]))
    await _drain_at(deliverer, clock, 10)
    await _drain_at(deliverer, clock, 33)
    assert [sorted(m) for m in channel.messages] == [list("abcd"), ["ra", "rb", "rc", "rd"]]
    assert [t.ref if t else None for t in channel.threads] == [None, "root-1"]
    assert deliverer.grouper.state(key_of(_rows(store, "a")[0])).thread == GroupThread()
