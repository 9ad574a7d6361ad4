"""``driftowner_incident_slo_breaches_total{owner,system,slo}``, computed from the store at
scrape, agrees with the ``slo_breached`` events the escalation stage records, tick after
tick: each breach is one event and one count."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from driftowner import incidents, runner
from driftowner.cycle import Pager
from driftowner.metrics import StoreCollector
from driftowner.store import Changes, MemoryStore, Store

from .factories import at, ids, incident, links, make_config


def counted(store: Store, now: datetime) -> Counter[tuple[str, str, str]]:
    """The metric's non-zero samples, as (owner, system, slo) → count."""
    found: Counter[tuple[str, str, str]] = Counter()
    for family in StoreCollector(store, lambda: now).collect():
        if family.name == "driftowner_incident_slo_breaches":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.value:
                    labels = sample.labels
                    found[(labels["owner"], labels["system"], labels["slo"])] = int(sample.value)
    return found


def recorded(store: Store) -> Counter[tuple[str, str, str]]:
    """The ``slo_breached`` events, as (owner, system, slo) → count."""
    found: Counter[tuple[str, str, str]] = Counter()
    for each in store.incidents():
        for event in store.events(each.id):
            if event.kind == "slo_breached":
                found[(each.owner, each.system, event.detail.split("_within")[0])] += 1
    return found


def acknowledge(store: Store, incident_id: str, when: datetime) -> None:
    subject = store.incident(incident_id)
    assert subject is not None
    transition = incidents.acknowledge(subject, "alice", when)
    store.apply(Changes(updated=[transition.incident], events=transition.events))


def test_the_slo_breach_metric_agrees_with_the_breach_events_at_every_tick() -> None:
    """Four incidents of fraud-scoring (ack_within 30m, resolve_within 3d): one acknowledged
    in time, one acknowledged late between ticks, two never. At each tick (opening, past
    ack_within, after the late ack, past resolve_within) the metric and the events agree,
    and the events are not empty once the SLOs passed."""
    config = make_config()
    store = MemoryStore()
    rules = ("drift:accuracy", "drift:adoption", "drift:null_rate", "disagreement:x")
    store.apply(
        Changes(opened=[incident(config, id=f"inc-{n}", rule=rule) for n, rule in enumerate(rules)])
    )
    pager = Pager(ids("n"), links)
    for minute, act in (
        (0, None),
        (10, "inc-0"),
        (31, None),
        (35, "inc-1"),
        (36, None),
        (3 * 24 * 60 + 1, None),
    ):
        if act is not None:
            acknowledge(store, act, at(minute))
        runner.escalate(store, config, at(minute), pager)
        assert counted(store, at(minute)) == recorded(store), f"at minute {minute}"
    assert recorded(store) == Counter(
        {("alice", "fraud-scoring", "ack"): 3, ("alice", "fraud-scoring", "resolve"): 4}
    )
    # Each breach told once: ticking again adds no event.
    runner.escalate(store, config, at(3 * 24 * 60 + 2), pager)
    assert sum(recorded(store).values()) == 7
