"""Escalation: an incident, its snapshotted chain and ``now`` in; due steps, notifications and
events out. Timers come from the incident's stored timestamps, so ticks may come late, twice,
or after an outage."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from driftowner.config import Config
from driftowner.escalation import (
    Escalation,
    cycle_length,
    escalated_step,
    follow_ups,
    on_resolved,
    standing_step,
    step_due_at,
    tell_escalation,
    tick,
)
from driftowner.incidents import acknowledge, reassign, resolve, snapshot_chain
from driftowner.model import AUTO, ChainSnapshot, ChainStep, Evidence, Incident, Notification

from .factories import (
    SYSTEM,
    T0,
    at,
    ids,
    incident,
    links,
    make_config,
    minutes,
    notification,
)


@dataclass
class Escalator:
    """Ticks one incident forward the way the engine does, keeping everything it owed."""

    config: Config
    incident: Incident
    sent: list[Notification] = field(default_factory=list)
    new_id: Any = field(default_factory=lambda: ids("n"))

    def tick(self, now: datetime) -> Escalation:
        outcome = tick(self.config, self.incident, now, self.new_id, links)
        self.incident = outcome.incident
        self.sent.extend(outcome.notifications)
        return outcome

    def at(self, minute: float) -> Escalation:
        return self.tick(at(minute))


def escalator(**overrides: Any) -> Escalator:
    """An escalator over the base incident without SLOs (the chain's own tests; the SLO
    breaches have theirs), unless ``overrides`` give them."""
    config = make_config()
    overrides = {"ack_within": None, "resolve_within": None, **overrides}
    return Escalator(config, incident(config, **overrides))


def _who(outcome: Escalation) -> list[tuple[str, str, str, str, int]]:
    return [
        (n.recipient, n.channel, n.address, n.message.purpose, n.message.step)
        for n in outcome.notifications
    ]


def test_step_one_notifies_the_owner_at_once_and_informs_contributors() -> None:
    """At opening, step 1 goes to the accountable owner through each of its channels (purpose
    ``opened``), the contributors of the incident's layers are informed, and one ``notified``
    event records it."""
    esc = escalator()
    outcome = esc.at(0)
    assert _who(outcome) == [
        ("alice", "console", "alice", "opened", 1),
        ("alice", "email", "alice@example.com", "opened", 1),
        ("ml-fraud", "console", "ml-fraud", "informed", 0),
        ("ml-fraud", "email", "ml-fraud@example.com", "informed", 0),
    ]
    assert outcome.steps_fired == (1,)
    assert [(e.kind, e.actor, e.at) for e in outcome.events] == [("notified", AUTO, T0)]
    assert outcome.events[0].detail.startswith("step 1: ")
    assert "alice via email" in outcome.events[0].detail
    assert outcome.incident.escalation_steps_done == 1
    assert all(n.created_at == T0 and n.next_attempt_at == T0 for n in outcome.notifications)
    assert all(n.incident_id == "inc-1" for n in outcome.notifications)


def test_a_reopened_incident_calls_its_owner_again_as_a_reopening() -> None:
    """Reopened an hour after opening: step 1 goes to the owner again with purpose
    ``reopened`` (not an escalation), the contributors are informed again, and the event is
    ``notified``; later steps follow from the reopening."""
    esc = escalator(reopened_at=at(60), escalation_epoch=at(60), escalation_steps_done=0)
    outcome = esc.at(60)
    assert _who(outcome) == [
        ("alice", "console", "alice", "reopened", 1),
        ("alice", "email", "alice@example.com", "reopened", 1),
        ("ml-fraud", "console", "ml-fraud", "informed", 0),
        ("ml-fraud", "email", "ml-fraud@example.com", "informed", 0),
    ]
    assert [e.kind for e in outcome.events] == ["notified"]
    assert esc.at(74).notifications == ()
    assert {n.message.purpose for n in esc.at(75).notifications} == {"escalated"}


def test_every_contributor_team_of_the_layers_involved_is_informed() -> None:
    """An incident over the model and business layers informs both layers' teams."""
    esc = escalator(layers=("model", "business"), kind="disagreement")
    teams = {n.recipient for n in esc.at(0).notifications if n.message.purpose == "informed"}
    assert teams == {"ml-fraud", "risk-product"}


CHAIN_CASES = [
    # (tick minute, steps fired, recipients)
    (0, (1,), {"alice", "ml-fraud"}),
    (14.99, (), set()),
    (15, (2,), {"bob"}),
    (44, (), set()),
    (45, (3,), {"dana"}),
    (74, (), set()),
    (75, (1,), {"alice"}),
    (90, (2,), {"bob"}),
    (120, (3,), {"dana"}),
    (600, (), set()),
    (6000, (), set()),
]


def test_later_steps_fire_at_their_after_and_repeat_reruns_the_chain() -> None:
    """While open, each later step fires at its ``after`` since opening; with ``repeat: 1``
    the chain runs once more one cycle later (cycle = last after + last gap = 75m), then
    stops."""
    esc = escalator()
    for minute, fired, recipients in CHAIN_CASES:
        outcome = esc.at(minute)
        assert (minute, outcome.steps_fired) == (minute, fired)
        assert {n.recipient for n in outcome.notifications} == recipients
    assert esc.incident.escalation_steps_done == 6


def test_later_steps_are_escalations_naming_the_step() -> None:
    """Steps after the first are ``escalated`` events and notifications with their step
    number; a repeated step 1 is an escalation too, not a second opening."""
    esc = escalator()
    esc.at(0)
    step2 = esc.at(15)
    assert _who(step2) == [("bob", "email", "bob@example.com", "escalated", 2)]
    assert [(e.kind, e.detail) for e in step2.events] == [("escalated", "step 2: bob via email")]
    esc.at(45)
    again = esc.at(75)
    assert {(n.recipient, n.message.purpose, n.message.step) for n in again.notifications} == {
        ("alice", "escalated", 1)
    }
    assert [e.kind for e in again.events] == ["escalated"]


def _told(esc: Escalator, minute: float) -> Escalation:
    """A tick at ``minute`` as the cycle runs it: with a fired escalation step, every
    conversation the incident started before (what the escalator sent so far) is told."""
    before = list(esc.sent)
    outcome = esc.at(minute)
    if escalated_step(outcome) is None:
        return outcome
    told = tell_escalation(esc.config, outcome, before, at(minute), esc.new_id, links)
    esc.sent.extend(told.notifications[len(outcome.notifications) :])
    return told


def _follow_ups(outcome: Escalation) -> list[tuple[str, str, str, int]]:
    return [
        (n.recipient, n.channel, n.address, n.message.step)
        for n in outcome.notifications
        if n.message.purpose == "stepped_up"
    ]


def test_a_step_two_escalation_tells_the_owners_conversations_and_pages_bob_only() -> None:
    """When step 2 pages bob, the conversations step 1 started with the owner (console, mail)
    are each told once, ``stepped_up`` at step 2, so a thread's root can show the step; the
    contributor team informed at opening is not (it hears of the resolution only), and bob,
    paged by the step, gets his page and no follow-up. The owner keeps her acknowledge
    link: she may still take it."""
    esc = escalator()
    assert escalated_step(esc.at(0)) is None
    step2 = _told(esc, 15)
    assert _who(step2)[0] == ("bob", "email", "bob@example.com", "escalated", 2)
    assert _follow_ups(step2) == [
        ("alice", "console", "alice", 2),
        ("alice", "email", "alice@example.com", 2),
    ]
    told = step2.notifications[-1]
    assert told.message.state == "open" and told.message.actor == AUTO
    assert told.message.ack_url == links("inc-1", "ack", "alice")
    assert told.created_at == at(15)
    assert [e.kind for e in step2.events] == ["escalated"]


def test_a_later_step_tells_each_earlier_conversation_once_but_not_those_it_pages() -> None:
    """Step 3 tells the owner's and bob's conversations (once each, though the owner's was
    told of step 2 too); the repeat's step 1 pages the owner again, so only bob's and dana's
    conversations are told, of step 1."""
    esc = escalator()
    esc.at(0)
    _told(esc, 15)
    assert _follow_ups(_told(esc, 45)) == [
        ("alice", "console", "alice", 3),
        ("alice", "email", "alice@example.com", 3),
        ("bob", "email", "bob@example.com", 3),
    ]
    assert _follow_ups(_told(esc, 75)) == [
        ("bob", "email", "bob@example.com", 1),
        ("dana", "email", "dana@example.com", 1),
    ]


def test_a_collapsed_tick_tells_each_earlier_conversation_once_of_the_latest_step() -> None:
    """Steps 2 and 3 due at once (downtime) page bob and dana once each; the owner's
    conversations are told once, of step 3, the step escalation stands at now."""
    esc = escalator()
    esc.at(0)
    outcome = _told(esc, 50)
    assert outcome.steps_fired == (2, 3)
    assert _follow_ups(outcome) == [
        ("alice", "console", "alice", 3),
        ("alice", "email", "alice@example.com", 3),
    ]


def test_an_opening_a_reminder_or_a_quiet_tick_tells_nobody() -> None:
    """Only a fired escalation step is told: the opening, a tick with nothing due and a
    reminder are not escalations."""
    esc = escalator()
    assert escalated_step(esc.at(0)) is None
    assert escalated_step(esc.at(5)) is None
    esc.incident = acknowledge(esc.incident, "alice", at(6)).incident
    reminder = esc.at(6 + 120)
    assert [n.message.purpose for n in reminder.notifications] == ["reminder", "reminder"]
    assert escalated_step(reminder) is None


def test_a_reassignment_restart_is_not_told_as_a_step_up() -> None:
    """After a reassignment (told by its own follow-up), the new owner's step 1 pages bob
    and tells alice's earlier conversations nothing: no ``stepped_up`` saying "nobody has
    acknowledged" (alice did). Step 2 of the restarted chain is a step up, told again."""
    esc = escalator()
    esc.at(0)
    esc.incident = acknowledge(esc.incident, "alice", at(2)).incident
    chain = snapshot_chain(esc.config, esc.config.systems[SYSTEM], owner="bob")
    esc.incident = reassign(esc.incident, "bob", "on call", at(5), "alice", chain).incident
    reassigned = _told(esc, 5)
    assert (escalated_step(reassigned), _follow_ups(reassigned)) == (None, [])
    assert {(n.recipient, n.message.purpose) for n in reassigned.notifications} == {
        ("bob", "escalated")
    }
    assert _follow_ups(_told(esc, 20)) == [
        ("alice", "console", "alice", 2),
        ("alice", "email", "alice@example.com", 2),
        ("bob", "console", "bob", 2),
    ]


def test_an_expired_ack_restart_is_not_told_as_a_step_up() -> None:
    """An ack that expires restarts the chain: step 1 pages the owner again and the earlier
    conversations (bob's, from step 2) are told nothing; someone did acknowledge."""
    esc = escalator()
    esc.at(0)
    _told(esc, 15)
    esc.incident = acknowledge(esc.incident, "alice", at(16)).incident
    expired = _told(esc, 16 + 8 * 60)
    assert expired.steps_fired == (1,)
    assert (escalated_step(expired), _follow_ups(expired)) == (None, [])


def test_a_released_hold_restart_is_not_told_as_a_step_up() -> None:
    """A hold that ends (here a silence) restarts the chain at step 1, told to nobody as a
    step up; the restarted chain's step 2 is, to the owner's conversations (bob, paged by
    it, gets his page)."""
    esc = escalator()
    esc.at(0)
    _told(esc, 15)
    esc.incident = replace(esc.incident, held_by="sil-1")
    released = _told(esc, 20)
    assert [e.kind for e in released.events] == ["released", "escalated"]
    assert (escalated_step(released), _follow_ups(released)) == (None, [])
    assert _follow_ups(_told(esc, 35)) == [
        ("alice", "console", "alice", 2),
        ("alice", "email", "alice@example.com", 2),
    ]


def test_notifications_carry_what_a_human_needs_to_act() -> None:
    """Every notification names the system, the accountable owner, the layers, the evidence,
    the age, the step, the recipient, the runbook and the links."""
    esc = escalator()
    esc.at(0)
    (sent,) = esc.at(15).notifications
    message = sent.message
    assert message.system == SYSTEM
    assert (message.owner, message.owner_name) == ("alice", "Alice Chen")
    assert message.recipient_name == "Bob Diaz"
    assert message.layers == ("model",)
    assert message.kind == "drift" and message.rule == "drift:accuracy"
    assert message.summary == "accuracy falling: 0.71 < min 0.9"
    assert message.evidence == (
        Evidence("accuracy", "model", "degraded", "0.71 < min 0.9", 0.71, None, 0.9),
    )
    assert message.age_seconds == 900.0
    assert message.opened_at == T0
    assert message.step == 2
    assert message.runbook == "https://wiki.example.com/fraud-scoring"
    assert message.incident_url == "http://driftowner.test/view/inc-1"
    assert message.ack_url == "http://driftowner.test/ack/inc-1/bob"
    assert message.resolve_url == "http://driftowner.test/resolve/inc-1/bob"


def test_only_the_paged_get_action_links_and_each_acts_as_its_recipient() -> None:
    """Step 1's owner and step 2's escalation recipient each get ack / resolve links made for
    them; the contributor teams informed at opening get the view link only."""
    esc = escalator()
    opened = esc.at(0).notifications
    informed = [n.message for n in opened if n.message.purpose == "informed"]
    assert informed and all(m.ack_url is None and m.resolve_url is None for m in informed)
    assert all(m.incident_url == "http://driftowner.test/view/inc-1" for m in informed)
    owner = [n.message for n in opened if n.message.purpose == "opened"]
    assert {m.ack_url for m in owner} == {"http://driftowner.test/ack/inc-1/alice"}
    (escalated,) = esc.at(15).notifications
    assert escalated.message.ack_url == "http://driftowner.test/ack/inc-1/bob"


def test_an_ack_stops_escalation() -> None:
    """After an acknowledgement no further step fires, however late the tick."""
    esc = escalator()
    esc.at(0)
    esc.incident = acknowledge(esc.incident, "alice", at(5)).incident
    for minute in (15, 45, 75, 119):
        assert esc.at(minute).notifications == ()
    assert esc.incident.escalation_steps_done == 1


def _pages(outcome: Escalation) -> list[tuple[str, str, str, int]]:
    return [
        (n.recipient, n.channel, n.message.purpose, n.message.step) for n in outcome.notifications
    ]


ALICE = [("alice", "console", "escalated", 1), ("alice", "email", "escalated", 1)]
INFORMED = [("ml-fraud", "console", "informed", 0), ("ml-fraud", "email", "informed", 0)]
OPENED = [("alice", "console", "opened", 1), ("alice", "email", "opened", 1), *INFORMED]
BOB = [("bob", "email", "escalated", 2)]
DANA = [("dana", "email", "escalated", 3)]

CATCH_UP_CASES = [
    # (id, minutes ticked before the downtime, first tick after it, pages in order,
    #  event details in order, steps passed)
    (
        "down from opening, no step owed twice: every page, in step order",
        (),
        50,
        [*OPENED, *BOB, *DANA],
        [
            "step 1: alice via console, alice via email, ml-fraud via console, ml-fraud via email",
            "step 2: bob via email",
            "step 3: dana via email",
        ],
        (1, 2, 3),
    ),
    (
        "down after step 1 until past the repeat: one page each, the repeat's",
        (0,),
        130,
        [*ALICE, *BOB, *DANA],
        [
            "round 1 steps 2-3 collapsed: 5 steps fell due at once (downtime or a late tick); "
            "each recipient is paged once, for the latest step they were owed",
            "step 1: alice via console, alice via email",
            "step 2: bob via email",
            "step 3: dana via email",
        ],
        (2, 3, 1, 2, 3),
    ),
    (
        "down from opening until past the repeat: contributors informed, owner paged once",
        (),
        130,
        [*INFORMED, *ALICE, *BOB, *DANA],
        [
            "round 1 steps 2-3 collapsed: 6 steps fell due at once (downtime or a late tick); "
            "each recipient is paged once, for the latest step they were owed",
            "step 1: ml-fraud via console, ml-fraud via email; folded into a later step: "
            "alice via console, alice via email",
            "step 1: alice via console, alice via email",
            "step 2: bob via email",
            "step 3: dana via email",
        ],
        (1, 2, 3, 1, 2, 3),
    ),
    (
        "down after step 1 until the repeat's step 2: bob once, every page in step order",
        (0,),
        91,
        [*DANA, *ALICE, *BOB],
        [
            "round 1 step 2 collapsed: 4 steps fell due at once (downtime or a late tick); "
            "each recipient is paged once, for the latest step they were owed",
            "step 3: dana via email",
            "step 1: alice via console, alice via email",
            "step 2: bob via email",
        ],
        (2, 3, 1, 2),
    ),
]


@pytest.mark.parametrize(
    ("ticked", "restart", "pages", "details", "passed"),
    [case[1:] for case in CATCH_UP_CASES],
    ids=[case[0] for case in CATCH_UP_CASES],
)
def test_steps_owed_at_once_page_each_recipient_once_in_step_order(
    ticked: tuple[float, ...],
    restart: float,
    pages: list[tuple[str, str, str, int]],
    details: list[str],
    passed: tuple[int, ...],
) -> None:
    """After downtime, each recipient (per channel) owed one or more pages gets one, for the
    latest step they were owed; the pages come in step order; the steps whose pages were all
    folded into later ones are an ``escalated`` event; every owed step counts as passed, so
    none fires again."""
    esc = escalator()
    for minute in ticked:
        esc.at(minute)
    outcome = esc.at(restart)
    assert _pages(outcome) == pages
    assert [e.detail for e in outcome.events] == details
    assert {e.at for e in outcome.events} == {at(restart)}
    assert outcome.steps_fired == passed
    assert outcome.incident.escalation_steps_done == len(ticked) + len(passed)
    assert esc.at(restart) == Escalation(esc.incident)


@pytest.mark.parametrize("case", CATCH_UP_CASES, ids=[case[0] for case in CATCH_UP_CASES])
def test_pages_owed_at_once_are_ordered_by_step_for_the_outbox(case: tuple[Any, ...]) -> None:
    """The outbox leases by ``created_at``: each step that pages gets its own order key, a
    microsecond after the previous step's and ending at ``now`` (never in the future); the
    pages of one step share theirs, and every page is due at once."""
    _, ticked, restart, _, details, _ = case
    esc = escalator()
    for minute in ticked:
        esc.at(minute)
    sent = esc.at(restart).notifications
    keys = [n.created_at for n in sent]
    paging_steps = sum("collapsed:" not in detail for detail in details)
    assert keys == sorted(keys)
    assert sorted(set(keys)) == [
        at(restart) - timedelta(microseconds=paging_steps - 1 - i) for i in range(paging_steps)
    ]
    assert all(n.next_attempt_at == n.created_at for n in sent)


def _chain(*steps: tuple[str, str | list[str], list[str]], repeat: int = 0) -> Config:
    """The base config with the standard chain replaced by (after, notify, via) steps."""
    return make_config(
        {
            "escalation_chains": {
                "standard": {
                    "steps": [
                        {"after": after, "notify": notify, "via": via}
                        for after, notify, via in steps
                    ],
                    "repeat": repeat,
                }
            }
        }
    )


def test_a_recipient_owed_on_one_channel_only_keeps_that_page_at_its_own_step() -> None:
    """Folding is per recipient and channel: alice owed step 1 by console and email and step
    2 by console only gets step 1's email and step 2's console page; step 1's event names the
    console page it folded, and no step is collapsed (each still paged someone)."""
    config = _chain(("0s", "owner", ["console", "email"]), ("15m", ["alice"], ["console"]))
    esc = Escalator(config, incident(config))
    outcome = esc.at(20)
    assert _pages(outcome) == [
        ("alice", "email", "opened", 1),
        ("ml-fraud", "console", "informed", 0),
        ("ml-fraud", "email", "informed", 0),
        ("alice", "console", "escalated", 2),
    ]
    assert [(e.kind, e.detail) for e in outcome.events] == [
        (
            "notified",
            "step 1: alice via email, ml-fraud via console, ml-fraud via email; "
            "folded into a later step: alice via console",
        ),
        ("escalated", "step 2: alice via console"),
    ]
    assert outcome.steps_fired == (1, 2)


def test_the_reported_downtime_pages_each_person_once_in_step_order() -> None:
    """The issue's case: steps 5 s and 10 s apart with ``repeat: 3`` (rounds 25 s apart),
    the daemon stopped 80 s after step 1. The restart pages dana, alice and bob once each, in
    step order, each for the latest step they were owed (dana's round 3 step 3 at 65 s; bob's
    round 4 step 2 fell due at 80 s exactly); the seven steps folded into those pages are one
    event; and the last step still fires on time at 90 s."""
    config = _chain(
        ("0s", "owner", ["console", "email"]),
        ("5s", ["bob"], ["email"]),
        ("15s", ["dana"], ["email"]),
        repeat=3,
    )
    esc = Escalator(config, incident(config))
    esc.tick(T0)
    outcome = esc.tick(T0 + timedelta(seconds=80))
    assert _pages(outcome) == [*DANA, *ALICE, *BOB]
    assert [e.kind for e in outcome.events] == ["escalated"] * 4
    assert outcome.events[0].detail.startswith(
        "round 1 steps 2-3, round 2 steps 1-3, round 3 steps 1-2 collapsed: 10 steps fell due"
    )
    assert outcome.steps_fired == (2, 3, 1, 2, 3, 1, 2, 3, 1, 2)
    assert outcome.incident.escalation_steps_done == 11
    assert _pages(esc.tick(T0 + timedelta(seconds=89))) == []
    assert _pages(esc.tick(T0 + timedelta(seconds=90))) == DANA


@pytest.mark.parametrize("minute", [0, 15, 45, 75, 50, 200])
def test_a_second_tick_at_the_same_instant_fires_nothing(minute: float) -> None:
    """No step fires twice: a tick repeated at the same ``now`` owes nothing."""
    esc = escalator()
    esc.at(minute)
    assert esc.at(minute) == Escalation(esc.incident)


def test_an_expired_ack_unacknowledges_and_restarts_at_step_one() -> None:
    """When ``ack_timeout`` runs out the incident is open again (``unacknowledged`` event),
    step 1 fires to the owner at once, and later steps follow from that moment."""
    esc = escalator()
    esc.at(0)
    esc.incident = acknowledge(esc.incident, "alice", at(10)).incident
    before = esc.tick(at(10) + timedelta(hours=8) - timedelta(seconds=1))
    assert (before.incident.state, before.steps_fired) == ("acknowledged", ())
    expiry = at(10) + timedelta(hours=8)
    outcome = esc.tick(expiry)
    assert [(e.kind, e.actor) for e in outcome.events] == [
        ("unacknowledged", AUTO),
        ("escalated", AUTO),
    ]
    assert "ack by alice expired" in outcome.events[0].detail
    assert outcome.incident.state == "open"
    assert outcome.incident.acknowledged_at is None
    assert outcome.incident.first_acknowledged_at == at(10)
    assert outcome.incident.escalation_epoch == expiry
    assert outcome.steps_fired == (1,)
    assert {(n.recipient, n.message.purpose, n.message.state) for n in outcome.notifications} == {
        ("alice", "escalated", "open")
    }
    assert esc.tick(expiry + minutes(14)).notifications == ()
    assert esc.tick(expiry + minutes(15)).steps_fired == (2,)


def test_reminders_go_to_the_owner_while_acknowledged() -> None:
    """While acknowledged but unresolved, the owner is reminded every ``remind_every``
    through step 1's channels; no reminder twice for the same period."""
    esc = escalator()
    esc.at(0)
    esc.incident = acknowledge(esc.incident, "alice", at(10)).incident
    assert esc.at(10 + 119).notifications == ()
    first = esc.at(10 + 120)
    assert _who(first) == [
        ("alice", "console", "alice", "reminder", 0),
        ("alice", "email", "alice@example.com", "reminder", 0),
    ]
    assert [(e.kind, e.actor) for e in first.events] == [("reminded", AUTO)]
    assert first.notifications[0].message.ack_url is None
    assert (
        first.notifications[0].message.resolve_url == "http://driftowner.test/resolve/inc-1/alice"
    )
    assert esc.at(10 + 120) == Escalation(esc.incident)
    assert esc.at(10 + 239).notifications == ()
    assert [n.message.purpose for n in esc.at(10 + 240).notifications] == ["reminder"] * 2
    assert esc.incident.state == "acknowledged"


def test_no_reminders_without_remind_every() -> None:
    """A chain without ``remind_every`` never reminds an acknowledged incident."""
    esc = escalator()
    esc.incident = replace(
        acknowledge(esc.incident, "alice", at(1)).incident,
        chain=replace(esc.incident.chain, remind_every=None, ack_timeout=None),
    )
    assert esc.tick(at(1) + timedelta(days=30)).events == ()


def test_a_resolved_incident_owes_nothing() -> None:
    """Ticking a resolved incident fires no step and no reminder."""
    esc = escalator()
    esc.incident = resolve(esc.incident, "alice", at(1)).incident
    assert esc.at(100) == Escalation(esc.incident)


def test_a_reassignment_restarts_escalation_with_the_new_owner() -> None:
    """After a reassignment step 1 goes to the new accountable owner at once, and the chain
    runs again from the reassignment."""
    esc = escalator()
    esc.at(0)
    config = esc.config
    chain = snapshot_chain(config, config.systems[SYSTEM], owner="bob")
    esc.incident = reassign(esc.incident, "bob", "on call", at(5), "alice", chain).incident
    outcome = esc.at(5)
    assert _who(outcome) == [
        ("bob", "console", "bob", "escalated", 1),
        ("bob", "email", "bob@example.com", "escalated", 1),
    ]
    assert outcome.notifications[0].message.owner_name == "Bob Diaz"
    assert esc.at(20).steps_fired == (2,)


def test_on_resolved_notifies_everyone_notified_once_and_skips_tests() -> None:
    """A resolution sends one ``resolved`` message per earlier (channel, recipient, address),
    however often that address was notified, and none for test messages."""
    config = make_config()
    done = resolve(incident(config), "alice", at(90)).incident
    earlier = [
        notification("a", channel="console", recipient="alice", address="alice"),
        notification("b", channel="email", recipient="alice", address="alice@example.com"),
        notification("c", channel="email", recipient="ml-fraud", address="ml-fraud@example.com"),
        notification("d", channel="email", recipient="bob", address="bob@example.com"),
        notification("e", channel="email", recipient="bob", address="bob@example.com"),
        notification("f", channel="email", recipient="alice", address="alice@example.com"),
        notification(
            "t", channel="email", recipient="dana", address="x@example.com", purpose="test"
        ),
    ]
    out = on_resolved(config, done, earlier, at(90), ids("r"), links)
    assert [(n.channel, n.recipient, n.address) for n in out] == [
        ("console", "alice", "alice"),
        ("email", "alice", "alice@example.com"),
        ("email", "ml-fraud", "ml-fraud@example.com"),
        ("email", "bob", "bob@example.com"),
    ]
    assert [n.id for n in out] == ["r-1", "r-2", "r-3", "r-4"]
    for sent in out:
        assert sent.message.purpose == "resolved"
        assert sent.message.step == 0
        assert sent.message.state == "resolved"
        assert sent.message.age_seconds == 90 * 60
        assert sent.message.ack_url is None and sent.message.resolve_url is None
        assert sent.created_at == at(90)
    assert [n.message.recipient_name for n in out] == [
        "Alice Chen",
        "Alice Chen",
        "ml-fraud",
        "Bob Diaz",
    ]


def test_on_resolved_after_a_full_escalation_reaches_every_recipient() -> None:
    """Everything the chain sent (owner, contributors, later steps) hears of the resolution."""
    esc = escalator()
    for minute in (0, 15, 45):
        esc.at(minute)
    done = resolve(esc.incident, "alice", at(50)).incident
    out = on_resolved(esc.config, done, esc.sent, at(50), ids("r"), links)
    assert {n.recipient for n in out} == {"alice", "ml-fraud", "bob", "dana"}
    assert len(out) == len({(n.channel, n.recipient, n.address) for n in esc.sent})


def test_a_note_is_told_to_every_conversation_the_incident_started() -> None:
    """A person's note (``noted``) goes once to each conversation the incident started
    with a person paged, never to an informed team (informed at opening and resolution
    only, as for an ack) nor to a test message's address; each names
    the step escalation stands at (so a thread's root keeps showing it), carries the note
    and its writer, and gives each person paged their links."""
    esc = escalator()
    esc.at(0)
    esc.at(15)
    test = notification("t", channel="email", recipient="dana", address="x@example.com")
    test = replace(test, message=replace(test.message, purpose="test"))
    out = follow_ups(
        esc.config,
        esc.incident,
        [*esc.sent, test],
        "noted",
        at(20),
        ids("m"),
        links,
        "rolled back features-v3, watching",
        "alice",
        standing_step(esc.incident),
    )
    assert [(n.recipient, n.channel) for n in out] == [
        ("alice", "console"),
        ("alice", "email"),
        ("bob", "email"),
    ]
    for told in out:
        message = told.message
        assert (message.purpose, message.step, message.state) == ("noted", 2, "open")
        assert (message.note, message.actor) == ("rolled back features-v3, watching", "alice")
    bob = out[-1].message
    assert bob.ack_url == links("inc-1", "ack", "bob")


@pytest.mark.parametrize(("done", "step"), [(0, 0), (1, 1), (2, 2), (3, 3), (4, 1), (6, 3)])
def test_standing_step_is_the_last_step_fired_within_the_chain(done: int, step: int) -> None:
    """The step escalation stands at: none before the first, then the last fired, counted
    within the chain across repeats."""
    config = make_config()
    assert standing_step(replace(incident(config), escalation_steps_done=done)) == step


CYCLE_CASES = [
    # (afters in minutes, repeat, k, due minute or None)
    ((0, 15, 45), 1, 0, 0),
    ((0, 15, 45), 1, 2, 45),
    ((0, 15, 45), 1, 3, 75),
    ((0, 15, 45), 1, 5, 120),
    ((0, 15, 45), 1, 6, None),
    ((0, 15, 45), 0, 3, None),
    ((0, 10), 2, 4, 40),
    ((0,), 3, 1, None),
]


@pytest.mark.parametrize(("afters", "repeat", "k", "due"), CYCLE_CASES)
def test_step_due_at_counts_repeats_one_cycle_apart(
    afters: tuple[int, ...], repeat: int, k: int, due: int | None
) -> None:
    """The k-th step (counting repeats) falls due at epoch + round * cycle + its ``after``;
    past the last round there is none. A single-step chain has no cycle and never repeats."""
    chain = ChainSnapshot(
        name="c",
        steps=tuple(ChainStep(minutes(a), ("alice",), ("console",)) for a in afters),
        repeat=repeat,
    )
    assert step_due_at(chain, T0, k) == (None if due is None else at(due))
    if len(afters) > 1:
        assert cycle_length(chain) == minutes(2 * afters[-1] - afters[-2])
