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

from collections.abc import (
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftowner import escalation, incidents
from driftowner.config import Config, SignalConfig, upstream_first
from driftowner.detect import rules
from driftowner.detect.bank import Bank, Held, Judged, RowValues, Verdict
from driftowner.detect.changepoint import Detector
from driftowner.escalation import Escalation, Links, Paging
from driftowner.model import (
    AUTO,
    Change,
    Event,
    Finding,
    Incident,
    Notification,
    Pending,
    Sample,
    SourceResult,
    Status,
)
from driftowner.store import Changes, Fingerprint, StoreView

SignalKey = tuple[str, str]
"""(system, signal)."""


class SystemFindings(MutableMapping[str, Finding]):
    """One system's findings: signal → finding. A quiet chart's verdict is kept as a
    :class:`~driftowner.detect.bank.Later` (or :class:`~driftowner.detect.bank.Held`) and
    built into its finding on first read."""

    __slots__ = ("_entries", "_unsettled")

    def __init__(self) -> None:
        self._entries: dict[str, Verdict] = {}
        self._unsettled = 0
        """How many entries are not ``ok`` (:meth:`settled` reads it, walking nothing)."""

    def __getitem__(self, name: str) -> Finding:
        entry = self._entries[name]
        if not isinstance(entry, Finding):
            entry = self._entries[name] = entry.finding()
        return entry

    def __setitem__(self, name: str, found: Verdict) -> None:
        old = self._entries.get(name)
        self._unsettled += (found.status != "ok") - (old is not None and old.status != "ok")
        self._entries[name] = found

    def __delitem__(self, name: str) -> None:
        self._unsettled -= self._entries.pop(name).status != "ok"

    def held(self, name: str, verdict: Held) -> None:
        """Add a quiet row's verdict for a signal not yet judged in this cycle."""
        self._entries[name] = verdict
        self._unsettled += verdict.status != "ok"

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def settled(self) -> bool:
        """Whether every finding is ``ok``, read from the statuses alone."""
        return self._unsettled == 0

    def statuses(self) -> Iterator[tuple[str, Status]]:
        """(signal, status) of every finding, read without building any."""
        for name, entry in self._entries.items():
            yield name, entry.status

    def changes(self) -> Iterator[tuple[str, Change]]:
        """(signal, change) for every change confirmed, oldest first per signal: only built
        findings can carry one (a quiet verdict confirmed none)."""
        for name, entry in self._entries.items():
            if isinstance(entry, Finding):
                for change in entry.changes:
                    yield name, change


Layout = Mapping[str, Sequence[tuple[int, str]]]
"""A signal template's rows by system: system → (row, signal) of each of its members."""


class Findings(Mapping[str, SystemFindings]):
    """One judged cycle's findings: system → signal → finding, every configured system present
    (empty for a system nothing was read for). Reading a finding builds it; the statuses
    (:meth:`settled`) and the confirmed changes (:meth:`changes`) are read without building
    the quiet ones.

    A signal template's quiet verdicts judged as rows (:meth:`hold_rows`) are kept as the
    template's :class:`~driftowner.detect.bank.Judged`: a system's mapping is made when the
    system is first read (most never are in a steady cycle)."""

    __slots__ = ("_blocks", "_names", "_systems", "_unsettled")

    def __init__(self, systems: Iterable[str]) -> None:
        self._names = dict.fromkeys(systems)
        self._systems: dict[str, SystemFindings] = {}
        self._blocks: list[tuple[Judged, Layout]] = []
        self._unsettled: set[str] = set()
        """Systems with a quiet row not ``ok``."""

    def __getitem__(self, system: str) -> SystemFindings:
        held = self._systems.get(system)
        if held is None:
            if system not in self._names:
                raise KeyError(system)
            made = SystemFindings()
            for judged, layout in self._blocks:
                _take(made, judged, layout.get(system, ()))
            # Published only once whole, and only once: the daemon's reconcile (a worker
            # thread) and the API (the event loop) may both be the first to read a system.
            held = self._systems.setdefault(system, made)
        return held

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def hold_rows(self, judged: Judged, layout: Layout) -> None:
        """A signal template's quiet verdicts, judged together as rows; ``layout`` places its
        rows by system. Their signals must not have findings yet."""
        self._blocks.append((judged, layout))
        keys = judged.keys
        for row in np.flatnonzero(judged.quiet & judged.degraded).tolist():
            self._unsettled.add(keys[row][0])
        for system, held in self._systems.items():  # the systems already made take theirs
            _take(held, judged, layout.get(system, ()))

    def settled(self, system: str) -> bool:
        """Whether every finding of ``system`` is ``ok`` (then no rule holds for it)."""
        held = self._systems.get(system)
        if held is not None:
            return held.settled()
        return system not in self._unsettled

    def unsettled(self) -> set[str]:
        """The systems with a finding not ``ok``: those :meth:`settled` says no for, found
        without asking for each system."""
        made = {system for system, held in self._systems.items() if not held.settled()}
        return made | (self._unsettled - self._systems.keys())

    def changes(self) -> Iterator[tuple[str, str, Change]]:
        """(system, signal, change) for every change this cycle confirmed."""
        for system, held in self._systems.items():
            for name, change in held.changes():
                yield system, name, change

    def moved(self, recorded: dict[SignalKey, Status]) -> list[Finding]:
        """The findings whose status differs from the one ``recorded`` for their signal
        (what ``driftowner_signal_status`` last said), ``recorded`` updated to this cycle's:
        a steady cycle builds none. A :class:`Recorded` compares a template's quiet rows as
        arrays; a plain mapping, row by row."""
        moved: list[Finding] = []
        made = list(self._systems.items())
        for system, held in made:
            for name, entry in held._entries.items():
                key = (system, name)
                if recorded.get(key) != entry.status:
                    recorded[key] = entry.status
                    moved.append(held[name])
        before = dict(made)
        if isinstance(recorded, Recorded):
            for system, name in self._moved_rows(recorded, before):
                moved.append(self[system][name])
            return moved
        for judged, _ in self._blocks:
            keys, degraded = judged.keys, judged.degraded.tolist()
            for row in np.flatnonzero(judged.quiet).tolist():
                key = keys[row]
                if key[0] in before:
                    continue  # compared above
                status: Status = "degraded" if degraded[row] else "ok"
                if recorded.get(key) != status:
                    recorded[key] = status
                    moved.append(self[key[0]][key[1]])
        return moved

    def _moved_rows(
        self, recorded: Recorded, before: Mapping[str, SystemFindings]
    ) -> Iterator[SignalKey]:
        """The signal of each quiet template row whose status moved from the one
        ``recorded``, ``recorded`` updated. The systems ``before`` (compared signal by
        signal) have their rows' codes brought up to date first, so none of theirs moves
        here."""
        for judged, layout in self._blocks:
            codes = recorded.codes(judged.keys)
            for system in before:
                for row, name in layout.get(system, ()):
                    codes[row] = STATUS_CODES.get(recorded.get((system, name)), 0)
            current = judged.degraded.astype(np.int8) + STATUS_CODES["ok"]
            for row in np.flatnonzero(judged.quiet & (codes != current)).tolist():
                key = judged.keys[row]
                recorded[key] = judged.status(row)
                codes[row] = current[row]
                yield key
        recorded.keep(judged.keys for judged, _ in self._blocks)

    def summaries(self) -> Mapping[str, Mapping[str, Mapping[str, Any]]]:
        """system → signal → ``{"status", "value", "reason"}`` (``/api/v1/systems``), each
        made when read."""
        return _Summaries(self)


STATUS_CODES: Mapping[Status | None, int] = {"ok": 1, "degraded": 2}
"""A quiet row's statuses as :class:`Recorded` keeps them per row (any other status, or
none recorded, is 0)."""


class Recorded(dict[SignalKey, Status]):
    """What ``driftowner_signal_status`` last got, per signal: what :meth:`Findings.moved`
    compares a cycle's statuses with, and updates. Besides the mapping, each signal
    template's rows keep the same statuses as one array (:data:`STATUS_CODES`), so a
    steady cycle compares its 10,000 quiet rows in a few passes of numpy rather than a
    look-up each (about 1.5 ms a cycle). Only :meth:`Findings.moved` may write it."""

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        super().__init__()
        self._rows: dict[int, tuple[Sequence[SignalKey], NDArray[np.int8]]] = {}
        """id(keys) -> (keys, their codes): the keys held, so no other object takes the id."""

    def codes(self, keys: Sequence[SignalKey]) -> NDArray[np.int8]:
        """The recorded statuses of a template's rows (``keys``, in row order) as codes, to
        be kept up to date by the caller; made from the mapping when these keys are new."""
        held = self._rows.get(id(keys))
        if held is None or held[0] is not keys:
            codes = np.fromiter(
                (STATUS_CODES.get(status, 0) for status in map(self.get, keys)),
                dtype=np.int8,
                count=len(keys),
            )
            held = self._rows[id(keys)] = (keys, codes)
        return held[1]

    def keep(self, templates: Iterable[Sequence[SignalKey]]) -> None:
        """Forget the rows of every template but these (a reload's old ones; one that was
        not read this cycle is made again from the mapping when it is)."""
        kept = {id(keys) for keys in templates}
        for gone in self._rows.keys() - kept:
            del self._rows[gone]


def _take(held: SystemFindings, judged: Judged, members: Sequence[tuple[int, str]]) -> None:
    """Into one system's findings, the quiet verdicts of its ``members`` of a template."""
    for row, name in members:
        if judged.quiet[row]:
            held.held(name, Held(judged.status(row), judged, row))


class _Summaries(Mapping[str, Mapping[str, Mapping[str, Any]]]):
    """:meth:`Findings.summaries`: a view, read when the API asks."""

    __slots__ = ("_findings",)

    def __init__(self, findings: Findings) -> None:
        self._findings = findings

    def __getitem__(self, system: str) -> Mapping[str, Mapping[str, Any]]:
        held = self._findings[system]
        return {name: _summary(held, name) for name in held}

    def __iter__(self) -> Iterator[str]:
        return iter(self._findings)

    def __len__(self) -> int:
        return len(self._findings)


def _summary(held: SystemFindings, name: str) -> dict[str, Any]:
    found = held[name]
    return {"status": found.status, "value": found.value, "reason": found.reason}


@dataclass(frozen=True, slots=True)
class TemplateValues:
    """One signal template's instant answer as arrays: its members' charts are judged
    together (:meth:`~driftowner.detect.bank.Bank.judge_rows`)."""

    block: Hashable
    """Names the template's rows in the bank (its read plan)."""
    keys: tuple[SignalKey, ...]
    """The template's signals, in row order."""
    signals: tuple[SignalConfig, ...]
    detector: Detector
    """The chart every one of them runs."""
    values: RowValues
    """This cycle's finite sample of the members the answer has one for."""
    layout: Layout
    """The template's rows by system."""
    moments: tuple[datetime, ...]
    """The answer's distinct sample times."""
    moment: NDArray[np.intp]
    """Per value, its time's place in ``moments``."""


class Reads(dict[SignalKey, SourceResult]):
    """What one poll read: each signal's result, and the signal templates answered as arrays
    (:class:`TemplateValues`), whose members with a value are judged from those and are not
    listed in the mapping."""

    __slots__ = ("templates",)

    def __init__(self) -> None:
        super().__init__()
        self.templates: list[TemplateValues] = []


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
    findings = Findings(config.systems)
    systems = config.systems
    for (system, name), result in results.items():
        signal = systems[system].signals[name]
        findings[system][name] = bank.verdict(system, name, signal, result, now, interval)
    for template in results.templates if isinstance(results, Reads) else ():
        _judge_template(template, findings, bank, now, interval)
    return findings


def _judge_template(
    template: TemplateValues, findings: Findings, bank: Bank, now: datetime, interval: timedelta
) -> None:
    """A template's members with a value: the quiet ones judged together as rows, the rest
    (a change confirmed, a chart learning) one by one as :meth:`Bank.verdict` judges any."""
    keys, signals = template.keys, template.signals
    judged = bank.judge_rows(template.block, keys, signals, template.detector, template.values, now)
    findings.hold_rows(judged, template.layout)
    values = template.values
    for i in judged.moved.tolist():
        row = int(values.rows[i])
        system, name = keys[row]
        sample = Sample(template.moments[int(template.moment[i])], float(values.values[i]))
        result = SourceResult(samples=(sample,))
        findings[system][name] = bank.verdict(system, name, signals[row], result, now, interval)


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
    expired ack, a reminder), with what it owes: each written whole or not at all. An
    incident of a system no longer configured escalates no further (the next evaluation
    retires it).

    A tick that steps escalation up also tells every conversation the incident started
    (:func:`escalation.tell_escalation`): only then is the incident's record of who was
    notified read, for every incident stepped up in one read (a storm's step 2s fall due
    together), so a tick that escalates nothing reads no more than before."""
    unresolved = view.incidents(unresolved=True)
    paging = paging_at(config, view, unresolved, now)
    ticked = [
        (incident, escalation.tick(config, incident, now, pager.new_id, pager.links, paging))
        for incident in unresolved
        if incident.system in config.systems
    ]
    stepped_up = [
        incident.id
        for incident, outcome in ticked
        if escalation.escalated_step(outcome) is not None
    ]
    notified = view.notifications_of(stepped_up) if stepped_up else {}
    owed: list[tuple[Incident, Escalation]] = []
    for incident, outcome in ticked:
        if incident.id in notified:
            outcome = escalation.tell_escalation(
                config, outcome, notified[incident.id], now, pager.new_id, pager.links
            )
        if outcome.events:
            owed.append((incident, outcome))
    return owed


def paging_at(
    config: Config, view: StoreView, unresolved: Iterable[Incident], now: datetime
) -> Paging:
    """What may hold pages at ``now``: the kept silences holding then, the maintenance
    windows holding then, and the unresolved incidents (probable causes upstream)."""
    silences = (*view.silences(now), *escalation.maintenance_silences(config, now))
    return Paging(silences, {incident.id: incident for incident in unresolved})


# --- evaluate: findings → conditions → reconcile, one set of changes per system -------------


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

    The store is read twice, whatever the number of systems: the unresolved incidents and the
    pending conditions. A *quiet* system (every finding ``ok``, no pending condition, no
    unresolved incident) can change nothing, so it is neither reconciled nor given a step; a
    step that changes nothing is left out too, so a quiet cycle writes nothing.

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
        Retirements first, then one step per system whose evaluation changes something, in
        ``findings`` order (upstream systems first).
    """
    by_system: dict[str, dict[Fingerprint, Incident]] = {}
    for incident in view.incidents(unresolved=True):
        by_system.setdefault(incident.system, {})[incident.fingerprint] = incident
    pending = view.pending_by_system()
    steps = list(_retire(config, by_system, view, now, pager))
    # Quiet systems are left out before ordering: one can neither open an incident nor be
    # another's probable cause (it has no unresolved incident), so the order of the others
    # is unchanged, and ordering 2,000 systems each cycle is spared.
    stirring = _stirring(findings, by_system, pending)
    # Upstream systems first, so an incident opening on a dependent system in the same cycle
    # finds its probable cause.
    for system_name in upstream_first(config, stirring):
        unresolved = by_system.get(system_name, {})
        waiting = pending.get(system_name, {})
        step = _reconcile(
            config,
            system_name,
            findings[system_name],
            (unresolved, waiting),
            view,
            now,
            new_incident_id,
            pager,
        )
        if not waiting and _changes_nothing(step.changes):
            continue
        step = _link_upstream(config, step, by_system, now)
        for incident in step.changes.opened:
            by_system.setdefault(system_name, {})[incident.fingerprint] = incident
        steps.append(step)
    return steps


def _stirring(
    findings: Mapping[str, Mapping[str, Finding]],
    by_system: Mapping[str, Mapping[Fingerprint, Incident]],
    pending: Mapping[str, Mapping[Fingerprint, Pending]],
) -> list[str]:
    """The systems of ``findings`` (in its order) that are not quiet: an unresolved
    incident, a pending condition or a finding not ``ok``. A judged cycle's :class:`Findings`
    names its unsettled systems at once, so the walk over every system asks a set."""
    if not isinstance(findings, Findings):
        return [
            system
            for system in findings
            if by_system.get(system) or pending.get(system) or not settled(findings, system)
        ]
    stirring = findings.unsettled()
    stirring.update(system for system, held in by_system.items() if held)
    stirring.update(system for system, waiting in pending.items() if waiting)
    return [system for system in findings if system in stirring]


def settled(findings: Mapping[str, Mapping[str, Finding]], system: str) -> bool:
    """Whether every finding of ``system`` is ``ok`` (then no rule holds for it). A judged
    cycle's :class:`Findings` answers from its statuses, without building findings."""
    if isinstance(findings, Findings):
        return findings.settled(system)
    return all(found.status == "ok" for found in findings.get(system, {}).values())


def _changes_nothing(changes: Changes) -> bool:
    return not (
        changes.opened
        or changes.updated
        or changes.events
        or changes.notifications
        or changes.pending
    )


def _link_upstream(
    config: Config,
    step: Step,
    by_system: Mapping[str, Mapping[Fingerprint, Incident]],
    now: datetime,
) -> Step:
    """Link each incident the step opens to its probable cause: the oldest unresolved
    incident of a system it ``depends_on``, followed up to the root of its own cause. The
    upstream incident's log names the dependent (so its owner sees who is affected)."""
    system = config.systems.get(step.system)
    if system is None or not system.depends_on or not step.changes.opened:
        return step
    upstream = sorted(
        (i for name in system.depends_on for i in by_system.get(name, {}).values()),
        key=lambda i: (i.opened_at, i.id),
    )
    if not upstream:
        return step
    every = {i.id: i for incidents_of in by_system.values() for i in incidents_of.values()}
    cause = upstream[0]
    seen = {cause.id}
    while cause.caused_by in every and cause.caused_by not in seen:
        cause = every[cause.caused_by]
        seen.add(cause.id)
    opened = [replace(incident, caused_by=cause.id) for incident in step.changes.opened]
    notes = [
        Event(
            cause.id,
            now,
            "note",
            AUTO,
            f"dependent incident {incident.id} on {incident.system} (owner {incident.owner}) "
            f"opened, probably caused by this one; its owner is informed, not paged",
        )
        for incident in opened
    ]
    changes = replace(step.changes, opened=opened, events=(*step.changes.events, *notes))
    return replace(step, changes=changes)


def _reconcile(
    config: Config,
    system_name: str,
    findings: Mapping[str, Finding],
    held: tuple[Mapping[Fingerprint, Incident], Mapping[Fingerprint, Pending]],
    view: StoreView,
    now: datetime,
    new_incident_id: Callable[[], str],
    pager: Pager | None,
) -> Step:
    """One system's step: its conditions against ``held``, its unresolved incidents and its
    pending conditions as the store has them."""
    system = config.systems[system_name]
    unresolved, pending = held
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
        pending,
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
