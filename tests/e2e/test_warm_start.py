"""The daemon as a process, killed while an incident for a change-point drift is open and
restarted after the drift has grown older than a warm start's window: the charts reach back to
the open incident's condition start, so the drift stays detected and the open incident stays
the one incident."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.e2e.test_daemon import Deployment, _deployment, wait_for, write_history
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.e2e

ADOPTION_WITH_A_DETECTOR = "detect: {{baseline: {{reference: 5m, max_change: 20%}}}}".replace(
    "{{", "{"
).replace("}}", "}")
WARMUP = 5
WINDOW = 10 * WARMUP
"""Seconds of history a warm start reads before now (10 warm-ups at a 1 s interval)."""
DROP_AT = -25
"""Seconds before the first start when adoption fell: inside the first start's window, with
``WINDOW + DROP_AT - WARMUP`` seconds of slack for a slow start-up before too few samples
precede it to learn from."""
RESTART_AFTER = WINDOW + DROP_AT + 8.0
"""Seconds after the first start at which the daemon is restarted: the drop then began 8 s
before ``now - WINDOW``, so a warm start that read only its window would learn the low level."""
RESTART_CYCLES = 20
"""Evaluations after the restart: more than a chart needs to learn a reference from scratch
(``WARMUP`` samples) and the incident needs to resolve once clear (2 s)."""


def _cycles(metrics: dict[str, float]) -> float:
    return metrics.get("driftowner_evaluation_duration_seconds_count", 0.0)


def _adoption_degraded(metrics: dict[str, float]) -> bool:
    return any(
        name.startswith("driftowner_signal_status{")
        and 'signal="adoption"' in name
        and 'status="degraded"' in name
        and value == 1
        for name, value in metrics.items()
    )


def test_a_restart_after_the_window_keeps_an_old_drift_detected_and_the_incident_single(
    tmp_path: Path,
) -> None:
    """Adoption (a Page-Hinkley chart with a 5-sample warm-up) fell 25 s before the daemon
    starts; the first start's warm start sees it fall and opens the incident. The daemon is
    killed with SIGKILL and restarted when the fall is older than the 50 s window. After more
    evaluations than a fresh chart needs to learn, adoption is still degraded, the incident is
    still open and the only one (no ``condition_cleared``), and it began when the fall began.
    Without the reach-back to the incident's start the restarted chart learns 0.30 as normal
    and the incident resolves."""
    with FakeSlack() as slack:
        deployment: Deployment = _deployment(
            tmp_path, slack, drop_at=DROP_AT, recover_at=110, step2="5m"
        )
        started = datetime.now(UTC)
        write_history(tmp_path / "history.csv", started, DROP_AT, 110)
        text = deployment.config.read_text()
        assert text.count(ADOPTION_WITH_A_DETECTOR) == 1
        deployment.config.write_text(
            text.replace(
                ADOPTION_WITH_A_DETECTOR, f"detect: {{page_hinkley: {{warmup: {WARMUP}}}}}"
            )
        )
        deployment.start()
        opened = wait_for(deployment.incidents, "an incident to open", 30)
        assert len(opened) == 1
        began = datetime.fromisoformat(opened[0]["condition_began_at"])
        assert abs((began - started).total_seconds() - DROP_AT) <= 2, began
        deployment.stop(signal.SIGKILL)

        # The drift has to age past the window before the restart: that is the case tested.
        time.sleep(max(0.0, started.timestamp() + RESTART_AFTER - time.time()))
        deployment.start()
        wait_for(
            lambda: _cycles(deployment.metrics()) >= RESTART_CYCLES,
            f"{RESTART_CYCLES} evaluations after the restart",
            RESTART_CYCLES * 3,
        )
        assert _adoption_degraded(deployment.metrics()), "adoption is no longer degraded"
        after = deployment.incidents()
        assert [(i["id"], i["state"]) for i in after] == [(opened[0]["id"], "open")]
        kinds = [e["kind"] for e in deployment.show(opened[0]["id"])["events"]]
        assert kinds.count("opened") == 1
        assert "condition_cleared" not in kinds
        deployment.stop()
