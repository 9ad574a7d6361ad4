"""The daemon's scheduled jobs: a failing cycle is logged, never silent, and the loop goes on;
leadership and health when the store cannot be written (SQLite: the one instance keeps leading;
PostgreSQL: it follows, and readiness says why); reload applies a new config, or refuses one
that only a restart could apply."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from driftowner import daemon as daemon_module
from driftowner.api import Runtime, create_app
from driftowner.daemon import Daemon
from driftowner.links import LinkSigner
from driftowner.metrics import Metrics
from driftowner.model import SourceResult
from driftowner.store import Changes, SqlStore
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
    daemon.store = SqlStore(daemon.config.storage.url)
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
    other = SqlStore(postgres_database_url)
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


# --- reload -----------------------------------------------------------------------------------


def reloadable(daemon: Daemon) -> Daemon:
    """The daemon as :meth:`Daemon.run` leaves it for a reload: a runtime and a scheduler
    (never started: no job runs in these tests)."""
    assert daemon.config and daemon.store and daemon.metrics
    signer = LinkSigner(daemon.store.secret("links"), daemon.config.server.base_url)
    daemon.signer = signer
    daemon.runtime = Runtime(
        config=daemon.config,
        store=daemon.store,
        metrics=daemon.metrics,
        clock=daemon.clock,
        links=signer,
        healthy=daemon.healthy,
    )
    daemon.scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=UTC)
    daemon.metrics.config_reload_ok.set(1)
    return daemon


def gauge(daemon: Daemon, name: str) -> float | None:
    assert daemon.metrics is not None
    return daemon.metrics.registry.get_sample_value(name)


def edit(daemon: Daemon, old: str, new: str) -> None:
    text = daemon.config_path.read_text()
    assert old in text
    daemon.config_path.write_text(text.replace(old, new))


async def test_a_reload_that_changes_the_listen_address_is_refused(daemon: Daemon) -> None:
    """The listener stays bound to the old port, so applying the new server.listen would put
    links to a port where nothing listens in every message: the whole reload is refused with
    an error naming server.listen, the old config stays, the reload gauge reads 0 (issue 5,
    defect 7)."""
    reloadable(daemon)
    running = daemon.config
    edit(daemon, 'listen: "127.0.0.1:9587"', 'listen: "127.0.0.1:9588"')
    edit(daemon, "interval: 2s", "interval: 3s")
    with capture_logs() as logs:
        errors = await daemon.reload()
    assert errors == [
        f"{daemon.config_path}: server.listen: changed, which takes a restart (the HTTP "
        "listener stays bound to the old address); reload refused, the running config is "
        "kept: restart driftowner to apply it"
    ]
    assert daemon.config is running and daemon.runtime and daemon.runtime.config is running
    assert gauge(daemon, "driftowner_config_last_reload_successful") == 0
    assert [entry["log_level"] for entry in logs if "reload" in entry["event"]] == ["error"]


async def test_a_reload_that_changes_the_store_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    """storage.url takes a restart too (the running store stays open): refused the same way
    rather than half-applied with a warning."""
    reloadable(daemon)
    running = daemon.config
    edit(daemon, f"sqlite:///{tmp_path}/s.db", f"sqlite:///{tmp_path}/other.db")
    errors = await daemon.reload()
    assert len(errors) == 1 and errors[0].startswith(f"{daemon.config_path}: storage.url: ")
    assert daemon.config is running
    assert gauge(daemon, "driftowner_config_last_reload_successful") == 0


async def test_a_listen_pinned_by_the_command_line_ignores_the_file(tmp_path: Path) -> None:
    """With --listen, the file's server.listen does not choose the address: a reload that
    changes it applies (the rest of the config included), keeping the pinned address."""
    config = tmp_path / "demo.yaml"
    text = (ROOT / "config" / "demo.yaml").read_text()
    config.write_text(text.replace("sqlite:///var/demo.db", f"sqlite:///{tmp_path}/s.db"))
    daemon = Daemon(config, listen="127.0.0.1:9999")
    daemon.config = daemon._load()
    daemon.store = SqlStore(daemon.config.storage.url)
    daemon.store.open()
    daemon.metrics = Metrics(daemon.store, daemon.clock)
    daemon.sources, daemon.channels = daemon._build_edges(daemon.config)
    reloadable(daemon)
    edit(daemon, 'listen: "127.0.0.1:9587"', 'listen: "127.0.0.1:9588"')
    edit(daemon, "interval: 2s", "interval: 3s")
    assert await daemon.reload() == []
    assert daemon.config.server.listen == "127.0.0.1:9999"
    assert daemon.config.evaluation.interval == timedelta(seconds=3)
    assert gauge(daemon, "driftowner_config_last_reload_successful") == 1
    daemon.store.close()


async def test_open_listen_warnings_are_logged_at_reload_and_at_start(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config listening on every interface without api_token or external_url is valid, but
    the daemon says so loudly, at start (before it binds) and at every reload."""
    daemon.listen_override = "0.0.0.0:9587"
    daemon.config = daemon._load()
    reloadable(daemon)
    with capture_logs() as logs:
        assert await daemon.reload() == []
    warned = [e["warning"] for e in logs if e["event"] == "config warning"]
    assert [line.split(": ")[1] for line in warned] == ["server.external_url", "server.api_token"]
    assert all(e["log_level"] == "warning" for e in logs if e["event"] == "config warning")

    def cannot_bind(host: str, port: int) -> socket.socket:
        raise OSError("not in a test")  # no test binds a non-loopback address

    monkeypatch.setattr(daemon_module, "_bind", cannot_bind)
    starting = Daemon(daemon.config_path, listen="0.0.0.0:9587")
    with capture_logs() as logs:
        assert await starting.run() == 1
    warned = [e["warning"] for e in logs if e["event"] == "config warning"]
    assert [line.split(": ")[1] for line in warned] == ["server.external_url", "server.api_token"]


async def test_post_reload_answers_reloaded_false_when_listen_changed(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through HTTP: POST /-/reload of a changed server.listen answers ``reloaded: false``
    with the error (it used to answer ``reloaded: true``), and /metrics shows the failed
    reload."""
    monkeypatch.setenv("DRIFTOWNER_SERVER__API_TOKEN", "reload-token")
    daemon.config = daemon._load()
    reloadable(daemon)
    assert daemon.runtime is not None
    loop = asyncio.get_running_loop()
    daemon.runtime.reload = lambda: asyncio.run_coroutine_threadsafe(daemon.reload(), loop).result(
        30
    )
    edit(daemon, 'listen: "127.0.0.1:9587"', 'listen: "127.0.0.1:9588"')
    with TestClient(create_app(daemon.runtime)) as client:
        answer = await asyncio.to_thread(
            client.post, "/-/reload", headers={"Authorization": "Bearer reload-token"}
        )
        metrics = await asyncio.to_thread(client.get, "/metrics")
    assert answer.status_code == 422
    assert answer.json()["reloaded"] is False
    assert "server.listen: changed" in answer.json()["errors"][0]
    assert "driftowner_config_last_reload_successful 0.0" in metrics.text


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
    backlog = {f"n-{i:03d}" for i in range(450)}
    rows = daemon.store.notifications("inc-1")
    assert backlog <= {n.id for n in rows if n.delivered_at}
    # Left: only the pages this tick made, held group_wait for others to join (the console
    # log channel groups like the others).
    held = [n for n in rows if n.delivered_at is None]
    assert not {n.id for n in held} & backlog
    assert daemon.store.outbox_pending() <= len(held)  # some of them superseded


class WakeCounter:
    """Stands in for the running delivery loop: counts the times it is woken."""

    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


async def test_a_commit_that_queues_pages_wakes_the_running_delivery_loop_at_once(
    daemon: Daemon,
) -> None:
    """While the delivery loop runs, the escalation job (in a worker thread) wakes it as each
    commit that queued pages lands, not only once the whole job is done: a storm's first pages
    go out while the rest is still being written. One commit here: woken by it, then once
    more when the job ends."""
    assert daemon.store is not None and daemon.config is not None
    daemon.store.apply(Changes(opened=[incident(system="fraud-scoring", owner="alice")]))
    await daemon.lead()
    counter = WakeCounter()
    daemon._deliverer = counter  # type: ignore[assignment]
    daemon._delivering = asyncio.create_task(asyncio.sleep(3600))  # "a loop runs"
    try:
        await daemon.escalate_and_deliver()
        await asyncio.sleep(0)  # the thread's wake-up is handed to the loop
    finally:
        daemon._delivering.cancel()
        daemon._delivering = None
    assert daemon.store.notifications("inc-1")  # the job queued pages, in one commit
    assert counter.wakes == 2
