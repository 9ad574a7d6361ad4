"""The daemon as a process, stopped while escalation steps fall due: the restart pages each
person once, in step order, and records the steps it collapsed as events."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.test_daemon import Deployment, _deployment, wait_for
from tests.fakes.slack import FakeSlack

from driftowner.store import SqlStore

pytestmark = pytest.mark.e2e

CHAIN = (
    # Step 1 at once, step 2 after 3 s, step 3 after 4 s; a round lasts 4 s + 1 s = 5 s, and
    # ``repeat: 3`` runs four rounds, so the last step falls due 19 s after opening.
    ("      - after: 10m\n", "      - after: 4s\n"),
    ("systems:\n", "    repeat: 3\nsystems:\n"),
)
LAST_STEP_DUE = 19.0
"""Seconds from opening to the fourth round's step 3."""


def _downtime_deployment(tmp_path: Path, slack: FakeSlack) -> Deployment:
    deployment = _deployment(tmp_path, slack, drop_at=3, recover_at=110, step2="3s")
    text = deployment.config.read_text()
    for old, new in CHAIN:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    deployment.config.write_text(text)
    return deployment


def _pages_logged(log: str) -> list[tuple[str, str]]:
    """(recipient, step) of each console page, in the order the outbox sent them."""
    pages = []
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("logger") == "driftowner.notify":
            pages.append((record["recipient"], record.get("step", "")))
    return pages


def _mentions(payloads: list[dict[str, Any]], member: str) -> int:
    return sum(f"<@{member}>" in json.dumps(p) for p in payloads)


def test_a_restart_after_downtime_pages_each_person_once_in_step_order(tmp_path: Path) -> None:
    """Stopped right after the owner's first page and restarted once every step of all four
    rounds is overdue: alice, bob and dana get one page each (not one per owed step), on
    the console in step order, each for the last round's step; the steps folded into those
    pages are one ``escalated`` event naming them; the outbox holds the pages in step order;
    and no step fires again afterwards."""
    with FakeSlack() as slack:
        deployment = _downtime_deployment(tmp_path, slack)
        deployment.start()
        incident = wait_for(deployment.incidents, "an incident to open", 30)[0]
        slack.wait_for(1, timeout=10)
        deployment.stop()
        before = deployment.show(incident["id"])
        on_slack = slack.received
        log_offset = len(deployment.log())

        # The downtime itself, not a wait for escalation: stay stopped until every step of
        # every round is owed.
        opened = datetime.fromisoformat(incident["opened_at"])
        downtime = LAST_STEP_DUE + 1.0 - (datetime.now(UTC) - opened).total_seconds()
        time.sleep(max(downtime, 0.0))

        deployment.start()
        wait_for(
            lambda: len(deployment.show(incident["id"])["events"]) > len(before["events"]),
            "the restart's escalation",
            20,
        )
        wait_for(
            lambda: deployment.metrics().get("driftowner_outbox_pending") == 0.0,
            "the outbox to drain",
            10,
        )
        after = deployment.show(incident["id"])
        metrics = deployment.metrics()
        deployment.stop()

    assert after["events"][: len(before["events"])] == before["events"]
    new_events = after["events"][len(before["events"]) :]
    assert [e["kind"] for e in new_events] == ["escalated"] * 4
    collapsed = new_events[0]["detail"]
    assert "round 2 steps 1-3, round 3 steps 1-3 collapsed" in collapsed, collapsed
    assert "each recipient is paged once, for the latest step they were owed" in collapsed
    assert [e["detail"] for e in new_events[1:]] == [
        "step 1: alice via console, alice via slack",
        "step 2: bob via console, bob via slack",
        "step 3: dana via console",
    ]

    # driftowner_escalations_total counts every step passed, collapsed or paged: all twelve
    # steps of the four rounds, less those the first run fired.
    fired_before = sum(e["kind"] in ("notified", "escalated") for e in before["events"])
    passed = [
        metrics.get(f'driftowner_escalations_total{{step="{step}",system="fraud-scoring"}}', 0)
        for step in (1, 2, 3)
    ]
    assert sum(passed) == 12 - fired_before, passed
    assert "escalation steps collapsed" in deployment.log()[log_offset:]

    assert _pages_logged(deployment.log()[log_offset:]) == [
        ("alice", "step 1"),
        ("bob", "step 2"),
        ("dana", "step 3"),
    ]
    after_restart = slack.received[len(on_slack) :]
    assert (_mentions(after_restart, "U0ALICE"), _mentions(after_restart, "U0BOB")) == (1, 1)
    assert len(after_restart) == 2

    store = SqlStore(f"sqlite:///{tmp_path / 'store.db'}")
    store.open()
    try:
        stored = store.notifications(incident["id"])
    finally:
        store.close()
    restart_pages = stored[-5:]  # the store's order is the outbox's lease order
    assert [(n.recipient, n.message.step) for n in restart_pages] == [
        ("alice", 1),
        ("alice", 1),
        ("bob", 2),
        ("bob", 2),
        ("dana", 3),
    ]
    assert len({n.created_at for n in restart_pages}) == 3, "one order key per step"
    assert all(n.delivered_at is not None for n in stored)
    assert "Traceback" not in deployment.log()
