"""The evaluation cycle as a pure step over a store's view (a MemoryStore here): judging carries
each signal's last verdict to the next cycle and reports flips as changes; evaluation opens,
resolves and retires incidents as Changes; only the escalation stage makes pages."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import timedelta

import pytest
from structlog.testing import capture_logs

from driftowner import cycle, runner
from driftowner.cycle import Pager
from driftowner.detect.bank import Bank
from driftowner.model import AUTO, Change, Notification, Sample, SourceResult, Status
from driftowner.store import Changes, MemoryStore

from .factories import (
    RULE,
    SYSTEM,
    T0,
    at,
    finding,
    ids,
    incident,
    links,
    make_config,
    notification,
)

ACCURACY = (SYSTEM, "accuracy")
ADOPTION = (SYSTEM, "adoption")


def read(value: float | None, minute: float) -> SourceResult:
    """An instant read of one value at ``minute`` after T0 (no samples for None)."""
    return SourceResult() if value is None else SourceResult(samples=(Sample(at(minute), value),))


def pager() -> Pager:
    return Pager(ids("notice"), links)


def test_judge_reports_a_threshold_flip_both_ways_and_remembers_the_last_verdict() -> None:
    """Accuracy ok, then below its minimum, then no data, then ok again: the fall is a change
    from the value before to the value now; no data keeps the last verdict (and is no
    change); the recovery is a change against the low value."""
    config = make_config()
    bank = Bank()
    seen: list[tuple[Change, ...]] = []
    for minute, value in enumerate([0.95, 0.80, None, 0.93]):
        findings = cycle.judge(config, {ACCURACY: read(value, minute)}, bank, at(minute))
        seen.append(findings[SYSTEM]["accuracy"].changes)
        assert set(findings) == set(config.systems)
    assert seen == [
        (),
        (Change(at(1), "down", 0.95, 0.80),),
        (),
        (Change(at(3), "up", 0.80, 0.93),),
    ]
    assert bank.decided[ACCURACY].value == 0.93


def test_judge_reports_a_baseline_flip_against_its_reference() -> None:
    """A baseline that turns degraded reports the change from its reference (the window's
    mean) to the newest value; one that stays degraded reports no further change."""
    baseline = {"reference": "30m", "max_change": "20%", "min_samples": 3}
    config = make_config(
        {"systems": {SYSTEM: {"signals": {"adoption": {"detect": {"baseline": baseline}}}}}}
    )
    steady = tuple(Sample(at(m), 0.6) for m in range(-10, 0))
    bank = Bank()
    cycle.judge(config, {ADOPTION: SourceResult(samples=steady)}, bank, at(-1))
    fallen = SourceResult(samples=(*steady, Sample(at(0), 0.3)))
    findings = cycle.judge(config, {ADOPTION: fallen}, bank, at(0))
    assert findings[SYSTEM]["adoption"].changes == (Change(at(0), "down", pytest.approx(0.6), 0.3),)
    still = SourceResult(samples=(*steady, Sample(at(0), 0.3), Sample(at(1), 0.29)))
    findings = cycle.judge(config, {ADOPTION: still}, bank, at(1))
    assert findings[SYSTEM]["adoption"].status == "degraded"
    assert findings[SYSTEM]["adoption"].changes == ()


def test_judge_reports_every_change_a_chart_confirms_shift_and_recovery() -> None:
    """A signal with the default change-point chart (no ``detect``): after its warm-up on a
    steady level, a fall is one change (down, from the level it left to the new level) and the
    return is another (up, from the level it re-learned after the fall), each reported once.
    The low level lasts 80 minutes: long enough to re-learn (a warm-up of 30 effectively
    independent samples, counted with phi widened, takes ~55 samples of this wobble)."""
    config = make_config({"systems": {SYSTEM: {"signals": {"accuracy": {"detect": None}}}}})
    bank = Bank()
    confirmed: list[Change] = []
    for minute in range(240):
        level = 0.8 if 80 <= minute < 160 else 0.95
        wobble = 0.004 * ((minute * 7) % 5 - 2)
        findings = cycle.judge(config, {ACCURACY: read(level + wobble, minute)}, bank, at(minute))
        confirmed.extend(findings[SYSTEM]["accuracy"].changes)
    assert [c.direction for c in confirmed] == ["down", "up"]
    fall, rise = confirmed
    assert 80 <= (fall.at - at(0)).total_seconds() / 60 < 100
    assert fall.before == pytest.approx(0.95, abs=0.01) and fall.after < 0.85
    assert 160 <= (rise.at - at(0)).total_seconds() / 60 < 180
    assert rise.before == pytest.approx(0.8, abs=0.01) and rise.after > 0.85


def test_evaluation_opens_without_paging_and_the_escalation_stage_pages() -> None:
    """A drift held for its ``for`` opens an incident: the evaluation's changes carry the
    incident and its opening event but no notification; the escalation stage (``due``) owes
    the owner's page."""
    config = make_config({"systems": {SYSTEM: {"signals": {"accuracy": {"for": "0s"}}}}})
    store = MemoryStore()
    findings = {SYSTEM: {"accuracy": finding("accuracy", "degraded", value=0.7, limit=0.9)}}
    steps = cycle.evaluate(config, findings, store, T0, ids("inc"), pager())
    assert [s.system for s in steps] == [SYSTEM]
    (opened,) = steps[0].changes.opened
    assert (opened.rule, opened.state) == (RULE, "open")
    assert [e.kind for e in steps[0].changes.events] == ["opened"]
    assert steps[0].changes.notifications == ()
    runner.apply(store, steps)
    ((owed_incident, owed),) = cycle.due(config, store, T0, pager())
    assert owed_incident.id == opened.id
    assert {n.recipient for n in owed.notifications} == {"alice", "ml-fraud"}


def test_an_escalation_step_tells_the_conversations_the_incident_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At 15m step 2 pages bob; ``due`` reads the incident's notifications (then only: the
    opening and a quiet tick read none) and owes a ``stepped_up`` follow-up at step 2 to each
    conversation the opening started with the owner, none to the informed team or to bob,
    written with the step's changes."""
    config = make_config()
    store = MemoryStore()
    store.apply(Changes(opened=[incident(config, ack_within=None, resolve_within=None)]))
    reads: list[list[str]] = []
    notifications_of = store.notifications_of

    def counted(incident_ids: Iterable[str]) -> dict[str, list[Notification]]:
        reads.append(list(incident_ids))
        return notifications_of(reads[-1])

    monkeypatch.setattr(store, "notifications_of", counted)
    runner.escalate(store, config, T0, pager())
    assert cycle.due(config, store, at(5), pager()) == []
    assert reads == []
    ((_, owed),) = cycle.due(config, store, at(15), pager())
    assert reads == [["inc-1"]]
    assert [
        (n.recipient, n.channel, n.message.purpose, n.message.step) for n in owed.notifications
    ] == [
        ("bob", "email", "escalated", 2),
        ("alice", "console", "stepped_up", 2),
        ("alice", "email", "stepped_up", 2),
    ]


def test_a_step_that_pages_nobody_still_warns_though_the_owner_is_told() -> None:
    """Step 2 of the incident's chain names bob through a channel no longer configured: it
    pages nobody, so the warning ``escalation reached nobody`` is logged, though the owner's
    conversations are told of the step (that news pages nobody)."""
    config = make_config()
    opened = incident(config, ack_within=None, resolve_within=None)
    first, second, *rest = opened.chain.steps
    chain = dataclasses.replace(
        opened.chain, steps=(first, dataclasses.replace(second, via=("gone",)), *rest)
    )
    store = MemoryStore()
    store.apply(Changes(opened=[dataclasses.replace(opened, chain=chain)]))
    notices = pager()
    runner.escalate(store, config, T0, notices)
    with capture_logs() as logs:
        assert runner.escalate(store, config, at(15), notices) == 2
    assert [n.message.purpose for n in store.notifications("inc-1")][-2:] == ["stepped_up"] * 2
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "escalation reached nobody"
    ]


def _resolving(store: MemoryStore) -> None:
    """An incident whose condition cleared long ago, and the page its owner got."""
    cleared = incident(cleared_at=T0)
    store.apply(Changes(opened=[cleared], notifications=[notification("n-1")]))


def test_a_resolution_notifies_who_was_paged_and_replay_without_a_pager_pages_nobody() -> None:
    """An incident clear for its ``resolve_after`` resolves; with the escalation stage's pager
    everyone who was paged gets a resolution notice in the same changes; without one (as
    replay runs) the same resolution makes no notification at all."""
    config = make_config()
    ok = {SYSTEM: {"accuracy": finding("accuracy", "ok", value=0.95)}}
    later = T0 + timedelta(hours=1)
    for with_pager, expected in ((True, ["resolved"]), (False, [])):
        store = MemoryStore()
        _resolving(store)
        steps = cycle.evaluate(
            config, ok, store, later, ids("inc"), pager() if with_pager else None
        )
        (step,) = steps
        assert [(i.id, i.state, i.resolved_by) for i in step.changes.updated] == [
            ("inc-1", "resolved", AUTO)
        ]
        assert [n.message.purpose for n in step.changes.notifications] == expected


def test_the_incidents_of_a_removed_system_are_retired_in_their_own_steps() -> None:
    """An unresolved incident of a system no longer configured is resolved by ``auto`` for
    that reason, one step of its own, with the notice to whoever was paged; the escalation
    stage owes it nothing more."""
    store = MemoryStore()
    store.apply(
        Changes(
            opened=[incident(id="inc-9", system="retired-model")],
            notifications=[notification("n-9", incident_id="inc-9")],
        )
    )
    config = make_config()
    later = T0 + timedelta(hours=2)
    assert cycle.due(config, store, later, pager()) == []
    steps = cycle.evaluate(config, {}, store, later, ids("inc"), pager())
    (retired,) = steps
    assert retired.retired and retired.system == "retired-model"
    assert [e.detail for e in retired.changes.events] == [cycle.RETIRED]
    assert [n.recipient for n in retired.changes.notifications] == ["alice"]


def test_a_steady_cycle_builds_no_finding_until_one_is_read() -> None:
    """A chart's quiet verdicts are kept unbuilt: the statuses that moved since the last
    recorded ones are the only findings built for ``/metrics`` (none in a steady cycle), and a
    finding read later (the API) is the one judged then, with its evidence line."""
    config = make_config({"systems": {SYSTEM: {"signals": {"accuracy": {"detect": None}}}}})
    bank = Bank()
    recorded: dict[tuple[str, str], Status] = {}
    for minute in range(70):  # the warm-up takes ~55 of these samples
        findings = cycle.judge(
            config, {ACCURACY: read(0.9 + 0.001 * (minute % 3), minute)}, bank, at(minute)
        )
        moved = findings.moved(recorded)
        if minute == 69:
            assert moved == []
    assert recorded[ACCURACY] == "ok"
    held = findings[SYSTEM]
    assert [name for name, status in held.statuses()] == ["accuracy"]
    summary = findings.summaries()[SYSTEM]["accuracy"]
    assert summary["status"] == "ok" and "in control around" in summary["reason"]
    assert held["accuracy"].value == pytest.approx(0.9)


def test_a_system_s_settled_follows_every_change_to_its_findings() -> None:
    """``Findings.settled`` (counted as findings are set, not walked) says whether every
    finding of a system is ``ok`` after findings are added, replaced (a no-data reason
    explained) and removed, whichever way each was added."""
    findings = cycle.Findings([SYSTEM, "other"])
    held = findings[SYSTEM]
    assert findings.settled(SYSTEM) and findings.settled("absent")
    held["accuracy"] = finding("accuracy", "ok")
    assert findings.settled(SYSTEM)
    held["adoption"] = finding("adoption", "degraded")
    assert not findings.settled(SYSTEM) and findings.settled("other")
    held["adoption"] = finding("adoption", "no_data")
    assert not findings.settled(SYSTEM)
    held["adoption"] = finding("adoption", "ok")
    assert findings.settled(SYSTEM)
    held["latency"] = finding("latency", "no_data")
    del held["latency"]
    assert findings.settled(SYSTEM)
    del held["accuracy"]
    held["accuracy"] = finding("accuracy", "degraded")
    assert not findings.settled(SYSTEM)
    assert [status for _, status in held.statuses()] == ["ok", "degraded"]


def test_the_unsettled_systems_are_those_settled_says_no_for() -> None:
    """``Findings.unsettled`` (what the reconcile asks instead of ``settled`` per system)
    names exactly the systems with a finding not ``ok``, as findings come and go."""
    findings = cycle.Findings([SYSTEM, "other", "third"])
    assert findings.unsettled() == set()
    findings[SYSTEM]["accuracy"] = finding("accuracy", "degraded")
    findings["other"]["accuracy"] = finding("accuracy", "ok", system="other")
    assert findings.unsettled() == {SYSTEM}
    findings["other"]["adoption"] = finding("adoption", "no_data", system="other")
    assert findings.unsettled() == {SYSTEM, "other"}
    findings[SYSTEM]["accuracy"] = finding("accuracy", "ok")
    del findings["other"]["adoption"]
    assert findings.unsettled() == set()
    assert all(findings.settled(system) for system in findings)


def test_a_quiet_system_is_neither_ordered_nor_reconciled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Systems whose findings are all ``ok``, with nothing pending or unresolved, are left
    out before the upstream ordering: the cycle orders only the stirring ones."""
    config = make_config()
    findings = cycle.Findings(config.systems)
    for name in config.systems:
        findings[name]["accuracy"] = finding("accuracy", "ok", system=name)
    ordered: list[list[str]] = []
    real = cycle.upstream_first

    def spy(cfg: object, names: object) -> list[str]:
        listed = list(names)  # type: ignore[call-overload]
        ordered.append(listed)
        return real(cfg, listed)  # type: ignore[arg-type]

    monkeypatch.setattr(cycle, "upstream_first", spy)
    steps = cycle.evaluate(config, findings, MemoryStore(), T0, ids("inc"), None)
    assert steps == [] and ordered == [[]]
