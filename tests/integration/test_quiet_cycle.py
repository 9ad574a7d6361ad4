"""A quiet steady cycle over a real SQLite store: thousands of systems whose every signal is
fine cost the store two reads and no write at all."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from driftowner import cycle, runner
from driftowner.cycle import Pager
from driftowner.model import Finding
from driftowner.store import SqlStore
from tests.unit.factories import SYSTEM, T0, base_config, finding, ids, links, make_config


def _systems(count: int) -> Any:
    document = base_config()
    template = document["systems"][SYSTEM]
    return make_config({"systems": {f"model-{i}": template for i in range(count)}})


@contextmanager
def _statements(store: SqlStore) -> Iterator[list[str]]:
    """Every SQL statement the store sends while the block runs."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement.split()[0].upper())

    engine = store._engine  # the test watches the real engine
    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)


def test_a_quiet_cycle_reads_twice_and_writes_nothing(tmp_path: Path) -> None:
    """200 systems, every signal ``ok``, no incident, nothing pending: the evaluation makes no
    step, and the store sees two reads (unresolved incidents, pending conditions) and no
    INSERT, UPDATE, DELETE or write transaction; one degraded signal then makes exactly one
    system's step."""
    config = _systems(200)
    store = SqlStore(f"sqlite:///{tmp_path / 'quiet.db'}")
    store.open()
    try:
        quiet: dict[str, dict[str, Finding]] = {
            name: {s: finding(s, "ok", system=name) for s in system.signals}
            for name, system in config.systems.items()
        }
        pager = Pager(ids("n"), links)
        with _statements(store) as seen:
            changed = runner.evaluate(store, config, quiet, T0, ids("inc"), pager)
        assert changed == []
        assert [s for s in seen if s not in ("SELECT", "BEGIN", "COMMIT", "ROLLBACK")] == []
        assert seen.count("SELECT") == 2
        noisy = {**quiet, "model-7": {**quiet["model-7"]}}
        noisy["model-7"]["accuracy"] = finding("accuracy", "degraded", system="model-7")
        later = T0 + timedelta(minutes=1)
        steps = cycle.evaluate(config, noisy, store, later, ids("inc"), pager)
        assert [step.system for step in steps] == ["model-7"]
    finally:
        store.close()
