"""The SQLite store against a real database file: transactions, the one-unresolved-incident
index, optimistic versions, the append-only event log, pending conditions, outbox leases,
restarts, WAL and the schema version check."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from driftowner.model import Event, Pending
from driftowner.store import Changes, Conflict, Store, StoreError
from driftowner.store.migrations import SCHEMA_VERSION
from tests.unit.factories import SYSTEM, T0, at, incident, minutes, notification

LEASE = timedelta(minutes=2)


NEWER = SCHEMA_VERSION + 1


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "driftowner.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    opened = Store(f"sqlite:///{db_path}")
    opened.open()
    yield opened
    opened.close()


def _reopen(store: Store) -> Store:
    store.close()
    again = Store(store.url)
    again.open()
    return again


def _event(kind: str = "note", minute: float = 0, incident_id: str = "inc-1") -> Event:
    return Event(incident_id, at(minute), kind, "auto", f"{kind} at {minute}")  # type: ignore[arg-type]


def test_construction_does_no_io(db_path: Path) -> None:
    """Building a Store touches nothing; ``open`` creates the file (and its directory)."""
    unopened = Store(f"sqlite:///{db_path}")
    assert not db_path.exists()
    unopened.open()
    assert db_path.exists()
    unopened.close()


def test_apply_opens_an_incident_with_its_events_notifications_and_pending(store: Store) -> None:
    """One ``apply`` writes the incident, its events, its notifications and the pending
    conditions together; the incident reads back equal, at version 0."""
    opened = incident()
    store.apply(
        Changes(
            opened=[opened],
            events=[_event("opened")],
            notifications=[notification("n-1"), notification("n-2", channel="email")],
            pending_system=SYSTEM,
            pending=[Pending(SYSTEM, "drift:null_rate", T0, at(1))],
        )
    )
    assert store.incident("inc-1") == opened
    assert store.incidents(unresolved=True) == [opened]
    assert [e.kind for e in store.events("inc-1")] == ["opened"]
    assert [n.id for n in store.notifications("inc-1")] == ["n-1", "n-2"]
    assert store.notifications("inc-1")[0] == notification("n-1")
    assert store.pending(SYSTEM) == {
        (SYSTEM, "drift:null_rate"): Pending(SYSTEM, "drift:null_rate", T0, at(1))
    }
    assert store.outbox_pending() == 2
    assert store.incident("nope") is None


def test_apply_updates_and_bumps_the_version(store: Store) -> None:
    """An update based on the current version is written and the version goes up by one."""
    store.apply(Changes(opened=[incident()]))
    current = store.incident("inc-1")
    assert current is not None and current.version == 0
    acked = replace(current, state="acknowledged", acknowledged_by="alice", acknowledged_at=at(3))
    store.apply(Changes(updated=[acked], events=[_event("acknowledged", 3)]))
    stored = store.incident("inc-1")
    assert stored == replace(acked, version=1)
    assert store.incidents(state="acknowledged") == [stored]
    assert store.incidents(state="open") == []


def test_an_update_from_a_stale_read_is_a_conflict_and_writes_nothing(store: Store) -> None:
    """Two writers read version 0; the first write wins, the second raises Conflict and none
    of its changes (not even its events) are written."""
    store.apply(Changes(opened=[incident()]))
    first = store.incident("inc-1")
    second = store.incident("inc-1")
    assert first is not None and second is not None
    store.apply(
        Changes(updated=[replace(first, state="acknowledged")], events=[_event("acknowledged")])
    )
    with pytest.raises(Conflict, match="inc-1"):
        store.apply(
            Changes(
                updated=[replace(second, state="resolved", resolved_at=at(1))],
                events=[_event("resolved", 1)],
                notifications=[notification("n-9")],
            )
        )
    stored = store.incident("inc-1")
    assert stored is not None and (stored.state, stored.version) == ("acknowledged", 1)
    assert [e.kind for e in store.events("inc-1")] == ["acknowledged"]
    assert store.notifications("inc-1") == []


def test_the_unique_index_refuses_a_second_unresolved_incident_and_rolls_back(store: Store) -> None:
    """Opening a second unresolved incident for the same fingerprint is refused by the
    database, and the whole transaction (events, notifications, pending) rolls back."""
    store.apply(Changes(opened=[incident()]))
    with pytest.raises((Conflict, sa.exc.IntegrityError)):
        store.apply(
            Changes(
                opened=[incident(id="inc-2")],
                events=[_event("opened", 1, "inc-1")],
                notifications=[notification("n-1")],
                pending_system=SYSTEM,
                pending=[Pending(SYSTEM, "drift:null_rate", T0, T0)],
            )
        )
    assert store.incident("inc-2") is None
    assert store.events("inc-1") == []
    assert store.notifications("inc-1") == []
    assert store.pending(SYSTEM) == {}


def test_a_second_unresolved_incident_for_a_fingerprint_is_a_conflict(store: Store) -> None:
    """The refused duplicate surfaces as the store's own Conflict, the error callers handle."""
    store.apply(Changes(opened=[incident()]))
    with pytest.raises(Conflict):
        store.apply(Changes(opened=[incident(id="inc-2")]))


def test_a_resolved_incident_frees_its_fingerprint(store: Store) -> None:
    """Once resolved, the same fingerprint may open again; both incidents are kept."""
    store.apply(Changes(opened=[incident()]))
    current = store.incident("inc-1")
    assert current is not None
    done = replace(current, state="resolved", resolved_at=at(10), resolved_by="alice")
    store.apply(Changes(updated=[done]))
    store.apply(Changes(opened=[incident(id="inc-2", opened_at=at(20))]))
    assert [i.id for i in store.incidents(system=SYSTEM)] == ["inc-1", "inc-2"]
    assert [i.id for i in store.incidents(unresolved=True)] == ["inc-2"]


def test_incident_filters(store: Store) -> None:
    """Incidents filter by state, owner, system, unresolved and opening time, oldest first."""
    store.apply(
        Changes(
            opened=[
                incident(id="inc-b", rule="r2", opened_at=at(20), owner="bob"),
                incident(id="inc-a", rule="r1", opened_at=at(10)),
                incident(id="inc-c", rule="r3", opened_at=at(30), system="churn"),
                incident(
                    id="inc-d", rule="r4", opened_at=at(40), state="resolved", resolved_at=at(50)
                ),
            ]
        )
    )
    assert [i.id for i in store.incidents()] == ["inc-a", "inc-b", "inc-c", "inc-d"]
    assert [i.id for i in store.incidents(owner="bob")] == ["inc-b"]
    assert [i.id for i in store.incidents(system="churn")] == ["inc-c"]
    assert [i.id for i in store.incidents(unresolved=True)] == ["inc-a", "inc-b", "inc-c"]
    assert [i.id for i in store.incidents(state="resolved")] == ["inc-d"]
    assert [i.id for i in store.incidents(opened_since=at(30))] == ["inc-c", "inc-d"]


def test_events_are_appended_in_order(store: Store) -> None:
    """Events come back in the order they were appended, across transactions, whatever their
    timestamps; later writes never rewrite earlier events."""
    store.apply(Changes(opened=[incident()], events=[_event("opened", 0), _event("notified", 0)]))
    store.apply(Changes(events=[_event("note", 5), _event("acknowledged", 3)]))
    store.apply(Changes(events=[_event("resolved", 9)]))
    assert [(e.kind, e.at) for e in store.events("inc-1")] == [
        ("opened", at(0)),
        ("notified", at(0)),
        ("note", at(5)),
        ("acknowledged", at(3)),
        ("resolved", at(9)),
    ]
    assert store.events("inc-1")[0] == _event("opened", 0)


def test_pending_conditions_are_replaced_per_system(store: Store) -> None:
    """Setting a system's pending conditions replaces that system's set only; changes that do
    not name a system leave pending conditions alone."""
    store.apply(
        Changes(
            pending_system=SYSTEM,
            pending=[Pending(SYSTEM, "drift:a", T0, T0), Pending(SYSTEM, "drift:b", T0, T0)],
        )
    )
    store.apply(Changes(pending_system="churn", pending=[Pending("churn", "drift:c", T0, T0)]))
    store.apply(Changes(pending_system=SYSTEM, pending=[Pending(SYSTEM, "drift:b", T0, at(1))]))
    store.apply(Changes(events=[]))
    assert store.pending(SYSTEM) == {(SYSTEM, "drift:b"): Pending(SYSTEM, "drift:b", T0, at(1))}
    assert list(store.pending("churn")) == [("churn", "drift:c")]
    store.apply(Changes(pending_system=SYSTEM, pending=[]))
    assert store.pending(SYSTEM) == {}
    assert list(store.pending("churn")) == [("churn", "drift:c")]


def _outbox(store: Store, *notifications_: object) -> None:
    store.apply(Changes(opened=[incident()], notifications=list(notifications_)))  # type: ignore[arg-type]


def test_lease_due_claims_once_until_the_lease_expires(store: Store) -> None:
    """Due notifications are claimed oldest first; a claimed one is not handed out again
    until its lease runs out (a worker that died), then it is."""
    _outbox(store, notification("n-2", created_at=at(1)), notification("n-1", created_at=at(0)))
    now = at(1)
    assert [n.id for n in store.lease_due(now, LEASE)] == ["n-1", "n-2"]
    assert store.lease_due(now, LEASE) == []
    assert store.lease_due(now + LEASE - timedelta(seconds=1), LEASE) == []
    assert [n.id for n in store.lease_due(now + LEASE, LEASE)] == ["n-1", "n-2"]


def test_lease_due_skips_what_is_not_due_and_honours_the_limit(store: Store) -> None:
    """Notifications whose next attempt lies ahead are not claimed; ``limit`` caps a claim."""
    _outbox(
        store,
        notification("n-1"),
        notification("n-2", created_at=at(0.5)),
        notification("n-later", next_attempt_at=at(2)),
    )
    assert [n.id for n in store.lease_due(at(1), LEASE, limit=1)] == ["n-1"]
    assert [n.id for n in store.lease_due(at(1), LEASE)] == ["n-2"]
    assert store.lease_due(at(1.5), LEASE) == []
    assert [n.id for n in store.lease_due(at(2), LEASE)] == ["n-later"]


def test_mark_delivered_retry_and_failed(store: Store) -> None:
    """Delivered and failed notifications leave the queue for good; a retried one comes back
    at its next attempt time; each outcome counts one attempt and keeps the error."""
    _outbox(store, notification("n-ok"), notification("n-retry"), notification("n-fail"))
    assert len(store.lease_due(T0, LEASE)) == 3
    store.mark_delivered("n-ok", at(1))
    store.mark_retry("n-retry", at(1), "503 Service Unavailable", at(1) + timedelta(seconds=5))
    store.mark_failed("n-fail", at(1), "invalid_payload")
    by_id = {n.id: n for n in store.notifications("inc-1")}
    assert (by_id["n-ok"].delivered_at, by_id["n-ok"].attempts, by_id["n-ok"].last_error) == (
        at(1),
        1,
        None,
    )
    retry = by_id["n-retry"]
    assert (retry.attempts, retry.last_error) == (1, "503 Service Unavailable")
    assert retry.next_attempt_at == at(1) + timedelta(seconds=5)
    assert retry.delivered_at is None and retry.failed_at is None
    failed = by_id["n-fail"]
    assert (failed.failed_at, failed.attempts, failed.last_error) == (at(1), 1, "invalid_payload")
    assert store.outbox_pending() == 1
    assert store.lease_due(at(1) + timedelta(seconds=4), LEASE) == []
    assert [n.id for n in store.lease_due(at(1) + timedelta(seconds=5), LEASE)] == ["n-retry"]
    assert [n.id for n in store.lease_due(at(600), LEASE)] == ["n-retry"]


def test_everything_survives_a_restart(store: Store) -> None:
    """Closing and reopening the store (a restart) keeps incidents, versions, events,
    notifications with their outbox state, and pending conditions."""
    store.apply(
        Changes(
            opened=[incident()],
            events=[_event("opened")],
            notifications=[notification("n-1"), notification("n-2")],
            pending_system=SYSTEM,
            pending=[Pending(SYSTEM, "drift:null_rate", T0, at(1))],
        )
    )
    current = store.incident("inc-1")
    assert current is not None
    store.apply(Changes(updated=[replace(current, escalation_steps_done=1)]))
    store.lease_due(T0, LEASE)
    store.mark_delivered("n-1", at(1))
    again = _reopen(store)
    try:
        stored = again.incident("inc-1")
        assert stored == replace(incident(), escalation_steps_done=1, version=1)
        assert [e.kind for e in again.events("inc-1")] == ["opened"]
        assert again.outbox_pending() == 1
        assert [n.id for n in again.lease_due(at(1) + LEASE, LEASE)] == ["n-2"]
        assert list(again.pending(SYSTEM)) == [(SYSTEM, "drift:null_rate")]
    finally:
        again.close()


def test_the_database_runs_in_wal_mode(store: Store, db_path: Path) -> None:
    """SQLite is switched to write-ahead logging (readers never block the writer)."""
    store.apply(Changes(opened=[incident()]))
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_newer_schema_is_refused(store: Store, db_path: Path) -> None:
    """A database written by a newer driftowner (schema version above ours) is refused with a
    StoreError naming the version; an equal version opens."""
    store.close()
    again = Store(store.url)
    again.open()
    again.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "UPDATE driftowner_meta SET value = ? WHERE key = 'schema_version'", (str(NEWER),)
        )
    newer = Store(store.url)
    with pytest.raises(StoreError, match=f"schema version {NEWER}"):
        newer.open()
    newer.close()


def test_refusing_a_newer_schema_leaves_that_database_untouched(
    store: Store, db_path: Path
) -> None:
    """A newer database is refused without being written to: a table the newer schema no
    longer has is not recreated by the older driftowner."""
    store.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "UPDATE driftowner_meta SET value = ? WHERE key = 'schema_version'", (str(NEWER),)
        )
        conn.execute("DROP TABLE pending_conditions")
    newer = Store(store.url)
    with pytest.raises(StoreError):
        newer.open()
    with sqlite3.connect(db_path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "pending_conditions" not in tables


def test_an_unusable_database_is_a_store_error(tmp_path: Path) -> None:
    """A file that is not a database is refused with a StoreError, not a driver exception."""
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not a database" * 100)
    broken = Store(f"sqlite:///{bogus}")
    with pytest.raises(StoreError, match="cannot open the store"):
        broken.open()
    assert broken.ping() is False


def test_ping_answers_true_on_a_working_store(store: Store) -> None:
    """``ping`` is true while the database answers."""
    assert store.ping() is True


def test_times_keep_microseconds(store: Store) -> None:
    """Timestamps survive the store to the microsecond."""
    precise = at(0) + timedelta(microseconds=123457)
    store.apply(Changes(opened=[incident(opened_at=precise, acknowledged_at=precise + minutes(1))]))
    stored = store.incident("inc-1")
    assert stored is not None
    assert stored.opened_at == precise
    assert stored.acknowledged_at == precise + minutes(1)


def test_timings_match_the_incidents_and_keep_old_unresolved_ones(store: Store) -> None:
    """The plain-column timings the report and /metrics read agree with the full incidents,
    follow acks and resolutions, and a window keeps every unresolved incident however old."""
    old_open = incident(id="inc-old", rule="drift:old", opened_at=at(-60 * 24 * 40))
    old_resolved = incident(
        id="inc-done",
        rule="drift:done",
        opened_at=at(-60 * 24 * 40),
        state="resolved",
        resolved_at=at(-60 * 24 * 39),
    )
    recent = incident(id="inc-new", opened_at=at(0))
    store.apply(Changes(opened=[old_open, old_resolved, recent]))
    acked = replace(
        store.incident("inc-new"),
        state="acknowledged",  # type: ignore[type-var]
        first_acknowledged_at=at(7),
        acknowledged_at=at(7),
        acknowledged_by="alice",
    )
    store.apply(Changes(updated=[acked]))
    everything = {(t.opened_at, t.state): t for t in store.timings()}
    assert len(everything) == 3
    mine = everything[(at(0).timestamp(), "acknowledged")]
    assert mine == acked.timing()
    assert mine.time_to_acknowledge == 7 * 60
    window = store.timings(opened_since=at(-60 * 24 * 30))
    assert {t.opened_at for t in window} == {at(0).timestamp(), at(-60 * 24 * 40).timestamp()}
    assert {t.state for t in window} == {"open", "acknowledged"}


def test_recently_resolved_gives_the_newest_resolved_incident_per_fingerprint(
    store: Store,
) -> None:
    """Reopen candidates: per fingerprint the newest incident resolved since the cut-off;
    older resolutions, unresolved incidents and other systems are left out."""
    older = incident(id="inc-a", state="resolved", opened_at=at(0), resolved_at=at(10))
    newer = incident(id="inc-b", state="resolved", opened_at=at(20), resolved_at=at(30))
    long_ago = incident(
        id="inc-c",
        rule="drift:null_rate",
        state="resolved",
        opened_at=at(-500),
        resolved_at=at(-400),
    )
    still_open = incident(id="inc-d", rule="drift:adoption", opened_at=at(25))
    store.apply(Changes(opened=[older, newer, long_ago, still_open]))
    found = store.recently_resolved(SYSTEM, at(5))
    assert {fp: i.id for fp, i in found.items()} == {(SYSTEM, "drift:accuracy"): "inc-b"}
    assert store.recently_resolved("other-system", at(-1000)) == {}


V1_SCHEMA = """
CREATE TABLE driftowner_meta (key VARCHAR(64) PRIMARY KEY, value VARCHAR(256) NOT NULL);
INSERT INTO driftowner_meta VALUES ('schema_version', '1');
CREATE TABLE incidents (id VARCHAR(32) PRIMARY KEY, system VARCHAR(256) NOT NULL,
  rule VARCHAR(512) NOT NULL, owner VARCHAR(256) NOT NULL, state VARCHAR(16) NOT NULL,
  opened_at FLOAT NOT NULL, resolved_at FLOAT, version INTEGER NOT NULL, body TEXT NOT NULL);
CREATE UNIQUE INDEX one_unresolved_per_fingerprint ON incidents (system, rule)
  WHERE state != 'resolved';
CREATE TABLE outbox (id VARCHAR(32) PRIMARY KEY, incident_id VARCHAR(32) NOT NULL
  REFERENCES incidents (id), channel VARCHAR(128) NOT NULL, recipient VARCHAR(256) NOT NULL,
  address VARCHAR(512) NOT NULL, message TEXT NOT NULL, created_at FLOAT NOT NULL,
  attempts INTEGER NOT NULL, next_attempt_at FLOAT, leased_until FLOAT, delivered_at FLOAT,
  failed_at FLOAT, last_error TEXT);
"""


def test_a_version_1_store_is_migrated_in_place_and_keeps_its_incidents(db_path: Path) -> None:
    """A store written by the first schema (no plain timing columns, no superseded outbox
    state) opens: it is migrated to the current version, its incidents keep every field, and
    the report's timings are backfilled from the stored bodies."""
    from driftowner.store.codec import incident_to_json

    acked = incident(
        state="acknowledged",
        first_acknowledged_at=at(7),
        acknowledged_at=at(7),
        acknowledged_by="alice",
    )
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.executescript(V1_SCHEMA)
        conn.execute(
            "INSERT INTO incidents VALUES (?, ?, ?, ?, ?, ?, NULL, 3, ?)",
            (
                acked.id,
                acked.system,
                acked.rule,
                acked.owner,
                acked.state,
                acked.opened_at.timestamp(),
                incident_to_json(acked),
            ),
        )
    store = Store(f"sqlite:///{db_path}")
    store.open()
    assert store.incident(acked.id) == replace(acked, version=3)
    (timing,) = store.timings()
    assert timing == acked.timing()
    assert store.outbox_pending() == 0
    store.close()
    with sqlite3.connect(db_path) as conn:
        (version,) = conn.execute(
            "SELECT value FROM driftowner_meta WHERE key = 'schema_version'"
        ).fetchone()
    assert int(version) == SCHEMA_VERSION
