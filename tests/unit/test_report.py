"""The report: per owner and system, counts by state, median and p90 time to acknowledge and
to resolve, SLO breaches, and the oldest unresolved incident. The store is a small fake."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, cast

import pytest

from driftowner.model import Handover, Incident, Timing
from driftowner.report import ReportRow, breached_ack, breached_resolve, report, report_row_json
from driftowner.store import Store

from .factories import SYSTEM, T0, at, incident, minutes

NOW = T0 + timedelta(days=10)


class FakeStore:
    """The read ``report`` makes, over a list of incidents, with the store's semantics:
    opened since the window's start, plus every unresolved one."""

    def __init__(self, incidents: list[Incident]) -> None:
        self._incidents = incidents

    def timings(self, *, opened_since: datetime | None = None) -> list[Timing]:
        return [
            i.timing()
            for i in self._incidents
            if opened_since is None or i.opened_at >= opened_since or i.unresolved
        ]

    def handovers(self) -> dict[str, list[Any]]:
        return {}

    def acknowledgements(self, incident_ids: Any) -> dict[str, list[float]]:
        return {i: [] for i in incident_ids}


def _report(incidents: list[Incident], since: timedelta = timedelta(days=30)) -> list[ReportRow]:
    return report(cast(Store, FakeStore(incidents)), since, NOW)


def _done(n: int, acked_after: float | None, resolved_after: float | None, **kw: Any) -> Incident:
    opened = NOW - timedelta(days=5) + minutes(n)
    return incident(
        id=f"inc-{n}",
        rule=f"drift:s{n}",
        opened_at=opened,
        state="resolved"
        if resolved_after is not None
        else "acknowledged"
        if acked_after
        else "open",
        first_acknowledged_at=None if acked_after is None else opened + minutes(acked_after),
        acknowledged_at=None if acked_after is None else opened + minutes(acked_after),
        resolved_at=None if resolved_after is None else opened + minutes(resolved_after),
        **kw,
    )


def test_median_and_p90_of_time_to_acknowledge_and_resolve() -> None:
    """Median and p90 (inclusive quantiles) over the incidents that were acknowledged or
    resolved; counts by state."""
    group = [_done(i, acked_after=i, resolved_after=10 * i) for i in range(1, 11)]
    (row,) = _report(group)
    assert (row.owner, row.system) == ("alice", SYSTEM)
    assert (row.open, row.acknowledged, row.resolved) == (0, 0, 10)
    assert row.ack_median_s == 330.0
    assert row.ack_p90_s == 546.0
    assert row.resolve_median_s == 3300.0
    assert row.resolve_p90_s == 5460.0
    assert row.oldest_unresolved_s is None


@pytest.mark.parametrize(
    ("acks", "median", "p90"),
    [([], None, None), ([7], 420.0, 420.0), ([1, 2], 90.0, 114.0), ([5, 10, 40], 600.0, 2040.0)],
)
def test_percentiles_of_few_values(
    acks: list[int], median: float | None, p90: float | None
) -> None:
    """No value gives None; one value is its own median and p90; two or more interpolate."""
    group = [_done(i, acked_after=a, resolved_after=None) for i, a in enumerate(acks)]
    group.append(_done(99, acked_after=None, resolved_after=None))
    (row,) = _report(group)
    assert (row.ack_median_s, row.ack_p90_s) == (median, p90)
    assert (row.resolve_median_s, row.resolve_p90_s) == (None, None)


ACK_SLO_CASES = [
    # (first ack after, resolved after, age now, ack_within, breached)
    (20, None, None, minutes(30), False),
    (40, None, None, minutes(30), True),
    (30, None, None, minutes(30), False),
    (None, None, 29, minutes(30), False),
    (None, None, 31, minutes(30), True),
    (None, 20, None, minutes(30), False),
    (None, 45, None, minutes(30), True),
    (40, None, None, None, False),
]


@pytest.mark.parametrize(("acked", "resolved", "age", "within", "breached"), ACK_SLO_CASES)
def test_breached_ack_when_acknowledged_late_or_still_waiting_past_ack_within(
    acked: float | None,
    resolved: float | None,
    age: float | None,
    within: timedelta | None,
    breached: bool,
) -> None:
    """The ack SLO is breached when the first ack came later than ``ack_within``, or when no
    ack came and the incident waited longer (until resolution, or until now); exactly on time
    is not a breach; no ``ack_within`` never breaches."""
    subject = incident(
        ack_within=within,
        first_acknowledged_at=None if acked is None else at(acked),
        resolved_at=None if resolved is None else at(resolved),
        state="resolved" if resolved is not None else "open",
    )
    now = at(age if age is not None else 10_000)
    assert breached_ack(subject, now) is breached


RESOLVE_SLO_CASES = [
    # (resolved after, now, resolve_within, breached)
    (timedelta(days=2), timedelta(days=9), timedelta(days=3), False),
    (timedelta(days=4), timedelta(days=9), timedelta(days=3), True),
    (None, timedelta(days=2), timedelta(days=3), False),
    (None, timedelta(days=3, seconds=1), timedelta(days=3), True),
    (None, timedelta(days=30), None, False),
]


@pytest.mark.parametrize(("resolved", "now", "within", "breached"), RESOLVE_SLO_CASES)
def test_breached_resolve_when_resolved_late_or_still_open_past_resolve_within(
    resolved: timedelta | None, now: timedelta, within: timedelta | None, breached: bool
) -> None:
    """The resolve SLO is breached by a resolution later than ``resolve_within`` or an
    unresolved incident older than it; no ``resolve_within`` never breaches."""
    subject = incident(
        resolve_within=within,
        resolved_at=None if resolved is None else T0 + resolved,
        state="resolved" if resolved is not None else "open",
    )
    assert breached_resolve(subject, T0 + now) is breached


def test_report_counts_slo_breaches_and_the_oldest_unresolved() -> None:
    """Breaches are counted per row, and the oldest unresolved incident's age is reported."""
    group = [
        _done(1, acked_after=40, resolved_after=None),  # late ack; open 5d > 3d
        _done(2, acked_after=10, resolved_after=60),  # on time
        _done(3, acked_after=None, resolved_after=None),  # never acked, open 5d
        replace(_done(4, acked_after=None, resolved_after=None), opened_at=NOW - minutes(10)),
    ]
    (row,) = _report(group)
    assert (row.open, row.acknowledged, row.resolved) == (2, 1, 1)
    assert row.ack_slo_breaches == 2
    assert row.resolve_slo_breaches == 2
    assert row.oldest_unresolved_s == (NOW - group[0].opened_at).total_seconds()
    as_json = report_row_json(row)
    assert as_json["slo_breaches"] == {"ack": 2, "resolve": 2}
    assert as_json["oldest_unresolved_seconds"] == row.oldest_unresolved_s


def test_report_groups_by_owner_and_system_over_the_window_plus_everything_unresolved() -> None:
    """Rows are per (owner, system), sorted; resolved incidents opened before ``since`` are
    left out, unresolved ones are always in."""
    old_resolved = _done(1, acked_after=5, resolved_after=10)
    old_open = _done(2, acked_after=None, resolved_after=None)
    recent = replace(
        _done(3, acked_after=5, resolved_after=10, owner="bob"), opened_at=NOW - timedelta(days=1)
    )
    other = replace(_done(4, acked_after=None, resolved_after=None), system="churn")
    rows = _report([old_resolved, old_open, recent, other], since=timedelta(days=2))
    assert [(r.owner, r.system, r.open, r.resolved) for r in rows] == [
        ("alice", "churn", 1, 0),
        ("alice", SYSTEM, 1, 0),
        ("bob", SYSTEM, 0, 1),
    ]


def test_an_empty_store_reports_nothing() -> None:
    """No incidents, no rows."""
    assert _report([]) == []


class HandedOverStore(FakeStore):
    """A FakeStore whose one incident alice acked at 28 s and handed to bob at 10 min."""

    def handovers(self) -> dict[str, list[Any]]:
        return {"inc-1": [Handover("inc-1", at(10), "alice", "bob", "dana", "api", "rota")]}

    def acknowledgements(self, incident_ids: Any) -> dict[str, list[float]]:
        return {"inc-1": [(T0 + timedelta(seconds=28)).timestamp()]}


def test_a_handover_credits_the_first_owners_ack_to_them_not_the_next() -> None:
    """Regression (issue 8): alice acked in 28 s and the incident was then reassigned to bob,
    who resolved it at 40 min. The report showed alice's 28 s under bob. Now alice has the
    28 s ack and 10 min held; bob the 30 min resolution from when he got it."""
    handed = incident(
        owner="bob",
        opened_at=T0,
        state="resolved",
        first_acknowledged_at=T0 + timedelta(seconds=28),
        resolved_at=at(40),
        ack_within=None,
        resolve_within=None,
    )
    rows = report(cast(Store, HandedOverStore([handed])), timedelta(days=3650), NOW)
    by_owner = {row.owner: row for row in rows}
    assert set(by_owner) == {"alice", "bob"}
    alice, bob = by_owner["alice"], by_owner["bob"]
    assert (alice.ack_median_s, alice.resolve_median_s, alice.resolved) == (28.0, None, 0)
    assert (bob.ack_median_s, bob.resolve_median_s, bob.resolved) == (None, 1800.0, 1)
    assert (alice.held_s, alice.handovers_given, alice.handovers_received) == (600.0, 1, 0)
    assert (bob.held_s, bob.handovers_given, bob.handovers_received) == (1800.0, 0, 1)
