"""The store's contract, run against each backend (in memory, a SQLite file and a throwaway
PostgreSQL database): transactions, the one-unresolved-incident index, optimistic versions, the
append-only event log, pending conditions, outbox leases (also under concurrent workers),
restarts, the schema version check and migration, the shared secret and the leader lease. Tests
about durability, schemas and the databases themselves run on the SQL backends only (``sql_store``);
a few are about one backend only and say why."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
import sqlalchemy as sa

from driftowner.config import UnsupportedStorageURL as UnsupportedURL
from driftowner.config import parse_storage_url as parse_url
from driftowner.model import (
    Event,
    GroupState,
    GroupThread,
    Handover,
    Incident,
    Pending,
    Silence,
)
from driftowner.store import (
    Changes,
    Conflict,
    Settled,
    SqlStore,
    Store,
    StoreError,
    StoreUnavailable,
)
from driftowner.store import sql as sql_module
from driftowner.store.dialect import create_engine
from driftowner.store.migrations import SCHEMA_VERSION
from tests.integration.postgres_server import (  # noqa: F401 (fixtures)
    BACKENDS,
    PASSWORD_ROLE,
    _free_port,
    contract_store,
    postgres_database_url,
    postgres_url,
    store_url,
)
from tests.integration.test_full_disk import DiskLimit
from tests.unit.factories import SYSTEM, T0, at, incident, message, minutes, notification

LEASE = timedelta(minutes=2)
TTL = timedelta(seconds=30)
WORKERS = 4

NEWER = SCHEMA_VERSION + 1

_T = TypeVar("_T")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """The SQLite file of the ``sqlite`` backend (what ``store_url`` points at)."""
    return tmp_path / "state" / "driftowner.db"


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, db_path: Path) -> Iterator[Store]:
    """An empty store on each backend of the contract suite."""
    with contract_store(request, db_path) as opened:
        yield opened


@pytest.fixture
def sql_store(store_url: str) -> Iterator[SqlStore]:  # noqa: F811 (a fixture)
    """An empty store on each SQL backend, for what only a database has: restarts, schema
    versions, several connections, refused writes."""
    opened = SqlStore(store_url)
    opened.open()
    yield opened
    opened.close()


def _instances(store: Store, count: int) -> list[Store]:
    """``count`` users of ``store``'s data at once, as several daemons are: instances of the
    same database, or the one memory store shared between threads."""
    if isinstance(store, SqlStore):
        return [SqlStore(store.url) for _ in range(count)]
    return [store] * count


@pytest.fixture
def sqlite_store(db_path: Path) -> Iterator[SqlStore]:
    """A store on SQLite only, for the tests about SQLite's file and pragmas."""
    opened = SqlStore(f"sqlite:///{db_path}")
    opened.open()
    yield opened
    opened.close()


@pytest.fixture
def raw(store_url: str) -> Iterator[sa.Engine]:  # noqa: F811 (a fixture)
    """A plain engine on the store's database, to set up and inspect what the Store may not."""
    engine = sa.create_engine(parse_url(store_url))
    yield engine
    engine.dispose()


def _concurrently(count: int, work: Callable[[int], _T]) -> list[_T]:
    """Run ``work(0..count-1)`` in threads released at once; their results in order."""
    start = threading.Barrier(count)

    def run(index: int) -> _T:
        start.wait(timeout=10)
        return work(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def _set_version(raw: sa.Engine, version: int) -> None:
    with raw.begin() as conn:
        conn.execute(
            sa.text("UPDATE driftowner_meta SET value = :v WHERE key = 'schema_version'"),
            {"v": str(version)},
        )


def _reopen(store: SqlStore) -> SqlStore:
    store.close()
    again = SqlStore(store.url)
    again.open()
    return again


def _event(kind: str = "note", minute: float = 0, incident_id: str = "inc-1") -> Event:
    return Event(incident_id, at(minute), kind, "auto", f"{kind} at {minute}")  # type: ignore[arg-type]


def test_construction_does_no_io(db_path: Path) -> None:
    """SQLite only (a file appears): building a Store touches nothing; ``open`` creates the
    file (and its directory)."""
    unopened = SqlStore(f"sqlite:///{db_path}")
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
    """The refused duplicate surfaces as the store's own Conflict, the error callers handle,
    with the database's reason on one line (the CLI prints it as one)."""
    store.apply(Changes(opened=[incident()]))
    with pytest.raises(Conflict) as caught:
        store.apply(Changes(opened=[incident(id="inc-2")]))
    assert "\n" not in str(caught.value)
    assert store.incident("inc-2") is None


def test_apply_each_writes_every_set_of_changes_but_the_refused_ones(store: Store) -> None:
    """Many systems' changes go in together (one transaction in a database), each whole or
    not at all: a refused one (a second unresolved incident of a fingerprint) is answered
    with its Conflict and leaves nothing, the ones before and after it are written."""
    store.apply(Changes(opened=[incident()]))
    current = store.incident("inc-1")
    assert current is not None
    refused = store.apply_each(
        [
            Changes(
                opened=[incident(id="inc-2", rule="drift:latency")],
                events=[_event("opened", 1, "inc-2")],
            ),
            Changes(
                opened=[incident(id="inc-3")],
                events=[_event("opened", 1, "inc-3")],
                notifications=[notification("n-3", incident_id="inc-3")],
            ),
            Changes(
                updated=[replace(current, state="acknowledged")],
                events=[_event("acknowledged", 2)],
                pending_system=SYSTEM,
                pending=[Pending(SYSTEM, "drift:null_rate", T0, at(2))],
            ),
        ]
    )
    assert [type(outcome) for outcome in refused] == [type(None), Conflict, type(None)]
    assert [e.kind for e in store.events("inc-2")] == ["opened"]
    assert store.incident("inc-3") is None
    assert store.events("inc-3") == [] and store.notifications("inc-3") == []
    acked = store.incident("inc-1")
    assert acked is not None and (acked.state, acked.version) == ("acknowledged", 1)
    assert store.pending(SYSTEM) == {
        (SYSTEM, "drift:null_rate"): Pending(SYSTEM, "drift:null_rate", T0, at(2))
    }


def test_apply_each_of_a_stale_update_refuses_it_alone(store: Store) -> None:
    """An update from a stale read inside a batch is that entry's Conflict; the batch's other
    changes are written."""
    store.apply(Changes(opened=[incident()]))
    stale = store.incident("inc-1")
    assert stale is not None
    store.apply(Changes(updated=[replace(stale, state="acknowledged")]))
    refused = store.apply_each(
        [
            Changes(updated=[replace(stale, state="resolved", resolved_at=at(1))]),
            Changes(opened=[incident(id="inc-2", rule="drift:latency")]),
        ]
    )
    assert isinstance(refused[0], Conflict) and "inc-1" in str(refused[0])
    assert refused[1] is None
    stored = store.incident("inc-1")
    assert stored is not None and stored.state == "acknowledged"
    assert store.incident("inc-2") is not None


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


def test_the_first_delivered_message_becomes_its_conversations_root(store: Store) -> None:
    """A delivery with a reference starts its conversation (incident, channel, address);
    a later one of the same conversation keeps the first root; other conversations stay
    unthreaded (that the roots survive a restart: ``test_everything_survives_a_restart``)."""
    _outbox(
        store,
        notification("n-1", channel="slack", address="U1"),
        notification("n-2", channel="slack", address="U1", created_at=at(1)),
        notification("n-3", channel="email", address="a@example.com"),
        notification("n-4", channel="slack", address="C9"),
    )
    assert store.threads(store.notifications("inc-1")) == {}
    store.mark_delivered("n-1", at(1), ref="D1:1700000000.000100")
    store.mark_delivered("n-2", at(2), ref="D1:1700000099.000200")
    store.mark_delivered("n-3", at(2))
    assert store.threads(store.notifications("inc-1")) == {
        "n-1": "D1:1700000000.000100",
        "n-2": "D1:1700000000.000100",
    }
    assert store.conversations("inc-1") == [("slack", "U1", "D1:1700000000.000100")]


def test_handovers_and_acknowledgements_read_back_per_incident(store: Store) -> None:
    """Handovers written with their changes read back per incident, oldest first; every
    acknowledgement's time reads back per asked incident (an empty list when none)."""
    handover = Handover("inc-1", at(2), "alice", "bob", "dana", "api", "bob owns it")
    store.apply(
        Changes(
            opened=[incident(), incident(id="inc-2", rule="drift:x")],
            events=[
                Event("inc-1", at(1), "acknowledged", "alice", "", "api"),
                Event("inc-1", at(3), "acknowledged", "bob", "", "cli"),
            ],
            handovers=[handover],
        )
    )
    assert store.handovers() == {"inc-1": [handover]}
    assert store.acknowledgements(["inc-2", "inc-1"]) == {
        "inc-1": [at(1).timestamp(), at(3).timestamp()],
        "inc-2": [],
    }


def test_notifications_of_many_incidents_read_back_in_one_call(store: Store) -> None:
    """``notifications_of`` gives each asked incident's notifications as ``notifications``
    does (oldest first), an empty list for one with none or unknown, and stays whole when
    more ids are asked than one statement binds (1,002 here: the SQL store reads them in
    chunks of 500)."""
    store.apply(
        Changes(
            opened=[incident(), incident(id="inc-2", rule="drift:x")],
            notifications=[
                notification("n-2", created_at=at(2)),
                notification("n-1", created_at=at(1)),
                notification("n-3", incident_id="inc-2"),
            ],
        )
    )
    absent = [f"absent-{i:04}" for i in range(1000)]
    found = store.notifications_of(["inc-2", "inc-1", *absent])
    assert found["inc-1"] == store.notifications("inc-1")
    assert [n.id for n in found["inc-1"]] == ["n-1", "n-2"]
    assert [n.id for n in found["inc-2"]] == ["n-3"]
    assert len(found) == 1002 and all(found[i] == [] for i in absent)
    assert store.notifications_of([]) == {}


def test_accepted_events_are_read_after_a_position_with_their_incidents_signals(
    store: Store,
) -> None:
    """``accepted_after`` gives the ``accepted`` events after a position, oldest first, each
    with its incident's system and signals and its own position; other events are not."""
    store.apply(
        Changes(
            opened=[incident()],
            events=[_event("note"), Event("inc-1", at(1), "accepted", "alice", "")],
        )
    )
    (first,) = store.accepted_after(0)
    assert (first.system, first.signals, first.at) == (SYSTEM, ("accuracy",), at(1))
    assert store.accepted_after(first.seq) == []
    store.apply(Changes(events=[Event("inc-1", at(2), "accepted", "bob", "")]))
    assert [a.at for a in store.accepted_after(first.seq)] == [at(2)]
    assert [a.at for a in store.accepted_after(0)] == [at(1), at(2)]


def test_everything_survives_a_restart(sql_store: SqlStore) -> None:
    """Closing and reopening the store (a restart) keeps incidents, versions, events,
    notifications with their outbox state, pending conditions, conversation roots and the shared
    secret."""
    sql_store.apply(
        Changes(
            opened=[incident()],
            events=[_event("opened")],
            notifications=[notification("n-1"), notification("n-2")],
            pending_system=SYSTEM,
            pending=[Pending(SYSTEM, "drift:null_rate", T0, at(1))],
        )
    )
    current = sql_store.incident("inc-1")
    assert current is not None
    sql_store.apply(Changes(updated=[replace(current, escalation_steps_done=1)]))
    sql_store.lease_due(T0, LEASE)
    sql_store.mark_delivered("n-1", at(1), ref="D1:1700000000.000100")
    secret = sql_store.secret("links")
    again = _reopen(sql_store)
    try:
        assert again.secret("links") == secret
        assert again.conversations("inc-1") == [("console", "alice", "D1:1700000000.000100")]
        stored = again.incident("inc-1")
        assert stored == replace(incident(), escalation_steps_done=1, version=1)
        assert [e.kind for e in again.events("inc-1")] == ["opened"]
        assert again.outbox_pending() == 1
        assert [n.id for n in again.lease_due(at(1) + LEASE, LEASE)] == ["n-2"]
        assert list(again.pending(SYSTEM)) == [(SYSTEM, "drift:null_rate")]
    finally:
        again.close()


def test_the_database_runs_in_wal_mode(sqlite_store: Store, db_path: Path) -> None:
    """SQLite only (a pragma): the file is switched to write-ahead logging (readers never
    block the writer)."""
    sqlite_store.apply(Changes(opened=[incident()]))
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_newer_schema_is_refused(sql_store: SqlStore, raw: sa.Engine) -> None:
    """A database written by a newer driftowner (schema version above ours) is refused with a
    StoreError naming the version; an equal version opens."""
    again = _reopen(sql_store)
    again.close()
    _set_version(raw, NEWER)
    newer = SqlStore(sql_store.url)
    with pytest.raises(StoreError, match=f"schema version {NEWER}"):
        newer.open()
    newer.close()


def test_refusing_a_newer_schema_leaves_that_database_untouched(
    sql_store: SqlStore, raw: sa.Engine
) -> None:
    """A newer database is refused without being written to: a table the newer schema no
    longer has is not recreated by the older driftowner."""
    sql_store.close()
    _set_version(raw, NEWER)
    with raw.begin() as conn:
        conn.execute(sa.text("DROP TABLE pending_conditions"))
    newer = SqlStore(sql_store.url)
    with pytest.raises(StoreError):
        newer.open()
    assert "pending_conditions" not in sa.inspect(raw).get_table_names()


def test_an_unusable_database_is_a_store_error(tmp_path: Path) -> None:
    """SQLite only (a file): a file that is not a database is refused with a StoreError, not
    a driver exception."""
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not a database" * 100)
    broken = SqlStore(f"sqlite:///{bogus}")
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
"""The first schema, as driftowner 0.1 created it; plain SQL that both databases accept."""


INTERIM_COLUMNS = """
ALTER TABLE incidents ADD COLUMN kind VARCHAR(16) NOT NULL DEFAULT 'drift';
ALTER TABLE incidents ADD COLUMN first_acknowledged_at FLOAT;
"""
"""Part of version 2's columns, as an interim build left a store still marked version 1."""


@pytest.mark.parametrize("interim", [False, True], ids=["version-1", "interim-build"])
def test_a_version_1_store_is_migrated_in_place_and_keeps_its_incidents(
    store_url: str,  # noqa: F811 (a fixture)
    raw: sa.Engine,
    interim: bool,
) -> None:
    """A store written by the first schema (no plain timing columns, no superseded outbox
    state), or by an interim build that already added some of them, opens: it is migrated to
    the current version, its incidents keep every field, and the report's timings are
    backfilled from the stored bodies."""
    from driftowner.store.codec import incident_to_json

    acked = incident(
        state="acknowledged",
        first_acknowledged_at=at(7),
        acknowledged_at=at(7),
        acknowledged_by="alice",
    )
    url = parse_url(store_url)
    if url.get_backend_name() == "sqlite":
        Path(str(url.database)).parent.mkdir(parents=True, exist_ok=True)
    with raw.begin() as conn:
        for statement in (V1_SCHEMA + (INTERIM_COLUMNS if interim else "")).split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)
        conn.execute(
            sa.text(
                "INSERT INTO incidents (id, system, rule, owner, state, opened_at, "
                "resolved_at, version, body) VALUES "
                "(:id, :system, :rule, :owner, :state, :opened_at, NULL, 3, :body)"
            ),
            {
                "id": acked.id,
                "system": acked.system,
                "rule": acked.rule,
                "owner": acked.owner,
                "state": acked.state,
                "opened_at": acked.opened_at.timestamp(),
                "body": incident_to_json(acked),
            },
        )
    store = SqlStore(store_url)
    store.open()
    try:
        assert store.incident(acked.id) == replace(acked, version=3)
        (timing,) = store.timings()
        assert timing == acked.timing()
        assert store.outbox_pending() == 0
        # The migrated store works like a fresh one: its new columns and tables are usable.
        store.apply(Changes(notifications=[notification("n-1", incident_id=acked.id)]))
        store.mark_superseded("n-1", at(8), "acknowledged")
        assert store.outbox_pending() == 0
        assert store.try_lead("a", TTL, T0) is True
    finally:
        store.close()
    with raw.connect() as conn:
        version = conn.execute(
            sa.text("SELECT value FROM driftowner_meta WHERE key = 'schema_version'")
        ).scalar_one()
    assert int(version) == SCHEMA_VERSION


def test_a_version_2_store_gains_via_and_recovers_its_handovers(
    sql_store: SqlStore, raw: sa.Engine
) -> None:
    """A store at schema 2 (events without ``via``, no handovers) opens migrated: events by
    driftowner read back ``via: auto``, events by people ``via: None`` (unknown), and each
    ``reassigned`` event becomes a handover (from, to, who, why) the report can credit."""
    sql_store.apply(Changes(opened=[incident()]))
    with raw.begin() as conn:
        conn.exec_driver_sql("DROP TABLE handovers")
        conn.exec_driver_sql("ALTER TABLE events DROP COLUMN via")
        for minute, kind, actor, detail in (
            (0, "opened", "auto", "accuracy falling"),
            (1, "acknowledged", "alice", "on it"),
            (2, "reassigned", "dana", "alice → bob: bob owns it: really"),
            (3, "note", "dana", "not from driftowner's reassign"),
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO events (incident_id, at, kind, actor, detail) "
                    "VALUES ('inc-1', :at, :kind, :actor, :detail)"
                ),
                {"at": at(minute).timestamp(), "kind": kind, "actor": actor, "detail": detail},
            )
    _set_version(raw, 2)
    store = _reopen(sql_store)
    try:
        assert [(e.kind, e.actor, e.via) for e in store.events("inc-1")] == [
            ("opened", "auto", "auto"),
            ("acknowledged", "alice", None),
            ("reassigned", "dana", None),
            ("note", "dana", None),
        ]
        ((handed),) = store.handovers().values()
        assert [(h.at, h.from_owner, h.to_owner, h.by, h.via, h.reason) for h in handed] == [
            (at(2), "alice", "bob", "dana", None, "bob owns it: really")
        ]
        # New events and handovers are written with via as usual.
        store.apply(Changes(events=[Event("inc-1", at(4), "note", "bob", "x", "cli")]))
        assert store.events("inc-1")[-1].via == "cli"
    finally:
        store.close()
    with raw.connect() as conn:
        version = conn.execute(
            sa.text("SELECT value FROM driftowner_meta WHERE key = 'schema_version'")
        ).scalar_one()
    assert int(version) == SCHEMA_VERSION


def test_a_version_3_store_gains_kept_groups(sql_store: SqlStore, raw: sa.Engine) -> None:
    """A store at schema 3 (no group kept) opens migrated to 4: it keeps the notifications
    it had and keeps groups' timing and threads from then on."""
    sql_store.apply(Changes(opened=[incident()], notifications=[notification()]))
    with raw.begin() as conn:
        conn.exec_driver_sql("DROP TABLE notification_groups")
    _set_version(raw, 3)
    store = _reopen(sql_store)
    try:
        assert [n.id for n in store.notifications("inc-1")] == ["n-1"]
        key = ("console", "alice", "alice")
        assert store.groups([key]) == {}
        kept = GroupState(last_sent=at(1), thread=GroupThread("C1:1.2", (message(),)))
        store.save_groups({key: kept})
        assert store.groups([key]) == {key: kept}
    finally:
        store.close()
    with raw.connect() as conn:
        version = conn.execute(
            sa.text("SELECT value FROM driftowner_meta WHERE key = 'schema_version'")
        ).scalar_one()
    assert int(version) == SCHEMA_VERSION == 4


def test_groups_keep_their_timing_and_thread(store: Store) -> None:
    """A group's state reads back as saved (times to the microsecond, the root's ref, every
    message listed, its members); saving again replaces it; groups are told apart by
    channel, recipient and address; a group never saved is left out."""
    alice = ("slack", "alice", "U024BE7LH")
    by_mail = ("email", "alice", "alice@example.com")
    bob = ("slack", "bob", "U024BE7LH")
    listed = (message("inc-1"), message("inc-2", "resolved"))
    first = GroupState(flush_at=at(0.5) + timedelta(microseconds=7), last_sent=at(0))
    store.save_groups({alice: first, by_mail: GroupState(last_sent=at(1))})
    assert store.groups([alice, by_mail, bob]) == {
        alice: first,
        by_mail: GroupState(last_sent=at(1)),
    }
    later = GroupState(
        last_sent=at(2),
        thread=GroupThread("C1:1700000000.000100", listed),
        members=frozenset({"inc-1", "inc-3"}),
    )
    store.save_groups({alice: later})
    assert store.groups([alice]) == {alice: later}
    assert store.groups([by_mail]) == {by_mail: GroupState(last_sent=at(1))}
    assert store.groups([]) == {}


def test_a_fresh_store_is_created_at_the_current_version(
    sql_store: SqlStore, raw: sa.Engine
) -> None:
    """A new database gets the newest schema directly (no migrations), with every table."""
    with raw.connect() as conn:
        version = conn.execute(
            sa.text("SELECT value FROM driftowner_meta WHERE key = 'schema_version'")
        ).scalar_one()
    assert int(version) == SCHEMA_VERSION
    assert set(sa.inspect(raw).get_table_names()) >= {
        "driftowner_meta",
        "notification_groups",
        "incidents",
        "events",
        "outbox",
        "pending_conditions",
        "leader",
    }


def test_instances_opening_a_new_store_at_once_all_succeed(
    store_url: str,  # noqa: F811 (a fixture)
) -> None:
    """Four instances starting together on an empty database (a first deployment of an HA
    pair, a CLI beside the daemon) create the schema once; every one opens and sees it."""
    stores = [SqlStore(store_url) for _ in range(WORKERS)]

    def open_and_read(index: int) -> int:
        stores[index].open()
        return len(stores[index].incidents())

    try:
        assert _concurrently(WORKERS, open_and_read) == [0] * WORKERS
    finally:
        for opened in stores:
            opened.close()


# -- concurrency ----------------------------------------------------------------------------


def test_concurrent_workers_claim_each_notification_exactly_once(store: Store) -> None:
    """Four store instances (four daemons) leasing at once in small batches hand out each of
    200 due notifications exactly once between them."""
    ids = [f"n-{i:03}" for i in range(200)]
    store.apply(
        Changes(
            opened=[incident()],
            notifications=[
                notification(nid, created_at=T0 + timedelta(milliseconds=i))
                for i, nid in enumerate(ids)
            ],
        )
    )
    workers = _instances(store, WORKERS)
    for worker in workers:
        worker.open()

    def drain(index: int) -> list[str]:
        claimed: list[str] = []
        while batch := workers[index].lease_due(at(1), LEASE, limit=7):
            claimed += [n.id for n in batch]
        return claimed

    try:
        claims = _concurrently(WORKERS, drain)
    finally:
        for worker in workers:
            worker.close()
    everything = [nid for claimed in claims for nid in claimed]
    assert sorted(everything) == ids
    assert store.lease_due(at(1), LEASE) == []


def test_concurrent_openings_of_one_fingerprint_open_one_incident(store: Store) -> None:
    """Writers racing to open the same fingerprint: exactly one succeeds, every other gets
    Conflict (its transaction rolled back), and the stores stay usable."""
    writers = _instances(store, WORKERS)
    for writer in writers:
        writer.open()

    def open_one(index: int) -> bool:
        try:
            writers[index].apply(
                Changes(
                    opened=[incident(id=f"inc-{index}")],
                    events=[_event("opened", 0, f"inc-{index}")],
                )
            )
        except Conflict:
            return False
        return True

    try:
        won = _concurrently(WORKERS, open_one)
        assert won.count(True) == 1
        assert all(writer.ping() for writer in writers)
    finally:
        for writer in writers:
            writer.close()
    (opened,) = store.incidents(unresolved=True)
    assert [e.incident_id for e in store.events(opened.id)] == [opened.id]


def test_the_secret_is_created_once_and_shared(store: Store) -> None:
    """Instances asking for a secret at once all get the same value (which survives a
    restart: see ``test_everything_survives_a_restart``)."""
    others = _instances(store, WORKERS)
    try:
        values = _concurrently(WORKERS, lambda index: others[index].secret("links"))
    finally:
        for other in others:
            other.close()
    assert len(set(values)) == 1
    assert store.secret("links") == values[0]
    assert store.secret("other") != values[0]


# -- leadership -----------------------------------------------------------------------------


def test_of_two_holders_only_one_leads(store: Store) -> None:
    """The first to try leads; the second is refused while the first's lease runs."""
    assert store.try_lead("a", TTL, T0) is True
    assert store.try_lead("b", TTL, T0) is False
    assert store.try_lead("b", TTL, T0 + TTL - timedelta(seconds=1)) is False


def test_renewing_keeps_the_lead(store: Store) -> None:
    """A holder that renews before its lease runs out keeps leading past the first lease's
    end; the other holder stays refused."""
    assert store.try_lead("a", TTL, T0) is True
    for step in range(1, 5):
        now = T0 + step * TTL / 2
        assert store.try_lead("a", TTL, now) is True
        assert store.try_lead("b", TTL, now + timedelta(seconds=1)) is False


def test_an_expired_lease_lets_the_other_take_over(store: Store) -> None:
    """A holder that stops renewing (crashed) loses the lead once its lease runs out; the
    other takes over, and the old holder is refused when it comes back."""
    assert store.try_lead("a", TTL, T0) is True
    assert store.try_lead("b", TTL, T0 + TTL) is True
    assert store.try_lead("a", TTL, T0 + TTL + timedelta(seconds=1)) is False
    assert store.try_lead("b", TTL, T0 + TTL + timedelta(seconds=1)) is True


def test_resigning_hands_over_at_once(store: Store) -> None:
    """A leader that resigns (clean shutdown) lets the other lead at its next try; a holder
    that does not lead cannot end another's lease."""
    assert store.try_lead("a", TTL, T0) is True
    store.resign("b", T0)
    assert store.try_lead("b", TTL, T0 + timedelta(seconds=1)) is False
    store.resign("a", T0 + timedelta(seconds=1))
    assert store.try_lead("b", TTL, T0 + timedelta(seconds=2)) is True


def test_contenders_at_once_elect_exactly_one(store: Store) -> None:
    """Four instances trying to lead at the same moment, on a fresh store and again once the
    lease has expired: exactly one wins each time."""
    contenders = _instances(store, WORKERS)
    try:
        first = _concurrently(
            WORKERS, lambda index: contenders[index].try_lead(f"h{index}", TTL, T0)
        )
        assert first.count(True) == 1
        later = T0 + 2 * TTL
        second = _concurrently(
            WORKERS, lambda index: contenders[index].try_lead(f"h{index}", TTL, later)
        )
        assert second.count(True) == 1
    finally:
        for contender in contenders:
            contender.close()


# -- a store that cannot be written ------------------------------------------------------------


class RefusedWrites:
    """Makes the store's database refuse every write, as a read-only SQLite file or a
    PostgreSQL standby does, until :meth:`allow`. Set on every connection the store checks
    out (both settings last one connection)."""

    def __init__(self, store: SqlStore) -> None:
        self.refusing = True
        engine = store._engine
        assert engine is not None
        self._sqlite = engine.dialect.name == "sqlite"
        sa.event.listen(engine, "checkout", self._set)

    def _set(self, dbapi_connection: object, _record: object, _proxy: object) -> None:
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        if self._sqlite:
            cursor.execute(f"PRAGMA query_only={int(self.refusing)}")
        else:
            mode = "READ ONLY" if self.refusing else "READ WRITE"
            cursor.execute(f"SET SESSION CHARACTERISTICS AS TRANSACTION {mode}")
            dbapi_connection.commit()  # type: ignore[attr-defined]
        cursor.close()

    def allow(self) -> None:
        self.refusing = False


def test_a_refused_write_is_store_unavailable_and_changes_nothing(sql_store: SqlStore) -> None:
    """A write the database refuses raises StoreUnavailable saying the store cannot be
    written, why, and that nothing was changed; the incident is as it was, reads still work,
    and ``unwritable`` names the reason until a write of that kind commits again."""
    sql_store.apply(Changes(opened=[incident()]))
    before = sql_store.incident("inc-1")
    assert before is not None and sql_store.unwritable() is None
    refused = RefusedWrites(sql_store)
    acked = replace(before, state="acknowledged", acknowledged_by="alice")
    with pytest.raises(StoreUnavailable, match=r"^the store cannot be written: .+; nothing"):
        sql_store.apply(Changes(updated=[acked], events=[_event("acknowledged", 1)]))
    assert sql_store.incident("inc-1") == before
    assert sql_store.events("inc-1") == []
    reason = sql_store.unwritable()
    assert reason is not None and reason.startswith("the store cannot be written: ")
    assert "writing incidents failed" in reason
    refused.allow()
    sql_store.apply(Changes(updated=[acked], events=[_event("acknowledged", 1)]))
    assert sql_store.unwritable() is None
    assert [e.kind for e in sql_store.events("inc-1")] == ["acknowledged"]


def test_each_kind_of_write_stays_unwritable_until_it_commits_again(sql_store: SqlStore) -> None:
    """A lease renewal that commits does not clear a failure to record incidents (on a full
    disk a renewal can fit where an opening cannot): only the next committed write of
    incidents does."""
    assert sql_store.try_lead("a", TTL, T0) is True
    refused = RefusedWrites(sql_store)
    with pytest.raises(StoreUnavailable):
        sql_store.apply(Changes(opened=[incident()]))
    refused.allow()
    assert sql_store.try_lead("a", TTL, T0 + timedelta(seconds=5)) is True
    assert "writing incidents failed" in (sql_store.unwritable() or "")
    sql_store.apply(Changes(opened=[incident()]))
    assert sql_store.unwritable() is None


def test_a_claim_that_cannot_be_written_demotes_no_sqlite_instance(sql_store: SqlStore) -> None:
    """SQLite (one instance): a holder whose renewal cannot be written leads on, and so does
    an instance whose first claim cannot be written, unless the lease it reads names another
    live holder. PostgreSQL (HA): the claim raises StoreUnavailable, and the caller follows."""
    assert sql_store.try_lead("a", TTL, T0) is True
    RefusedWrites(sql_store)
    later = T0 + TTL + timedelta(seconds=1)  # a's lease ran out: it could not renew
    if sql_store.single_instance:
        assert sql_store.try_lead("a", TTL, T0 + timedelta(seconds=5)) is True
        assert sql_store.try_lead("b", TTL, T0 + timedelta(seconds=5)) is False  # a's lease runs
        assert sql_store.try_lead("a", TTL, later) is True
    else:
        with pytest.raises(StoreUnavailable, match="cannot be written"):
            sql_store.try_lead("a", TTL, later)
    assert "writing leadership failed" in (sql_store.unwritable() or "")


def test_pending_conditions_an_evaluation_could_not_write_are_kept(sql_store: SqlStore) -> None:
    """What a failed evaluation saw pending (and what it was opening) is what ``pending``
    answers until that system's next write commits, so a condition seen through the outage
    keeps its start; the stored rows count again once written."""
    sql_store.apply(Changes(pending_system=SYSTEM, pending=[Pending(SYSTEM, "drift:a", T0, T0)]))
    refused = RefusedWrites(sql_store)
    opening = replace(incident(), rule="drift:b", condition_began_at=at(-10))
    with pytest.raises(StoreUnavailable):
        sql_store.apply(
            Changes(
                opened=[opening],
                events=[_event("opened", 5)],
                pending_system=SYSTEM,
                pending=[Pending(SYSTEM, "drift:a", T0, at(5))],
            )
        )
    assert sql_store.pending(SYSTEM) == {
        (SYSTEM, "drift:a"): Pending(SYSTEM, "drift:a", T0, at(5)),
        (SYSTEM, "drift:b"): Pending(SYSTEM, "drift:b", at(-10), at(5)),
    }
    assert sql_store.pending("churn") == {}
    refused.allow()
    sql_store.apply(Changes(pending_system=SYSTEM, pending=[Pending(SYSTEM, "drift:a", T0, at(6))]))
    assert sql_store.pending(SYSTEM) == {(SYSTEM, "drift:a"): Pending(SYSTEM, "drift:a", T0, at(6))}
    assert _reopen(sql_store).pending(SYSTEM) == {
        (SYSTEM, "drift:a"): Pending(SYSTEM, "drift:a", T0, at(6))
    }


def test_a_wrong_statement_is_not_taken_for_an_unavailable_store(sql_store: SqlStore) -> None:
    """Only a database that cannot be used becomes StoreUnavailable: a statement the database
    does not understand (a bug) stays the driver's error, loud, and marks nothing unwritable."""
    with pytest.raises(sa.exc.DBAPIError) as raised, sql_store._tx(work="incidents") as conn:
        conn.exec_driver_sql("SELEC 1")
    assert not isinstance(raised.value, StoreUnavailable)
    assert sql_store.unwritable() is None


def test_a_full_sqlite_disk_refuses_a_write_with_its_reason(
    sqlite_store: Store, db_path: Path
) -> None:
    """SQLite only (a file): with the file at the size its disk allows, an opening fails with
    "database or disk is full" and changes nothing; once there is room it is written, and
    the file passes the integrity check."""
    disk = DiskLimit(sqlite_store)
    disk.fill()
    with pytest.raises(StoreUnavailable) as raised:
        sqlite_store.apply(Changes(opened=[incident()], events=[_event("opened")]))
    assert str(raised.value) == (
        "the store cannot be written: database or disk is full; nothing was changed"
    )
    assert sqlite_store.incident("inc-1") is None
    disk.free()
    sqlite_store.apply(Changes(opened=[incident()], events=[_event("opened")]))
    assert sqlite_store.incident("inc-1") is not None
    with sqlite3.connect(db_path) as check:
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


# -- URLs and PostgreSQL connections ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:////var/lib/driftowner/driftowner.db", "sqlite"),
        ("sqlite:///var/driftowner.db", "sqlite"),
        ("postgresql://u:p@db.example.com:5432/driftowner", "postgresql+psycopg"),
        ("postgresql+psycopg://u@db.example.com/driftowner", "postgresql+psycopg"),
    ],
)
def test_supported_urls(url: str, driver: str) -> None:
    """SQLite files and PostgreSQL (always through psycopg 3) are accepted."""
    assert parse_url(url).drivername == driver


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:hunter22@db.example.com/driftowner",
        "postgresql+psycopg2://u:hunter22@db.example.com/driftowner",
        "postgres://u:hunter22@db.example.com/driftowner",
        "postgresql://u:hunter22@db.example.com:notaport/driftowner",
        "sqlite://",
        "/var/lib/driftowner.db",
    ],
)
def test_unsupported_urls_name_what_is_supported_and_hide_the_password(url: str) -> None:
    """Any other URL is refused with the supported forms named, and the password masked, by
    the config check and by the store alike."""
    with pytest.raises(UnsupportedURL) as caught:
        parse_url(url)
    message = str(caught.value)
    assert "expected sqlite:///PATH or postgresql://" in message
    assert "hunter22" not in message
    store = SqlStore(url)
    with pytest.raises(StoreError) as refused:
        store.open()
    assert str(refused.value) == message


def test_an_unreachable_postgresql_is_a_store_error_without_the_password() -> None:
    """PostgreSQL only (a server): construction does no I/O; opening a server that does not
    answer fails soon with a StoreError naming the masked URL, never the password."""
    port = _free_port()
    store = SqlStore(f"postgresql://driftowner:hunter22@127.0.0.1:{port}/driftowner")
    with pytest.raises(StoreError) as caught:
        store.open()
    message = str(caught.value)
    assert f"postgresql://driftowner:***@127.0.0.1:{port}/driftowner" in message
    assert "hunter22" not in message
    assert store.ping() is False


def test_a_password_protected_postgresql_opens_and_a_wrong_password_is_masked(
    postgres_url: str,  # noqa: F811 (a fixture)
    postgres_database_url: str,  # noqa: F811 (a fixture)
) -> None:
    """PostgreSQL only (authentication): with the right password the store opens and works;
    with a wrong one it is a StoreError that shows neither password."""
    right, wrong = "right-horse-battery", "wrong-staple-7"
    name = postgres_database_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        exists = admin.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (PASSWORD_ROLE,)
        ).fetchone()
        verb = "ALTER" if exists else "CREATE"
        admin.execute(f"{verb} ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{right}'")
        admin.execute(f"ALTER DATABASE {name} OWNER TO {PASSWORD_ROLE}")
    base = postgres_database_url.split("@", 1)[1]
    refused = SqlStore(f"postgresql+psycopg://{PASSWORD_ROLE}:{wrong}@{base}")
    with pytest.raises(StoreError) as caught:
        refused.open()
    assert "password authentication failed" in str(caught.value)
    assert wrong not in str(caught.value) and right not in str(caught.value)
    store = SqlStore(f"postgresql+psycopg://{PASSWORD_ROLE}:{right}@{base}")
    store.open()
    try:
        store.apply(Changes(opened=[incident()]))
        assert [i.id for i in store.incidents()] == ["inc-1"]
    finally:
        store.close()


def test_postgresql_sessions_get_timeouts_and_a_name(
    postgres_database_url: str,  # noqa: F811 (a fixture)
) -> None:
    """PostgreSQL only (session settings): the store's connections give up on a row lock
    after 5 s and on a statement after 30 s, and show up as ``driftowner``; options in the URL
    win over these."""
    engine = create_engine(parse_url(postgres_database_url))
    tuned = create_engine(parse_url(postgres_database_url + "?options=-c%20lock_timeout=1234"))
    try:
        with engine.connect() as conn:
            show = conn.exec_driver_sql
            assert show("SHOW lock_timeout").scalar() == "5s"
            assert show("SHOW statement_timeout").scalar() == "30s"
            assert show("SHOW application_name").scalar() == "driftowner"
        with tuned.connect() as conn:
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "1234ms"
    finally:
        engine.dispose()
        tuned.dispose()


def test_a_connection_the_server_cut_is_replaced(
    postgres_url: str,  # noqa: F811 (a fixture)
    postgres_database_url: str,  # noqa: F811 (a fixture)
) -> None:
    """PostgreSQL only (a server restart or failover cuts connections): the store's pooled
    connections are checked before use, so the next call works instead of failing."""
    store = SqlStore(postgres_database_url)
    store.open()
    try:
        store.apply(Changes(opened=[incident()]))
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE application_name = 'driftowner'"
            )
        assert [i.id for i in store.incidents()] == ["inc-1"]
    finally:
        store.close()


def test_long_names_and_addresses_are_kept_whole(store: Store) -> None:
    """Names and addresses from the config are not capped by the schema on either database (a
    long webhook URL, a long disagreement rule): the incident opens and they read back whole."""
    rule = "disagreement:" + "r" * 600
    address = "https://hooks.example.com/" + "x" * 1000
    store.apply(
        Changes(
            opened=[incident(rule=rule, system="s" * 300, owner="o" * 300)],
            events=[Event("inc-1", T0, "note", "a" * 300, "d" * 5000)],
            notifications=[notification("n-1", address=address, recipient="p" * 300)],
            pending_system="s" * 300,
            pending=[Pending("s" * 300, rule, T0, T0)],
        )
    )
    stored = store.incident("inc-1")
    assert stored is not None and (stored.rule, stored.system) == (rule, "s" * 300)
    assert store.notifications("inc-1")[0].address == address
    assert store.events("inc-1")[0].actor == "a" * 300
    assert list(store.pending("s" * 300)) == [("s" * 300, rule)]
    assert store.try_lead("h" * 300, TTL, T0) is True


def test_time_columns_round_trip_exactly(store: Store) -> None:
    """Time columns are double precision on both databases: the plain timing columns read back
    bit for bit, far from the epoch and to the microsecond."""
    when = [
        T0 + timedelta(microseconds=1),
        T0 + timedelta(days=365 * 75, microseconds=999_999),
        at(0) + timedelta(microseconds=123457),
    ]
    store.apply(
        Changes(
            opened=[
                incident(id=f"inc-{i}", rule=f"r{i}", opened_at=opened)
                for i, opened in enumerate(when)
            ]
        )
    )
    assert sorted(t.opened_at for t in store.timings()) == sorted(w.timestamp() for w in when)
    assert [i.opened_at for i in store.incidents()] == sorted(when)


def test_reads_never_wait_behind_a_writer(sqlite_store: Store, db_path: Path) -> None:
    """While another process holds SQLite's write lock (a long transaction), the reads behind
    /metrics, the status page and /readyz answer at once from the last commit instead of
    queueing for up to the busy timeout."""
    sqlite_store.apply(Changes(opened=[incident()]))
    writer = sqlite3.connect(db_path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE incidents SET owner = 'bob'")
        # Each would raise "database is locked" after the busy timeout if it queued.
        assert [t.owner for t in sqlite_store.timings()] == ["alice"]
        assert len(sqlite_store.incidents(unresolved=True)) == 1
        assert sqlite_store.outbox_pending() == 0
        assert sqlite_store.ping()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_new_sqlite_store_is_readable_by_its_owner_only(db_path: Path) -> None:
    """The store holds the action-link key, so a new SQLite file is created mode 0600."""
    store = SqlStore(f"sqlite:///{db_path}")
    store.open()
    store.secret("links")
    store.close()
    assert db_path.stat().st_mode & 0o777 == 0o600


# -- the delivery loop's writes (every backend) ------------------------------------------------


def test_outcomes_settled_together_with_a_fallback_and_a_conversation(store: Store) -> None:
    """One ``settle`` records a delivery (starting its conversation), a retry, and a give-up
    with its event and the fallback page that takes over; the age of the oldest owed
    notification and the next due time follow."""
    store.apply(Changes(opened=[incident()]))
    store.apply(Changes(notifications=[notification(f"n-{i}", created_at=T0) for i in range(3)]))
    leased = store.lease_due(T0, timedelta(seconds=15), 3)
    assert len(leased) == 3 and store.outbox_oldest(T0 + timedelta(seconds=90)) == 90
    fallback = notification("fb-1", channel="email", address="alice@example.com", created_at=at(1))
    gave_up = Event("inc-1", at(1), "note", "auto", "page to alice via console failed for good")
    store.settle(
        [
            Settled("n-0", at(1), "delivered", ref="ts-1"),
            Settled("n-1", at(1), "retry", "503", next_attempt_at=at(2)),
            Settled("n-2", at(1), "failed", "404", event=gave_up, fallback=fallback),
        ]
    )
    by_id = {n.id: n for n in store.notifications("inc-1")}
    assert by_id["n-0"].delivered_at == at(1) and by_id["n-1"].next_attempt_at == at(2)
    assert by_id["n-2"].failed_at == at(1) and by_id["fb-1"].delivered_at is None
    assert [n.attempts for n in (by_id["n-0"], by_id["n-1"], by_id["n-2"])] == [1, 1, 1]
    assert store.threads([by_id["n-0"]]) == {"n-0": "ts-1"}
    assert gave_up in store.events("inc-1")
    assert store.next_due() == at(1)  # the fallback, due at once
    assert store.outbox_oldest(at(3)) == 180.0  # n-1, made at T0, still owed


def test_handing_back_makes_a_notification_due_again_without_an_attempt(store: Store) -> None:
    """``defer`` ends the caller's lease and sets when the notification is due again; the
    attempt count is unchanged, and a lease that is no longer the caller's is left alone."""
    store.apply(Changes(opened=[incident()]))
    store.apply(Changes(notifications=[notification("n-1"), notification("n-2")]))
    lease = timedelta(seconds=15)
    store.lease_due(T0, lease, 2)
    store.defer({"n-1": (at(5), T0 + lease), "n-2": (at(5), T0)})  # n-2: not our lease end
    by_id = {n.id: n for n in store.notifications("inc-1")}
    assert (by_id["n-1"].next_attempt_at, by_id["n-1"].attempts) == (at(5), 0)
    assert by_id["n-2"].next_attempt_at == T0
    assert store.lease_due(T0 + timedelta(seconds=10), lease, 2) == []  # n-2: still leased


def test_silences_are_kept_listed_by_when_they_hold_and_expired_once(store: Store) -> None:
    """A silence reads back whole (matcher, times, who, via); ``silences(at)`` lists those
    holding at that instant (started, not ended, not expired); expiring records when and by
    whom, once (a second expiry changes nothing); an unknown id expires nothing; an id kept
    twice is a conflict."""
    by_label = Silence(
        "sil-2", T0, T0 + timedelta(hours=2), "pipeline", "bob", "api", labels=(("team", "risk"),)
    )
    by_system = Silence(
        "sil-1",
        T0 - timedelta(hours=1),
        T0 + timedelta(hours=1),
        "retrain",
        "alice",
        "cli",
        system="fraud-scoring",
    )
    store.add_silence(by_label)
    store.add_silence(by_system)
    assert store.silences() == [by_system, by_label]
    assert store.silences(T0 + timedelta(minutes=90)) == [by_label]
    assert store.silences(T0 - timedelta(hours=2)) == []
    expired = store.expire_silence("sil-2", T0 + timedelta(minutes=10), "alice")
    assert expired is not None
    assert (expired.expired_at, expired.expired_by) == (T0 + timedelta(minutes=10), "alice")
    again = store.expire_silence("sil-2", T0 + timedelta(minutes=20), "bob")
    assert again == expired
    assert store.silences(T0 + timedelta(minutes=5)) == [by_system, expired]
    assert store.silences(T0 + timedelta(minutes=10)) == [by_system]
    assert store.expire_silence("sil-none", T0, "alice") is None
    with pytest.raises(Conflict):
        store.add_silence(by_label)


def test_pending_by_system_is_every_systems_pending_in_one_read(store: Store) -> None:
    """``pending_by_system`` gives, for every system with pending conditions, what
    ``pending`` gives for it; a system whose set was emptied is absent."""
    store.apply(Changes(pending_system=SYSTEM, pending=[Pending(SYSTEM, "drift:a", T0, at(1))]))
    store.apply(Changes(pending_system="churn", pending=[Pending("churn", "drift:c", T0, T0)]))
    store.apply(Changes(pending_system="gone", pending=[Pending("gone", "stale:x", T0, T0)]))
    store.apply(Changes(pending_system="gone", pending=[]))
    assert store.pending_by_system() == {
        SYSTEM: store.pending(SYSTEM),
        "churn": store.pending("churn"),
    }


def test_unresolved_incidents_are_decoded_again_only_when_their_version_moved(
    sql_store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every evaluation and escalation tick reads every unresolved incident: a body is
    decoded once per version, not once per read. Another instance's update (a new version)
    is read as written, a resolution leaves the read, and nothing else is decoded again."""
    decoded: list[str] = []
    decode = sql_module.incident_from_json

    def counting(body: str, version: int) -> Incident:
        found = decode(body, version)
        decoded.append(found.id)
        return found

    monkeypatch.setattr(sql_module, "incident_from_json", counting)
    a, b = incident(id="inc-a", system="sys-a"), incident(id="inc-b", system="sys-b")
    sql_store.apply(Changes(opened=[a, b]))
    assert [i.id for i in sql_store.incidents(unresolved=True)] == ["inc-a", "inc-b"]
    assert [i.id for i in sql_store.incidents(unresolved=True)] == ["inc-a", "inc-b"]
    assert decoded == ["inc-a", "inc-b"]
    other = SqlStore(sql_store.url)  # another instance writes
    other.open()
    try:
        other.apply(Changes(updated=[replace(a, state="acknowledged", acknowledged_by="alice")]))
        other.apply(Changes(updated=[replace(b, state="resolved", resolved_at=at(5))]))
    finally:
        other.close()
    decoded.clear()
    (seen,) = sql_store.incidents(unresolved=True)
    assert (seen.id, seen.state, seen.acknowledged_by, seen.version) == (
        "inc-a",
        "acknowledged",
        "alice",
        1,
    )
    assert decoded == ["inc-a"]
