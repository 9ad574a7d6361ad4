"""Schema migrations of the store: one function per version step, applied in order at open,
inside the opening transaction, on SQLite and PostgreSQL alike (plain SQL both accept). The
newest schema is ``SCHEMA_VERSION``; a fresh store is created at it directly. A new table needs
no step: opening creates missing tables (the leader lease came that way)."""

from __future__ import annotations

import json
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

SCHEMA_VERSION = 4


def _to_2(conn: Connection) -> None:
    """Plain columns the report and /metrics aggregate without decoding bodies, and the
    outbox's superseded state."""
    # Idempotent: a store written by a build between the two versions may already have some
    # of these columns while still saying version 1.
    inspector = sa.inspect(conn)
    present = {
        table: {column["name"] for column in inspector.get_columns(table)}
        for table in ("incidents", "outbox")
    }
    for table, column, ddl in (
        ("incidents", "kind", "VARCHAR(16) NOT NULL DEFAULT 'drift'"),
        ("incidents", "first_acknowledged_at", "FLOAT"),
        ("incidents", "ack_within", "FLOAT"),
        ("incidents", "resolve_within", "FLOAT"),
        ("outbox", "superseded_at", "FLOAT"),
    ):
        if column not in present[table]:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")
    rows = conn.execute(sa.text("SELECT id, body FROM incidents")).all()
    for incident_id, body in rows:
        stored = json.loads(body)
        conn.execute(
            sa.text(
                "UPDATE incidents SET kind = :kind, first_acknowledged_at = :ack, "
                "ack_within = :ack_within, resolve_within = :resolve_within WHERE id = :id"
            ),
            {
                "id": incident_id,
                "kind": stored["kind"],
                "ack": stored.get("first_acknowledged_at"),
                "ack_within": stored.get("ack_within"),
                "resolve_within": stored.get("resolve_within"),
            },
        )


def _to_3(conn: Connection) -> None:
    """Each event says through what its actor acted (``via``), and each reassignment is kept
    as a handover (from, to, who, why) so the report credits every owner with their own time.

    Events recorded by people before this version keep ``via`` NULL (unknown): nothing says
    whether they came through the API or the command line. Handovers are recovered from the
    ``reassigned`` events, whose detail has always read ``from → to: reason``."""
    # The table's definition lives with the others; imported here, at run time, because the
    # store module imports this one.
    from driftowner.store.sql import handovers

    handovers.create(conn, checkfirst=True)
    inspector = sa.inspect(conn)
    if not inspector.has_table("events"):
        return  # the first schema kept no events: opening creates the table with via
    if "via" not in {column["name"] for column in inspector.get_columns("events")}:
        conn.exec_driver_sql("ALTER TABLE events ADD COLUMN via VARCHAR(16)")
    conn.execute(sa.text("UPDATE events SET via = 'auto' WHERE actor = 'auto' AND via IS NULL"))
    rows = conn.execute(
        sa.text(
            "SELECT incident_id, at, actor, detail FROM events WHERE kind = 'reassigned' "
            "ORDER BY seq"
        )
    ).all()
    for incident_id, at, actor, detail in rows:
        from_owner, arrow, rest = detail.partition(" → ")
        to_owner, colon, reason = rest.partition(": ")
        if not arrow or not colon:
            continue  # not written by driftowner's reassign: nothing to recover
        conn.execute(
            sa.insert(handovers).values(
                incident_id=incident_id,
                at=at,
                from_owner=from_owner,
                to_owner=to_owner,
                by=actor,
                via=None,
                reason=reason,
            )
        )


def _to_4(conn: Connection) -> None:
    """Each notification group's timing and thread are kept (``notification_groups``), so a
    restart or a failover keeps ``group_wait`` and ``group_interval``, and a group's later
    messages thread under its first. A store coming from version 3 has no group kept: the
    next member of each group waits ``group_wait``, as after a group's idle hour."""
    from driftowner.store.sql import groups

    groups.create(conn, checkfirst=True)


MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _to_2, 2: _to_3, 3: _to_4}
"""version → the function that takes a store at that version to the next."""


def migrate(conn: Connection, found: int) -> list[int]:
    """Bring a store at schema ``found`` to ``SCHEMA_VERSION``; returns the versions passed."""
    passed = []
    for version in range(found, SCHEMA_VERSION):
        MIGRATIONS[version](conn)
        passed.append(version + 1)
    return passed
