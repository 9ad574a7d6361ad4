"""Slack as a conversation (Web API mode) against FakeSlack on loopback: one thread per
incident in each conversation, later messages as replies, the root kept up to date with
``chat.update``, Slack's limits respected, and the outbox carrying the thread through the
store."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from driftowner import runner, service
from driftowner.channels import Channel
from driftowner.channels.log import LogChannel
from driftowner.channels.slack import SlackWebApiChannel
from driftowner.config import Config
from driftowner.cycle import Pager
from driftowner.model import Delivery, Evidence, Notification
from driftowner.outbox import Deliverer, deliver_due
from driftowner.store import Changes, SqlStore
from tests.fakes.slack import FakeSlack, api_error, api_rate_limited
from tests.unit import factories

pytestmark = pytest.mark.integration


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def api_channel(slack: FakeSlack) -> SlackWebApiChannel:
    return SlackWebApiChannel(
        "slack", SecretStr(slack.token), api_url=slack.api_url, timeout=timedelta(seconds=5)
    )


def acknowledged(thread: str | None, address: str = "U024BE7LH") -> Notification:
    """Alice's acknowledgement of inc-42, as a follow-up in the conversation ``thread``."""
    note = factories.slack_notification(
        address,
        purpose="acknowledged",
        state="acknowledged",
        step=0,
        ack_url=None,
        note="looking at the adoption dashboard",
        actor="alice",
    )
    return dataclasses.replace(note, id="notif-2", thread=thread)


async def test_a_follow_up_replies_in_the_thread_and_updates_the_root(slack: FakeSlack) -> None:
    """The first message starts the thread (its ``channel:ts`` is the delivery's ref); the
    acknowledgement is a reply with ``thread_ts`` in the same conversation, and the root now
    reads ACKNOWLEDGED, without an Acknowledge button."""
    channel = api_channel(slack)
    try:
        first = await channel.send(factories.slack_notification())
        assert first.ok and first.ref is not None, slack.rejections
        root_channel, root_ts = first.ref.split(":")
        assert root_channel == "D024BE7LH"
        second = await channel.send(acknowledged(first.ref))
    finally:
        await channel.aclose()
    assert second.ok, slack.rejections
    root, reply = slack.posted
    assert "thread_ts" not in root
    assert (reply["channel"], reply["thread_ts"]) == (root_channel, root_ts)
    assert "looking at the adoption dashboard" in str(reply["blocks"])
    (update,) = slack.updated
    assert (update["channel"], update["ts"]) == (root_channel, root_ts)
    now = slack.message(root_channel, root_ts)
    assert now["blocks"][0]["text"]["text"].startswith("ACKNOWLEDGED ")
    buttons = next(b for b in now["blocks"] if b["type"] == "actions")["elements"]
    assert "Acknowledge" not in [button["text"]["text"] for button in buttons]


async def test_a_rate_limited_root_update_is_retried_before_any_reply(slack: FakeSlack) -> None:
    """``ratelimited`` on chat.update is a retry after Slack's Retry-After, and nothing was
    replied yet, so the retry posts the reply once."""
    channel = api_channel(slack)
    try:
        first = await channel.send(factories.slack_notification())
        slack.answer_next(api_rate_limited(7))
        delivery = await channel.send(acknowledged(first.ref))
        assert (delivery.ok, delivery.recoverable, delivery.retry_after) == (False, True, 7.0)
        assert "chat.update" in delivery.detail
        assert len(slack.posted) == 1
        again = await channel.send(acknowledged(first.ref))
    finally:
        await channel.aclose()
    assert again.ok
    assert len(slack.posted) == 2 and len(slack.updated) == 1


async def test_a_root_slack_no_longer_has_leaves_the_reply_unthreaded(slack: FakeSlack) -> None:
    """A root Slack cannot find (``message_not_found``: deleted) does not lose the message:
    it is posted to the conversation on its own, and the detail says the root was not
    updated."""
    channel = api_channel(slack)
    try:
        first = await channel.send(factories.slack_notification())
        assert first.ref is not None
        gone = first.ref.split(":")[0] + ":1.000001"
        delivery = await channel.send(acknowledged(gone))
    finally:
        await channel.aclose()
    assert delivery.ok
    assert "message_not_found" in delivery.detail
    assert "thread_ts" not in slack.posted[-1]


async def test_an_unknown_conversation_gives_up_with_channel_not_found(slack: FakeSlack) -> None:
    """A first message to a conversation Slack does not know gives up naming the error."""
    channel = api_channel(slack)
    try:
        delivery = await channel.send(factories.slack_notification("#nowhere"))
    finally:
        await channel.aclose()
    assert (delivery.ok, delivery.recoverable) == (False, False)
    assert "channel_not_found" in delivery.detail


async def test_a_server_error_on_the_reply_is_retried(slack: FakeSlack) -> None:
    """When the root was updated but the reply hit trouble on Slack's side, the send is
    retried (updating the root again is harmless)."""
    channel = api_channel(slack)
    try:
        first = await channel.send(factories.slack_notification())
        # The update goes through; the reply is answered with Slack's internal_error.
        delivery = await _with_reply_failing(slack, channel, acknowledged(first.ref))
    finally:
        await channel.aclose()
    assert (delivery.ok, delivery.recoverable) == (False, True)
    assert "internal_error" in delivery.detail


async def _with_reply_failing(
    slack: FakeSlack, channel: SlackWebApiChannel, note: Notification
) -> Delivery:
    """Send ``note`` with its root update accepted and its reply refused."""
    real_call = channel._call

    async def call(method: str, **arguments: object) -> Delivery:
        if method == "chat.postMessage":
            slack.answer_next(api_error("internal_error"))
        return await real_call(method, **arguments)

    channel._call = call  # type: ignore[method-assign]
    return await channel.send(note)


async def test_ten_thousand_characters_of_evidence_are_cut_not_refused(slack: FakeSlack) -> None:
    """Evidence of 10,000 characters, a 300-character system name and note fit Slack's
    limits (section 3000, header 150): the fake, which refuses what Slack refuses, accepts
    the post and the root update, and the cut text ends with an ellipsis."""
    long = {
        "evidence": (Evidence("accuracy", "model", "degraded", "x" * 10_000),),
        "system": "s" * 300,
    }
    channel = api_channel(slack)
    try:
        first = await channel.send(factories.slack_notification(**long))
        assert first.ok, slack.rejections
        follow_up = dataclasses.replace(
            acknowledged(first.ref),
            message=dataclasses.replace(acknowledged(first.ref).message, note="n" * 10_000, **long),
        )
        second = await channel.send(follow_up)
    finally:
        await channel.aclose()
    assert second.ok, slack.rejections
    blocks = slack.posted[0]["blocks"]
    assert len(blocks[0]["text"]["text"]) == 150
    evidence = next(b for b in blocks if "Evidence" in b.get("text", {}).get("text", ""))
    assert len(evidence["text"]["text"]) == 3000 and evidence["text"]["text"].endswith("…")
    assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in slack.posted[1]["blocks"])


async def test_the_outbox_threads_later_notifications_through_the_store(
    slack: FakeSlack, tmp_path: Path
) -> None:
    """Through the outbox and a real store: the opening page's ref is recorded as the root
    of (incident, slack, U024BE7LH); the acknowledgement sent later is a reply in that
    thread."""
    store = SqlStore(f"sqlite:///{tmp_path / 'driftowner.db'}")
    channel = api_channel(slack)
    page = factories.notification(
        "n-1", channel="slack", address="U024BE7LH", created_at=factories.T0
    )
    ack = factories.notification(
        "n-2",
        channel="slack",
        address="U024BE7LH",
        created_at=factories.at(1),
        purpose="acknowledged",
    )
    try:
        store.apply(Changes(opened=[factories.incident()], notifications=[page]))
        assert await deliver_due(store, {"slack": channel}, lambda: factories.at(1)) == 1
        store.apply(Changes(notifications=[ack]))
        assert await deliver_due(store, {"slack": channel}, lambda: factories.at(2)) == 1
        ((_, _, ref),) = store.conversations("inc-1")
    finally:
        await channel.aclose()
        store.close()
    root, reply = slack.posted
    assert ref.split(":") == ["D024BE7LH", reply["thread_ts"]]
    assert "thread_ts" not in root


async def test_an_acknowledgement_posts_into_every_thread_the_incident_started(
    slack: FakeSlack, tmp_path: Path
) -> None:
    """``service.acknowledge`` queues an ``acknowledged`` notification to each conversation
    the incident started (here Alice's DM and the ml-fraud channel, not the informed team's
    own ack), in the same transaction; the outbox posts it as a reply under each root and the
    root shows ACKNOWLEDGED and Alice's note."""
    config = factories.make_config(
        {"channels": {"slack": {"type": "slack", "token": slack.token, "api_url": slack.api_url}}}
    )
    store = SqlStore(f"sqlite:///{tmp_path / 'driftowner.db'}")
    channel = api_channel(slack)
    page = factories.notification("n-1", channel="slack", address="U024BE7LH")
    fyi = factories.notification(
        "n-2", channel="slack", recipient="ml-fraud", address="#ml-fraud", purpose="informed"
    )
    try:
        store.apply(Changes(opened=[factories.incident()], notifications=[page, fyi]))
        assert await deliver_due(store, {"slack": channel}, lambda: factories.at(1)) == 2
        service.acknowledge(
            store, config, "inc-1", "alice", "on it", factories.at(2), "slack", factories.links
        )
        queued = [n for n in store.notifications("inc-1") if n.message.purpose == "acknowledged"]
        assert [(n.address, n.message.note, n.message.actor) for n in queued] == [
            ("U024BE7LH", "on it", "alice")
        ]
        assert await deliver_due(store, {"slack": channel}, lambda: factories.at(3)) == 1
        roots = dict(((c, a), ref) for c, a, ref in store.conversations("inc-1"))
    finally:
        await channel.aclose()
        store.close()
    reply = slack.posted[-1]
    root_channel, root_ts = roots[("slack", "U024BE7LH")].split(":")
    assert (reply["channel"], reply["thread_ts"]) == (root_channel, root_ts)
    root = slack.message(root_channel, root_ts)
    assert root["blocks"][0]["text"]["text"].startswith("ACKNOWLEDGED")
    assert "on it" in str(root["blocks"])


ALICE_BY_SLACK = ("slack", "alice", "U024BE7LH")


def _to_alice(nid: str, system: str, at: float, purpose: str, state: str) -> Notification:
    """A Slack notification to Alice's DM about ``system``'s incident (``inc-<system>``)."""
    return factories.notification(
        nid,
        incident_id=f"inc-{system}",
        channel="slack",
        address="U024BE7LH",
        created_at=factories.T0 + timedelta(seconds=at),
        message=dataclasses.replace(
            factories.message(f"inc-{system}", purpose), system=system, state=state
        ),
    )


async def _deliver_at(deliverer: Deliverer, clock: FrozenClock, seconds: float) -> None:
    clock.now = factories.T0 + timedelta(seconds=seconds)
    await deliverer.drain()


@dataclasses.dataclass
class FrozenClock:
    now: datetime = factories.T0

    def __call__(self) -> datetime:
        return self.now


def _root_lines(slack: FakeSlack, ref: tuple[str, str]) -> list[str]:
    """The incident lines of the group root as Slack now has it."""
    blocks = slack.message(*ref)["blocks"]
    return [
        b["text"]["text"].split("\n")[0]
        for b in blocks
        if b["type"] == "section" and "text" in b and "`drift:" in b["text"]["text"]
    ]


async def test_a_group_is_one_thread_whose_root_follows_its_incidents_across_a_restart(
    slack: FakeSlack, tmp_path: Path
) -> None:
    """Two pages to Alice within group_wait post one root message; the daemon restarts; a
    new member and an acknowledgement (within group_interval) go at 33 s as one reply in the
    root's thread, and the root is updated with chat.update to list all three, the
    acknowledged one as ACKNOWLEDGED; the resolutions of all three then reply in the same
    thread and the root reads RESOLVED for each."""
    config = factories.make_config(
        {"channels": {"slack": {"type": "slack", "token": slack.token, "api_url": slack.api_url}}}
    )
    path = f"sqlite:///{tmp_path / 'driftowner.db'}"
    clock = FrozenClock()

    def daemon() -> tuple[SqlStore, SlackWebApiChannel, Deliverer]:
        store, channel = SqlStore(path), api_channel(slack)
        deliverer = Deliverer(store, {"slack": channel}, config, clock, pace_clock=clock)
        return store, channel, deliverer

    store, channel, deliverer = daemon()
    opened = [factories.incident(id=f"inc-{s}", system=s) for s in ("alpha", "beta", "gamma")]
    store.apply(Changes(opened=opened))
    store.apply(
        Changes(
            notifications=[
                _to_alice("a1", "alpha", 0, "opened", "open"),
                _to_alice("b1", "beta", 1, "opened", "open"),
            ]
        )
    )
    await _deliver_at(deliverer, clock, 1)
    await _deliver_at(deliverer, clock, 3)
    kept = store.groups([ALICE_BY_SLACK])[ALICE_BY_SLACK].thread
    await channel.aclose()
    store.close()
    (root,) = slack.posted
    assert "thread_ts" not in root and slack.updated == []
    assert kept.ref is not None and [m.system for m in kept.listed] == ["alpha", "beta"]
    channel_id, ts = kept.ref.split(":")
    ref = (channel_id, ts)
    assert slack.message(*ref)["text"] == root["text"] and "2 systems" in root["text"]

    # A restart: a new store connection, channel and delivery loop; nothing kept in memory.
    store, channel, deliverer = daemon()
    try:
        store.apply(
            Changes(
                notifications=[
                    _to_alice("c1", "gamma", 10, "opened", "open"),
                    _to_alice("a2", "alpha", 12, "acknowledged", "acknowledged"),
                ]
            )
        )
        await _deliver_at(deliverer, clock, 12)
        await _deliver_at(deliverer, clock, 15)
        assert len(slack.posted) == 1, "the update waits for group_interval"
        await _deliver_at(deliverer, clock, 33)
        update = slack.posted[-1]
        assert (update["channel"], update["thread_ts"]) == ref
        assert [(u["channel"], u["ts"]) for u in slack.updated] == [ref]
        assert [line.split(" ")[0] for line in _root_lines(slack, ref)] == [
            "*ACKNOWLEDGED",
            "*OPEN",
            "*OPEN",
        ]
        store.apply(
            Changes(
                notifications=[
                    _to_alice(f"{s[0]}9", s, 40, "resolved", "resolved")
                    for s in ("alpha", "beta", "gamma")
                ]
            )
        )
        await _deliver_at(deliverer, clock, 40)
        await _deliver_at(deliverer, clock, 63)
    finally:
        await channel.aclose()
        store.close()
    assert len(slack.posted) == 3 and slack.posted[-1]["thread_ts"] == ref[1]
    assert len(slack.updated) == 2
    assert [line.split(" ")[0] for line in _root_lines(slack, ref)] == ["*RESOLVED"] * 3
    assert "3 RESOLVED" in slack.message(*ref)["blocks"][0]["text"]["text"]


async def test_a_group_root_drops_an_incident_once_a_reply_showed_it_resolved(
    slack: FakeSlack, tmp_path: Path
) -> None:
    """alpha and beta post the group's root; gamma joins, then its resolution replies and
    the root shows it RESOLVED; once delta joins later, the root updated with chat.update
    lists alpha and beta (what the thread is about), and delta, no longer gamma: a thread
    one incident keeps going for weeks lists what is going on, not every incident it ever
    had."""
    config = factories.make_config(
        {"channels": {"slack": {"type": "slack", "token": slack.token, "api_url": slack.api_url}}}
    )
    store, channel, clock = (
        SqlStore(f"sqlite:///{tmp_path / 'd.db'}"),
        api_channel(slack),
        FrozenClock(),
    )
    deliverer = Deliverer(store, {"slack": channel}, config, clock, pace_clock=clock)
    systems = ("alpha", "beta", "gamma", "delta")
    try:
        store.apply(Changes(opened=[factories.incident(id=f"inc-{s}", system=s) for s in systems]))
        steps = [
            (0, [_to_alice("a1", "alpha", 0, "opened", "open")]),
            (1, [_to_alice("b1", "beta", 1, "opened", "open")]),
            (3, []),
            (10, [_to_alice("c1", "gamma", 10, "opened", "open")]),
            (33, []),
            (40, [_to_alice("c9", "gamma", 40, "resolved", "resolved")]),
            (63, []),
        ]
        for seconds, notifications in steps:
            store.apply(Changes(notifications=notifications))
            await _deliver_at(deliverer, clock, seconds)
        (ref,) = {(u["channel"], u["ts"]) for u in slack.updated}
        assert [line.split(" ")[0] for line in _root_lines(slack, ref)] == [
            "*OPEN",
            "*OPEN",
            "*RESOLVED",
        ]
        store.apply(Changes(notifications=[_to_alice("d1", "delta", 70, "opened", "open")]))
        await _deliver_at(deliverer, clock, 70)
        await _deliver_at(deliverer, clock, 93)
    finally:
        await channel.aclose()
        store.close()
    assert len(slack.posted) == 4 and slack.posted[-1]["thread_ts"] == ref[1]
    root = str(slack.message(*ref)["blocks"])
    assert "alpha" in root and "beta" in root and "delta" in root and "gamma" not in root
    assert len(_root_lines(slack, ref)) == 3


def _alice_by_slack_then_bob(slack: FakeSlack) -> Config:
    """Step 1 pages the owner (Alice) by Slack and informs ml-fraud; at 15m step 2 pages
    bob on the console."""
    return factories.make_config(
        {
            "channels": {
                "slack": {"type": "slack", "token": slack.token, "api_url": slack.api_url}
            },
            "escalation_chains": {
                "standard": {
                    "steps": [
                        {"notify": "owner", "via": ["slack"]},
                        {"after": "15m", "notify": ["bob"], "via": ["console"]},
                    ]
                }
            },
        }
    )


async def _through_step_two(
    store: SqlStore, config: Config, channels: Mapping[str, Channel], pager: Pager
) -> tuple[int, int]:
    """Open inc-1, escalate and deliver its step 1 (at 0, delivered at 1m) and its step 2 (at
    15m, delivered at 16m); returns how many notifications each escalation queued."""
    store.apply(Changes(opened=[factories.incident(config, ack_within=None, resolve_within=None)]))
    first = runner.escalate(store, config, factories.T0, pager)
    assert await deliver_due(store, channels, lambda: factories.at(1)) == first
    second = runner.escalate(store, config, factories.at(15), pager)
    assert await deliver_due(store, channels, lambda: factories.at(16)) == second
    return first, second


async def test_step_two_replies_in_the_owners_thread_and_the_root_shows_step_two(
    slack: FakeSlack, tmp_path: Path
) -> None:
    """Step 1 pages Alice by Slack DM (her thread's root) and informs ml-fraud; at 15m
    step 2 pages bob on the console. Through the escalation stage, a real store and the
    outbox, Alice's thread gets a reply telling of step 2 and her root is updated with
    chat.update to show step 2; the informed team's thread hears nothing (a regression: the
    owner's root kept showing step 1 until an ack or resolution reached it)."""
    config = _alice_by_slack_then_bob(slack)
    store = SqlStore(f"sqlite:///{tmp_path / 'driftowner.db'}")
    channels: dict[str, Channel] = {"slack": api_channel(slack), "console": LogChannel("console")}
    pager = Pager(factories.ids("n"), factories.links)
    try:
        assert await _through_step_two(store, config, channels, pager) == (2, 2)
        roots = {address: ref for _, address, ref in store.conversations("inc-1")}
    finally:
        await channels["slack"].aclose()
        store.close()
    root_channel, root_ts = roots["U024BE7LH"].split(":")
    assert len(slack.posted) == 3, "Alice's root, ml-fraud's root, Alice's reply"
    reply = slack.posted[-1]
    assert (reply["channel"], reply["thread_ts"]) == (root_channel, root_ts)
    assert "step 2" in str(reply["blocks"])
    (update,) = slack.updated
    assert (update["channel"], update["ts"]) == (root_channel, root_ts)
    root = slack.message(root_channel, root_ts)
    assert root["blocks"][0]["text"]["text"].startswith("OPEN ")
    fields = [f["text"] for b in root["blocks"] for f in b.get("fields", [])]
    assert "*Escalation*\nstep 2" in fields


async def test_a_note_replies_in_the_owners_thread_and_the_root_keeps_the_step(
    slack: FakeSlack, tmp_path: Path
) -> None:
    """Step 1 pages Alice by Slack DM and informs ml-fraud; step 2 pages bob on the console.
    Bob's note (``service.add_note``, through the API) is posted, through a real store and the
    outbox, as a reply in Alice's thread, her root updated with chat.update and still showing
    OPEN, the accountable owner and step 2; the informed team's thread hears nothing, as of
    an ack (a regression: a note outside an ack or a resolution never reached the
    thread)."""
    config = _alice_by_slack_then_bob(slack)
    store = SqlStore(f"sqlite:///{tmp_path / 'driftowner.db'}")
    console = LogChannel("console")
    channels: dict[str, Channel] = {"slack": api_channel(slack), "console": console}
    pager = Pager(factories.ids("n"), factories.links)
    note = "rolled back features-v3, watching"
    try:
        await _through_step_two(store, config, channels, pager)
        before = len(slack.posted)
        service.add_note(
            store, config, "inc-1", "bob", note, factories.at(20), "api", factories.links
        )
        assert await deliver_due(store, channels, lambda: factories.at(21)) == 2
        roots = {address: ref for _, address, ref in store.conversations("inc-1")}
    finally:
        await channels["slack"].aclose()
        store.close()
    (reply,) = slack.posted[before:]
    root_channel, root_ts = roots["U024BE7LH"].split(":")
    assert (reply["channel"], reply["thread_ts"]) == (root_channel, root_ts)
    assert note in str(reply["blocks"]) and "Note from bob" in str(reply["blocks"])
    assert [(u["channel"], u["ts"]) for u in slack.updated][-1] == (root_channel, root_ts)
    root = slack.message(root_channel, root_ts)
    assert root["blocks"][0]["text"]["text"].startswith("OPEN ")
    fields = [f["text"] for b in root["blocks"] for f in b.get("fields", [])]
    assert "*Escalation*\nstep 2" in fields
    assert "*Accountable owner*\nAlice Chen" in fields
