"""The evaluation cycle over a real store: what happens to incidents when the config moves
under them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from driftowner import runner
from driftowner.cycle import Pager
from driftowner.ids import new_incident_id
from driftowner.model import AUTO
from driftowner.store import Changes, SqlStore
from tests.unit.factories import T0, ids, incident, make_config, notification


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
