"""Resolving with ``--accept`` reaches the detector bank through the store: the accepted event
is logged with the resolution, read back by position, and makes the bank re-learn the signal."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from driftowner import service
from driftowner.detect.bank import Bank
from driftowner.model import Sample, SourceResult
from driftowner.store import Changes, SqlStore
from tests.unit.factories import T0, incident, make_config, signal


def test_resolve_with_accept_logs_an_event_the_bank_applies(tmp_path: Path) -> None:
    """``resolve --accept`` writes an ``accepted`` event in the resolving transaction;
    ``accepted_after`` returns it once (with the incident's system and signals) and the bank
    restarts that signal's chart from the accept, while a plain resolve logs none."""
    store = SqlStore(f"sqlite:///{tmp_path / 's.db'}")
    store.open()
    config = make_config()
    store.apply(Changes(opened=[incident(id="inc-1"), incident(id="inc-2", rule="drift:x")]))
    now = T0 + timedelta(hours=1)
    service.resolve(store, config, "inc-2", "alice", "", now, lambda *_: None, "cli")
    assert store.accepted_after(0) == []
    service.resolve(store, config, "inc-1", "alice", "", now, lambda *_: None, "cli", accept=True)
    accepted = store.accepted_after(0)
    assert [(a.system, a.signals, a.at) for a in accepted] == [
        ("fraud-scoring", ("accuracy",), now)
    ]
    assert store.accepted_after(accepted[0].seq) == []
    assert [e.kind for e in store.events("inc-1")][-2:] == ["resolved", "accepted"]

    bank = Bank()
    spec = signal(bad="down")
    key = ("fraud-scoring", "accuracy")
    for minute in range(40):
        at = T0 + timedelta(minutes=minute)
        bank.judge(*key, spec, SourceResult(samples=(Sample(at, 0.9),)), at, timedelta(minutes=1))
    assert bank.watches[key].state.reference is not None
    bank.apply_accepts(accepted)
    assert bank.accept_cursor == accepted[0].seq
    watch = bank.watches[key]
    assert (watch.state.reference, watch.relearn_from) == (None, now)
    store.close()
