"""Broken monitoring is an owner's problem: a query that keeps failing while its source is up
(several series, only NaN/Inf, a query the source rejects) opens a stale incident to the
system's owner after ``stale_for``; a source that is down stays the operator's problem."""

from __future__ import annotations

from datetime import datetime

import pytest

from driftowner.detect.rules import broken_query, conditions
from driftowner.model import Finding

from .factories import SYSTEM, at, finding, make_config, system_patch
from .test_incidents import Lifecycle

SEVERAL_SERIES = (
    'prometheus source \'prom\': the query returns 3 series ({model="a"}, {model="b"}, '
    '{model="c"}); it must return one: aggregate it (sum, avg, max) or select one series by '
    "its labels"
)

READS: dict[str, dict[str, object]] = {
    "ok": {},
    "several series": {"error_reason": "multiple_series", "reason": SEVERAL_SERIES},
    "only NaN": {
        "error_reason": "non_finite",
        "reason": "prometheus source 'prom': the query returned only NaN/Inf values",
    },
    "rejected": {
        "error_reason": "query_error",
        "reason": "prometheus source 'prom': query rejected (HTTP 400): bad_data: parse error",
    },
    "unreachable": {
        "error_reason": "unreachable",
        "source_up": False,
        "reason": "prometheus source 'prom': cannot reach http://127.0.0.1:9: refused",
    },
    "timeout": {
        "error_reason": "timeout",
        "source_up": False,
        "reason": "prometheus source 'prom': no answer within 10s",
    },
    "5xx": {"error_reason": "http_status", "source_up": False, "reason": "HTTP 503"},
    "file missing": {"error_reason": "file_missing", "source_up": False, "reason": "gone"},
    "error without a reason": {"error_reason": None, "reason": "histogram not read"},
}
"""How the accuracy query went, as its finding's fields (source up unless said)."""


def _accuracy(read: str, when: datetime) -> Finding:
    fields = dict(READS[read])
    if read == "ok":
        return finding("accuracy", "ok", when)
    return finding("accuracy", "no_data", when, source_error=True, detector="threshold", **fields)


def _found(read: str, when: datetime) -> dict[str, Finding]:
    return {
        "accuracy": _accuracy(read, when),
        "adoption": finding("adoption", "ok", when),
        "null_rate": finding("null_rate", "ok", when),
    }


@pytest.mark.parametrize(
    ("read", "owners_problem"),
    [
        ("ok", False),
        ("several series", True),
        ("only NaN", True),
        ("rejected", True),
        ("unreachable", False),
        ("timeout", False),
        ("5xx", False),
        ("file missing", False),
        ("error without a reason", False),
    ],
)
def test_a_broken_query_is_stale_and_a_down_source_is_not(read: str, owners_problem: bool) -> None:
    """Only an error that blames the query while the source answered is a stale condition
    (``stale:<signal>``, held for ``stale_for``); a down source, or an error whose reason
    is unknown, raises nothing."""
    config = make_config(system_patch(stale_for="20m"))
    found = _found(read, at(0))
    assert broken_query(found["accuracy"]) is owners_problem
    holding = conditions(SYSTEM, config.systems[SYSTEM], found)
    stale = [c for c in holding if c.kind == "stale"]
    if not owners_problem:
        assert stale == []
        return
    (condition,) = stale
    assert condition.rule == "stale:accuracy"
    assert condition.hold_for == config.systems[SYSTEM].stale_for
    assert condition.evidence == (found["accuracy"],)


def test_the_evidence_says_what_is_wrong_with_the_query() -> None:
    """The summary names the signal, says the query is broken and why, and carries the
    source's own account (the series it returned and how to fix it)."""
    config = make_config()
    (condition,) = conditions(SYSTEM, config.systems[SYSTEM], _found("several series", at(0)))
    assert condition.summary.startswith(
        "accuracy cannot be read, its query is broken (a signal needs exactly one series): "
    )
    assert '({model="a"}, {model="b"}, {model="c"})' in condition.summary
    assert "aggregate it (sum, avg, max)" in condition.summary


TIMELINES: list[tuple[str, list[tuple[int, str]], list[tuple[int, str]]]] = [
    (
        "several series for stale_for (20m) while the source is up: opens at 20",
        [(0, "several series"), (10, "several series"), (20, "several series")],
        [(20, "opened")],
    ),
    (
        "never opens while the source is down, however long",
        [(minute, "unreachable") for minute in range(0, 121, 10)],
        [],
    ),
    (
        "clears when the query is fixed, resolves after resolve_after (5m)",
        [(0, "only NaN"), (10, "only NaN"), (20, "only NaN"), (25, "ok"), (30, "ok")],
        [(20, "opened"), (25, "condition_cleared"), (30, "resolved")],
    ),
    (
        "the source going down neither clears nor resolves an open broken-query incident",
        [
            (0, "rejected"),
            (10, "rejected"),
            (20, "rejected"),
            (30, "timeout"),
            (40, "5xx"),
            (50, "rejected"),
        ],
        [(20, "opened")],
    ),
    (
        "a down source in between restarts the wait: the query must be seen broken for "
        "stale_for in a row",
        [(0, "rejected"), (10, "unreachable"), (20, "rejected"), (30, "rejected")],
        [],
    ),
    (
        "fixed before stale_for: nobody is paged",
        [(0, "several series"), (10, "several series"), (15, "ok"), (40, "ok")],
        [],
    ),
]


@pytest.mark.parametrize(
    ("cycles", "expected"), [(c, e) for _, c, e in TIMELINES], ids=[t[0] for t in TIMELINES]
)
def test_the_stale_for_broken_query_rule_over_time(
    cycles: list[tuple[int, str]], expected: list[tuple[int, str]]
) -> None:
    """Evaluations at the given minutes (the clock injected, no sleeping) give exactly the
    incident events expected, with the accuracy query going as said at each."""
    life = Lifecycle(make_config(system_patch(stale_for="20m", resolve_after="5m")))
    for minute, read in cycles:
        life.evaluate(at(minute), _found(read, at(minute)))
    assert [(round((e.at - at(0)).total_seconds() / 60), e.kind) for e in life.events] == expected
    for incident in life.every.values():
        assert (incident.kind, incident.rule) == ("stale", "stale:accuracy")
        assert incident.owner == "alice"
