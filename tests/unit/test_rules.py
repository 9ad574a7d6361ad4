"""Rules: one system's findings in, the conditions that hold now out (drift, disagreement,
stale), and when a condition can be neither confirmed nor cleared."""

from __future__ import annotations

from datetime import timedelta

import pytest

from driftowner.detect.rules import conditions, undecided
from driftowner.model import Finding, Status

from .factories import (
    DISAGREEMENT,
    SYSTEM,
    finding,
    findings,
    make_config,
    minutes,
    signal_patch,
    source_error,
    system_patch,
)


def _rules(found: dict[str, Finding], patch: dict[str, object] | None = None) -> list[str]:
    config = make_config(patch)
    return [c.rule for c in conditions(SYSTEM, config.systems[SYSTEM], found)]


RULE_CASES: list[tuple[str, dict[str, Status], list[str]]] = [
    ("all healthy", {"accuracy": "ok", "adoption": "ok", "null_rate": "ok"}, []),
    (
        "accuracy fine, adoption falling: one disagreement, no drift for adoption",
        {"accuracy": "ok", "adoption": "degraded", "null_rate": "ok"},
        [f"disagreement:{DISAGREEMENT}"],
    ),
    (
        "both degraded: no disagreement, a drift each",
        {"accuracy": "degraded", "adoption": "degraded", "null_rate": "ok"},
        ["drift:accuracy", "drift:adoption"],
    ),
    (
        "healthy side has no data: the disagreement is undecided, its degraded side raises "
        "no drift; the silent signal is stale",
        {"accuracy": "no_data", "adoption": "degraded", "null_rate": "ok"},
        ["stale:accuracy"],
    ),
    (
        "degraded side has no data: stale only",
        {"accuracy": "ok", "adoption": "no_data", "null_rate": "ok"},
        ["stale:adoption"],
    ),
    (
        "an unrelated drift beside a holding disagreement still fires",
        {"accuracy": "ok", "adoption": "degraded", "null_rate": "degraded"},
        [f"disagreement:{DISAGREEMENT}", "drift:null_rate"],
    ),
    (
        "only the healthy side degraded: a plain drift",
        {"accuracy": "degraded", "adoption": "ok", "null_rate": "ok"},
        ["drift:accuracy"],
    ),
    (
        "disagreements first, then drifts, then stale, each in config order",
        {"accuracy": "ok", "adoption": "degraded", "null_rate": "no_data"},
        [f"disagreement:{DISAGREEMENT}", "stale:null_rate"],
    ),
]


@pytest.mark.parametrize(
    ("statuses", "expected"), [(s, e) for _, s, e in RULE_CASES], ids=[c[0] for c in RULE_CASES]
)
def test_conditions_follow_the_findings(statuses: dict[str, Status], expected: list[str]) -> None:
    """A disagreement holds only when every healthy signal is ok and every degraded one is
    degraded; a degraded signal inside a holding disagreement raises no drift of its own;
    any other degraded signal is a drift; no data (its source answering) is stale."""
    assert _rules(findings(**statuses)) == expected


MULTI_CASES: list[tuple[dict[str, Status], bool, bool]] = [
    ({"accuracy": "ok", "null_rate": "ok", "adoption": "degraded"}, True, False),
    ({"accuracy": "ok", "null_rate": "degraded", "adoption": "degraded"}, False, True),
    ({"accuracy": "ok", "null_rate": "no_data", "adoption": "degraded"}, False, False),
]


@pytest.mark.parametrize(("statuses", "holds", "drifts"), MULTI_CASES)
def test_a_disagreement_needs_all_healthy_ok_and_all_degraded_degraded(
    statuses: dict[str, Status], holds: bool, drifts: bool
) -> None:
    """With two healthy signals, both must be ok for the disagreement to hold; a degraded
    healthy signal makes the degraded side a drift, a silent one leaves it undecided."""
    patch = system_patch(
        disagreements=[
            {
                "name": "two-fine-one-falling",
                "healthy": ["accuracy", "null_rate"],
                "degraded": ["adoption"],
            }
        ]
    )
    rules = _rules(findings(**statuses), patch)
    assert ("disagreement:two-fine-one-falling" in rules) is holds
    assert ("drift:adoption" in rules) is drifts


def test_a_disagreement_with_a_missing_finding_does_not_hold() -> None:
    """A healthy-side signal with no finding at all (its source failed) neither confirms the
    disagreement nor lets its degraded side page as a separate drift: one problem, and a
    down source pages nobody."""
    found = findings(adoption="degraded", null_rate="ok")
    assert _rules(found) == []


def test_a_source_error_raises_no_stale_condition() -> None:
    """No data because the source failed is the operator's problem: no stale condition, and no
    drift; only no data from a source that answered is stale."""
    found = {
        "accuracy": source_error("accuracy"),
        "adoption": finding("adoption", "no_data"),
        "null_rate": finding("null_rate", "ok"),
    }
    assert _rules(found) == ["stale:adoption"]


def test_a_baseline_short_of_history_raises_no_stale_condition() -> None:
    """A baseline signal with too few reference samples has no verdict yet, but its source
    did answer with data: that is not a silent signal, so nobody is paged as stale."""
    found = {
        "accuracy": finding("accuracy", "ok"),
        "adoption": finding("adoption", "no_data", detector="baseline"),
        "null_rate": finding("null_rate", "ok"),
    }
    assert _rules(found) == []


def test_disagreement_condition_carries_layers_evidence_and_timers() -> None:
    """A disagreement names its layers in canonical order, both sides' signals and evidence,
    its ``for`` duration, the system's ``resolve_after``, and says what moved."""
    config = make_config()
    found = findings(accuracy="ok", adoption="degraded", null_rate="ok")
    (condition,) = conditions(SYSTEM, config.systems[SYSTEM], found)
    assert condition.kind == "disagreement"
    assert condition.fingerprint == (SYSTEM, f"disagreement:{DISAGREEMENT}")
    assert condition.layers == ("model", "business")
    assert condition.signals == ("accuracy", "adoption")
    assert condition.evidence == (found["accuracy"], found["adoption"])
    assert condition.hold_for == minutes(30)
    assert condition.resolve_after == minutes(5)
    assert condition.summary == "accuracy fine, adoption falling"


def test_drift_condition_carries_the_signal_and_its_timers() -> None:
    """A drift is one signal in one layer, held for the signal's ``for``, with its evidence and
    reason in the summary."""
    config = make_config(signal_patch("null_rate", **{"for": "10m", "resolve_after": "20m"}))
    found = findings(accuracy="ok", adoption="ok")
    found["null_rate"] = finding("null_rate", "degraded", reason="0.08 > max 0.05")
    (condition,) = conditions(SYSTEM, config.systems[SYSTEM], found)
    assert condition.kind == "drift"
    assert condition.rule == "drift:null_rate"
    assert condition.layers == ("data",)
    assert condition.signals == ("null_rate",)
    assert condition.evidence == (found["null_rate"],)
    assert condition.hold_for == minutes(10)
    assert condition.resolve_after == minutes(20)
    assert condition.summary == "null_rate rising: 0.08 > max 0.05"


def test_stale_condition_waits_for_stale_for() -> None:
    """A stale condition is held for the system's ``stale_for`` before it may open."""
    config = make_config(system_patch(stale_for="15m"))
    found = findings(accuracy="no_data", adoption="ok", null_rate="ok")
    (condition,) = conditions(SYSTEM, config.systems[SYSTEM], found)
    assert (condition.kind, condition.rule) == ("stale", "stale:accuracy")
    assert condition.hold_for == minutes(15)
    assert condition.resolve_after == minutes(5)


@pytest.mark.parametrize("statuses", [{"accuracy": "degraded"}, {"accuracy": "no_data"}])
def test_an_explicit_zero_resolve_after_on_a_signal_is_kept(statuses: dict[str, Status]) -> None:
    """``resolve_after: 0s`` on a signal means resolve as soon as the condition clears; it must
    not fall back to the system's default."""
    config = make_config(signal_patch("accuracy", resolve_after="0s"))
    (condition,) = conditions(SYSTEM, config.systems[SYSTEM], findings(**statuses))
    assert condition.resolve_after == timedelta(0)


def test_an_explicit_zero_resolve_after_on_a_disagreement_is_kept() -> None:
    """``resolve_after: 0s`` on a disagreement is kept, not replaced by the system default."""
    patch = system_patch(
        disagreements=[
            {
                "name": DISAGREEMENT,
                "healthy": ["accuracy"],
                "degraded": ["adoption"],
                "resolve_after": "0s",
            }
        ]
    )
    config = make_config(patch)
    found = findings(accuracy="ok", adoption="degraded", null_rate="ok")
    (condition,) = conditions(SYSTEM, config.systems[SYSTEM], found)
    assert condition.resolve_after == timedelta(0)


UNDECIDED_CASES: list[tuple[str, dict[str, Finding], bool]] = [
    ("all judged", findings(accuracy="ok", adoption="degraded"), False),
    ("one without data", findings(accuracy="ok", adoption="no_data"), True),
    ("one missing", findings(accuracy="ok"), True),
    (
        "one source error",
        {"accuracy": finding("accuracy", "ok"), "adoption": source_error("adoption")},
        True,
    ),
]


@pytest.mark.parametrize(
    ("found", "expected"),
    [(f, e) for _, f, e in UNDECIDED_CASES],
    ids=[c[0] for c in UNDECIDED_CASES],
)
def test_undecided_when_any_signal_of_the_condition_lacks_data(
    found: dict[str, Finding], expected: bool
) -> None:
    """A condition over signals is undecided (neither confirmed nor cleared) when any of them
    has no data or no finding: no data is not evidence of recovery."""
    assert undecided(found, ("accuracy", "adoption")) is expected
