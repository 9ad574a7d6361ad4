"""The evaluation cycle over a real store: what happens to incidents when the config moves
under them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from driftowner import runner
from driftowner.cycle import Pager
from driftowner.ids import new_incident_id
from driftowner.model import AUTO
from driftowner.store import Changes, SqlStore
from tests.unit.factories import T0, finding, ids, incident, links, make_config, notification
from tests.unit.test_paging_policy import storm_config


def test_incidents_of_a_removed_system_resolve_and_stop_escalating(tmp_path: Path) -> None:
    """A system deleted from the config (a decommissioned model): its open incident is
    resolved by ``auto`` with the reason, everyone who was paged is told, and escalation no
    longer ticks it."""
    store = SqlStore(f"sqlite:///{tmp_path / 's.db'}")
    store.open()
    orphan = incident(id="inc-orphan", system="retired-model")
    store.apply(
        Changes(opened=[orphan], notifications=[notification("n-1", incident_id="inc-orphan")])
    )
    store.mark_delivered("n-1", T0)
    config = make_config()
    now = T0 + timedelta(hours=2)
    pager = Pager(ids("notice"), lambda _i, _a, _r=None: None)
    assert runner.escalate(store, config, now, pager) == 0
    changed = runner.evaluate(store, config, {}, now, new_incident_id, pager)
    assert [(i.id, i.state, i.resolved_by) for i in changed] == [("inc-orphan", "resolved", AUTO)]
    assert store.events("inc-orphan")[-1].detail == "system removed from the config"
    resolved_notices = [
        n for n in store.notifications("inc-orphan") if n.message.purpose == "resolved"
    ]
    assert [(n.recipient, n.channel) for n in resolved_notices] == [("alice", "console")]
    store.close()


def test_a_storm_is_written_in_a_few_commits_not_one_per_system(tmp_path: Path) -> None:
    """450 models fed by one pipeline break in the same cycle: the evaluation's 451 openings
    and the escalation's 451 first steps each go to SQLite in ceil(451 / 200) = 3 commits (a
    commit is an fsync; one per system made a storm's writes take tens of seconds under
    load, and grouping split owners' pages), and every incident and notification is there."""
    config = storm_config(450)
    store = SqlStore(f"sqlite:///{tmp_path / 's.db'}")
    store.open()
    commits: list[int] = []
    assert store._engine is not None

    def count_writes(conn: sa.Connection) -> None:
        if not conn.get_execution_options().get("driftowner_read_only"):
            commits.append(1)

    sa.event.listen(store._engine, "commit", count_writes)
    pager = Pager(ids("n"), links)
    degraded = {
        name: {"nulls": finding("nulls", "degraded", system=name, layer="data")}
        for name in config.systems
    }
    opened = runner.evaluate(store, config, degraded, T0, ids("inc"), pager)
    assert len(opened) == 451
    assert len(commits) == 3
    commits.clear()
    assert runner.escalate(store, config, T0, pager) == 451
    assert len(commits) == 3
    assert store.outbox_pending() == 451
    store.close()


def test_each_commit_that_queues_pages_is_told_as_it_lands(tmp_path: Path) -> None:
    """The same storm: the escalation's three commits each tell the daemon's delivery loop
    that pages were queued, once each, as each lands (its pages already readable: 200, 400,
    451 owed), so the first pages go out while the rest is still being written. The
    evaluation queued no page (openings page through escalation) and tells nothing."""
    config = storm_config(450)
    store = SqlStore(f"sqlite:///{tmp_path / 's.db'}")
    store.open()
    pager = Pager(ids("n"), links)
    degraded = {
        name: {"nulls": finding("nulls", "degraded", system=name, layer="data")}
        for name in config.systems
    }
    owed_when_told: list[int] = []

    def queued() -> None:
        owed_when_told.append(store.outbox_pending())

    runner.evaluate(store, config, degraded, T0, ids("inc"), pager, queued)
    assert owed_when_told == []
    assert runner.escalate(store, config, T0, pager, None, queued) == 451
    assert owed_when_told == [200, 400, 451]
    store.close()


def test_a_storm_of_step_twos_reads_who_was_notified_once_not_once_per_incident(
    tmp_path: Path,
) -> None:
    """450 incidents opened together reach step 2 on the same tick: the escalation stage
    makes three read transactions (the unresolved incidents, the silences, and who was
    notified of all 450 at once; it read once per incident: 452, each a round trip on
    PostgreSQL), and every owner conversation is still told of the step, 900
    ``stepped_up`` (console and mail), beside bob's 450 pages."""
    config = make_config()
    store = SqlStore(f"sqlite:///{tmp_path / 's.db'}")
    store.open()
    store.apply(
        Changes(
            opened=[
                incident(
                    config, id=f"inc-{i}", rule=f"drift:r{i}", ack_within=None, resolve_within=None
                )
                for i in range(450)
            ]
        )
    )
    pager = Pager(ids("n"), links)
    runner.escalate(store, config, T0, pager)
    reads: list[int] = []
    assert store._engine is not None

    def count_reads(conn: sa.Connection) -> None:
        if conn.get_execution_options().get("driftowner_read_only"):
            reads.append(1)

    sa.event.listen(store._engine, "begin", count_reads)
    assert runner.escalate(store, config, T0 + timedelta(minutes=15), pager) == 450 + 900
    assert len(reads) == 3
    told = [n for i in range(450) for n in store.notifications(f"inc-{i}")]
    assert sum(n.message.purpose == "stepped_up" for n in told) == 900
    assert sum(n.recipient == "bob" for n in told) == 450
    store.close()
