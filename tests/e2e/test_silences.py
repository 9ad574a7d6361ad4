"""Silences end to end, with the daemon as a process: a silence added from the command line
holds the page of an incident that opens under it, and expiring it pages the owner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.e2e.test_daemon import _deployment, events_of, wait_for
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.e2e


def test_a_silence_holds_the_page_until_it_is_expired_then_the_owner_is_paged(
    tmp_path: Path,
) -> None:
    """``silence add`` before the drift: the incident opens and is recorded, a ``silenced``
    event names the silence, and Slack hears nothing; ``silence list`` shows it holding.
    ``silence expire``: the daemon records ``released`` and pages alice on Slack (step 1)."""
    with FakeSlack() as slack:
        deployment = _deployment(tmp_path, slack, drop_at=3, recover_at=600, step2="5m")
        added = deployment.cli(
            "silence",
            "add",
            "--system",
            "fraud-scoring",
            "--for",
            "1h",
            "--reason",
            "retraining",
            "--by",
            "alice",
        )
        silence_id = added.split()[0]
        assert silence_id.startswith("sil-") and "fraud-scoring" in added
        (listed,) = deployment.cli("silence", "list", "--json")["silences"]
        assert (listed["id"], listed["active"], listed["by"], listed["via"]) == (
            silence_id,
            True,
            "alice",
            "cli",
        )
        deployment.start()
        (incident,) = wait_for(deployment.incidents, "an incident to open", 30)
        held = wait_for(lambda: "silenced" in events_of(deployment, incident["id"]), "the hold", 15)
        assert held
        events = deployment.show(incident["id"])["events"]
        silenced = [e for e in events if e["kind"] == "silenced"]
        assert silence_id in silenced[0]["detail"]
        # The hold and the first page would be the same tick's: with the hold recorded,
        # no page was made.
        assert "notified" not in [e["kind"] for e in events]
        assert slack.received == []

        expired = deployment.cli("silence", "expire", silence_id, "--by", "alice")
        assert f"{silence_id} expired by alice" in expired
        wait_for(lambda: "released" in events_of(deployment, incident["id"]), "the release", 15)
        page = slack.wait_for(1, timeout=10)[0]
        assert "<@U0ALICE>" in json.dumps(page)
        assert deployment.cli("silence", "list", "--json")["silences"] == []
        deployment.stop()
