"""Holdings: an incident split into the periods each owner held it, and what each holder
did in theirs (time to acknowledge and resolve from their own start, SLO breaches credited
to whoever held it when it happened). Pure, table-driven."""

from __future__ import annotations

from datetime import timedelta

import pytest

from driftowner.holding import holdings
from driftowner.model import Handover, Timing

from .factories import T0, at, minutes

OPENED = T0.timestamp()


def timing(
    owner: str = "alice",
    acked: float | None = None,
    resolved: float | None = None,
    ack_within: float | None = None,
    resolve_within: float | None = None,
) -> Timing:
    """An incident opened at T0; ``acked`` / ``resolved`` in minutes after opening."""
    return Timing(
        incident_id="inc-1",
        owner=owner,
        system="fraud-scoring",
        kind="drift",
        state="resolved" if resolved is not None else "acknowledged" if acked else "open",
        opened_at=OPENED,
        first_acknowledged_at=None if acked is None else OPENED + acked * 60,
        resolved_at=None if resolved is None else OPENED + resolved * 60,
        ack_within=ack_within,
        resolve_within=resolve_within,
    )


def handover(minute: float, from_owner: str, to_owner: str) -> Handover:
    return Handover("inc-1", at(minute), from_owner, to_owner, "dana", "api", "rota")


def test_without_handovers_one_holding_has_the_incidents_own_numbers() -> None:
    """An incident never handed over is one holding by its owner from opening: time to
    acknowledge and resolve are the incident's own."""
    (only,) = holdings(timing(acked=2, resolved=30), [], [], OPENED + 3600)
    assert (only.owner, only.start, only.end) == ("alice", OPENED, OPENED + 1800)
    assert (only.time_to_acknowledge, only.time_to_resolve) == (120.0, 1800.0)
    assert (only.received, only.handed_over, only.held(OPENED + 3600)) == (False, False, 1800.0)


def test_an_ack_before_a_handover_stays_with_the_owner_who_acked() -> None:
    """Alice acks at 28 s and hands over at 10 min; bob resolves at 40 min: alice has the
    ack, bob the resolution, counted from when he received it."""
    alice, bob = holdings(
        timing(owner="bob", acked=28 / 60, resolved=40),
        [handover(10, "alice", "bob")],
        [OPENED + 28],
        OPENED + 7200,
    )
    assert (alice.owner, alice.time_to_acknowledge, alice.time_to_resolve) == ("alice", 28.0, None)
    assert (alice.held(0), alice.handed_over, alice.received) == (600.0, True, False)
    assert (bob.owner, bob.time_to_acknowledge, bob.time_to_resolve) == ("bob", None, 1800.0)
    assert (bob.held(0), bob.handed_over, bob.received) == (1800.0, False, True)


def test_each_holder_is_timed_from_when_they_received_it() -> None:
    """Two handovers: each owner's first ack within their own period counts, from its
    start; a later owner's period still open is held until now."""
    periods = holdings(
        timing(owner="dana", acked=1),
        [handover(5, "alice", "bob"), handover(20, "bob", "dana")],
        [OPENED + 60, OPENED + 8 * 60, OPENED + 9 * 60, OPENED + 26 * 60],
        OPENED + 30 * 60,
    )
    assert [(p.owner, p.time_to_acknowledge) for p in periods] == [
        ("alice", 60.0),
        ("bob", 180.0),
        ("dana", 360.0),
    ]
    assert [p.held(OPENED + 30 * 60) for p in periods] == [300.0, 900.0, 600.0]


# (handover at, ack_within, resolve_within, resolved, now: minutes; breaches (alice, bob))
BREACHES = [
    pytest.param(10, 5 * 60, None, 40, 60, ((True, False), (True, False)), id="both-slow-acks"),
    pytest.param(3, 5 * 60, None, 6, 60, ((False, False), (False, False)), id="passed-on-in-time"),
    pytest.param(10, None, 20 * 60, 40, 60, ((False, False), (False, True)), id="resolve-late-bob"),
    pytest.param(30, None, 20 * 60, 40, 60, ((False, True), (False, False)), id="late-under-alice"),
    pytest.param(10, None, 20 * 60, None, 15, ((False, False), (False, False)), id="not-yet-due"),
    pytest.param(10, None, 20 * 60, None, 25, ((False, False), (False, True)), id="open-past-slo"),
]


@pytest.mark.parametrize(
    ("handed", "ack_within", "resolve_within", "resolved", "now", "breached"), BREACHES
)
def test_breaches_are_credited_to_whoever_held_it(
    handed: float,
    ack_within: float | None,
    resolve_within: float | None,
    resolved: float | None,
    now: float,
    breached: tuple[tuple[bool, bool], tuple[bool, bool]],
) -> None:
    """The ack SLO is each holder's own (acked or still unacknowledged past ``ack_within``
    of receiving it); the resolve SLO is the incident's, charged to whoever held it when
    ``resolve_within`` ran out. Nobody acks here."""
    periods = holdings(
        timing(
            owner="bob", resolved=resolved, ack_within=ack_within, resolve_within=resolve_within
        ),
        [handover(handed, "alice", "bob")],
        [],
        OPENED + now * 60,
    )
    assert tuple((p.ack_breached, p.resolve_breached) for p in periods) == breached


def test_a_holding_is_measured_to_now_while_it_lasts() -> None:
    """An open incident's last holding has no end and is held until now."""
    (only,) = holdings(timing(), [], [], OPENED + minutes(7).total_seconds())
    assert (only.end, only.held(OPENED + 420)) == (None, 420.0)
    assert timedelta(seconds=only.held(OPENED + 420)) == minutes(7)
