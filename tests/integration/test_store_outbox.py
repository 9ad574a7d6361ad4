"""The store's contract for the outbox's hot path, run against each backend (in memory, SQLite,
PostgreSQL): a batch of outcomes settled at once records exactly what settling them one at a
time records; and, on the SQL backends, what a write or a claim costs does not grow with the
batch or the backlog (counted in statements, SQLite's VM steps and PostgreSQL's rows scanned,
never timed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from driftowner.config import parse_storage_url
from driftowner.model import Event, Notification
from driftowner.store import Changes, Settled, SqlStore, Store
from tests.integration.postgres_server import (  # noqa: F401 (fixtures)
    BACKENDS,
    contract_store,
    postgres_database_url,
    postgres_url,
    store_url,
)
from tests.unit.factories import T0, at, incident, notification

LEASE = timedelta(minutes=2)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store on each backend of the contract suite."""
    with contract_store(request, tmp_path / "state" / "driftowner.db") as opened:
        yield opened


@pytest.fixture
def sql_store(store_url: str) -> Iterator[SqlStore]:  # noqa: F811 (a fixture)
    """An empty store on each SQL backend."""
    opened = SqlStore(store_url)
    opened.open()
    yield opened
    opened.close()


# -- settling a batch ----------------------------------------------------------------------------


def _pages(prefix: str) -> list[Notification]:
    """The notifications of incident ``inc-{prefix}`` whose outcomes :func:`_outcomes` gives."""
    incident_id = f"inc-{prefix}"

    def page(name: str, channel: str = "webhook", address: str = "hook") -> Notification:
        return notification(
            f"{prefix}-{name}", incident_id=incident_id, channel=channel, address=address
        )

    return [
        page("held", "slack", "U1"),
        page("d-thread-1", "slack", "U1"),
        page("d-new-1", "slack", "C9"),
        page("d-new-2", "slack", "C9"),
        page("d-plain"),
        page("d-plain-2"),
        page("retry-1"),
        page("retry-2"),
        page("failed"),
        page("failed-fallback", "slack", "U1"),
    ]


def _outcomes(prefix: str) -> list[Settled]:
    """A mixed batch of one incident's outcomes: deliveries that start a conversation, join
    one already started, or start one twice in the batch (the first stays the root);
    deliveries with no reference; retries; a give-up with its event; a give-up with its
    event and the fallback page that takes over."""
    incident_id = f"inc-{prefix}"
    when = at(1)

    def gave_up(detail: str) -> Event:
        return Event(incident_id, when, "note", "auto", f"{prefix}: {detail}")

    fallback = notification(
        f"{prefix}-fallback",
        incident_id=incident_id,
        channel="email",
        address="alice@example.com",
        created_at=when,
    )
    return [
        Settled(f"{prefix}-d-thread-1", when, "delivered", ref=f"{prefix}:ts-2"),
        Settled(f"{prefix}-d-new-1", when, "delivered", ref=f"{prefix}:ts-3"),
        Settled(f"{prefix}-retry-1", when, "retry", "503", next_attempt_at=at(2)),
        Settled(f"{prefix}-d-new-2", when, "delivered", ref=f"{prefix}:ts-4"),
        Settled(f"{prefix}-d-plain", when, "delivered"),
        Settled(f"{prefix}-failed", when, "failed", "404", event=gave_up("404")),
        Settled(f"{prefix}-retry-2", when, "retry", "timed out", next_attempt_at=at(3)),
        Settled(
            f"{prefix}-failed-fallback",
            when,
            "failed",
            "invalid_payload",
            event=gave_up("falling back"),
            fallback=fallback,
        ),
        Settled(f"{prefix}-d-plain-2", at(1.5), "delivered"),
    ]


def _recorded(store: Store, prefix: str) -> dict[str, Any]:
    """Everything the store holds of incident ``inc-{prefix}``'s outbox, with the prefix
    taken out so two incidents' records compare."""

    def plain(text: str | None) -> str | None:
        return None if text is None else text.replace(prefix, "X")

    incident_id = f"inc-{prefix}"
    rows = store.notifications(incident_id)
    return {
        "rows": sorted(
            (
                plain(n.id),
                n.channel,
                n.address,
                n.attempts,
                n.delivered_at,
                n.failed_at,
                n.next_attempt_at,
                n.last_error,
            )
            for n in rows
        ),
        "events": [(e.at, e.kind, e.actor, plain(e.detail)) for e in store.events(incident_id)],
        "conversations": [
            (channel, address, plain(ref))
            for channel, address, ref in store.conversations(incident_id)
        ],
        "threads": sorted((plain(k), plain(v)) for k, v in store.threads(rows).items()),
    }


def _prepare(store: Store, prefix: str) -> None:
    """Incident ``inc-{prefix}`` with its pages committed and leased, and its (slack, U1)
    conversation already started by an earlier delivery."""
    store.apply(Changes(opened=[incident(id=f"inc-{prefix}", system=f"system-{prefix}")]))
    store.apply(Changes(notifications=_pages(prefix)))
    assert len(store.lease_due(T0, LEASE, 100)) == len(_pages(prefix))
    store.mark_delivered(f"{prefix}-held", T0, ref=f"{prefix}:ts-1")


def test_a_mixed_batch_settled_at_once_records_what_one_at_a_time_did(store: Store) -> None:
    """``settle`` of a mixed batch (deliveries starting, joining and racing for a
    conversation, retries, a give-up with its event, a give-up with its event and fallback)
    leaves the outbox, the events, the conversations and the threads exactly as settling
    each outcome in its own call does."""
    _prepare(store, "batch")
    _prepare(store, "single")
    store.settle(_outcomes("batch"))
    for outcome in _outcomes("single"):
        store.settle([outcome])
    batch, single = _recorded(store, "batch"), _recorded(store, "single")
    assert batch == single
    # And what that record is: the first root of a conversation stays its root.
    assert batch["conversations"] == [("slack", "U1", "X:ts-1"), ("slack", "C9", "X:ts-3")]
    assert len(batch["events"]) == 2 and len(batch["rows"]) == len(_pages("batch")) + 1
    assert [n.id for n in store.lease_due(at(1), LEASE, 100)] == [
        "batch-fallback",
        "single-fallback",
    ]


# -- what a write or a claim costs ---------------------------------------------------------------


def _statements(store: SqlStore) -> list[str]:
    """A list that fills with every statement ``store`` sends its database from now on (an
    ``executemany`` counts once)."""
    sent: list[str] = []
    engine = store._engine
    assert engine is not None

    def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        sent.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    return sent


def _outcomes_of(store: SqlStore, count: int) -> list[Settled]:
    """``count`` leased pages of one new incident and a mixed batch of their outcomes (every
    kind, with events, fallbacks and conversations)."""
    prefix = f"n{count}"
    store.apply(Changes(opened=[incident(id=f"inc-{prefix}", system=f"system-{prefix}")]))
    pages = [
        notification(f"{prefix}-{i}", incident_id=f"inc-{prefix}", channel="slack", address=f"C{i}")
        for i in range(count)
    ]
    store.apply(Changes(notifications=pages))
    store.lease_due(T0, LEASE, count)
    outcomes = []
    for i, page in enumerate(pages):
        if i % 3 == 0:
            outcomes.append(Settled(page.id, at(1), "delivered", ref=f"ts-{i}"))
        elif i % 3 == 1:
            outcomes.append(Settled(page.id, at(1), "retry", "503", next_attempt_at=at(2)))
        else:
            event = Event(page.incident_id, at(1), "note", "auto", "failed")
            fallback = notification(
                f"{page.id}-fb", incident_id=page.incident_id, channel="email", created_at=at(1)
            )
            outcomes.append(Settled(page.id, at(1), "failed", "404", None, event, fallback))
    return outcomes


def test_settling_a_batch_takes_as_many_statements_for_3_outcomes_as_for_300(
    sql_store: SqlStore,
) -> None:
    """A group commit's cost in round trips does not grow with its size: one statement per
    kind of write (an ``executemany`` for the outcomes of each kind, one insert for the
    events, one for the fallbacks, a few for the conversations), not one per outcome."""
    small, large = _outcomes_of(sql_store, 3), _outcomes_of(sql_store, 300)
    sent = _statements(sql_store)
    sql_store.settle(small)
    for_small = len(sent)
    sent.clear()
    sql_store.settle(large)
    assert len(sent) == for_small <= 12, sent
    delivered = [n for n in sql_store.notifications("inc-n300") if n.delivered_at is not None]
    assert len(delivered) == 100 and all(n.attempts == 1 for n in delivered)


def _owed(store: SqlStore, count: int) -> None:
    """``count`` notifications of one incident, all due at ``T0``, each made a millisecond
    after the last."""
    store.apply(Changes(opened=[incident()]))
    store.apply(
        Changes(
            notifications=[
                notification(f"n-{i:06}", created_at=T0 + timedelta(milliseconds=i))
                for i in range(count)
            ]
        )
    )


def _claim_work(store: SqlStore, now: datetime, limit: int) -> tuple[int, list[str]]:
    """Lease ``limit`` notifications at ``now``; returns the work the claim's query did and
    the ids claimed. SQLite: the virtual machine's steps (counted in thousands by a progress
    handler). PostgreSQL: the rows its plan's scans read (returned or filtered out), from
    ``EXPLAIN ANALYZE`` of the very statement the lease ran, repeated in its transaction
    (statistics as a storm leaves them: no ANALYZE since the pages were written)."""
    engine = store._engine
    assert engine is not None
    if engine.dialect.name == "sqlite":
        steps = [0]
        counting = [False]

        def step() -> int:
            steps[0] += counting[0]
            return 0

        def install(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
            dbapi_connection.set_progress_handler(step, 1000)

        sa.event.listen(engine, "checkout", install)
        counting[0] = True
        claimed = store.lease_due(now, LEASE, limit)
        counting[0] = False
        sa.event.remove(engine, "checkout", install)
        return steps[0], [n.id for n in claimed]
    plans: list[Any] = []

    def explain(conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        if "FOR UPDATE" in statement:
            # In the claim's own transaction, before it marks the rows leased: the same
            # settings, the same rows (locked by this transaction, so not skipped).
            cursor = conn.connection.dbapi_connection.cursor()
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
            plans.append(cursor.fetchone()[0])
            cursor.close()

    sa.event.listen(engine, "after_cursor_execute", explain)
    claimed = store.lease_due(now, LEASE, limit)
    sa.event.remove(engine, "after_cursor_execute", explain)
    (plan,) = plans
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return _rows_scanned(plan[0]["Plan"]), [n.id for n in claimed]


def _rows_scanned(node: dict[str, Any]) -> int:
    """Rows every scan under ``node`` read: those it returned and those its filter removed."""
    own = 0
    if node["Node Type"].endswith("Scan"):
        own = int(node["Actual Rows"]) + int(node.get("Rows Removed by Filter", 0))
    return own + sum(_rows_scanned(child) for child in node.get("Plans", ()))


def test_a_claim_reads_what_it_claims_not_the_whole_backlog(sql_store: SqlStore) -> None:
    """Leasing 100 notifications costs about the same with 20,000 owed as with 2,000: the
    claim walks an index of the owed notifications in the order it hands them out and stops
    at its limit, instead of reading and sorting every owed row (which made each lease of a
    10,000-page storm slower than the last)."""
    _owed(sql_store, 2_000)
    small, claimed = _claim_work(sql_store, at(1), 100)
    assert claimed == [f"n-{i:06}" for i in range(100)]
    sql_store.apply(
        Changes(
            notifications=[
                notification(f"m-{i:06}", created_at=at(1) + timedelta(milliseconds=i))
                for i in range(18_000)
            ]
        )
    )
    large, claimed = _claim_work(sql_store, at(2), 100)
    assert claimed == [f"n-{i:06}" for i in range(100, 200)]
    assert large <= 2 * max(small, 1) + 2, (small, large)


def test_a_store_made_before_the_claims_index_gains_it_at_open(
    sql_store: SqlStore,
    store_url: str,  # noqa: F811 (a fixture)
) -> None:
    """A store whose outbox lacks the index of owed notifications (made by an older
    driftowner) has it once reopened, and its owed notifications are claimed as before."""
    _owed(sql_store, 3)
    engine = sa.create_engine(parse_storage_url(store_url))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX outbox_owed")
        sql_store.close()
        again = SqlStore(sql_store.url)
        again.open()
        with engine.connect() as conn:
            names = {index["name"] for index in sa.inspect(conn).get_indexes("outbox")}
        assert "outbox_owed" in names
        assert [n.id for n in again.lease_due(at(1), LEASE)] == ["n-000000", "n-000001", "n-000002"]
        again.close()
    finally:
        engine.dispose()
