"""One evaluation cycle as a pure step, shared by the daemon and ``replay``: what each signal's
read says (judge), which conditions hold (rules), how they move incidents (reconcile), and what
the escalation stage owes (resolution notices, due steps), all as store
:class:`~driftowner.store.Changes`.

Pure: the time, the id source and the escalation stage's means come in as arguments; the store
is only read, through :class:`~driftowner.store.StoreView`. The daemon runs the cycle against
its database (:mod:`driftowner.runner` applies the changes); ``replay`` runs the same cycle
against a :class:`~driftowner.store.MemoryStore` with a clock stepping through history, and
without the escalation stage, so it pages nobody.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from driftowner import escalation, incidents
from driftowner.config import Config
from driftowner.detect import rules
from driftowner.detect.bank import Bank
from driftowner.escalation import Escalation, Links
from driftowner.model import AUTO, Finding, Incident, Notification, SourceResult
from driftowner.store import Changes, Fingerprint, StoreView

SignalKey = tuple[str, str]
"""(system, signal)."""

Findings = dict[str, dict[str, Finding]]
"""system → signal → finding."""

RETIRED = "system removed from the config"
"""Why the incidents of a system no longer configured are resolved."""


# --- judge: reads → findings, with what each signal carries to the next cycle --------------


def judge(
    config: Config, results: Mapping[SignalKey, SourceResult], bank: Bank, now: datetime
) -> Findings:
    """Every signal's finding at ``now`` from what its read returned.

    Args:
        config: The systems and their signals.
        results: (system, signal) → what its read returned; a signal missing here has no
            finding (a failed source: it neither fires nor clears anything).
        bank: What each signal's detector carries from one cycle to the next (change-point
            charts, the last verdict of the others), updated here: the daemon keeps one for
            its life, ``replay`` one for its range.
        now: The evaluation instant.

    Returns:
        The findings of every configured system (empty for a system nothing was read for),
        each with the changes its detector confirmed (``Finding.changes``).
    """
    interval = config.evaluation.interval
    findings: Findings = {system: {} for system in config.systems}
    for (system, name), result in results.items():
        signal = config.systems[system].signals[name]
        findings[system][name] = bank.judge(system, name, signal, result, now, interval)
    return findings


# --- the escalation stage: the only one that makes pages ------------------------------------


@dataclass(frozen=True, slots=True)
class Pager:
    """What the escalation stage needs to make notifications: their id source and the links
    they carry."""

    new_id: Callable[[], str]
    links: Links


def resolution_notices(
    config: Config, resolved: Incident, view: StoreView, now: datetime, pager: Pager
) -> tuple[Notification, ...]:
    """The notices of a resolution: to everyone who was notified of the incident."""
    return escalation.on_resolved(
        config, resolved, view.notifications(resolved.id), now, pager.new_id, pager.links
    )


def due(
    config: Config, view: StoreView, now: datetime, pager: Pager
) -> list[tuple[Incident, Escalation]]:
    """Every unresolved incident whose escalation owes something at ``now`` (a due step, an
    expired ack, a reminder), with what it owes: one transaction each. An incident of a
    system no longer configured escalates no further (the next evaluation retires it)."""
    owed: list[tuple[Incident, Escalation]] = []
    for incident in view.incidents(unresolved=True):
        if incident.system not in config.systems:
            continue
        outcome = escalation.tick(config, incident, now, pager.new_id, pager.links)
        if outcome.events:
            owed.append((incident, outcome))
    return owed


# --- evaluate: findings → conditions → reconcile, as one transaction per system --------------


@dataclass(frozen=True, slots=True)
class Step:
    """One transaction's worth of an evaluation: one system's reconciliation, or the
    retirement of one incident of a system no longer configured."""

    system: str
    changes: Changes
    retired: bool = False


def evaluate(
    config: Config,
    findings: Mapping[str, Mapping[str, Finding]],
    view: StoreView,
    now: datetime,
    new_incident_id: Callable[[], str],
    pager: Pager | None,
) -> list[Step]:
    """One evaluation: each system's conditions reconciled with its pending conditions and
    incidents, and the incidents of systems no longer configured retired.

    Args:
        config: The systems, rules and chains.
        findings: system → signal → this cycle's finding (see :func:`judge`).
        view: The store as it stands: unresolved incidents, pending conditions, incidents
            recently resolved (to reopen), who was notified (for resolution notices).
        now: The evaluation instant.
        new_incident_id: The id source for incidents that open.
        pager: The escalation stage's means; with None (``replay``) a resolution makes no
            notice, so the cycle pages nobody.

    Returns:
        Retirements first, then one step per evaluated system, in ``findings`` order.
    """
    by_system: dict[str, dict[Fingerprint, Incident]] = {}
    for incident in view.incidents(unresolved=True):
        by_system.setdefault(incident.system, {})[incident.fingerprint] = incident
    steps = list(_retire(config, by_system, view, now, pager))
    for system_name, system_findings in findings.items():
        unresolved = by_system.get(system_name, {})
        steps.append(
            _reconcile(
                config, system_name, system_findings, unresolved, view, now, new_incident_id, pager
            )
        )
    return steps


def _reconcile(
    config: Config,
    system_name: str,
    findings: Mapping[str, Finding],
    unresolved: Mapping[Fingerprint, Incident],
    view: StoreView,
    now: datetime,
    new_incident_id: Callable[[], str],
    pager: Pager | None,
) -> Step:
    system = config.systems[system_name]
    holding = rules.conditions(system_name, system, findings)
    # Only a condition without an unresolved incident can reopen one: read the recently
    # resolved only then.
    may_reopen = any(c.fingerprint not in unresolved for c in holding)
    recent = (
        view.recently_resolved(system_name, now - system.reopen_within)
        if system.reopen_within > timedelta(0) and may_reopen
        else {}
    )
    outcome = incidents.reconcile(
        config,
        system_name,
        holding,
        findings,
        view.pending(system_name),
        unresolved,
        now,
        new_incident_id,
        recent,
    )
    notices: list[Notification] = []
    if pager is not None:
        for incident in outcome.updated:
            if incident.state == "resolved":
                notices.extend(resolution_notices(config, incident, view, now, pager))
    changes = Changes(
        opened=outcome.opened,
        updated=outcome.updated,
        events=outcome.events,
        notifications=tuple(notices),
        pending_system=system_name,
        pending=outcome.pending,
    )
    return Step(system_name, changes)


def _retire(
    config: Config,
    by_system: Mapping[str, Mapping[Fingerprint, Incident]],
    view: StoreView,
    now: datetime,
    pager: Pager | None,
) -> Iterable[Step]:
    """Resolve the incidents of systems no longer in the config (a decommissioned model, a
    deleted systems_dir file): nothing can confirm or clear them any more, and they must not
    escalate forever. Everyone who was notified hears of it."""
    for system_name, unresolved in by_system.items():
        if system_name in config.systems:
            continue
        for incident in unresolved.values():
            transition = incidents.resolve(incident, AUTO, now, RETIRED)
            notices = (
                ()
                if pager is None
                else resolution_notices(config, transition.incident, view, now, pager)
            )
            changes = Changes(
                updated=[transition.incident], events=transition.events, notifications=notices
            )
            yield Step(system_name, changes, retired=True)
