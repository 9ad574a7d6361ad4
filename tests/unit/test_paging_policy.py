"""The paging policy the escalation stage decides, with the clock injected: what holds an
incident's pages (silences, maintenance windows, an open incident upstream), what a hold's end
restarts, and what an SLO breach records and tells whom. Table-driven."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from driftowner import cycle, render, runner
from driftowner.config import Config, MaintenanceConfig
from driftowner.cycle import Pager
from driftowner.escalation import (
    Paging,
    hold,
    maintenance_silences,
    slo_breaches,
    tick,
    window_start,
)
from driftowner.model import Incident, Notification, Silence, Upstream
from driftowner.store import MemoryStore

from .factories import SYSTEM, T0, at, base_config, finding, ids, incident, links, make_config


def silence(**fields: Any) -> Silence:
    """A silence of fraud-scoring from T0 for two hours, unless ``fields`` say otherwise."""
    base: dict[str, Any] = {
        "id": "sil-1",
        "starts_at": T0,
        "ends_at": at(120),
        "reason": "retraining",
        "by": "alice",
        "via": "cli",
        "system": SYSTEM,
    }
    return Silence(**{**base, **fields})


def labelled_config() -> Config:
    """The base config, fraud-scoring labelled ``team=risk``, and a ``features`` system
    (owner dana) fraud-scoring depends on."""
    document = base_config()
    fraud = document["systems"][SYSTEM]
    features = {
        "owner": "dana",
        "escalation": "standard",
        "signals": {"freshness": dict(fraud["signals"]["null_rate"])},
    }
    return make_config(
        {
            "systems": {
                SYSTEM: {"labels": {"team": "risk"}, "depends_on": ["features"]},
                "features": features,
            }
        }
    )


UPSTREAM = replace(incident(id="inc-up"), system="features", owner="dana")

HOLDS: list[tuple[str, list[Silence], dict[str, Incident], Incident, tuple[str, str] | None]] = [
    ("a silence of the system holds", [silence()], {}, incident(), ("silence", "sil-1")),
    (
        "a silence of the system's owner holds",
        [silence(system=None, owner="alice")],
        {},
        incident(),
        ("silence", "sil-1"),
    ),
    (
        "a silence of another owner does not",
        [silence(system=None, owner="bob")],
        {},
        incident(),
        None,
    ),
    (
        "a label matcher that the system's labels include holds",
        [silence(system=None, labels=(("team", "risk"),))],
        {},
        incident(),
        ("silence", "sil-1"),
    ),
    (
        "a label matcher with a label the system lacks does not",
        [silence(system=None, labels=(("team", "risk"), ("tier", "1")))],
        {},
        incident(),
        None,
    ),
    ("a silence of another system does not", [silence(system="features")], {}, incident(), None),
    ("a silence not yet begun does not", [silence(starts_at=at(1))], {}, incident(), None),
    ("a silence at its end does not", [silence(ends_at=T0)], {}, incident(), None),
    ("an expired silence does not", [silence(expired_at=T0)], {}, incident(), None),
    (
        "an open probable cause upstream holds",
        [],
        {"inc-up": UPSTREAM},
        incident(caused_by="inc-up"),
        ("upstream", "inc-up"),
    ),
    (
        "a probable cause no longer unresolved does not",
        [],
        {},
        incident(caused_by="inc-up"),
        None,
    ),
    (
        "a silence comes before the upstream",
        [silence()],
        {"inc-up": UPSTREAM},
        incident(caused_by="inc-up"),
        ("silence", "sil-1"),
    ),
]


@pytest.mark.parametrize(
    ("silences", "unresolved", "subject", "expected"),
    [case[1:] for case in HOLDS],
    ids=[case[0] for case in HOLDS],
)
def test_what_holds_an_incidents_pages(
    silences: list[Silence],
    unresolved: dict[str, Incident],
    subject: Incident,
    expected: tuple[str, str] | None,
) -> None:
    """A silence covers a system by its name, its owner or its labels, while it holds
    (started, not ended, not expired); an incident linked to an open upstream one is held by
    it; a silence is named first."""
    found = hold(labelled_config(), subject, Paging(tuple(silences), unresolved), T0)
    assert (None if found is None else (found.kind, found.ref)) == expected


def _pages(notifications: tuple[Notification, ...]) -> list[tuple[str, str, str]]:
    return [(n.recipient, n.channel, n.message.purpose) for n in notifications]


def test_a_silence_holds_every_page_and_its_end_restarts_from_step_one() -> None:
    """Opened under a silence: nobody is paged, one ``silenced`` event names the silence, and
    later ticks add nothing. When the silence ends the next tick records ``released`` and
    pages the owner (step 1, timed from the release); step 2 follows 15m after that."""
    config = make_config()
    subject = incident(ack_within=None, resolve_within=None)
    paging = Paging((silence(),), {})
    held = tick(config, subject, T0, ids("n"), links, paging)
    assert held.notifications == ()
    assert [(e.kind, e.detail.split(" ")[0]) for e in held.events] == [("silenced", "sil-1")]
    assert (held.incident.held_by, held.incident.escalation_steps_done) == ("sil-1", 0)
    later = tick(config, held.incident, at(90), ids("n"), links, paging)
    assert (later.events, later.notifications) == ((), ())
    released = tick(config, held.incident, at(120), ids("n"), links, Paging())
    assert [e.kind for e in released.events] == ["released", "escalated"]
    assert "sil-1 ended; escalation restarts from step 1" in released.events[0].detail
    assert ("alice", "email", "escalated") in _pages(released.notifications)
    assert released.incident.held_by is None
    assert released.incident.escalation_epoch == at(120)
    assert tick(config, released.incident, at(134), ids("n"), links).notifications == ()
    step_2 = tick(config, released.incident, at(135), ids("n"), links)
    assert _pages(step_2.notifications) == [("bob", "email", "escalated")]


def test_an_expired_silence_releases_like_an_ended_one() -> None:
    """A silence expired early holds no more: the next tick pages the owner."""
    config = make_config()
    subject = incident(ack_within=None, resolve_within=None, held_by="sil-1")
    expired = Paging((silence(expired_at=at(10)),), {})
    outcome = tick(config, subject, at(10), ids("n"), links, expired)
    assert outcome.events[0].kind == "released"
    assert {n.recipient for n in outcome.notifications} == {"alice"}


def test_an_incident_held_by_its_upstream_informs_its_owner_once_and_pages_after_it() -> None:
    """Linked to an open upstream incident: the owner is informed once (purpose
    ``informed``, no ack link, the note names the cause) and an ``inhibited`` event records
    it; nobody is paged. When the upstream resolves and this one still holds, the owner is
    paged from step 1."""
    config = labelled_config()
    subject = incident(caused_by="inc-up", ack_within=None, resolve_within=None)
    paging = Paging((), {"inc-up": UPSTREAM})
    held = tick(config, subject, T0, ids("n"), links, paging)
    assert [e.kind for e in held.events] == ["inhibited"]
    assert _pages(held.notifications) == [
        ("alice", "console", "informed"),
        ("alice", "email", "informed"),
    ]
    assert all(n.message.ack_url is None for n in held.notifications)
    told = held.notifications[0].message
    # Facts, not words: the upstream incident as it stands; render says it.
    assert told.held_by == Upstream("inc-up", "features", "dana", "open") and told.note == ""
    assert render.note(told).startswith("Probably caused by inc-up on features (owner dana)")
    again = tick(config, held.incident, at(60), ids("n"), links, paging)
    assert (again.events, again.notifications) == ((), ())
    resumed = tick(config, held.incident, at(61), ids("n"), links, Paging())
    assert "upstream incident inc-up resolved" in resumed.events[0].detail
    assert ("alice", "email", "escalated") in _pages(resumed.notifications)


# (label, system patch, incident overrides, now in minutes, expected events, pages)
BREACHES: list[tuple[str, dict[str, Any], dict[str, Any], float, list[str], set[str]]] = [
    ("before ack_within: nothing", {}, {}, 29, [], set()),
    (
        "ack_within passed unacknowledged: owner and the next step (bob)",
        {},
        {"escalation_steps_done": 1},
        30,
        ["ack_within 30m passed unacknowledged: told alice, bob"],
        {"alice", "bob"},
    ),
    (
        "the chain past step 2: the next step is dana's",
        {},
        {"escalation_steps_done": 2},
        30,
        ["ack_within 30m passed unacknowledged: told alice, dana"],
        {"alice", "dana"},
    ),
    (
        "on_breach names who is told besides the owner",
        {"on_breach": ["dana"]},
        {"escalation_steps_done": 1},
        30,
        ["ack_within 30m passed unacknowledged: told alice, dana"],
        {"alice", "dana"},
    ),
    (
        "acknowledged in time: no ack breach",
        {},
        {"state": "acknowledged", "first_acknowledged_at": at(20), "acknowledged_at": at(20)},
        40,
        [],
        set(),
    ),
    (
        "acknowledged late: recorded, nobody chased",
        {},
        {"state": "acknowledged", "first_acknowledged_at": at(40), "acknowledged_at": at(40)},
        41,
        ["ack_within 30m passed: first acknowledged after 40m"],
        set(),
    ),
    (
        "already recorded: never again",
        {},
        {"slo_breached": ("ack",)},
        45,
        [],
        set(),
    ),
    (
        "resolve_within passed while acknowledged: owner reminded, the next step told",
        {},
        {
            "state": "acknowledged",
            "first_acknowledged_at": at(5),
            "acknowledged_at": at(5),
            "escalation_steps_done": 1,
            "slo_breached": (),
        },
        3 * 24 * 60,
        ["resolve_within 3d passed unresolved: told alice, bob"],
        {"alice", "bob"},
    ),
]


@pytest.mark.parametrize(
    ("patch", "overrides", "minute", "details", "told"),
    [case[1:] for case in BREACHES],
    ids=[case[0] for case in BREACHES],
)
def test_slo_breaches_are_recorded_once_and_told(
    patch: dict[str, Any],
    overrides: dict[str, Any],
    minute: float,
    details: list[str],
    told: set[str],
) -> None:
    """An SLO passing records one ``slo_breached`` event and pages the owner and the chain's
    next step (or ``on_breach``), once per SLO per incident; an ack that came in time is no
    breach, a late one is recorded without a page."""
    config = make_config({"systems": {SYSTEM: patch}})
    subject = incident(config, **overrides)
    outcome = slo_breaches(config, subject, at(minute), ids("n"), links)
    assert [e.detail for e in outcome.events] == details
    assert all(e.kind == "slo_breached" for e in outcome.events)
    assert {n.recipient for n in outcome.notifications} == told
    for sent in outcome.notifications:
        # Facts, not words: which SLO, how long, how far past it; render says it.
        breach = sent.message.breach
        assert breach is not None and sent.message.note == ""
        within = subject.ack_within if breach.slo == "ack" else subject.resolve_within
        assert within is not None and breach.within_seconds == within.total_seconds()
        overdue = at(minute) - (subject.opened_at + within)
        assert breach.overdue_seconds == overdue.total_seconds()
        assert render.note_title(sent.message) == "SLO breached"
    if details:
        again = slo_breaches(config, outcome.incident, at(minute + 1), ids("n"), links)
        assert again.events == ()


def test_a_breach_under_a_hold_is_recorded_without_pages() -> None:
    """ack_within passes while a silence holds: the event says the pages were held by it,
    nobody is paged."""
    config = make_config()
    subject = incident(held_by="sil-1", escalation_steps_done=0)
    outcome = tick(config, subject, at(30), ids("n"), links, Paging((silence(),), {}))
    assert [e.detail for e in outcome.events] == [
        "ack_within 30m passed unacknowledged: pages held by sil-1"
    ]
    assert outcome.notifications == ()


def window(**fields: Any) -> MaintenanceConfig:
    return MaintenanceConfig.model_validate(
        {"systems": [SYSTEM], "every": "weekly", "day": "sun", "at": "02:00", "for": "3h", **fields}
    )


SUNDAY = datetime(2025, 3, 2, tzinfo=UTC)
"""A Sunday, midnight UTC."""

WINDOWS: list[tuple[str, dict[str, Any], datetime, datetime | None]] = [
    ("weekly, inside", {}, SUNDAY + timedelta(hours=3), SUNDAY + timedelta(hours=2)),
    ("weekly, at its start", {}, SUNDAY + timedelta(hours=2), SUNDAY + timedelta(hours=2)),
    ("weekly, at its end", {}, SUNDAY + timedelta(hours=5), None),
    ("weekly, the day before", {}, SUNDAY - timedelta(hours=21), None),
    (
        "daily, crossing midnight",
        {"every": "daily", "day": None, "at": "23:00"},
        SUNDAY + timedelta(hours=1),
        SUNDAY - timedelta(hours=1),
    ),
    (
        "in its own time zone (Paris is UTC+1 in March)",
        {"timezone": "Europe/Paris"},
        SUNDAY + timedelta(hours=1, minutes=30),
        SUNDAY + timedelta(hours=1),
    ),
]


@pytest.mark.parametrize(
    ("fields", "now", "start"),
    [case[1:] for case in WINDOWS],
    ids=[case[0] for case in WINDOWS],
)
def test_a_maintenance_window_holds_from_its_start_for_its_length(
    fields: dict[str, Any], now: datetime, start: datetime | None
) -> None:
    """A window holds from its local start time, on its day, for ``for``: the start is
    computed in its time zone, and a daily window may cross midnight."""
    assert window_start(window(**fields), now) == start


def test_maintenance_windows_are_silences_by_the_config() -> None:
    """A window holding now is a silence of each system it names, by ``config``, with the
    id ``maintenance-<index>``; it holds that system's pages."""
    config = make_config(
        {
            "maintenance": [
                {"systems": [SYSTEM], "every": "weekly", "day": "sun", "at": "02:00", "for": "3h"}
            ]
        }
    )
    now = SUNDAY + timedelta(hours=2, minutes=30)
    (held,) = maintenance_silences(config, now)
    assert (held.id, held.system, held.by, held.ends_at) == (
        "maintenance-0",
        SYSTEM,
        "config",
        SUNDAY + timedelta(hours=5),
    )
    assert maintenance_silences(config, now + timedelta(hours=3)) == ()
    found = hold(config, incident(), Paging((held,), {}), now)
    assert found is not None and found.ref == "maintenance-0"


def storm_config(dependents: int) -> Config:
    """A shared feature pipeline (owner dana) and ``dependents`` models on it, each its own
    owner; one channel, one step: one page per paged incident."""
    document = base_config()
    document["teams"] = {}
    document["escalation_chains"] = {"one": {"steps": [{"notify": "owner", "via": ["console"]}]}}
    signal = {
        "layer": "data",
        "source": "prom",
        "query": "q",
        "bad": "up",
        "detect": {"threshold": {"max": 0.05}},
    }
    systems: dict[str, Any] = {
        "features": {"owner": "dana", "escalation": "one", "signals": {"nulls": signal}}
    }
    for index in range(dependents):
        document["owners"][f"owner{index}"] = {"name": f"Owner {index}"}
        systems[f"model-{index}"] = {
            "owner": f"owner{index}",
            "escalation": "one",
            "depends_on": ["features"],
            "signals": {"nulls": signal},
        }
    document["systems"] = systems
    config = Config.model_validate(document)
    return config


def test_a_storm_on_a_shared_pipeline_pages_only_its_owner() -> None:
    """The feature pipeline and its 20 dependent models break in the same cycle: 21
    incidents open, each dependent linked to the pipeline's as probably caused by it; the
    outbox holds one page (dana, the pipeline's owner) and 20 informational notices, one to
    each dependent's owner; the pipeline's incident lists the 20 dependents."""
    config = storm_config(20)
    store = MemoryStore()
    pager = Pager(ids("n"), links)
    degraded = {
        name: {"nulls": finding("nulls", "degraded", system=name, layer="data")}
        for name in reversed(list(config.systems))  # dependents first: order must not matter
    }
    runner.apply(store, cycle.evaluate(config, degraded, store, T0, ids("inc"), pager))
    assert runner.escalate(store, config, T0, pager) == 21
    (upstream,) = store.incidents(system="features")
    dependents = [i for i in store.incidents() if i.system != "features"]
    assert len(dependents) == 20
    assert {i.caused_by for i in dependents} == {upstream.id}
    outbox = [n for i in store.incidents() for n in store.notifications(i.id)]
    pages = [n for n in outbox if n.message.purpose != "informed"]
    notices = [n for n in outbox if n.message.purpose == "informed"]
    assert [(n.recipient, n.incident_id) for n in pages] == [("dana", upstream.id)]
    assert sorted(n.recipient for n in notices) == sorted(f"owner{i}" for i in range(20))
    listed = [e for e in store.events(upstream.id) if e.kind == "note"]
    assert len(listed) == 20
    assert {e.detail.split(" ")[2] for e in listed} == {i.id for i in dependents}


def test_a_dependent_that_breaks_while_its_upstream_is_fine_pages_its_owner() -> None:
    """No open incident upstream: a dependent's incident links to nothing and pages its
    owner at once."""
    config = storm_config(1)
    store = MemoryStore()
    pager = Pager(ids("n"), links)
    degraded = {"model-0": {"nulls": finding("nulls", "degraded", system="model-0", layer="data")}}
    runner.apply(store, cycle.evaluate(config, degraded, store, T0, ids("inc"), pager))
    ((opened, owed),) = cycle.due(config, store, T0, pager)
    assert opened.caused_by is None
    assert [(n.recipient, n.message.purpose) for n in owed.notifications] == [("owner0", "opened")]
