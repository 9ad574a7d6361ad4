"""The daemon as a process over a SQLite store on a real disk that fills up (a small tmpfs, as
root): it keeps leading, /readyz and /healthz answer 503 with the reason, and once space
returns the incident that should have opened meanwhile opens, and its owner is paged once."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from tests.e2e.test_daemon import (
    CONFIG,
    TOKEN,
    Deployment,
    free_port,
    wait_for,
    write_history,
)
from tests.fakes.slack import FakeSlack
from tests.integration.test_full_disk import FULL, _fill_disk, tmpfs  # noqa: F401 (fixture)

pytestmark = pytest.mark.e2e


def _answer(url: str) -> tuple[int, str]:
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return 0, ""
    return response.status_code, response.text


def test_a_disk_filling_under_the_daemon_stops_nothing_silently(
    tmp_path: Path,
    tmpfs: Path,  # noqa: F811 (a fixture)
) -> None:
    """Adoption drops once the disk is full: the opening cannot be written (nor the lease),
    so /readyz and /healthz answer 503 naming the full disk while the instance still leads;
    once the filler is gone, one incident opens and alice gets one page; each failing kind
    of write is logged once."""
    with FakeSlack() as slack:
        csv = tmp_path / "history.csv"
        write_history(csv, datetime.now(UTC), drop_at=10_000, recover_at=10_001)  # no drop
        port = free_port()
        config = tmp_path / "driftowner.yaml"
        config.write_text(
            CONFIG.format(
                port=port,
                token=TOKEN,
                db=tmpfs / "store.db",
                csv=csv,
                slack=slack.url,
                step2="5m",
            )
        )
        deployment = Deployment(tmp_path, config, port, slack)
        deployment.start()
        _fill_disk(tmpfs / "filler")
        # Adoption drops now, with the disk full (the file source reads the file again).
        write_history(csv, datetime.now(UTC), drop_at=0, recover_at=120)

        ready = wait_for(
            lambda: (a := _answer(f"{deployment.url}/readyz"))[0] == 503 and a[1],
            "/readyz to say the store cannot be written",
            20,
        )
        assert FULL in ready
        health = wait_for(
            lambda: (a := _answer(f"{deployment.url}/healthz"))[0] == 503 and a[1],
            "/healthz to say no work gets recorded",
            30,
        )
        assert FULL in health
        lease_failed = f'"work": "leadership", "reason": "{FULL}"'
        wait_for(lambda: lease_failed in deployment.log(), "a lease renewal to fail too", 15)
        metrics = deployment.metrics()
        assert metrics["driftowner_leader"] == 1
        assert metrics["driftowner_store_writable"] == 0
        listed = httpx.get(f"{deployment.url}/api/v1/incidents", timeout=5).json()
        assert listed["incidents"] == []

        (tmpfs / "filler").unlink()
        wait_for(lambda: _answer(f"{deployment.url}/readyz")[0] == 200, "/readyz 200", 20)
        wait_for(lambda: _answer(f"{deployment.url}/healthz")[0] == 200, "/healthz 200", 20)
        opened = wait_for(
            lambda: httpx.get(f"{deployment.url}/api/v1/incidents", timeout=5).json()["incidents"],
            "the incident to open",
            15,
        )
        assert [i["rule"] for i in opened] == ["disagreement:accuracy-fine-adoption-falling"]
        slack.wait_for(1, timeout=10)
        assert deployment.metrics()["driftowner_store_writable"] == 1
        deployment.stop()
        assert len(slack.received) == 1
        log = deployment.log()
        assert log.count(lease_failed) == 1
        assert "Traceback" not in log
