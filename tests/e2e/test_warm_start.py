"""The daemon as a process, killed in the middle of a drift found by the default detector and
restarted: its charts warm-start from the file's history, so the drift stays detected and the
open incident stays the one incident."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from tests.e2e.test_daemon import _deployment, wait_for
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.e2e

ADOPTION_WITH_A_DETECTOR = "detect: {{baseline: {{reference: 5m, max_change: 20%}}}}".replace(
    "{{", "{"
).replace("}}", "}")
RESTART_CYCLES = 45
"""Evaluations after the restart: more than a chart needs to learn a reference from scratch
(30 samples), so a restart that forgot the drift would have learned the low level as normal
and resolved the incident by then."""


def _cycles(metrics: dict[str, float]) -> float:
    return metrics.get("driftowner_evaluation_duration_seconds_count", 0.0)


def test_a_restart_mid_drift_keeps_it_detected_and_the_incident_single(tmp_path: Path) -> None:
    """Adoption (no ``detect``: the default detector) falls 3 s after start; once its incident
    is open the daemon is killed with SIGKILL and restarted. After more evaluations than a
    fresh chart needs to learn, adoption is still degraded, the incident is still open and
    still the only one, and it began when the drop began."""
    with FakeSlack() as slack:
        deployment = _deployment(tmp_path, slack, drop_at=3, recover_at=110, step2="5m")
        text = deployment.config.read_text()
        assert text.count(ADOPTION_WITH_A_DETECTOR) == 1
        deployment.config.write_text(text.replace(ADOPTION_WITH_A_DETECTOR, "detect: null"))
        deployment.start()
        opened = wait_for(deployment.incidents, "an incident to open", 30)
        assert len(opened) == 1
        deployment.stop(signal.SIGKILL)

        deployment.start()
        wait_for(
            lambda: _cycles(deployment.metrics()) >= RESTART_CYCLES,
            f"{RESTART_CYCLES} evaluations after the restart",
            RESTART_CYCLES * 3,
        )
        metrics = deployment.metrics()
        degraded = [
            name
            for name, value in metrics.items()
            if name.startswith("driftowner_signal_status{")
            and 'signal="adoption"' in name
            and 'status="degraded"' in name
            and value == 1
        ]
        assert degraded, "adoption is no longer degraded after the restart"
        after = deployment.incidents()
        assert [(i["id"], i["state"]) for i in after] == [(opened[0]["id"], "open")]
        shown = deployment.show(opened[0]["id"])
        assert [e["kind"] for e in shown["events"]].count("opened") == 1
        assert "condition_cleared" not in [e["kind"] for e in shown["events"]]
        deployment.stop()
