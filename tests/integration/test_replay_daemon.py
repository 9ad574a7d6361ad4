"""Replay and the daemon run one cycle: the daemon's own evaluation job, stepped minute by
minute against a SQLite store, opens and resolves exactly the incidents that ``replay`` finds
over the same history in memory; only the daemon pages."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from driftowner.config import Config
from driftowner.daemon import Daemon
from driftowner.metrics import Metrics
from driftowner.model import Delivery, Incident, Notification
from driftowner.replay import ReplayedIncident, replay
from driftowner.store import SqlStore
from tests.unit.factories import SYSTEM, at
from tests.unit.test_replay import DISAGREEMENT_RULE, ScriptedSource, config, dropping, until


class Recipient:
    """A channel that takes every notification (nothing leaves the process) and keeps it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[Notification] = []

    async def send(self, notification: Notification) -> Delivery:
        self.sent.append(notification)
        return Delivery.delivered()

    async def aclose(self) -> None:
        """Nothing to release."""


def _daemon(cfg: Config, source: ScriptedSource, store: SqlStore, clock: list[datetime]) -> Daemon:
    """The daemon as ``run`` wires it, over ``store`` and ``source``, its clock ``clock[0]``,
    every channel a :class:`Recipient`."""
    daemon = Daemon(Path("unused.yaml"), clock=lambda: clock[0])
    daemon.config = cfg
    daemon.store = store
    daemon.metrics = Metrics(store, daemon.clock)
    daemon.channels = {name: Recipient(name) for name in cfg.channels}
    daemon.sources = {"prom": source}
    return daemon


def _what(incident: Incident | ReplayedIncident) -> tuple[Any, ...]:
    return (
        incident.system,
        incident.rule,
        incident.kind,
        incident.opened_at,
        incident.resolved_at,
        incident.condition_began_at,
    )


async def test_the_daemon_stepped_through_history_finds_what_replay_finds(tmp_path: Path) -> None:
    """Over two hours with a disagreement, a dip of accuracy too short to page, a longer one
    and a series that falls silent, the daemon's evaluation job run at every minute against
    SQLite and ``replay`` over the same history give identical incidents (system, rule, kind,
    opened, resolved, condition began). The daemon paged (its escalation stage ran); the
    replay has no notifications to give."""
    source = ScriptedSource(
        {
            "adoption_rate": dropping(0.62, 0.30, begins=10, ends=22),
            "model_accuracy": lambda m: (
                0.85 if at(40) <= m < at(43) or at(60) <= m < at(75) else 0.95
            ),
            "null_rate": until(lambda _: 0.01, last=90),
        }
    )
    cfg = config()
    store = SqlStore(f"sqlite:///{tmp_path / 'store.db'}")
    store.open()
    clock = [at(0)]
    daemon = _daemon(cfg, source, store, clock)
    for minute in range(121):
        clock[0] = at(minute)
        await daemon.evaluate()
    live = store.incidents()
    replayed = await replay(cfg, {"prom": source}, at(0), at(120))
    assert [i.rule for i in live] == [DISAGREEMENT_RULE, "drift:accuracy", "stale:null_rate"]
    assert [_what(i) for i in replayed.incidents] == [_what(i) for i in live]
    assert all(i.system == SYSTEM for i in live)
    assert all(store.notifications(i.id) for i in live)
    assert all(channel.sent for channel in daemon.channels.values())  # type: ignore[attr-defined]
    assert store.events(live[0].id)[0].kind == "opened"
    store.close()
