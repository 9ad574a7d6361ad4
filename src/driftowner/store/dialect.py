"""Everything the store does differently on SQLite and on PostgreSQL, in one place: engine and
connection options, serialising schema set-up, and locking the rows a claim takes. (Which URLs
are supported is the config's to say: :func:`driftowner.config.parse_storage_url`.) The rest of
the store is portable SQLAlchemy Core."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

SQLITE_BUSY_TIMEOUT_MS = 5000
"""Short: a locked store must not stall the daemon's event loop; a writer that times out fails
its transaction whole and the next cycle decides again."""

POSTGRESQL_CONNECT_TIMEOUT_S = 5
POSTGRESQL_LOCK_TIMEOUT_MS = 5000
"""The same patience for a row lock (another writer's open transaction) as SQLite's busy wait."""
POSTGRESQL_STATEMENT_TIMEOUT_MS = 30000
"""No statement of the store takes long; one that does is stuck, and fails rather than hangs."""

READ_ONLY = {"driftowner_read_only": True}
"""Execution options marking a transaction that only reads."""

_SCHEMA_LOCK = 0x6472696674  # "drift": the advisory lock id that serialises schema set-up

_Query = TypeVar("_Query", bound=sa.Select[Any])


def create_engine(url: URL) -> Engine:
    """An engine with the options of ``url``'s dialect; connects to nothing yet.

    Raises:
        OSError: the directory of a SQLite file cannot be created.
    """
    if url.get_backend_name() == "sqlite":
        if url.database not in (None, "", ":memory:"):
            path = Path(url.database)
            path.parent.mkdir(parents=True, exist_ok=True)
            # The store keeps the key that signs action links: a new file is readable by its
            # owner only (SQLite gives its -wal and -shm files the same mode).
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    # Options given in the URL (?connect_timeout=..., ?options=...) win over these defaults.
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = POSTGRESQL_CONNECT_TIMEOUT_S
    if "application_name" not in url.query:
        connect_args["application_name"] = "driftowner"
    if "options" not in url.query:
        connect_args["options"] = (
            f"-c lock_timeout={POSTGRESQL_LOCK_TIMEOUT_MS} "
            f"-c statement_timeout={POSTGRESQL_STATEMENT_TIMEOUT_MS}"
        )
    # pre_ping: a pooled connection the server closed (restart, failover) is replaced instead
    # of failing the next transaction.
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def single_instance(url: str) -> bool:
    """Whether a store at ``url`` is served by one instance at a time: a SQLite file lives on
    one host's disk (leader election across hosts needs PostgreSQL). A single instance never
    gives up leading because its store cannot be written; see ``Store.try_lead``."""
    return url.startswith("sqlite:")


_SQLITE_UNAVAILABLE = {
    5: "SQLITE_BUSY",
    6: "SQLITE_LOCKED",
    7: "SQLITE_NOMEM",
    8: "SQLITE_READONLY",
    10: "SQLITE_IOERR",
    11: "SQLITE_CORRUPT",
    13: "SQLITE_FULL",
    14: "SQLITE_CANTOPEN",
    26: "SQLITE_NOTADB",
}
"""SQLite's primary result codes that say the database cannot be used now, as opposed to a
refused change (a constraint) or a wrong statement (a bug, which must stay loud)."""

_POSTGRESQL_UNAVAILABLE = ("08", "25006", "53", "55P03", "57", "58")
"""SQLSTATE prefixes with the same meaning on PostgreSQL: connection exceptions, a read-only
(standby) server, insufficient resources (53100: disk full), a lock not granted within
lock_timeout, operator intervention (shutdown, statement timeout) and I/O errors."""


def unavailable(error: sa.exc.DBAPIError) -> bool:
    """Whether ``error`` means the store cannot be used now (full, read-only, locked past
    the busy timeout, unreachable), so the operation may be retried once the cause is gone."""
    orig = error.orig
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _SQLITE_UNAVAILABLE
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is None:
        # psycopg gives no SQLSTATE when it cannot reach the server at all.
        return isinstance(error, sa.exc.OperationalError) or error.connection_invalidated
    return str(sqlstate).startswith(_POSTGRESQL_UNAVAILABLE)


def lock_schema(conn: Connection) -> None:
    """Serialise schema creation and migration among instances opening one store at once.

    SQLite's ``BEGIN IMMEDIATE`` already does; PostgreSQL takes a transaction-scoped advisory
    lock, so two first starts do not both create the tables.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK)))


def claim(query: _Query) -> _Query:
    """``query`` locking the rows it returns for this transaction, skipping rows another
    transaction holds, so concurrent workers claim disjoint rows.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED``. SQLite compiles it to nothing: its transactions
    begin IMMEDIATE, so one claimer runs at a time anyway.
    """
    return query.with_for_update(skip_locked=True)


def walk_in_order(conn: Connection) -> None:
    """Make this transaction's ``ORDER BY ... LIMIT`` queries walk an index in that order and
    stop at the limit, rather than fetch every match and sort it.

    PostgreSQL: ``SET LOCAL enable_sort = off``. Its planner picks by estimates, and while the
    statistics lag a storm (thousands of pages written since the last ANALYZE) it takes the
    owed rows for a few, then reads and sorts all of them at each claim. A query no index
    orders is still sorted (the setting only makes a sort look dear). SQLite: nothing, its
    planner already walks the claim's index.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL enable_sort = off")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control from the driver (it would not begin before DDL, so a schema
    # migration could half-apply); SQLAlchemy's "begin" event issues BEGIN IMMEDIATE instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    _sqlite_wal(cursor)
    # FULL: a commit reported to the CLI or the API (an ack) survives power loss too.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_wal(cursor: Any) -> None:
    """Switch to WAL. Switching a new file needs it to itself, and SQLite answers "locked"
    at once instead of waiting busy_timeout, so instances opening a new store together retry
    (the first one's switch then makes the others' a no-op)."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _sqlite_begin(conn: Connection) -> None:
    # Writers: IMMEDIATE takes the write lock at the start, waiting up to busy_timeout,
    # instead of failing at once when a read-then-write transaction meets another writer's
    # commit. Readers: a deferred BEGIN never waits (WAL serves them the last commit), so
    # /metrics, the status page and /readyz never queue behind a write.
    read_only = conn.get_execution_options().get("driftowner_read_only", False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
