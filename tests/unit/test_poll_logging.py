"""Failing source queries are logged when they start, change and recover, not every cycle."""

from __future__ import annotations

import itertools

from structlog.testing import capture_logs

from driftowner.poll import log_query_failures

KEY = ("fraud-scoring", "accuracy")


def test_a_query_failing_for_many_cycles_is_logged_once_then_once_on_recovery() -> None:
    """Three cycles of the same failure give one warning; a different error gives another;
    recovery gives one info line."""
    history = [
        {},
        {KEY: "unreachable"},
        {KEY: "unreachable"},
        {KEY: "unreachable"},
        {KEY: "timeout"},
        {},
    ]
    with capture_logs() as logs:
        for previous, current in itertools.pairwise(history):
            log_query_failures(previous, current)
    assert [(e["event"], e.get("error")) for e in logs] == [
        ("source query failed", "unreachable"),
        ("source query failed", "timeout"),
        ("source query recovered", None),
    ]
