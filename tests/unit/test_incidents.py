"""The incident lifecycle: ``for`` durations, one incident per fingerprint, clearing and
auto-resolving, undecided evaluations, and the acknowledge / resolve / reassign transitions."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from driftowner.config import Config
from driftowner.detect.rules import conditions
from driftowner.incidents import (
    Fingerprint,
    LifecycleError,
    Reconciliation,
    acknowledge,
    reassign,
    reconcile,
    resolve,
    snapshot_chain,
)
from driftowner.model import AUTO, Event, Finding, Incident, Pending, Status

from .factories import (
    DISAGREEMENT,
    RULE,
    SYSTEM,
    T0,
    at,
    findings,
    findings_at,
    ids,
    incident,
    make_config,
    minutes,
    signal_patch,
    source_error,
    system_patch,
)

FP: Fingerprint = (SYSTEM, RULE)
HEALTHY: dict[str, Status] = {"accuracy": "ok", "adoption": "ok", "null_rate": "ok"}
DRIFTING: dict[str, Status] = {"accuracy": "degraded", "adoption": "ok", "null_rate": "ok"}


@dataclass
class Lifecycle:
    """The store, in memory: pending conditions, unresolved and all incidents, event log.
    Each ``evaluate`` runs the rules and ``reconcile`` at one instant and applies the result
    the way the engine does."""

    config: Config
    pending: dict[Fingerprint, Pending] = field(default_factory=dict)
    unresolved: dict[Fingerprint, Incident] = field(default_factory=dict)
    every: dict[str, Incident] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    new_id: Any = field(default_factory=lambda: ids("inc"))

    def evaluate(self, now: datetime, found: dict[str, Finding]) -> Reconciliation:
        holding = conditions(SYSTEM, self.config.systems[SYSTEM], found)
        outcome = reconcile(
            self.config, SYSTEM, holding, found, self.pending, self.unresolved, now, self.new_id
        )
        for changed in (*outcome.opened, *outcome.updated):
            self.every[changed.id] = changed
            if changed.unresolved:
                self.unresolved[changed.fingerprint] = changed
            else:
                self.unresolved.pop(changed.fingerprint, None)
        self.pending = {(p.system, p.rule): p for p in outcome.pending}
        self.events.extend(outcome.events)
        return outcome

    def at(self, minute: float, **statuses: Status) -> Reconciliation:
        return self.evaluate(at(minute), findings_at(at(minute), statuses))


def lifecycle(patch: dict[str, Any] | None = None) -> Lifecycle:
    return Lifecycle(make_config(patch))


def _accuracy_for(duration: str, **more: Any) -> dict[str, Any]:
    return signal_patch("accuracy", **{"for": duration, **more})


def test_a_condition_opens_only_after_holding_for_its_duration() -> None:
    """A drift with ``for: 10m`` is pending at 0 and 5 minutes and opens at exactly 10, with
    ``condition_began_at`` the moment it was first seen."""
    life = lifecycle(_accuracy_for("10m"))
    first = life.at(0, **DRIFTING)
    assert first.opened == ()
    assert first.pending == (Pending(SYSTEM, RULE, T0, T0),)
    second = life.at(5, **DRIFTING)
    assert second.opened == ()
    assert second.pending == (Pending(SYSTEM, RULE, T0, at(5)),)
    third = life.at(10, **DRIFTING)
    (opened,) = third.opened
    assert third.pending == ()
    assert opened.state == "open"
    assert opened.opened_at == at(10)
    assert opened.condition_began_at == T0
    assert opened.escalation_epoch == at(10)
    assert [(e.kind, e.actor, e.at) for e in third.events] == [("opened", AUTO, at(10))]
    assert third.events[0].detail.endswith("(held 10m)")


@pytest.mark.parametrize(
    ("hold", "cycles", "opens_at"),
    [("0s", [0], 0), ("10m", [0, 9, 10], 10), ("10m", [0, 12], 12), ("30m", [0, 10, 20, 30], 30)],
)
def test_the_incident_opens_at_the_first_evaluation_past_for(
    hold: str, cycles: list[int], opens_at: int
) -> None:
    """``for`` is measured from the first sighting; the incident opens at the first evaluation
    at or after it (``for: 0s`` opens at once)."""
    life = lifecycle(_accuracy_for(hold))
    opened = [minute for minute in cycles if life.at(minute, **DRIFTING).opened]
    assert opened == [opens_at]
    assert life.unresolved[FP].condition_began_at == T0


def test_a_pending_condition_is_dropped_when_it_goes_away() -> None:
    """A condition that stops holding before its ``for`` is forgotten: seen again, it starts
    over, and the incident opens ``for`` after the new sighting."""
    life = lifecycle(_accuracy_for("10m"))
    life.at(0, **DRIFTING)
    gone = life.at(5, **HEALTHY)
    assert gone.pending == () and gone.opened == () and gone.events == ()
    assert life.at(10, **DRIFTING).pending == (Pending(SYSTEM, RULE, at(10), at(10)),)
    assert life.at(15, **DRIFTING).opened == ()
    (opened,) = life.at(20, **DRIFTING).opened
    assert opened.condition_began_at == at(10)


def test_opening_snapshots_the_system_onto_the_incident() -> None:
    """A new incident is open, owned by the system's owner, with its chain, SLOs, runbook,
    evidence and resolve_after taken from the config and the condition."""
    config = make_config()
    life = Lifecycle(config)
    (opened,) = life.at(0, **DRIFTING).opened
    system = config.systems[SYSTEM]
    assert opened.id == "inc-1"
    assert (opened.system, opened.owner, opened.kind, opened.rule) == (
        SYSTEM,
        "alice",
        "drift",
        RULE,
    )
    assert opened.layers == ("model",) and opened.signals == ("accuracy",)
    assert opened.chain == snapshot_chain(config, system)
    assert opened.chain.steps[0].recipients == ("alice",)
    assert opened.ack_within == minutes(30) and opened.resolve_within == timedelta(days=3)
    assert opened.runbook == "https://wiki.example.com/fraud-scoring"
    assert opened.resolve_after == minutes(5)
    assert opened.escalation_steps_done == 0
    assert opened.evidence[0].signal == "accuracy"
    assert opened.evidence[0].status == "degraded"


def test_at_most_one_unresolved_incident_per_fingerprint() -> None:
    """While an incident of a fingerprint is unresolved, the condition holding again opens
    nothing, changes nothing and starts no pending."""
    life = lifecycle()
    life.at(0, **DRIFTING)
    for minute in (1, 2, 30, 600):
        outcome = life.at(minute, **DRIFTING)
        assert outcome == Reconciliation()
    assert len(life.every) == 1


def test_a_disagreement_opens_one_incident_and_no_drift() -> None:
    """Accuracy fine and adoption falling for 30 minutes opens one disagreement incident over
    both layers; the degraded adoption raises no drift incident of its own."""
    life = lifecycle()
    statuses: dict[str, Status] = {"accuracy": "ok", "adoption": "degraded", "null_rate": "ok"}
    for minute in (0, 10, 20, 30, 40):
        life.at(minute, **statuses)
    assert [(i.kind, i.rule, i.layers) for i in life.every.values()] == [
        ("disagreement", f"disagreement:{DISAGREEMENT}", ("model", "business"))
    ]
    assert life.every["inc-1"].opened_at == at(30)
    assert life.every["inc-1"].condition_began_at == T0


AUTO_RESOLVE_CASES = [
    # (resolve_after, clear cycles (minutes), minute it resolves)
    ("5m", [10, 12, 15], 15),
    ("5m", [10, 14, 16], 16),
    ("0s", [10], 10),
    ("30m", [10, 20, 39, 40], 40),
]


@pytest.mark.parametrize(("resolve_after", "clear", "resolves_at"), AUTO_RESOLVE_CASES)
def test_a_cleared_condition_auto_resolves_after_resolve_after(
    resolve_after: str, clear: list[int], resolves_at: int
) -> None:
    """Once the condition no longer holds the incident is cleared (still open), and resolves
    itself, by ``auto``, at the first evaluation ``resolve_after`` after it cleared
    (``0s``: in the same evaluation)."""
    life = lifecycle(signal_patch("accuracy", resolve_after=resolve_after))
    life.at(0, **DRIFTING)
    resolved_at = None
    for minute in clear:
        life.at(minute, **HEALTHY)
        current = life.every["inc-1"]
        assert current.cleared_at == at(clear[0])
        if current.state == "resolved" and resolved_at is None:
            resolved_at = minute
    assert resolved_at == resolves_at
    done = life.every["inc-1"]
    assert (done.resolved_by, done.resolved_at) == (AUTO, at(resolves_at))
    assert done.time_to_resolve == minutes(resolves_at)
    assert FP not in life.unresolved
    kinds = [(e.kind, e.at) for e in life.events]
    assert kinds == [
        ("opened", T0),
        ("condition_cleared", at(clear[0])),
        ("resolved", at(resolves_at)),
    ]
    assert life.events[-1].actor == AUTO


def test_a_clearing_incident_is_not_rewritten_while_it_waits() -> None:
    """Between clearing and auto-resolving, an evaluation that changes nothing writes nothing
    (no needless version bump that would make a concurrent ack conflict)."""
    life = lifecycle()
    life.at(0, **DRIFTING)
    life.at(10, **HEALTHY)
    assert life.at(12, **HEALTHY) == Reconciliation()


def test_a_condition_that_returns_before_resolve_after_keeps_the_incident_open() -> None:
    """A condition holding again before ``resolve_after`` returns: ``condition_returned``, the
    clear mark is dropped, the same incident stays open, and a later clearing starts the
    ``resolve_after`` wait afresh."""
    life = lifecycle()
    life.at(0, **DRIFTING)
    life.at(10, **HEALTHY)
    back = life.at(13, **DRIFTING)
    assert back.opened == ()
    (returned,) = back.updated
    assert returned.cleared_at is None and returned.state == "open"
    assert [(e.kind, e.actor) for e in back.events] == [("condition_returned", AUTO)]
    life.at(16, **HEALTHY)
    assert life.at(20, **HEALTHY).updated == ()
    assert life.every["inc-1"].state == "open"
    life.at(21, **HEALTHY)
    assert (life.every["inc-1"].resolved_by, life.every["inc-1"].resolved_at) == (AUTO, at(21))
    assert len(life.every) == 1


def test_no_data_leaves_the_incident_untouched() -> None:
    """While a signal an incident depends on has no data (source down, or no samples) the
    incident is neither cleared nor resolved: no data is not recovery."""
    life = lifecycle(signal_patch("accuracy", resolve_after="0s"))
    life.at(0, **DRIFTING)
    down = {
        "accuracy": source_error("accuracy", at(5)),
        **findings_at(at(5), {"adoption": "ok", "null_rate": "ok"}),
    }
    assert life.evaluate(at(5), down) == Reconciliation()
    empty = life.at(6, accuracy="no_data", adoption="ok", null_rate="ok")
    assert empty.updated == () and empty.opened == ()
    assert [p.rule for p in empty.pending] == ["stale:accuracy"]
    assert life.every["inc-1"].cleared_at is None
    assert life.every["inc-1"].state == "open"


def test_no_data_while_clearing_neither_resolves_nor_returns() -> None:
    """An incident already clearing stays as it is while its signal has no data."""
    life = lifecycle()
    life.at(0, **DRIFTING)
    life.at(10, **HEALTHY)
    down = {"accuracy": source_error("accuracy", at(20)), **findings_at(at(20), {"adoption": "ok"})}
    assert life.evaluate(at(20), down) == Reconciliation()
    assert life.every["inc-1"].state == "open"
    assert life.every["inc-1"].cleared_at == at(10)


def test_an_acknowledged_incident_auto_resolves_too() -> None:
    """Acknowledged incidents clear and auto-resolve like open ones, keeping their ack."""
    life = lifecycle(signal_patch("accuracy", resolve_after="0s"))
    life.at(0, **DRIFTING)
    acked = acknowledge(life.unresolved[FP], "alice", at(2)).incident
    life.unresolved[FP] = acked
    (done,) = life.at(5, **HEALTHY).updated
    assert done.state == "resolved"
    assert done.first_acknowledged_at == at(2)
    assert done.time_to_acknowledge == minutes(2)


def test_reconcile_ignores_other_systems_incidents() -> None:
    """Only the evaluated system's incidents are cleared or resolved."""
    config = make_config()
    other = incident(config, id="inc-other", system="other-system")
    outcome = reconcile(
        config,
        SYSTEM,
        [],
        findings(**HEALTHY),
        {},
        {other.fingerprint: other},
        T0,
        ids(),
    )
    assert outcome == Reconciliation()


# -- transitions --------------------------------------------------------------------------


def test_acknowledge_stops_the_clock_to_acknowledge() -> None:
    """Acknowledging an open incident records who and when, the first ack time, and an
    ``acknowledged`` event by that person with the note."""
    opened = incident(escalation_steps_done=1, last_reminded_at=at(1))
    moved = acknowledge(opened, "bob", at(12), "looking")
    assert moved.incident.state == "acknowledged"
    assert moved.incident.acknowledged_at == at(12)
    assert moved.incident.acknowledged_by == "bob"
    assert moved.incident.first_acknowledged_at == at(12)
    assert moved.incident.last_reminded_at is None
    assert moved.incident.time_to_acknowledge == minutes(12)
    assert moved.events == (Event("inc-1", at(12), "acknowledged", "bob", "looking"),)


def test_a_second_ack_after_expiry_keeps_the_first_ack_time() -> None:
    """After an ack expired (state open again), acknowledging again keeps the first ack as
    the time to acknowledge."""
    expired = incident(first_acknowledged_at=at(5), state="open")
    again = acknowledge(expired, "alice", at(600)).incident
    assert again.acknowledged_at == at(600)
    assert again.first_acknowledged_at == at(5)
    assert again.time_to_acknowledge == minutes(5)


@pytest.mark.parametrize("state", ["open", "acknowledged"])
def test_resolve_records_who_and_when(state: Any) -> None:
    """Open or acknowledged incidents resolve by a person's word: resolver, time, time to
    resolve, and a ``resolved`` event."""
    moved = resolve(incident(state=state), "alice", at(90), "rolled back")
    assert moved.incident.state == "resolved"
    assert (moved.incident.resolved_by, moved.incident.resolved_at) == ("alice", at(90))
    assert moved.incident.time_to_resolve == minutes(90)
    assert not moved.incident.unresolved
    assert moved.events == (Event("inc-1", at(90), "resolved", "alice", "rolled back"),)


def test_reassign_hands_the_incident_over_and_restarts_escalation() -> None:
    """Reassigning makes another person accountable, reopens an acknowledged incident, takes
    the new chain and restarts escalation from now, with a ``reassigned`` event."""
    config = make_config()
    acked = incident(
        config,
        state="acknowledged",
        acknowledged_at=at(5),
        acknowledged_by="alice",
        first_acknowledged_at=at(5),
        escalation_steps_done=2,
    )
    chain = snapshot_chain(config, config.systems[SYSTEM], owner="bob")
    moved = reassign(acked, "bob", "on call this week", at(20), "alice", chain)
    after = moved.incident
    assert after.owner == "bob" and after.state == "open"
    assert after.chain.steps[0].recipients == ("bob",)
    assert after.acknowledged_at is None and after.acknowledged_by is None
    assert after.first_acknowledged_at == at(5)
    assert (after.escalation_epoch, after.escalation_steps_done) == (at(20), 0)
    assert moved.events == (
        Event("inc-1", at(20), "reassigned", "alice", "alice → bob: on call this week"),
    )


LIFECYCLE_ERRORS = [
    ("ack a resolved incident", lambda i: acknowledge(i, "alice", at(1)), {"state": "resolved"}),
    (
        "ack twice",
        lambda i: acknowledge(i, "alice", at(1)),
        {"state": "acknowledged", "acknowledged_by": "alice"},
    ),
    ("resolve twice", lambda i: resolve(i, "alice", at(1)), {"state": "resolved"}),
    (
        "reassign a resolved incident",
        lambda i: reassign(i, "bob", "why", at(1), "alice", i.chain),
        {"state": "resolved"},
    ),
    ("reassign to the owner", lambda i: reassign(i, "alice", "why", at(1), "alice", i.chain), {}),
]


@pytest.mark.parametrize(
    ("act", "state"), [(a, s) for _, a, s in LIFECYCLE_ERRORS], ids=[c[0] for c in LIFECYCLE_ERRORS]
)
def test_transitions_not_allowed_from_the_state_raise_lifecycle_error(
    act: Any, state: dict[str, Any]
) -> None:
    """Acknowledging a resolved or acknowledged incident, resolving twice, reassigning a
    resolved incident or to its own owner are refused with LifecycleError naming the id."""
    with pytest.raises(LifecycleError, match="inc-1"):
        act(incident(resolved_at=at(0), resolved_by="alice", **state))


@pytest.mark.parametrize(
    ("overrides", "to_ack", "to_resolve"),
    [
        ({}, None, None),
        ({"first_acknowledged_at": at(7)}, minutes(7), None),
        ({"first_acknowledged_at": at(7), "resolved_at": at(50)}, minutes(7), minutes(50)),
        ({"resolved_at": at(50)}, None, minutes(50)),
    ],
)
def test_time_to_acknowledge_and_resolve_are_measured_from_opening(
    overrides: dict[str, Any], to_ack: timedelta | None, to_resolve: timedelta | None
) -> None:
    """Time to acknowledge = first ack - opened; time to resolve = resolved - opened; None
    while not yet; age stops at resolution."""
    subject = replace(incident(), **overrides)
    assert subject.time_to_acknowledge == to_ack
    assert subject.time_to_resolve == to_resolve
    assert subject.age(at(100)) == (to_resolve or minutes(100))


def test_a_pending_condition_starts_over_after_a_gap_in_evaluation() -> None:
    """``for`` needs the condition to hold continuously: sighted at 0, then not evaluated for
    longer than three intervals (downtime), it is pending anew from its next sighting."""
    life = lifecycle(_accuracy_for("30m"))
    life.at(0, **DRIFTING)
    after_gap = life.at(40, **DRIFTING)  # interval 5m: a 40-minute silence is a gap
    assert after_gap.opened == ()
    assert [p.since for p in after_gap.pending] == [at(40)]
    assert life.at(55, **DRIFTING).opened == ()
    assert len(life.at(70, **DRIFTING).opened) == 1
    assert life.unresolved[FP].condition_began_at == at(40)


def test_an_incident_whose_signal_left_the_config_clears_and_resolves() -> None:
    """After a reload removes its signal, an incident can no longer be confirmed: it clears
    and resolves itself instead of staying undecided forever."""
    life = lifecycle(signal_patch("accuracy", resolve_after="0s"))
    life.at(0, **DRIFTING)
    document_without_accuracy = make_config(
        {"systems": {SYSTEM: {"disagreements": []}}}
    ).model_dump(by_alias=True)
    del document_without_accuracy["systems"][SYSTEM]["signals"]["accuracy"]
    life.config = Config.model_validate(document_without_accuracy)
    outcome = life.at(5, adoption="ok", null_rate="ok")
    assert [i.state for i in outcome.updated] == ["resolved"]
    assert outcome.updated[0].resolved_by == AUTO


def _resolved_history(life: Lifecycle) -> dict[Fingerprint, Incident]:
    return {i.fingerprint: i for i in life.every.values() if i.state == "resolved"}


@pytest.mark.parametrize(
    ("reopen_within", "returns_at", "reopens"),
    [("30m", 20, True), ("30m", 45, False), ("0s", 12, False)],
)
def test_a_fingerprint_firing_again_soon_after_resolution_reopens_its_incident(
    reopen_within: str, returns_at: int, reopens: bool
) -> None:
    """Resolved at minute 10 (clear 0s), the drift returns: within ``reopen_within`` the same
    incident reopens (history kept, escalation from step one, event ``reopened``); later, or
    with reopening off, a new incident opens."""
    life = lifecycle(
        system_patch(reopen_within=reopen_within, signals={"accuracy": {"resolve_after": "0s"}})
    )
    life.at(0, **DRIFTING)
    life.at(10, **HEALTHY)
    assert life.every["inc-1"].state == "resolved"
    found = findings_at(at(returns_at), DRIFTING)
    holding = conditions(SYSTEM, life.config.systems[SYSTEM], found)
    outcome = reconcile(
        life.config,
        SYSTEM,
        holding,
        found,
        {},
        {},
        at(returns_at),
        life.new_id,
        _resolved_history(life),
    )
    if reopens:
        assert outcome.opened == ()
        (again,) = outcome.updated
        assert again.id == "inc-1" and again.state == "open"
        assert again.resolved_at is None and again.resolved_by is None
        assert again.opened_at == T0, "the incident keeps its history and its age"
        assert (again.escalation_epoch, again.escalation_steps_done) == (at(returns_at), 0)
        assert [e.kind for e in outcome.events] == ["reopened"]
    else:
        assert outcome.updated == ()
        (fresh,) = outcome.opened
        assert fresh.id != "inc-1"
        assert [e.kind for e in outcome.events] == ["opened"]
