"""The daemon's scheduled jobs: a failing cycle is logged, never silent, and the loop goes on."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from driftowner.daemon import Daemon
from driftowner.metrics import Metrics
from driftowner.model import SourceResult
from driftowner.store import Store

ROOT = Path(__file__).resolve().parents[2]


class ExplodingSource:
    """A source with a bug: it raises instead of returning a SourceResult."""

    name = "demo"

    async def read(
        self, query: str, start: datetime, end: datetime, step: timedelta
    ) -> SourceResult:
        raise RuntimeError("bug in a source")

    async def aclose(self) -> None:
        return None


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    config = tmp_path / "demo.yaml"
    text = (ROOT / "config" / "demo.yaml").read_text()
    config.write_text(text.replace("sqlite:///var/demo.db", f"sqlite:///{tmp_path}/s.db"))
    daemon = Daemon(config)
    daemon.config = daemon._load()
    daemon.store = Store(daemon.config.storage.url)
    daemon.store.open()
    daemon.metrics = Metrics(daemon.store, daemon.clock)
    daemon.sources, daemon.channels = daemon._build_edges(daemon.config)
    return daemon


async def test_a_failing_evaluation_is_logged_and_the_next_one_runs(daemon: Daemon) -> None:
    """A source that raises makes the cycle fail with an error log carrying the traceback;
    the job returns normally (the scheduler keeps it), and with the source fixed the next
    cycle succeeds."""
    working = daemon.sources["demo"]
    daemon.sources["demo"] = ExplodingSource()
    with capture_logs() as logs:
        await daemon.evaluate()
    failures = [entry for entry in logs if entry["event"] == "evaluation failed"]
    assert failures and failures[0]["log_level"] == "error"
    assert failures[0].get("exc_info") is True
    daemon.sources["demo"] = working
    with capture_logs() as logs:
        await daemon.evaluate()
    assert not [entry for entry in logs if entry["log_level"] == "error"]
    assert daemon.healthy()
