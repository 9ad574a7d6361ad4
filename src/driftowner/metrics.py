"""driftowner's own Prometheus metrics: process-side counters and gauges, plus a collector that
derives incident numbers from the store at scrape time (so they survive restarts and agree
with the CLI). No label carries an incident id, an email address or free text."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from driftowner import __version__
from driftowner.holding import Holding
from driftowner.model import STATES, STATUSES, Finding, Timing
from driftowner.report import holdings_from
from driftowner.store import Store

# Seconds: 1 minute .. 1 week, the range owners act in; the demo's seconds land in the first.
TIME_BUCKETS = (
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    86400.0,
    259200.0,
    604800.0,
)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)


class Metrics:
    """Every metric driftowner exports, in its own registry (nothing global, nothing at
    import)."""

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Info("driftowner_build", "driftowner version", registry=r).info({"version": __version__})
        self.config_reload_ok = Gauge(
            "driftowner_config_last_reload_successful",
            "1 when the last config load or reload succeeded",
            registry=r,
        )
        self.config_reload_time = Gauge(
            "driftowner_config_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully",
            registry=r,
        )
        self.source_up = Gauge(
            "driftowner_source_up",
            "1 when the source answered its last queries",
            ["source"],
            registry=r,
        )
        self.source_query_duration = Histogram(
            "driftowner_source_query_duration_seconds",
            "Time per source query",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.source_errors = Counter(
            "driftowner_source_errors", "Failed source queries", ["source", "reason"], registry=r
        )
        self.evaluation_duration = Histogram(
            "driftowner_evaluation_duration_seconds",
            "Time per poll + detect + reconcile cycle",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.signal_status = SignalStatusCollector()
        r.register(self.signal_status)
        self.escalations = Counter(
            "driftowner_escalations",
            "Escalation steps reached, each once: paged, or collapsed after downtime",
            ["system", "step"],
            registry=r,
        )
        self.notifications = Counter(
            "driftowner_notifications",
            "Delivery attempts by outcome",
            ["channel", "outcome"],
            registry=r,
        )
        self.notification_latency = Histogram(
            "driftowner_notification_latency_seconds",
            "From a notification's creation to its delivery",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.leader = Gauge(
            "driftowner_leader", "1 when this instance evaluates and escalates", registry=r
        )
        r.register(StoreCollector(store, clock))

    def record_findings(self, findings: Iterable[Finding]) -> None:
        for finding in findings:
            self.signal_status.statuses[finding.system, finding.signal, finding.layer] = (
                finding.status
            )


class SignalStatusCollector(Collector):
    """``driftowner_signal_status``: 1 on each signal's last status, 0 on the others, built
    at scrape time from one entry per signal (a gauge child per signal and status took
    ~650 bytes each: 20 MB for 10,000 signals). A signal no longer evaluated keeps its last
    status, as a gauge would."""

    def __init__(self) -> None:
        self.statuses: dict[tuple[str, str, str], str] = {}
        """(system, signal, layer) -> the status of its last finding."""

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for (system, signal, layer), current in list(self.statuses.items()):
            for status in STATUSES:
                family.add_metric([system, signal, layer, status], 1 if current == status else 0)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "driftowner_signal_status",
            "1 for the current status of each signal",
            labels=["system", "signal", "layer", "status"],
        )


class StoreCollector(Collector):
    """Incident metrics computed from the store at each scrape."""

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        writable = GaugeMetricFamily(
            "driftowner_store_writable",
            "1 when the store's last writes of each kind committed; 0 while one cannot be "
            "written (disk full, read-only, unreachable)",
        )
        writable.add_metric([], 0 if self._store.unwritable() else 1)
        yield writable
        now = self._clock()
        timings, held = holdings_from(self._store, now)
        yield from _incident_metrics(timings, now.timestamp())
        yield from _holding_metrics(timings, held, now.timestamp())
        pending = GaugeMetricFamily("driftowner_outbox_pending", "Notifications not yet delivered")
        pending.add_metric([], self._store.outbox_pending())
        yield pending
        oldest = GaugeMetricFamily(
            "driftowner_outbox_oldest_seconds",
            "How long the oldest notification not yet delivered has waited since it was made "
            "(0 when none waits)",
        )
        oldest.add_metric([], self._store.outbox_oldest(self._clock()))
        yield oldest


def _incident_metrics(incidents: list[Timing], now: float) -> Iterator[Metric]:
    """What the incidents are now: opened per system, unresolved and oldest per current
    owner."""
    opened = CounterMetricFamily(
        "driftowner_incidents_opened", "Incidents opened", labels=["system", "kind"]
    )
    counts: dict[tuple[str, str], int] = {}
    open_now: dict[tuple[str, str, str], int] = {}
    oldest: dict[tuple[str, str], float] = {}
    for incident in incidents:
        counts[(incident.system, incident.kind)] = (
            counts.get((incident.system, incident.kind), 0) + 1
        )
        if incident.unresolved:
            key = (incident.owner, incident.system, incident.state)
            open_now[key] = open_now.get(key, 0) + 1
            age = incident.age(now)
            pair = (incident.owner, incident.system)
            oldest[pair] = max(oldest.get(pair, 0.0), age)
    for (system, kind), count in sorted(counts.items()):
        opened.add_metric([system, kind], count)
    yield opened

    gauge = GaugeMetricFamily(
        "driftowner_incidents_open", "Unresolved incidents", labels=["owner", "system", "state"]
    )
    for (owner, system, state), count in sorted(open_now.items()):
        gauge.add_metric([owner, system, state], count)
    # Zero the unresolved states of owner/system pairs that have none, so alerts see 0, not
    # absence, once incidents resolve.
    for owner, system in sorted({(i.owner, i.system) for i in incidents}):
        for state in STATES:
            if state != "resolved" and (owner, system, state) not in open_now:
                gauge.add_metric([owner, system, state], 0)
    yield gauge

    oldest_age = GaugeMetricFamily(
        "driftowner_incident_unresolved_age_seconds",
        "Age of the oldest unresolved incident",
        labels=["owner", "system"],
    )
    for (owner, system), seconds in sorted(oldest.items()):
        oldest_age.add_metric([owner, system], seconds)
    yield oldest_age


def _holding_metrics(incidents: list[Timing], held: list[Holding], now: float) -> Iterator[Metric]:
    """What each owner did while they held incidents, as the report counts it: SLO breaches
    and the times to acknowledge and resolve of their own holding periods."""
    breaches: dict[tuple[str, str, str], int] = {}
    # Every owner/system pair an incident has, at zero, so alerts see 0 rather than absence.
    for owner, system in {(i.owner, i.system) for i in incidents} | {
        (h.owner, h.system) for h in held
    }:
        for slo in ("ack", "resolve"):
            breaches[(owner, system, slo)] = 0
    tta: dict[str, list[float]] = {}
    ttr: dict[str, list[float]] = {}
    for holding in held:
        breaches[(holding.owner, holding.system, "ack")] += holding.ack_breached
        breaches[(holding.owner, holding.system, "resolve")] += holding.resolve_breached
        if (t := holding.time_to_acknowledge) is not None:
            tta.setdefault(holding.owner, []).append(t)
        if (t := holding.time_to_resolve) is not None:
            ttr.setdefault(holding.owner, []).append(t)
    slo_family = CounterMetricFamily(
        "driftowner_incident_slo_breaches",
        "Incident holdings past their ack or resolve SLO, credited to the owner holding it",
        labels=["owner", "system", "slo"],
    )
    for (owner, system, slo), count in sorted(breaches.items()):
        slo_family.add_metric([owner, system, slo], count)
    yield slo_family

    yield _histogram(
        "driftowner_incident_time_to_acknowledge_seconds",
        "First ack minus the start of the owner's holding (opening or handover)",
        tta,
    )
    yield _histogram(
        "driftowner_incident_time_to_resolve_seconds",
        "Resolution minus the start of the resolving owner's holding (opening or handover)",
        ttr,
    )


def _histogram(name: str, documentation: str, by_owner: dict[str, list[float]]) -> Metric:
    family = HistogramMetricFamily(name, documentation, labels=["owner"])
    for owner, values in sorted(by_owner.items()):
        ordered = sorted(values)
        buckets = [(_le(bound), float(bisect_right(ordered, bound))) for bound in TIME_BUCKETS]
        buckets.append(("+Inf", float(len(values))))
        family.add_metric([owner], buckets, sum(values))
    return family


def _le(bound: float) -> str:
    return str(bound)
