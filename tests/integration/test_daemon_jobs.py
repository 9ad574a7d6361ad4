"""The daemon's scheduled jobs: a failing cycle is logged, never silent, and the loop goes on;
leadership and health when the store cannot be written (SQLite: the one instance keeps leading;
PostgreSQL: it follows, and readiness says why)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from structlog.testing import capture_logs

from driftowner.daemon import Daemon
from driftowner.metrics import Metrics
from driftowner.model import SourceResult
from driftowner.store import Changes, Store
from tests.integration.postgres_server import (  # noqa: F401 (fixtures)
    TEST_DATABASE,
    postgres_database_url,
    postgres_url,
)
from tests.integration.test_full_disk import DiskLimit
from tests.unit.factories import incident, notification

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


def _daemon(tmp_path: Path, storage_url: str) -> Daemon:
    """The demo daemon over ``storage_url``, its jobs run by the test."""
    config = tmp_path / "demo.yaml"
    text = (ROOT / "config" / "demo.yaml").read_text()
    config.write_text(text.replace("sqlite:///var/demo.db", storage_url))
    daemon = Daemon(config)
    daemon.config = daemon._load()
    daemon.holder = "test-host/127.0.0.1:9587"
    daemon.store = Store(daemon.config.storage.url)
    daemon.store.open()
    daemon.metrics = Metrics(daemon.store, daemon.clock)
    daemon.sources, daemon.channels = daemon._build_edges(daemon.config)
    return daemon


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    return _daemon(tmp_path, f"sqlite:///{tmp_path}/s.db")


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


async def test_a_sqlite_instance_whose_claim_cannot_be_written_leads_and_says_so(
    daemon: Daemon,
) -> None:
    """Started on a full disk, the only instance of a SQLite store cannot write its first
    lease: it leads all the same (it used to become a follower that never evaluated, with
    /healthz 200), and the store says why it cannot be written, logged once as an error
    without a traceback; with room again, the next claim commits."""
    assert daemon.store is not None
    disk = DiskLimit(daemon.store)
    disk.fill()
    with capture_logs() as logs:
        for _ in range(3):
            await daemon.lead()
    assert daemon.leading
    assert "writing leadership failed" in (daemon.store.unwritable() or "")
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [(e["event"], e["work"]) for e in errors] == [
        ("the store cannot be written", "leadership")
    ]
    assert not [e for e in logs if e.get("exc_info")], "no traceback"
    disk.free()
    await daemon.lead()
    assert daemon.leading and daemon.store.unwritable() is None


async def test_a_sqlite_leader_keeps_leading_when_even_its_lease_cannot_be_read(
    daemon: Daemon, tmp_path: Path
) -> None:
    """The store's file cannot be opened under a running leader (SQLITE_CANTOPEN: a
    directory stands where the file was): the claim and the read of the lease both fail, and
    the instance keeps leading rather than silently stop; it says why, and once the file is
    back its next claim commits."""
    assert daemon.store is not None
    await daemon.lead()
    assert daemon.leading
    engine = daemon.store._engine
    assert engine is not None
    engine.dispose()  # no pooled connection: the next claim opens the file again
    stored = tmp_path / "s.db"
    stored.rename(tmp_path / "moved.db")
    stored.mkdir()
    try:
        await daemon.lead()
        assert daemon.leading
        assert "unable to open database file" in daemon.store_failures["lead"]
    finally:
        stored.rmdir()
        (tmp_path / "moved.db").rename(stored)
    engine.dispose()
    await daemon.lead()
    assert daemon.leading and "lead" not in daemon.store_failures


async def test_a_postgresql_instance_that_cannot_reach_its_store_follows_and_says_why(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811 (a fixture)
    postgres_database_url: str,  # noqa: F811 (a fixture)
) -> None:
    """PostgreSQL (HA): a leader whose database stops taking connections is unhealthy while
    its cycle cannot reach the store, then follows at its next claim (another instance may
    lead through a database this one cannot reach) and is healthy again (its loop runs);
    the store says why it cannot be written, and it leads again once it can."""
    daemon = _daemon(tmp_path, postgres_database_url)
    assert daemon.store is not None
    await daemon.lead()
    assert daemon.leading
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {TEST_DATABASE} ALLOW_CONNECTIONS false")
        admin.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (TEST_DATABASE,),
        )
        try:
            await daemon.evaluate()  # still leading: its cycle cannot reach the store
            assert not daemon.healthy()
            await daemon.lead()
            assert not daemon.leading
            assert daemon.healthy()  # a follower's loop runs; the cycle is not its work now
            reason = daemon.store.unwritable()
            assert reason is not None and "not currently accepting connections" in reason
            assert not daemon.store.ping()
        finally:
            admin.execute(f"ALTER DATABASE {TEST_DATABASE} ALLOW_CONNECTIONS true")
    # Back: another instance leads now; this one's lease commits, so what it could not write
    # while leading (its delivery's claim on the outbox) no longer makes it unready.
    other = Store(postgres_database_url)
    try:
        daemon.store.resign(daemon.holder, daemon.clock())
        assert other.try_lead("other-host/127.0.0.1:9587", timedelta(seconds=20), daemon.clock())
        await daemon.lead()
        assert not daemon.leading and daemon.store.unwritable() is None
        other.resign("other-host/127.0.0.1:9587", daemon.clock())
    finally:
        other.close()
    await daemon.lead()
    assert daemon.leading and daemon.store.unwritable() is None
    daemon.store.close()


async def test_one_escalation_tick_delivers_a_backlog_larger_than_a_batch(daemon: Daemon) -> None:
    """Issue 7: 450 pages due at once all go out from one escalation job (it used to send
    100 and leave the rest to later ticks, 5 s apart)."""
    assert daemon.store is not None
    daemon.store.apply(Changes(opened=[incident()]))
    daemon.store.apply(
        Changes(notifications=[notification(f"n-{i:03d}", channel="console") for i in range(450)])
    )
    await daemon.lead()
    with capture_logs():
        await daemon.escalate_and_deliver()
    assert daemon.store.outbox_pending() == 0
    delivered = {n.id for n in daemon.store.notifications("inc-1") if n.delivered_at}
    assert {f"n-{i:03d}" for i in range(450)} <= delivered
