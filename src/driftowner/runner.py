"""Runs the evaluation cycle against a store: reads through the store's view, applies what
:mod:`driftowner.cycle` decides (each system's changes whole, many systems to a transaction),
and logs what happened. The daemon
uses it on its database; ``replay`` applies the same cycle to a memory store (:func:`apply`,
without logging or the escalation stage)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

import structlog

from driftowner import cycle
from driftowner.config import Config
from driftowner.cycle import Pager, Step
from driftowner.escalation import Escalation
from driftowner.metrics import Metrics
from driftowner.model import Finding, Incident
from driftowner.store import Changes, Store

log = structlog.get_logger("driftowner.cycle")

_Item = TypeVar("_Item")


STEPS_PER_TRANSACTION = 200
"""Systems' (or incidents') changes written in one transaction (a refused one makes the store
write that batch again one set at a time, see ``Store.apply_each``): a storm of 2,000 systems
is 10 commits, not 2,000 (one fsync each), while no transaction holds the write lock long."""


Queued = Callable[[], None]
"""Told, from the thread writing them, each time a transaction that queued notifications is
committed: the daemon wakes its delivery loop, so a storm's first pages go out while the rest
of it is still being written, not after the last commit."""


def apply(store: Store, steps: list[Step], queued: Queued | None = None) -> list[Step]:
    """Apply each step whole or not at all, :data:`STEPS_PER_TRANSACTION` to a transaction;
    returns the steps applied. A step refused with a :class:`~driftowner.store.Conflict`
    (someone acted on an incident between our read and write) is left out: the next cycle
    sees their change and decides again. ``queued`` is told after each commit that queued
    notifications."""
    applied: list[Step] = []
    for chunk in _chunks(steps):
        refused = store.apply_each([step.changes for step in chunk])
        written = False
        for step, conflict in zip(chunk, refused, strict=True):
            if conflict is not None:
                log.info("evaluation deferred", system=step.system, reason=str(conflict))
                continue
            applied.append(step)
            written = written or bool(step.changes.notifications)
        if written and queued is not None:
            queued()
    return applied


def _chunks(items: Sequence[_Item]) -> Iterator[Sequence[_Item]]:
    for start in range(0, len(items), STEPS_PER_TRANSACTION):
        yield items[start : start + STEPS_PER_TRANSACTION]


def evaluate(
    store: Store,
    config: Config,
    findings: Mapping[str, Mapping[str, Finding]],
    now: datetime,
    new_incident_id: Callable[[], str],
    pager: Pager,
    queued: Queued | None = None,
) -> list[Incident]:
    """One evaluation (see :func:`driftowner.cycle.evaluate`) applied to ``store`` (each
    system's and each retired incident's changes whole or not at all, see :func:`apply`;
    ``queued`` as there). Returns the incidents opened or changed."""
    steps = cycle.evaluate(config, findings, store, now, new_incident_id, pager)
    changed: list[Incident] = []
    for step in apply(store, steps, queued):
        _log(step)
        changed.extend([*step.changes.opened, *step.changes.updated])
    return changed


def _log(step: Step) -> None:
    for incident in step.changes.opened:
        log.info(
            "incident opened",
            incident=incident.id,
            system=incident.system,
            owner=incident.owner,
            kind=incident.kind,
            summary=incident.summary,
        )
    for incident in step.changes.updated:
        if incident.state != "resolved":
            continue
        ttr = incident.time_to_resolve
        log.info(
            "incident resolved",
            incident=incident.id,
            system=incident.system,
            owner=incident.owner,
            by=incident.resolved_by,
            **(
                {"reason": cycle.RETIRED}
                if step.retired
                else {"time_to_resolve": None if ttr is None else round(ttr.total_seconds(), 1)}
            ),
        )
    for event in step.changes.events:
        if event.kind == "reopened":
            log.info(
                "incident reopened",
                incident=event.incident_id,
                system=step.system,
                summary=event.detail,
            )


class Heap:
    """Keeps Python's cyclic garbage collector off the daemon's long-lived state.

    The config and the charts a config's first evaluation warm-starts live as long as the
    config: some 275,000 objects at 10,000 signals, which every full collection walked
    (~100 ms each, every few cycles: the steady cycle's largest cost after the charts went to
    arrays, benchmarks/README.md). After a config's first evaluation they move to the
    collector's permanent generation (:func:`gc.freeze`): still freed when nothing refers to
    them, never walked again. A new config's first evaluation unfreezes them first, so
    whatever the old config left in reference cycles is collected."""

    def __init__(self) -> None:
        self._settled: object | None = None

    def settle(self, config: object) -> None:
        """Called after every evaluation; acts after the first one of each ``config``."""
        if config is self._settled:
            return
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._settled = config


def escalate(
    store: Store,
    config: Config,
    now: datetime,
    pager: Pager,
    metrics: Metrics | None = None,
    queued: Queued | None = None,
) -> int:
    """Fire every due escalation step, expired ack and reminder, each incident's changes whole
    or not at all (:data:`STEPS_PER_TRANSACTION` incidents to a transaction; ``queued`` is
    told after each commit that queued notifications). Returns the number of notifications
    queued."""
    count = 0
    owed = list(cycle.due(config, store, now, pager))
    for chunk in _chunks(owed):
        refused = store.apply_each(
            [
                Changes(
                    updated=[outcome.incident],
                    events=outcome.events,
                    notifications=outcome.notifications,
                )
                for _, outcome in chunk
            ]
        )
        before = count
        for (incident, outcome), conflict in zip(chunk, refused, strict=True):
            if conflict is not None:
                continue  # acknowledged or changed meanwhile: decide again next tick
            count += len(outcome.notifications)
            _log_escalation(incident, outcome, metrics)
        if count > before and queued is not None:
            queued()
    return count


def _log_escalation(incident: Incident, outcome: Escalation, metrics: Metrics | None) -> None:
    # The news of a step told to earlier conversations pages nobody: not counted as reached.
    paged = [n for n in outcome.notifications if n.message.purpose != "stepped_up"]
    if outcome.steps_fired and not paged:
        log.warning(
            "escalation reached nobody",
            incident=incident.id,
            system=incident.system,
            steps=list(outcome.steps_fired),
            hint="a channel or contact named by the chain is no longer configured",
        )
    if outcome.steps_collapsed:
        log.warning(
            "escalation steps collapsed",
            incident=incident.id,
            system=incident.system,
            steps=list(outcome.steps_collapsed),
            hint="several steps fell due at once (downtime or a late tick): each "
            "recipient was paged once, for the latest step they were owed",
        )
    # Every step passed counts, collapsed or not: the counter says how far incidents
    # escalate, whether or not the daemon was running when a step fell due.
    for step in outcome.steps_fired:
        if metrics is not None:
            metrics.escalations.labels(incident.system, str(step)).inc()
        log.info(
            "escalation step",
            incident=incident.id,
            system=incident.system,
            owner=incident.owner,
            step=step,
        )
