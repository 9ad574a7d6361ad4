"""The durable store: incidents, their append-only events, the notification outbox, pending
conditions and the leader lease, in SQLite (WAL) or PostgreSQL through SQLAlchemy Core. The
schema is created and versioned at open; every write that belongs together is one transaction.
What differs between the two databases lives in :mod:`driftowner.store.dialect`."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection, Engine

from driftowner.config import UnsupportedStorageURL, parse_storage_url
from driftowner.model import (
    Accepted,
    Event,
    GroupKey,
    GroupState,
    Handover,
    Incident,
    Notification,
    Pending,
    ReceivedAlert,
    Silence,
    State,
    Timing,
)
from driftowner.store import dialect
from driftowner.store.base import Changes, Conflict, Settled, StoreError, StoreUnavailable
from driftowner.store.codec import (
    from_ts,
    incident_from_json,
    incident_to_json,
    members_from_json,
    message_from_json,
    message_to_json,
    thread_from_json,
    thread_to_json,
    ts,
)
from driftowner.store.migrations import SCHEMA_VERSION, migrate

log = structlog.get_logger("driftowner.store")

metadata = sa.MetaData()

Name = sa.String()
"""Names, addresses and actors come from the config and are not capped: SQLite ignores a
VARCHAR's length, PostgreSQL would refuse a longer value, and with it the incident."""

meta = sa.Table(
    "driftowner_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

incidents = sa.Table(
    "incidents",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("system", Name, nullable=False),
    sa.Column("rule", Name, nullable=False),
    sa.Column("owner", Name, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column("first_acknowledged_at", sa.Float),
    sa.Column("resolved_at", sa.Float),
    # SLOs copied from the system at opening, so breaches are counted without the body.
    sa.Column("ack_within", sa.Float),
    sa.Column("resolve_within", sa.Float),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    # At most one unresolved incident per fingerprint, enforced by the database itself.
    sa.Index(
        "one_unresolved_per_fingerprint",
        "system",
        "rule",
        unique=True,
        sqlite_where=sa.text("state != 'resolved'"),
        postgresql_where=sa.text("state != 'resolved'"),
    ),
    sa.Index("incidents_by_state", "state", "opened_at"),
    # Reopen candidates: a system's incidents resolved since a cut-off.
    sa.Index("incidents_resolved_by_system", "system", "state", "resolved_at"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(32), sa.ForeignKey("incidents.id"), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("actor", Name, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    # Through what the actor acted (api, cli, link, slack, auto); NULL on events recorded
    # by a person before schema version 3.
    sa.Column("via", sa.String(16)),
    sa.Index("events_by_incident", "incident_id", "seq"),
    sa.Index("events_by_kind", "kind", "incident_id"),
)

handovers = sa.Table(
    # Who held each incident when: one row per reassignment, written with its event. Plain
    # SQL in migrations._to_3 creates the same table on older stores.
    "handovers",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(32), sa.ForeignKey("incidents.id"), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("from_owner", Name, nullable=False),
    sa.Column("to_owner", Name, nullable=False),
    sa.Column("by", Name, nullable=False),
    sa.Column("via", sa.String(16)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Index("handovers_by_incident", "incident_id", "seq"),
)

_OWED = "coalesce(delivered_at, failed_at, superseded_at) IS NULL"
"""Outbox rows still owed: neither delivered, nor given up on, nor superseded. One expression,
written alike in the partial index ``outbox_owed`` and in every query of owed rows
(:func:`_unfinished`), so both databases match the query to that index (three ``IS NULL``
terms would let SQLite's planner pick ``outbox_due`` and sort every owed row)."""

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("incident_id", sa.String(32), sa.ForeignKey("incidents.id"), nullable=False),
    sa.Column("channel", Name, nullable=False),
    sa.Column("recipient", Name, nullable=False),
    sa.Column("address", Name, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", sa.Float),
    sa.Column("leased_until", sa.Float),
    sa.Column("delivered_at", sa.Float),
    sa.Column("failed_at", sa.Float),
    sa.Column("superseded_at", sa.Float),
    sa.Column("last_error", sa.Text),
    sa.Index("outbox_due", "delivered_at", "failed_at", "next_attempt_at"),
    sa.Index("outbox_by_incident", "incident_id"),
    # The claim's path: the owed notifications in the order a lease hands them out, with the
    # two columns that say whether one is due now, so a claim reads the index up to its limit
    # (skipping the leased and the not yet due in the index alone) instead of reading and
    # sorting every owed row. Created at open on older stores (see SqlStore.open).
    sa.Index(
        "outbox_owed",
        "created_at",
        "id",
        "next_attempt_at",
        "leased_until",
        sqlite_where=sa.text(_OWED),
        postgresql_where=sa.text(_OWED),
    ),
)

pending = sa.Table(
    "pending_conditions",
    metadata,
    sa.Column("system", Name, primary_key=True),
    sa.Column("rule", Name, primary_key=True),
    sa.Column("since", sa.Float, nullable=False),
    sa.Column("last_seen_at", sa.Float, nullable=False),
)

leader = sa.Table(
    "leader",
    metadata,
    # One row per lease; the daemon's is LEADERSHIP. Created at open on stores of any version
    # (a new table changes nothing older driftowners read).
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", Name, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

conversations = sa.Table(
    "conversations",
    metadata,
    # The root message each incident started in each conversation (channel + address): a
    # Slack "channel:ts", a mail's Message-ID. Later notifications thread under it. Created at
    # open on stores of any version (a new table changes nothing older driftowners read).
    sa.Column("incident_id", sa.String(32), sa.ForeignKey("incidents.id"), primary_key=True),
    sa.Column("channel", Name, primary_key=True),
    sa.Column("address", Name, primary_key=True),
    sa.Column("ref", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

silences = sa.Table(
    "silences",
    metadata,
    # Who held which systems' pages, why and until when. Created at open on stores of any
    # version (a new table changes nothing older driftowners read).
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("system", Name),
    sa.Column("owner", Name),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("starts_at", sa.Float, nullable=False),
    sa.Column("ends_at", sa.Float, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("by", Name, nullable=False),
    sa.Column("via", sa.String(16)),
    sa.Column("expired_at", sa.Float),
    sa.Column("expired_by", Name),
    sa.Index("silences_by_end", "ends_at"),
)

received_alerts = sa.Table(
    "received_alerts",
    metadata,
    # What Alertmanager webhooks reported to each alertmanager source: one row per episode of
    # an alert (its fingerprint and start). Any instance receives them; the leader reads them.
    # Created at open on stores of any version (a new table changes nothing older driftowners
    # read).
    sa.Column("source", Name, primary_key=True),
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column("starts_at", sa.Float, primary_key=True),
    sa.Column("ends_at", sa.Float),
    sa.Column("resolved", sa.Boolean, nullable=False),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Index("received_alerts_by_end", "source", "ends_at"),
)

groups = sa.Table(
    "notification_groups",
    metadata,
    # Each group's timing, members and thread (see driftowner.grouping), so a restart or
    # another instance keeps group_wait, group_interval, the members and the group's thread.
    # Schema version 4; ``listed`` (JSON) carries the thread's messages and the members.
    sa.Column("channel", Name, primary_key=True),
    sa.Column("recipient", Name, primary_key=True),
    sa.Column("address", Name, primary_key=True),
    sa.Column("flush_at", sa.Float),
    sa.Column("last_sent", sa.Float),
    sa.Column("ref", sa.Text),
    sa.Column("listed", sa.Text, nullable=False),
)

LEADERSHIP = "daemon"
"""The name of the lease whose holder evaluates and escalates."""

IN_CHUNK = 500
"""Ids bound in one ``IN (...)`` of a bulk read: SQLite before 3.32 allows 999 bound
parameters, PostgreSQL 65,535; a longer list is read in several statements of one
transaction."""


def _settle_statement(**outcome: Any) -> sa.Update:
    """The ``UPDATE`` recording one kind of outcome, its values bound per row (see
    :func:`_settled_row`): built once, compiled once, run as one ``executemany``."""
    return (
        sa.update(outbox)
        .where(outbox.c.id == sa.bindparam("settled_id"))
        .values(
            attempts=outbox.c.attempts + 1,
            leased_until=None,
            last_error=sa.bindparam("settled_error"),
            **outcome,
        )
    )


_SETTLE = {
    "delivered": _settle_statement(delivered_at=sa.bindparam("settled_at")),
    "failed": _settle_statement(failed_at=sa.bindparam("settled_at")),
    "retry": _settle_statement(next_attempt_at=sa.bindparam("settled_next")),
}
"""Each kind of outcome's ``UPDATE`` (every attempt counts; the lease ends)."""


class _Writes:
    """Which kinds of write fail now, and why: what readiness and ``driftowner_store_writable``
    report. Each kind is cleared by its own next commit, so a small write that still fits on
    a full disk (a lease renewal rewrites its row in place) does not hide that incidents
    cannot be recorded. Logged once per change, not at every failed write."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing: dict[str, str] = {}

    def failed(self, work: str, reason: str) -> None:
        with self._lock:
            previous = self._failing.get(work)
            self._failing[work] = reason
        if previous != reason:
            log.error("the store cannot be written", work=work, reason=reason)

    def succeeded(self, work: str) -> None:
        with self._lock:
            was = self._failing.pop(work, None)
        if was is not None:
            log.info("the store can be written again", work=work)

    def forget(self, works: Iterable[str]) -> None:
        with self._lock:
            for work in works:
                self._failing.pop(work, None)

    def problem(self) -> str | None:
        with self._lock:
            return next(
                (f"{reason} (writing {work} failed)" for work, reason in self._failing.items()),
                None,
            )


class SqlStore:
    """The :class:`~driftowner.store.base.Store` on SQLite or PostgreSQL alike: incidents,
    events, outbox, pending conditions and the leader lease behind one SQLAlchemy engine.

    Construction does no I/O; :meth:`open` connects, creates or checks the schema.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._writes = _Writes()
        self._unsaved: dict[str, tuple[Pending, ...]] = {}
        """System → the pending conditions its last evaluation could not write (see
        :meth:`pending`)."""
        self._unresolved: dict[str, Incident] = {}
        """Incident id → the unresolved incident as last decoded, with its version: every
        evaluation and escalation tick reads every unresolved incident, and decoding their
        JSON bodies cost most of that read (10,000 open incidents: ~0.4 s a read); a body is
        decoded again only when its row's version moved (every write of an incident moves
        it, on any instance). Incidents are immutable, so sharing them is safe."""

    @property
    def single_instance(self) -> bool:
        """Whether one instance at a time serves this store (SQLite: one host, one file);
        leader election is for PostgreSQL."""
        return dialect.single_instance(self.url)

    def unwritable(self) -> str | None:
        """Why the store cannot be written now, or None: the reason of the last failed write
        of each kind (leadership, incidents, outbox, secrets) not since committed again. No
        query: it answers from the outcome of the writes the daemon and the API make anyway."""
        problem = self._writes.problem()
        return None if problem is None else f"the store cannot be written: {problem}"

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Connect, create the schema or check its version and migrate it.

        Raises:
            StoreError: the URL is not supported, the database is unreachable, or it was
                written by a newer driftowner. The message never shows the URL's password.
        """
        if self._engine is not None:
            return
        try:
            url = parse_storage_url(self.url)
        except UnsupportedStorageURL as error:
            raise StoreError(str(error)) from None
        # As the operator wrote it (postgresql://...), never with its password.
        where = sa.make_url(self.url).render_as_string(hide_password=True)
        try:
            engine = dialect.create_engine(url)
        except OSError as error:
            raise StoreError(
                f"cannot create the store {url.database}: {error.strerror or error}"
            ) from error
        try:
            # Check the version before any DDL: a store written by a newer driftowner must be
            # left exactly as it is.
            with engine.begin() as conn:
                dialect.lock_schema(conn)
                found = None
                if sa.inspect(conn).has_table(meta.name):
                    found = conn.execute(
                        sa.select(meta.c.value).where(meta.c.key == "schema_version")
                    ).scalar_one_or_none()
                if found is not None and int(found) > SCHEMA_VERSION:
                    raise StoreError(
                        f"the store at {where} has schema version {found}; "
                        f"this driftowner knows up to {SCHEMA_VERSION}"
                    )
                if found is not None and int(found) < SCHEMA_VERSION:
                    migrate(conn, int(found))
                    conn.execute(
                        sa.update(meta)
                        .where(meta.c.key == "schema_version")
                        .values(value=str(SCHEMA_VERSION))
                    )
                metadata.create_all(conn)
                # Indexes added to existing tables since they were created (create_all only
                # indexes the tables it creates).
                for table in metadata.sorted_tables:
                    for index in table.indexes:
                        index.create(conn, checkfirst=True)
                if found is None:
                    conn.execute(
                        sa.insert(meta).values(key="schema_version", value=str(SCHEMA_VERSION))
                    )
        except StoreError:
            engine.dispose()
            raise
        except sa.exc.SQLAlchemyError as error:
            engine.dispose()
            reason = error.orig if isinstance(error, sa.exc.DBAPIError) else error
            raise StoreError(
                _without_password(
                    f"cannot open the store at {where}: "
                    f"{error.__class__.__name__}: {_one_line(str(reason))}",
                    url,
                )
            ) from None
        self._engine = engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def forget_unwritable(self, *works: str) -> None:
        """Stop reporting the failures of ``works``: writes this process no longer makes
        (a leader's, once it follows) cannot commit again to clear them."""
        self._writes.forget(works)

    @contextmanager
    def _tx(self, *, read_only: bool = False, work: str = "") -> Iterator[Connection]:
        """One transaction. ``read_only`` ones never wait for a writer's lock (SQLite: a
        deferred BEGIN reads the last commit under WAL; see :mod:`.dialect`). A write's
        outcome is remembered under ``work`` (see :meth:`unwritable`).

        Raises:
            StoreUnavailable: the database could not be used (full, read-only, locked,
                unreachable); the transaction was rolled back.
        """
        if self._engine is None:
            self.open()
        assert self._engine is not None
        try:
            with self._engine.connect() as conn:
                if read_only:
                    conn.execution_options(**dialect.READ_ONLY)
                with conn.begin():
                    yield conn
        except sa.exc.DBAPIError as error:
            if not dialect.unavailable(error):
                raise
            reason = _without_password(_one_line(str(error.orig)), parse_storage_url(self.url))
            if read_only:
                raise StoreUnavailable(f"the store cannot be read: {reason}") from error
            self._writes.failed(work, reason)
            raise StoreUnavailable(
                f"the store cannot be written: {reason}; nothing was changed"
            ) from error
        if not read_only:
            self._writes.succeeded(work)

    def secret(self, name: str) -> str:
        """A random secret kept in the store, created on first use (the action-link key).

        Every instance over one store shares it, and it survives restarts.
        """
        key = f"secret:{name}"
        for _ in range(2):  # a second instance may create it between our read and insert
            try:
                with self._tx(work="secrets") as conn:
                    query = sa.select(meta.c.value).where(meta.c.key == key)
                    found = conn.execute(query).scalar()
                    if found is not None:
                        return str(found)
                    value = secrets.token_urlsafe(32)
                    conn.execute(sa.insert(meta).values(key=key, value=value))
                    return value
            except sa.exc.IntegrityError:
                continue
        raise StoreError(f"cannot create the {name} secret")

    def ping(self) -> bool:
        """True when the store answers a trivial query."""
        try:
            with self._tx(read_only=True) as conn:
                conn.execute(sa.select(1))
        except (sa.exc.SQLAlchemyError, StoreError):
            return False
        return True

    # -- reads -------------------------------------------------------------------------------

    def incident(self, incident_id: str) -> Incident | None:
        with self._tx(read_only=True) as conn:
            row = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).first()
        return None if row is None else incident_from_json(row.body, row.version)

    def incidents(
        self,
        *,
        state: State | None = None,
        owner: str | None = None,
        system: str | None = None,
        unresolved: bool = False,
        opened_since: datetime | None = None,
    ) -> list[Incident]:
        """Incidents matching every given filter, oldest first."""
        query = sa.select(incidents.c.id, incidents.c.body, incidents.c.version).order_by(
            incidents.c.opened_at, incidents.c.id
        )
        if state is not None:
            query = query.where(incidents.c.state == state)
        if unresolved:
            query = query.where(incidents.c.state != "resolved")
        if owner is not None:
            query = query.where(incidents.c.owner == owner)
        if system is not None:
            query = query.where(incidents.c.system == system)
        if opened_since is not None:
            query = query.where(incidents.c.opened_at >= ts(opened_since))
        with self._tx(read_only=True) as conn:
            rows = conn.execute(query).all()
        if unresolved and (state, owner, system, opened_since) == (None, None, None, None):
            return self._decoded_unresolved(rows)
        return [incident_from_json(row.body, row.version) for row in rows]

    def _decoded_unresolved(self, rows: Sequence[Any]) -> list[Incident]:
        """Every unresolved incident of ``rows`` (all of them, as read), each body decoded
        only if its version is not the one decoded last time; the cache then holds exactly
        these incidents (the resolved and the deleted leave it)."""
        known = self._unresolved
        found: dict[str, Incident] = {}
        for row in rows:
            cached = known.get(row.id)
            if cached is None or cached.version != row.version:
                cached = incident_from_json(row.body, row.version)
            found[row.id] = cached
        self._unresolved = found
        return list(found.values())

    def timings(self, *, opened_since: datetime | None = None) -> list[Timing]:
        """The numbers of every incident (opened since ``opened_since``, plus every unresolved
        one when it is given), from plain columns: what the report and /metrics aggregate."""
        c = incidents.c
        query = sa.select(
            c.id,
            c.owner,
            c.system,
            c.kind,
            c.state,
            c.opened_at,
            c.first_acknowledged_at,
            c.resolved_at,
            c.ack_within,
            c.resolve_within,
        )
        if opened_since is not None:
            query = query.where(sa.or_(c.opened_at >= ts(opened_since), c.state != "resolved"))
        with self._tx(read_only=True) as conn:
            # Positional, in Timing's field order: thousands per scrape, so no mapping per row.
            return [Timing(*cast(tuple[Any, ...], row)) for row in conn.execute(query)]

    def recently_resolved(self, system: str, since: datetime) -> dict[tuple[str, str], Incident]:
        """The newest incident of each of a system's fingerprints resolved at or after
        ``since`` (candidates to reopen)."""
        query = (
            sa.select(incidents.c.body, incidents.c.version)
            .where(
                incidents.c.system == system,
                incidents.c.state == "resolved",
                incidents.c.resolved_at >= ts(since),
            )
            .order_by(incidents.c.resolved_at)
        )
        with self._tx(read_only=True) as conn:
            found = [incident_from_json(row.body, row.version) for row in conn.execute(query)]
        return {incident.fingerprint: incident for incident in found}

    def handovers(self) -> dict[str, list[Handover]]:
        """Every incident's reassignments, oldest first, by incident id (few: most incidents
        are never handed over)."""
        h = handovers.c
        query = sa.select(handovers).order_by(h.incident_id, h.seq)
        found: dict[str, list[Handover]] = {}
        with self._tx(read_only=True) as conn:
            for row in conn.execute(query):
                found.setdefault(row.incident_id, []).append(
                    Handover(
                        row.incident_id,
                        _at(row.at),
                        row.from_owner,
                        row.to_owner,
                        row.by,
                        row.via,
                        row.reason,
                    )
                )
        return found

    def acknowledgements(self, incident_ids: Iterable[str]) -> dict[str, list[float]]:
        """When each of these incidents was acknowledged (Unix seconds, every time, oldest
        first)."""
        ids = sorted(set(incident_ids))
        found: dict[str, list[float]] = {i: [] for i in ids}
        if not ids:
            return found
        e = events.c
        query = (
            sa.select(e.incident_id, e.at)
            .where(e.kind == "acknowledged", e.incident_id.in_(ids))
            .order_by(e.seq)
        )
        with self._tx(read_only=True) as conn:
            for incident_id, at in conn.execute(query):
                found[incident_id].append(at)
        return found

    def events(self, incident_id: str) -> list[Event]:
        with self._tx(read_only=True) as conn:
            rows = conn.execute(
                sa.select(events).where(events.c.incident_id == incident_id).order_by(events.c.seq)
            ).all()
        return [_event(row) for row in rows]

    def accepted_after(self, seq: int) -> list[Accepted]:
        """The ``accepted`` events logged after position ``seq``, oldest first, with the
        system and signals of their incidents (what the detector bank re-learns)."""
        query = (
            sa.select(events.c.seq, events.c.at, incidents.c.body, incidents.c.version)
            .join(incidents, incidents.c.id == events.c.incident_id)
            .where(events.c.seq > seq, events.c.kind == "accepted")
            .order_by(events.c.seq)
        )
        with self._tx(read_only=True) as conn:
            rows = conn.execute(query).all()
        found = []
        for row in rows:
            incident = incident_from_json(row.body, row.version)
            found.append(Accepted(row.seq, incident.system, incident.signals, _at(row.at)))
        return found

    def silences(self, active_at: datetime | None = None) -> list[Silence]:
        query = sa.select(silences).order_by(silences.c.starts_at, silences.c.id)
        if active_at is not None:
            at = ts(active_at)
            query = query.where(
                silences.c.starts_at <= at,
                silences.c.ends_at > at,
                sa.or_(silences.c.expired_at.is_(None), silences.c.expired_at > at),
            )
        with self._tx(read_only=True) as conn:
            rows = conn.execute(query).all()
        return [_silence(row) for row in rows]

    def add_silence(self, silence: Silence) -> None:
        try:
            with self._tx(work="silences") as conn:
                conn.execute(sa.insert(silences).values(**_silence_row(silence)))
        except sa.exc.IntegrityError as error:
            raise Conflict(f"refused by the store: silence {silence.id} exists") from error

    def expire_silence(self, silence_id: str, at: datetime, by: str) -> Silence | None:
        with self._tx(work="silences") as conn:
            conn.execute(
                sa.update(silences)
                .where(silences.c.id == silence_id, silences.c.expired_at.is_(None))
                .values(expired_at=ts(at), expired_by=by)
            )
            row = conn.execute(sa.select(silences).where(silences.c.id == silence_id)).first()
        return None if row is None else _silence(row)

    def pending(self, system: str) -> dict[tuple[str, str], Pending]:
        """A system's pending conditions: what its last evaluation recorded or, when the
        store could not write that (a full disk), what it saw. So a condition seen holding
        through an outage of the store keeps its start and opens its incident on time once
        the store can be written, instead of starting its ``for`` over. Held in memory only:
        after a restart the stored rows count, as nobody saw the condition hold meanwhile."""
        if (unsaved := self._unsaved.get(system)) is not None:
            return {(p.system, p.rule): p for p in unsaved}
        with self._tx(read_only=True) as conn:
            rows = conn.execute(sa.select(pending).where(pending.c.system == system)).all()
        return {
            (row.system, row.rule): Pending(
                row.system, row.rule, _at(row.since), _at(row.last_seen_at)
            )
            for row in rows
        }

    def pending_by_system(self) -> dict[str, dict[tuple[str, str], Pending]]:
        """Every system's pending conditions in one read, each as :meth:`pending` gives it
        (what this process saw but could not write standing in for the stored rows)."""
        with self._tx(read_only=True) as conn:
            rows = conn.execute(sa.select(pending)).all()
        found: dict[str, dict[tuple[str, str], Pending]] = {}
        for row in rows:
            if row.system not in self._unsaved:
                held = Pending(row.system, row.rule, _at(row.since), _at(row.last_seen_at))
                found.setdefault(row.system, {})[(row.system, row.rule)] = held
        for system, unsaved in self._unsaved.items():
            if unsaved:
                found[system] = {(p.system, p.rule): p for p in unsaved}
        return found

    def notifications(self, incident_id: str) -> list[Notification]:
        return self.notifications_of([incident_id])[incident_id]

    def notifications_of(self, incident_ids: Iterable[str]) -> dict[str, list[Notification]]:
        """Each named incident's notifications, oldest first, in one read transaction: one
        statement per :data:`IN_CHUNK` ids, so a storm's list stays within every database's
        limit on bound parameters."""
        ids = sorted(set(incident_ids))
        found: dict[str, list[Notification]] = {i: [] for i in ids}
        with self._tx(read_only=True) as conn:
            for start in range(0, len(ids), IN_CHUNK):
                rows = conn.execute(
                    sa.select(outbox)
                    .where(outbox.c.incident_id.in_(ids[start : start + IN_CHUNK]))
                    .order_by(outbox.c.created_at, outbox.c.id)
                )
                for row in rows:
                    found[row.incident_id].append(_notification(row))
        return found

    def outbox_pending(self) -> int:
        """Notifications neither delivered nor given up on."""
        with self._tx(read_only=True) as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(outbox).where(*_unfinished())
                ).scalar_one()
            )

    def groups(self, keys: Iterable[GroupKey]) -> dict[GroupKey, GroupState]:
        """The kept state of each named group; groups never kept are left out."""
        wanted = set(keys)
        if not wanted:
            return {}
        with self._tx(read_only=True) as conn:
            rows = conn.execute(
                sa.select(groups).where(
                    groups.c.channel.in_(sorted({key[0] for key in wanted})),
                    groups.c.recipient.in_(sorted({key[1] for key in wanted})),
                )
            ).all()
        found = {(row.channel, row.recipient, row.address): _group(row) for row in rows}
        return {key: state for key, state in found.items() if key in wanted}

    def save_groups(self, states: Mapping[GroupKey, GroupState]) -> None:
        """Keep each group's state, replacing the kept one, in one transaction (a delete and
        an insert: the same SQL on both databases)."""
        if not states:
            return
        with self._tx(work="outbox") as conn:
            for (channel, recipient, address), state in states.items():
                key = (
                    groups.c.channel == channel,
                    groups.c.recipient == recipient,
                    groups.c.address == address,
                )
                conn.execute(sa.delete(groups).where(*key))
                conn.execute(
                    sa.insert(groups).values(
                        channel=channel,
                        recipient=recipient,
                        address=address,
                        flush_at=ts(state.flush_at),
                        last_sent=ts(state.last_sent),
                        ref=state.thread.ref,
                        listed=thread_to_json(state.thread, state.members),
                    )
                )

    def outbox_oldest(self, now: datetime) -> float:
        """Seconds the longest-waiting notification still owed has waited since it was made
        (0 when none is owed): the outbox's delay, which a count of pending ones hides."""
        with self._tx(read_only=True) as conn:
            oldest = conn.execute(
                sa.select(sa.func.min(outbox.c.created_at)).where(*_unfinished())
            ).scalar_one_or_none()
        return 0.0 if oldest is None else max(now.timestamp() - float(oldest), 0.0)

    def next_due(self) -> datetime | None:
        """When the next notification still owed falls due (its next attempt, or its lease's
        end if one is leased), or None when none is owed."""
        due = sa.func.coalesce(outbox.c.leased_until, outbox.c.next_attempt_at, outbox.c.created_at)
        with self._tx(read_only=True) as conn:
            at = conn.execute(sa.select(sa.func.min(due)).where(*_unfinished())).scalar_one()
        return from_ts(at)

    # -- writes ------------------------------------------------------------------------------

    def apply(self, changes: Changes) -> None:
        """Write incidents, events, notifications and pending conditions in one transaction.

        Raises:
            Conflict: an updated incident changed since it was read; nothing was written.
        """
        try:
            self._apply(changes)
        except sa.exc.IntegrityError as error:
            # The one-unresolved-per-fingerprint index refused an opening: another writer
            # opened it first. Nothing was written; the caller decides again.
            raise Conflict(f"refused by the store: {_one_line(str(error.orig))}") from error
        except StoreUnavailable:
            if changes.pending_system is not None:
                self._unsaved[changes.pending_system] = _seen(changes)
            raise
        if changes.pending_system is not None:
            self._unsaved.pop(changes.pending_system, None)

    def apply_each(self, batch: Sequence[Changes]) -> list[Conflict | None]:
        """Write each of ``batch`` whole or not at all, all of them in one transaction (one
        commit, one fsync, for many systems' changes). If one is refused (someone acted on an
        incident between the caller's read and this write: rare), the batch is written again
        one set of changes to a transaction, so only the refused are left out (their entry is
        the :class:`Conflict`). No savepoints: SQLite may roll a whole transaction back on a
        full disk, which a savepoint's rollback would then fail to find.

        Raises:
            StoreUnavailable: the store cannot be written now; nothing was written.
        """
        try:
            with self._tx(work="incidents") as conn:
                for changes in batch:
                    _write(conn, changes)
        except (Conflict, sa.exc.IntegrityError):
            return [self._refusal(changes) for changes in batch]
        except StoreUnavailable:
            for changes in batch:
                if changes.pending_system is not None:
                    self._unsaved[changes.pending_system] = _seen(changes)
            raise
        for changes in batch:
            if changes.pending_system is not None:
                self._unsaved.pop(changes.pending_system, None)
        return [None] * len(batch)

    def _refusal(self, changes: Changes) -> Conflict | None:
        """``changes`` applied alone: the Conflict that refused them, or None once written."""
        try:
            self.apply(changes)
        except Conflict as conflict:
            return conflict
        return None

    def _apply(self, changes: Changes) -> None:
        with self._tx(work="incidents") as conn:
            _write(conn, changes)

    # -- outbox ------------------------------------------------------------------------------

    def lease_due(self, now: datetime, lease: timedelta, limit: int = 100) -> list[Notification]:
        """Claim notifications due for a delivery attempt for ``lease``; a worker that dies
        leaves them to be claimed again once the lease runs out.

        Concurrent workers, in one process or many, never claim the same notification twice
        within a lease: the rows are locked as they are read (see :func:`dialect.claim`).
        """
        due = now.timestamp()
        with self._tx(work="outbox") as conn:
            dialect.walk_in_order(conn)
            rows = conn.execute(
                dialect.claim(
                    sa.select(outbox)
                    .where(
                        *_unfinished(),
                        # Checked on each entry of outbox_owed, walked in the order of the
                        # claim, never used to search it: a search by due time (PostgreSQL's
                        # choice while its statistics lag a storm) reads and sorts every owed
                        # row, where the walk stops at the limit.
                        sa.func.coalesce(outbox.c.next_attempt_at, 0.0) <= due,
                        sa.func.coalesce(outbox.c.leased_until, 0.0) <= due,
                    )
                    .order_by(outbox.c.created_at, outbox.c.id)
                    .limit(limit)
                )
            ).all()
            if rows:
                conn.execute(
                    sa.update(outbox)
                    .where(outbox.c.id.in_([row.id for row in rows]))
                    .values(leased_until=ts(now + lease))
                )
        return [_notification(row) for row in rows]

    def incident_states(self, incident_ids: Iterable[str]) -> dict[str, State]:
        """The current state of each named incident (absent ids are left out)."""
        wanted = sorted(set(incident_ids))
        if not wanted:
            return {}
        with self._tx(read_only=True) as conn:
            rows = conn.execute(
                sa.select(incidents.c.id, incidents.c.state).where(incidents.c.id.in_(wanted))
            ).all()
        return {row.id: row.state for row in rows}

    def mark_superseded(self, notification_id: str, at: datetime, reason: str) -> None:
        """Finish a notification without sending it: the incident moved on (acknowledged,
        resolved) and the message would now be wrong."""
        with self._tx(work="outbox") as conn:
            conn.execute(
                sa.update(outbox)
                .where(outbox.c.id == notification_id)
                .values(superseded_at=ts(at), leased_until=None, last_error=reason)
            )

    def mark_delivered(self, notification_id: str, at: datetime, ref: str | None = None) -> None:
        """Record a delivery. ``ref``, the reference of the message it created, becomes the
        root of its conversation (incident, channel, address) in the same transaction, unless
        that conversation already has one: the first delivered message stays the root."""
        self.settle([Settled(notification_id, at, "delivered", ref=ref)])

    def threads(self, notifications: Iterable[Notification]) -> dict[str, str]:
        """Notification id → the root reference of its conversation, for those whose
        conversation (incident, channel, address) has one."""
        wanted = {n.id: (n.incident_id, n.channel, n.address) for n in notifications}
        if not wanted:
            return {}
        with self._tx(read_only=True) as conn:
            rows = conn.execute(
                sa.select(conversations).where(
                    conversations.c.incident_id.in_(sorted({key[0] for key in wanted.values()}))
                )
            ).all()
        found = {(row.incident_id, row.channel, row.address): row.ref for row in rows}
        return {nid: found[key] for nid, key in wanted.items() if key in found}

    def conversations(self, incident_id: str) -> list[tuple[str, str, str]]:
        """``(channel, address, ref)`` of every conversation an incident started, oldest
        first."""
        with self._tx(read_only=True) as conn:
            rows = conn.execute(
                sa.select(conversations)
                .where(conversations.c.incident_id == incident_id)
                .order_by(conversations.c.created_at, conversations.c.channel)
            ).all()
        return [(row.channel, row.address, row.ref) for row in rows]

    def mark_retry(
        self, notification_id: str, at: datetime, error: str, next_attempt_at: datetime
    ) -> None:
        self.settle([Settled(notification_id, at, "retry", error, next_attempt_at)])

    def mark_failed(
        self,
        notification_id: str,
        at: datetime,
        error: str,
        event: Event | None = None,
        fallback: Notification | None = None,
    ) -> None:
        """Give up on a notification; ``event`` (the incident's record of it) and
        ``fallback`` (the page through the fallback channel that takes over) are written in
        the same transaction, so a give-up is never committed without its successor."""
        self.settle([Settled(notification_id, at, "failed", error, None, event, fallback)])

    def settle(self, outcomes: Sequence[Settled]) -> None:
        """Record several sends' outcomes in one transaction (a group commit: what finished
        while the previous commit was being written goes in the next one together).

        Each kind of write is one statement for the whole batch (an ``executemany`` of one
        prepared ``UPDATE`` per kind of outcome, one insert of the events, one of the
        fallbacks), so a commit of 300 outcomes costs the round trips of one of 3."""
        if not outcomes:
            return
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for outcome in outcomes:
            by_kind.setdefault(outcome.kind, []).append(_settled_row(outcome))
        gave_up = [_event_row(o.event) for o in outcomes if o.event is not None]
        fallbacks = [_outbox_row(o.fallback) for o in outcomes if o.fallback is not None]
        roots = [
            (o.notification_id, o.ref, o.at.timestamp())
            for o in outcomes
            if o.kind == "delivered" and o.ref is not None
        ]
        with self._tx(work="outbox") as conn:
            for kind, rows in by_kind.items():
                conn.execute(_SETTLE[kind], rows)
            if gave_up:
                conn.execute(sa.insert(events), gave_up)
            if fallbacks:
                conn.execute(sa.insert(outbox), fallbacks)
            if roots:
                _start_conversations(conn, roots)

    def defer(self, due: Mapping[str, tuple[datetime, datetime]]) -> None:
        """Hand leased notifications back without counting an attempt: ``due`` maps each id
        to (when it is due again, the end of the lease the caller holds). Their destination
        cannot take them within their lease (a rate limit, a server's Retry-After, a full
        pipe, a stopping instance). A notification whose lease is no longer the caller's (it
        ran out and another worker claimed it) is left alone."""
        if not due:
            return
        with self._tx(work="outbox") as conn:
            conn.execute(
                sa.update(outbox)
                .where(
                    outbox.c.id == sa.bindparam("notification_id"),
                    outbox.c.leased_until == sa.bindparam("held_until"),
                    *_unfinished(),
                )
                .values(next_attempt_at=sa.bindparam("until"), leased_until=None),
                [
                    {"notification_id": key, "until": ts(at), "held_until": ts(held)}
                    for key, (at, held) in due.items()
                ],
            )

    # -- leadership --------------------------------------------------------------------------

    # -- received alerts ---------------------------------------------------------------------

    def record_alerts(
        self, source: str, alerts: Sequence[ReceivedAlert], *, forget_before: datetime
    ) -> None:
        """Keep what one webhook reported to an alertmanager source, in one transaction, and
        forget the source's alerts resolved before ``forget_before``.

        Raises:
            StoreUnavailable: nothing was written (Alertmanager sends the webhook again).
        """
        for attempt in range(3):
            try:
                with self._tx(work="alerts") as conn:
                    for alert in alerts:
                        _record_alert(conn, source, alert)
                    conn.execute(
                        sa.delete(received_alerts).where(
                            received_alerts.c.source == source,
                            received_alerts.c.resolved.is_(True),
                            received_alerts.c.ends_at < ts(forget_before),
                        )
                    )
                return
            except sa.exc.IntegrityError:
                # Another instance inserted one of these episodes first: write over it.
                if attempt == 2:
                    raise

    def received_alerts(self, source: str, start: datetime, end: datetime) -> list[ReceivedAlert]:
        """The episodes of an alertmanager source's alerts that fire at some time in
        ``[start, end]``, with every episode of an alert that has one without an end (a
        later episode ends it), oldest first."""
        table = received_alerts.c
        open_ended = sa.select(table.fingerprint).where(
            table.source == source, table.ends_at.is_(None)
        )
        query = (
            sa.select(received_alerts)
            .where(
                table.source == source,
                table.starts_at <= ts(end),
                sa.or_(
                    table.ends_at.is_(None),
                    table.ends_at > ts(start),
                    table.fingerprint.in_(open_ended),
                ),
            )
            .order_by(table.starts_at, table.fingerprint)
        )
        with self._tx(read_only=True) as conn:
            rows = conn.execute(query).all()
        return [_received_alert(row) for row in rows]

    def try_lead(self, holder: str, ttl: timedelta, now: datetime) -> bool:
        """Claim or renew the leadership lease for ``holder`` until ``now + ttl``.

        True when ``holder`` leads: it already held the lease (renewed), or the lease was free
        or had expired (taken over). False while another holder's lease runs. One atomic
        conditional write on either database, so of two contenders exactly one wins.

        A claim the store cannot write (a full disk) never demotes the one instance of a
        SQLite store: it leads on unless the lease it can still read names another holder
        whose lease runs. On PostgreSQL the error is raised, and the caller follows: another
        instance may be leading through a database this one cannot reach.

        ``now`` comes from the caller's clock: instances must agree on the time to well within
        ``ttl``, and a leader should renew well before ``ttl`` runs out.

        Raises:
            StoreUnavailable: the claim could not be written (on SQLite: nor the lease read).
        """
        try:
            return self._claim(holder, ttl, now)
        except StoreUnavailable:
            if not self.single_instance:
                raise
            return self.lease_holder(now) in (None, holder)

    def _claim(self, holder: str, ttl: timedelta, now: datetime) -> bool:
        row = {"holder": holder, "expires_at": ts(now + ttl)}
        try:
            with self._tx(work="leadership") as conn:
                taken = conn.execute(
                    sa.update(leader)
                    .where(
                        leader.c.name == LEADERSHIP,
                        sa.or_(leader.c.holder == holder, leader.c.expires_at <= ts(now)),
                    )
                    .values(**row)
                )
                if taken.rowcount == 1:
                    return True
                held = conn.execute(
                    sa.select(leader.c.holder).where(leader.c.name == LEADERSHIP)
                ).first()
                if held is not None:
                    return False
                conn.execute(sa.insert(leader).values(name=LEADERSHIP, **row))
                return True
        except sa.exc.IntegrityError:
            # Another contender inserted the first lease between our read and insert; its
            # transaction won and ours rolled back.
            return False

    def lease_holder(self, now: datetime) -> str | None:
        """Who holds the leadership lease at ``now``; None when nobody's lease runs."""
        with self._tx(read_only=True) as conn:
            held = conn.execute(
                sa.select(leader.c.holder).where(
                    leader.c.name == LEADERSHIP, leader.c.expires_at > ts(now)
                )
            ).scalar_one_or_none()
        return None if held is None else str(held)

    def resign(self, holder: str, now: datetime) -> None:
        """End ``holder``'s lease at ``now`` (a clean shutdown), so another instance takes over
        at its next try instead of waiting out the lease. Does nothing if it does not lead."""
        with self._tx(work="leadership") as conn:
            conn.execute(
                sa.update(leader)
                .where(leader.c.name == LEADERSHIP, leader.c.holder == holder)
                .values(expires_at=ts(now))
            )


def _record_alert(conn: Connection, source: str, alert: ReceivedAlert) -> None:
    """Write one reported episode. A resolve is final: a firing report of an episode already
    resolved (an HA peer's late delivery) changes nothing. Each write is one conditional
    statement, so two instances reporting at once cannot undo each other's resolve."""
    key = (
        received_alerts.c.source == source,
        received_alerts.c.fingerprint == alert.fingerprint,
        received_alerts.c.starts_at == ts(alert.starts_at),
    )
    values = {
        "ends_at": ts(alert.ends_at),
        "labels": json.dumps(dict(alert.labels), sort_keys=True),
        "received_at": ts(alert.received_at),
    }
    update = sa.update(received_alerts).where(*key)
    if alert.resolved:
        done = conn.execute(update.values(**values, resolved=True)).rowcount
    else:
        done = conn.execute(
            update.where(received_alerts.c.resolved.is_(False)).values(**values)
        ).rowcount
        if not done:
            done = conn.execute(
                sa.select(sa.func.count()).select_from(received_alerts).where(*key)
            ).scalar_one()
    if not done:
        conn.execute(
            sa.insert(received_alerts).values(
                source=source,
                fingerprint=alert.fingerprint,
                starts_at=ts(alert.starts_at),
                resolved=alert.resolved,
                **values,
            )
        )


def _received_alert(row: Any) -> ReceivedAlert:
    return ReceivedAlert(
        fingerprint=row.fingerprint,
        labels=tuple(sorted(json.loads(row.labels).items())),
        starts_at=_at(row.starts_at),
        ends_at=from_ts(row.ends_at),
        resolved=bool(row.resolved),
        received_at=_at(row.received_at),
    )


def _start_conversations(conn: Connection, roots: Sequence[tuple[str, str, float]]) -> None:
    """Make each delivered notification's ``ref`` the root of its conversation (incident,
    channel, address) unless that conversation has one already; ``roots`` holds
    (notification id, ref, delivered at) in the order the deliveries are recorded, so of two
    in one batch the first stays the root. A plain select-then-insert: the outbox never sends
    two notifications of one conversation at once to different workers for long, and the
    primary key keeps the first root."""
    rows = conn.execute(
        sa.select(outbox.c.id, outbox.c.incident_id, outbox.c.channel, outbox.c.address).where(
            outbox.c.id.in_(sorted({nid for nid, _, _ in roots}))
        )
    ).all()
    key_of = {row.id: (row.incident_id, row.channel, row.address) for row in rows}
    started = conn.execute(
        sa.select(
            conversations.c.incident_id, conversations.c.channel, conversations.c.address
        ).where(conversations.c.incident_id.in_(sorted({k[0] for k in key_of.values()})))
    ).all()
    held = {tuple(row) for row in started}
    new = []
    for nid, ref, at in roots:
        key = key_of.get(nid)
        if key is None or key in held:
            continue
        held.add(key)
        incident_id, channel, address = key
        new.append(
            {
                "incident_id": incident_id,
                "channel": channel,
                "address": address,
                "ref": ref,
                "created_at": at,
            }
        )
    if new:
        conn.execute(sa.insert(conversations), new)


def _group(row: Any) -> GroupState:
    thread = thread_from_json(row.ref, row.listed)
    return GroupState(
        flush_at=from_ts(row.flush_at),
        last_sent=from_ts(row.last_sent),
        thread=thread,
        members=members_from_json(row.listed, thread),
    )


def _write(conn: Connection, changes: Changes) -> None:
    """Write ``changes`` in ``conn``'s transaction (see :meth:`SqlStore.apply`).

    Raises:
        Conflict: an updated incident changed since it was read.
    """
    for incident in changes.opened:
        conn.execute(sa.insert(incidents).values(**_incident_row(incident, 0)))
    for incident in changes.updated:
        result = conn.execute(
            sa.update(incidents)
            .where(incidents.c.id == incident.id, incidents.c.version == incident.version)
            .values(**_incident_row(incident, incident.version + 1))
        )
        if result.rowcount != 1:
            raise Conflict(f"incident {incident.id} changed since it was read")
    if changes.events:
        conn.execute(sa.insert(events), [_event_row(e) for e in changes.events])
    if changes.handovers:
        conn.execute(
            sa.insert(handovers),
            [
                {
                    "incident_id": h.incident_id,
                    "at": ts(h.at),
                    "from_owner": h.from_owner,
                    "to_owner": h.to_owner,
                    "by": h.by,
                    "via": h.via,
                    "reason": h.reason,
                }
                for h in changes.handovers
            ],
        )
    if changes.notifications:
        conn.execute(sa.insert(outbox), [_outbox_row(n) for n in changes.notifications])
    if changes.pending_system is not None:
        conn.execute(sa.delete(pending).where(pending.c.system == changes.pending_system))
        if changes.pending:
            conn.execute(
                sa.insert(pending),
                [
                    {
                        "system": p.system,
                        "rule": p.rule,
                        "since": ts(p.since),
                        "last_seen_at": ts(p.last_seen_at),
                    }
                    for p in changes.pending
                ],
            )


def _seen(changes: Changes) -> tuple[Pending, ...]:
    """The conditions an evaluation saw holding, from its unwritten ``changes``: those still
    pending, and those whose incident it was opening or reopening (pending again until that
    can be written, with the start they had)."""
    assert changes.pending_system is not None
    seen = list(changes.pending)
    opening = {e.incident_id: e.at for e in changes.events if e.kind in ("opened", "reopened")}
    for incident in [*changes.opened, *changes.updated]:
        began = incident.condition_began_at
        if incident.id in opening and began is not None:
            seen.append(Pending(changes.pending_system, incident.rule, began, opening[incident.id]))
    return tuple(seen)


def _unfinished() -> tuple[sa.ColumnElement[bool], ...]:
    """Outbox rows still owed: neither delivered, nor given up on, nor superseded (the
    condition of the ``outbox_owed`` index, :data:`_OWED`)."""
    return (
        sa.func.coalesce(outbox.c.delivered_at, outbox.c.failed_at, outbox.c.superseded_at).is_(
            None
        ),
    )


def _one_line(text: str) -> str:
    """A driver's message on one line (PostgreSQL's carry DETAIL and HINT lines)."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _without_password(text: str, url: sa.URL) -> str:
    """``text`` with ``url``'s password masked, should a driver message ever quote it."""
    if url.password:
        text = text.replace(str(url.password), "***")
    return text


def _at(value: float) -> datetime:
    at = from_ts(value)
    assert at is not None
    return at


def _incident_row(incident: Incident, version: int) -> dict[str, Any]:
    timing = incident.timing()
    return {
        "id": incident.id,
        "system": incident.system,
        "rule": incident.rule,
        "owner": incident.owner,
        "kind": incident.kind,
        "state": incident.state,
        "opened_at": ts(incident.opened_at),
        "first_acknowledged_at": ts(incident.first_acknowledged_at),
        "resolved_at": ts(incident.resolved_at),
        "ack_within": timing.ack_within,
        "resolve_within": timing.resolve_within,
        "version": version,
        "body": incident_to_json(incident),
    }


def _silence_row(s: Silence) -> dict[str, Any]:
    return {
        "id": s.id,
        "system": s.system,
        "owner": s.owner,
        "labels": json.dumps(dict(s.labels), sort_keys=True),
        "starts_at": ts(s.starts_at),
        "ends_at": ts(s.ends_at),
        "reason": s.reason,
        "by": s.by,
        "via": s.via,
        "expired_at": ts(s.expired_at),
        "expired_by": s.expired_by,
    }


def _silence(row: Any) -> Silence:
    return Silence(
        id=row.id,
        starts_at=_at(row.starts_at),
        ends_at=_at(row.ends_at),
        reason=row.reason,
        by=row.by,
        via=row.via,
        system=row.system,
        owner=row.owner,
        labels=tuple(sorted(json.loads(row.labels).items())),
        expired_at=from_ts(row.expired_at),
        expired_by=row.expired_by,
    )


def _settled_row(outcome: Settled) -> dict[str, Any]:
    """The bound values of ``outcome``'s statement in :data:`_SETTLE`."""
    row: dict[str, Any] = {"settled_id": outcome.notification_id, "settled_error": outcome.error}
    if outcome.kind == "retry":
        row["settled_next"] = ts(outcome.next_attempt_at)
    else:
        row["settled_at"] = outcome.at.timestamp()
    return row


def _event_row(e: Event) -> dict[str, Any]:
    return {
        "incident_id": e.incident_id,
        "at": ts(e.at),
        "kind": e.kind,
        "actor": e.actor,
        "detail": e.detail,
        "via": e.via,
    }


def _event(row: Any) -> Event:
    return Event(row.incident_id, _at(row.at), row.kind, row.actor, row.detail, row.via)


def _outbox_row(n: Notification) -> dict[str, Any]:
    return {
        "id": n.id,
        "incident_id": n.incident_id,
        "channel": n.channel,
        "recipient": n.recipient,
        "address": n.address,
        "message": message_to_json(n.message),
        "created_at": ts(n.created_at),
        "attempts": n.attempts,
        "next_attempt_at": ts(n.next_attempt_at),
        "delivered_at": ts(n.delivered_at),
        "failed_at": ts(n.failed_at),
        "last_error": n.last_error,
    }


def _notification(row: Any) -> Notification:
    return Notification(
        id=row.id,
        incident_id=row.incident_id,
        channel=row.channel,
        recipient=row.recipient,
        address=row.address,
        message=message_from_json(row.message),
        created_at=_at(row.created_at),
        attempts=row.attempts,
        next_attempt_at=from_ts(row.next_attempt_at),
        delivered_at=from_ts(row.delivered_at),
        failed_at=from_ts(row.failed_at),
        last_error=row.last_error,
    )
