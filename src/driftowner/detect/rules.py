"""Rules: one system's findings in, the conditions that hold now out (drift, disagreement,
stale). Pure. A degraded signal inside a holding disagreement raises no drift of its own."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from driftowner.config import SystemConfig
from driftowner.model import LAYERS, BadDirection, Condition, Finding, Kind, Layer

_MOVED = {"down": "falling", "up": "rising", "both": "shifted"}


def conditions(
    system_name: str, system: SystemConfig, findings: Mapping[str, Finding]
) -> list[Condition]:
    """The conditions holding for one system, given the finding of each of its signals.

    Args:
        system_name: the system's key.
        system: its config.
        findings: signal name → this evaluation's finding; a signal missing here counts as
            no data from a failed source (it neither fires nor clears anything).

    Returns:
        Disagreements first, then drifts, then stale signals, each in config order.
    """
    holding: list[Condition] = []
    explained: set[str] = set()
    for disagreement in system.disagreements:
        healthy = [findings.get(name) for name in disagreement.healthy]
        degraded = [findings.get(name) for name in disagreement.degraded]
        if all(f is not None and f.status == "ok" for f in healthy) and all(
            f is not None and f.status == "degraded" for f in degraded
        ):
            names = [*disagreement.healthy, *disagreement.degraded]
            evidence = tuple(f for f in (*healthy, *degraded) if f is not None)
            summary = f"{_join(disagreement.healthy)} fine, " + ", ".join(
                f"{name} {_MOVED[system.signals[name].bad]}" for name in disagreement.degraded
            )
            holding.append(
                Condition(
                    system=system_name,
                    rule=f"disagreement:{disagreement.name}",
                    kind="disagreement",
                    layers=_layers(system, names),
                    signals=tuple(names),
                    hold_for=disagreement.for_,
                    resolve_after=_or_default(disagreement.resolve_after, system.resolve_after),
                    evidence=evidence,
                    summary=summary,
                )
            )
            explained.update(disagreement.degraded)
        elif all(f is not None and f.status == "degraded" for f in degraded) and all(
            f is None or f.status != "degraded" for f in healthy
        ):
            # The healthy side has no data: the disagreement can be neither confirmed nor
            # ruled out, so its degraded side is not paged again as a drift of its own.
            explained.update(disagreement.degraded)
    for name, signal in system.signals.items():
        finding = findings.get(name)
        if finding is None or name in explained:
            continue
        if finding.status == "degraded":
            summary = f"{name} {_moved(signal.bad)}: {finding.reason}"
            holding.append(
                _one_signal(system_name, system, name, finding, "drift", signal.for_, summary)
            )
    for name in system.signals:
        finding = findings.get(name)
        stale = None if finding is None else _unwatchable(name, finding)
        if finding is None or stale is None:
            continue
        holding.append(
            _one_signal(system_name, system, name, finding, "stale", system.stale_for, stale)
        )
    return holding


BROKEN_QUERY_REASONS = frozenset({"query_error", "multiple_series", "non_finite"})
"""Error reasons that say the query, not its source, is at fault: the source answered (several
series, NaN/Inf only, a query it rejects or a template label it has no series for)."""

_FIX = {
    "multiple_series": "a signal needs exactly one series",
    "non_finite": "a ratio over a zero denominator? guard it (e.g. clamp_min) or drop the empty "
    "case",
    "query_error": "the source answers, but not this query: fix the signal's query",
}


def broken_query(finding: Finding) -> bool:
    """True when ``finding`` has no data because its query is broken while its source is up:
    the system's owner's problem (a stale condition), unlike a source that is down (the
    operator's, ``driftowner_source_up 0``), which pages nobody."""
    return (
        finding.status == "no_data"
        and finding.source_error
        and finding.source_up
        and finding.error_reason in BROKEN_QUERY_REASONS
    )


def _unwatchable(name: str, finding: Finding) -> str | None:
    """The stale summary of a signal nobody can watch now, or None when it can be (or when
    that is not its owner's problem).

    Stale: a source that answered with nothing (or only old samples), or a broken query
    against a source that is up. Not stale: a source that is down (the operator's problem),
    and a baseline short of history (not a silence)."""
    if finding.status != "no_data":
        return None
    if finding.detector == "staleness":
        return f"{name} has no data: {finding.reason}"
    if broken_query(finding):
        fix = _FIX[finding.error_reason or "query_error"]
        return f"{name} cannot be read, its query is broken ({fix}): {finding.reason}"
    return None


def _one_signal(
    system_name: str,
    system: SystemConfig,
    name: str,
    finding: Finding,
    kind: Kind,
    hold_for: timedelta,
    summary: str,
) -> Condition:
    """A condition about one signal (drift or stale), fingerprinted ``kind:signal``."""
    signal = system.signals[name]
    return Condition(
        system=system_name,
        rule=f"{kind}:{name}",
        kind=kind,
        layers=(signal.layer,),
        signals=(name,),
        hold_for=hold_for,
        resolve_after=_or_default(signal.resolve_after, system.resolve_after),
        evidence=(finding,),
        summary=summary,
    )


def undecided(findings: Mapping[str, Finding], signals: tuple[str, ...]) -> bool:
    """True when a condition over ``signals`` can be neither confirmed nor cleared now: one of
    them has no data (no data is not evidence of recovery; the stale rule reports it)."""
    for name in signals:
        finding = findings.get(name)
        if finding is None or finding.status == "no_data":
            return True
    return False


def _or_default(value: timedelta | None, default: timedelta) -> timedelta:
    """``value`` when configured, even ``0s`` (resolve at once), else ``default``."""
    return default if value is None else value


def _layers(system: SystemConfig, names: list[str]) -> tuple[Layer, ...]:
    present = {system.signals[name].layer for name in names}
    return tuple(layer for layer in LAYERS if layer in present)


def _moved(bad: BadDirection) -> str:
    return _MOVED[bad]


def _join(names: list[str]) -> str:
    return ", ".join(names)
