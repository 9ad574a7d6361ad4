"""A full disk under the SQLite store: the daemon keeps leading, says what is wrong (503s with
the reason on /readyz, /healthz and an ack, ``driftowner_store_writable 0``, one error log per
change), loses nothing, and once space returns records what it could not, once.

SQLite's ``PRAGMA max_page_count`` makes a write that needs a new page fail with the real
SQLITE_FULL error ("database or disk is full"), no root needed. As root, a small tmpfs filled
to the last byte is the real thing: the lease renewal fails too (its WAL frames have no room).
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from driftowner.api import Runtime, create_app
from driftowner.daemon import Daemon
from driftowner.links import LinkSigner
from driftowner.metrics import Metrics
from driftowner.store import SqlStore
from driftowner.store import sql as store_tables

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TOKEN = "admin-token"
FULL = "database or disk is full"

CONFIG = """
server: {{listen: "127.0.0.1:9", api_token: "{token}"}}
storage: {{url: "sqlite:///{db}"}}
evaluation: {{interval: 1m, escalation_interval: 10s}}
sources:
  history: {{type: file, path: "{csv}"}}
owners:
  alice: {{name: Alice Chen, email: alice@example.com}}
  bob: {{name: Bob Diaz, email: bob@example.com}}
channels:
  console: {{type: log, group_wait: 0s}}  # each page on its own, as this test counts them
escalation_chains:
  standard:
    steps:
      - notify: owner
        via: [console]
      - after: 10m
        notify: [bob]
        via: [console]
systems:
  fraud-scoring:
    owner: alice
    escalation: standard
    signals:
      accuracy:
        {{layer: model, source: history, query: accuracy, bad: down,
         detect: {{threshold: {{min: 0.9}}}}}}
      latency:
        {{layer: engineering, source: history, query: latency, bad: up,
         detect: {{threshold: {{max: 0.5}}}}, for: 5m}}
"""


class Clock:
    """The daemon's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def write_history(path: Path) -> None:
    """A sample every 10 s from 10 minutes before T0 to 30 minutes after: accuracy is low
    throughout (a drift incident from the first cycle); latency goes above its maximum at
    T0 + 2m (a drift incident once that has held for 5 minutes)."""
    lines = ["timestamp,series,value"]
    for second in range(-600, 1800, 10):
        at = (T0 + timedelta(seconds=second)).timestamp()
        lines.append(f"{at:.0f},accuracy,0.7")
        lines.append(f"{at:.0f},latency,{0.9 if second >= 120 else 0.2}")
    path.write_text("\n".join(lines) + "\n")


class DiskLimit:
    """Fills the store's file as a full disk would: :meth:`fill` caps it at its current size
    (``max_page_count``: a write that needs one more page fails with SQLITE_FULL) and then
    uses up the room left in its pages with filler rows of a system nobody configured, so
    every write that adds bytes fails; only writes that rewrite a row in place at the same
    size (a lease renewal) still fit, as they do on a real full disk while the WAL has room.
    :meth:`free` lifts the cap; the filler stays, like the file that filled the disk."""

    FILLER = "zz-filler"

    def __init__(self, store: SqlStore) -> None:
        self._capped = False
        self._path = sa.make_url(store.url).database
        engine = store._engine
        assert engine is not None
        # max_page_count lasts one connection: set it on every one the store checks out.
        sa.event.listen(engine, "checkout", self._cap)

    def _cap(self, dbapi_connection: sqlite3.Connection, _record: object, _proxy: object) -> None:
        # 1: SQLite raises it to the file's size now. 2**31 - 2: SQLite's own default.
        pages = 1 if self._capped else 2_147_483_646
        dbapi_connection.execute(f"PRAGMA max_page_count={pages}")

    def fill(self) -> None:
        self._capped = True
        raw = sqlite3.connect(self._path, isolation_level=None)
        try:
            raw.execute("PRAGMA max_page_count=1")
            raw.execute("PRAGMA foreign_keys=OFF")
            serial = itertools.count()  # unique keys: random short ones collided (UNIQUE failed)
            for table in store_tables.metadata.sorted_tables:
                for length in (2000, 400, 80, 16, 1):
                    while _insert_filler(raw, table, length, f"{self.FILLER}-{next(serial)}"):
                        pass
        finally:
            raw.close()

    def free(self) -> None:
        self._capped = False


def _insert_filler(raw: sqlite3.Connection, table: sa.Table, length: int, key: str) -> bool:
    """One filler row in ``table`` with text at least ``length`` long, every text column
    starting with ``key`` (unique per row); False once the file is full."""
    row: dict[str, object] = {}
    for column in table.columns:
        if column.autoincrement is True:
            continue
        if isinstance(column.type, sa.Float | sa.Integer):
            row[column.name] = 1
        else:
            row[column.name] = key.ljust(length, "x")
    if "state" in row:
        row["state"] = "resolved"  # not unresolved: the daemon never reads the filler
    if "system" in row:
        row["system"] = DiskLimit.FILLER
    names = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    try:
        raw.execute(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", list(row.values()))
    except sqlite3.OperationalError as error:
        if "full" not in str(error):
            raise
        return False
    return True


@dataclass
class Running:
    daemon: Daemon
    client: TestClient
    clock: Clock
    disk: DiskLimit


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    """A daemon over a SQLite store (its jobs run by the test, on the test's clock) and its
    HTTP app."""
    csv = tmp_path / "history.csv"
    write_history(csv)
    config = tmp_path / "driftowner.yaml"
    config.write_text(CONFIG.format(token=TOKEN, db=tmp_path / "s.db", csv=csv))
    yield from _running(config)


def _running(config: Path) -> Iterator[Running]:
    clock = Clock()
    daemon = Daemon(config, clock=clock)
    daemon.config = daemon._load()
    daemon.holder = "test-host/127.0.0.1:9"
    daemon.store = SqlStore(daemon.config.storage.url)
    daemon.store.open()
    daemon.metrics = Metrics(daemon.store, clock)
    daemon.sources, daemon.channels = daemon._build_edges(daemon.config)
    disk = DiskLimit(daemon.store)
    daemon.signer = LinkSigner(daemon.store.secret("links"), daemon.config.server.base_url)
    runtime = Runtime(
        config=daemon.config,
        store=daemon.store,
        metrics=daemon.metrics,
        clock=clock,
        links=daemon.signer,
        healthy=daemon.healthy,
    )
    with TestClient(create_app(runtime)) as client:
        yield Running(daemon, client, clock, disk)
    daemon.store.close()


async def _cycle(r: Running, at: timedelta) -> None:
    """What the scheduler runs at ``T0 + at``: renew the lease, then a leader's evaluation
    (which escalates and delivers after it)."""
    r.clock.now = T0 + at
    await r.daemon.lead()
    if r.daemon.leading:
        await r.daemon.evaluate()


def _ack(r: Running, incident_id: str) -> tuple[int, dict[str, object]]:
    response = r.client.post(
        f"/api/v1/incidents/{incident_id}/ack",
        json={"by": "alice"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    return response.status_code, response.json()


def _writable(r: Running) -> float:
    assert r.daemon.metrics is not None
    for line in generate_latest(r.daemon.metrics.registry).decode().splitlines():
        if line.startswith("driftowner_store_writable "):
            return float(line.split()[1])
    raise AssertionError("driftowner_store_writable is not exported")


async def test_a_full_disk_is_reported_and_nothing_is_lost_once_space_returns(
    running: Running,
) -> None:
    """With the store full, the opening the evaluation decides, the ack and the escalation
    step due all fail with SQLITE_FULL: the instance keeps leading, /readyz, /healthz and
    the ack answer 503 with the reason, the gauge says 0, and the error is logged once for
    three failing cycles. Once space returns, the next cycle opens the incident (its
    condition's start kept from before the disk filled), fires the step, delivers, and
    health comes back: one incident per problem, each notification sent once."""
    r = running
    store = r.daemon.store
    assert store is not None
    await _cycle(r, timedelta(0))
    [accuracy] = store.incidents(system="fraud-scoring")
    await _cycle(r, timedelta(minutes=3))  # latency degraded since T0+2m: pending, held 1m
    assert r.client.get("/readyz").status_code == 200

    r.disk.fill()
    with capture_logs() as logs:
        for minute in (6, 9, 11):  # latency's 5m run out at T0+8m; bob's step due at T0+10m
            await _cycle(r, timedelta(minutes=minute))
        status, body = _ack(r, accuracy.id)

    assert r.daemon.leading  # the only instance never demotes itself
    assert status == 503
    assert body == {"detail": f"the store cannot be written: {FULL}; nothing was changed"}
    ready = r.client.get("/readyz")
    assert ready.status_code == 503 and FULL in ready.text
    health = r.client.get("/healthz")
    assert health.status_code == 503 and FULL in health.text
    assert _writable(r) == 0  # and 1 again below
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["the store cannot be written"] * len(errors)
    assert len(errors) == len({e["work"] for e in errors}), "logged once per kind of write"
    assert not [e for e in logs if e.get("exc_info")], "no traceback per cycle"
    [still] = store.incidents(system="fraud-scoring")
    assert still.state == "open" and still.escalation_steps_done == 1

    r.disk.free()
    with capture_logs() as logs:
        await _cycle(r, timedelta(minutes=12))
    assert {e["event"] for e in logs if e["log_level"] == "info"} >= {
        "the store can be written again"
    }
    assert r.client.get("/readyz").status_code == 200
    assert r.client.get("/healthz").status_code == 200
    assert _writable(r) == 1
    by_rule = {i.rule: i for i in store.incidents(system="fraud-scoring")}
    assert sorted(by_rule) == ["drift:accuracy", "drift:latency"]
    assert by_rule["drift:accuracy"].escalation_steps_done == 2
    opened = [e for e in store.events(by_rule["drift:latency"].id) if e.kind == "opened"]
    assert len(opened) == 1
    for incident in by_rule.values():
        sent = store.notifications(incident.id)
        assert sent and all(n.delivered_at is not None for n in sent)
        assert len({(n.recipient, n.message.purpose) for n in sent}) == len(sent)
    assert store.outbox_pending() == 0
    assert _ack(r, accuracy.id)[0] == 200


async def test_an_ack_on_a_full_disk_changes_nothing_and_succeeds_once_space_returns(
    running: Running,
) -> None:
    """Through the API alone: the refused ack leaves the incident open with no event; the
    same ack once space returns acknowledges it, with exactly one acknowledged event."""
    r = running
    store = r.daemon.store
    assert store is not None
    await _cycle(r, timedelta(0))
    [incident] = store.incidents(system="fraud-scoring")
    events = store.events(incident.id)
    r.disk.fill()
    assert _ack(r, incident.id)[0] == 503
    assert store.events(incident.id) == events
    assert store.incident(incident.id) == incident
    r.disk.free()
    assert _ack(r, incident.id)[0] == 200
    kinds = [e.kind for e in store.events(incident.id)]
    assert kinds.count("acknowledged") == 1


# -- a real full disk (tmpfs, as root) -----------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted afterwards; skipped when this user may not mount one."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"mount refused: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill_disk(path: Path) -> None:
    """Write zeros to ``path`` until the disk has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                continue
    finally:
        os.close(fd)


async def test_on_a_real_full_disk_the_lease_fails_and_the_only_instance_keeps_leading(
    tmp_path: Path, tmpfs: Path
) -> None:
    """The store on a tmpfs filled to the last byte: the lease renewal itself fails (the
    defect: the instance became a follower and answered 200). It keeps leading, readiness
    and health say why, and once the filler is removed the next cycle records the incident
    that opened meanwhile; the file passes SQLite's integrity check."""
    csv = tmp_path / "history.csv"
    write_history(csv)
    config = tmp_path / "driftowner.yaml"
    config.write_text(CONFIG.format(token=TOKEN, db=tmpfs / "s.db", csv=csv))
    for r in _running(config):
        store = r.daemon.store
        assert store is not None
        await _cycle(r, timedelta(0))
        await _cycle(r, timedelta(minutes=3))
        _fill_disk(tmpfs / "filler")
        with capture_logs() as logs:
            for minute in (6, 9):
                await _cycle(r, timedelta(minutes=minute))
        assert r.daemon.leading
        assert r.client.get("/readyz").status_code == 503
        assert r.client.get("/healthz").status_code == 503
        failed = {e.get("work"): e.get("reason") for e in logs if e["log_level"] == "error"}
        assert failed == {"leadership": FULL, "incidents": FULL}
        assert len(store.incidents(system="fraud-scoring")) == 1

        (tmpfs / "filler").unlink()
        await _cycle(r, timedelta(minutes=12))
        assert r.client.get("/readyz").status_code == 200
        assert r.client.get("/healthz").status_code == 200
        rules = sorted(i.rule for i in store.incidents(system="fraud-scoring"))
        assert rules == ["drift:accuracy", "drift:latency"]
    with sqlite3.connect(tmpfs / "s.db") as check:
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
