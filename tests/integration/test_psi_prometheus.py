"""PSI and Jensen-Shannon against a real Prometheus: a classic histogram (``*_bucket`` counters
by ``le``, loaded with promtool) whose scores move up in the last half hour opens a drift
incident through the daemon's poll and evaluation against SQLite; an unmoved one stays ok."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from driftowner import poll, runner
from driftowner.clock import utcnow
from driftowner.config import Config
from driftowner.configload import load_config_text
from driftowner.cycle import Pager
from driftowner.detect.bank import Bank
from driftowner.ids import new_incident_id
from driftowner.replay import replay
from driftowner.sources import Source, build_source
from driftowner.store import SqlStore
from tests.integration.prometheus_server import (
    CONFIG_HEAD,
    Family,
    openmetrics,
    running_prometheus,
)
from tests.unit.factories import ids

pytestmark = pytest.mark.integration

HISTORY_MINUTES = 240
SHIFT_BEGINS = 210
"""Minutes into the history when the fraud model's scores move up (30 minutes before its end)."""
BOUNDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, math.inf)
SCORES_PER_MINUTE = 200

CONFIG = (
    CONFIG_HEAD
    + """\
systems:
  fraud-scoring:
    owner: alice
    escalation: standard
    signals:
      scores:
        layer: model
        source: prom
        query: model_score_bucket{model="fraud"}
        bad: up
        detect: {%(metric)s: {reference: 2h, recent: 20m}}
  churn-scoring:
    owner: alice
    escalation: standard
    signals:
      scores:
        layer: model
        source: prom
        query: model_score_bucket{model="churn"}
        bad: both
        detect: {%(metric)s: {reference: 2h, recent: 20m}}
"""
)


@dataclass(frozen=True)
class History:
    url: str
    last: datetime


def _noise(series: str, index: int) -> float:
    """Deterministic noise in ``[0, 1)``."""
    digest = hashlib.blake2b(f"{series}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _bin_counts(centre: float, model: str, minute: int) -> list[int]:
    """One minute's scores per bin: a bell around ``centre`` (0.1 wide), with noise."""
    weights = [math.exp(-(((i + 0.5) / 10 - centre) ** 2) / 0.02) for i in range(len(BOUNDS))]
    total = sum(weights)
    return [
        int(SCORES_PER_MINUTE * w / total + _noise(f"{model}:{i}", minute))
        for i, w in enumerate(weights)
    ]


def _buckets(
    model: str, first: int, moves: bool, instance: str = "a"
) -> list[tuple[dict[str, str], float, float]]:
    """Cumulative ``model_score_bucket`` counters by ``le``, one sample a minute. Instance
    ``a`` spells ``le`` as Python's client does (``1.0``), any other as Go's does (``1``)."""
    running = [0] * len(BOUNDS)
    rows: list[tuple[dict[str, str], float, float]] = []
    for minute in range(HISTORY_MINUTES):
        centre = 0.6 if moves and minute >= SHIFT_BEGINS else 0.3
        for i, count in enumerate(_bin_counts(centre, f"{model}:{instance}", minute)):
            running[i] += count
        cumulative = 0
        for bound, total in zip(BOUNDS, running, strict=True):
            cumulative += total
            le = "+Inf" if math.isinf(bound) else repr(bound) if instance == "a" else f"{bound:g}"
            labels = {"model": model, "instance": instance, "le": le}
            rows.append((labels, first + minute * 60, float(cumulative)))
    return rows


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """Four hours of a classic histogram, one scrape a minute, the newest 60 s old: fraud
    scores centred near 0.3 move to 0.6 for the last 30 minutes; churn scores never move and
    come from two instances that spell the ``le`` of 1 differently (``1.0`` and ``1``)."""
    first = int(time.time()) - 60 - (HISTORY_MINUTES - 1) * 60
    family = Family(
        "model_score_bucket",
        "gauge",
        _buckets("fraud", first, moves=True)
        + _buckets("churn", first, moves=False, instance="a")
        + _buckets("churn", first, moves=False, instance="b"),
    )
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), openmetrics(family)) as url:
        last = first + (HISTORY_MINUTES - 1) * 60
        yield History(url=url, last=datetime.fromtimestamp(last, tz=UTC))


def _config(history: History, metric: str) -> Config:
    return load_config_text(CONFIG % {"url": history.url, "metric": metric}, environ={})


@pytest.fixture
async def sources(history: History) -> AsyncIterator[dict[str, Source]]:
    config = _config(history, "psi")
    built = {name: build_source(name, spec, clock=utcnow) for name, spec in config.sources.items()}
    yield built
    for source in built.values():
        await source.aclose()


@pytest.mark.parametrize("metric", ["psi", "js"])
async def test_a_histogram_that_moves_opens_a_drift_incident(
    history: History, sources: dict[str, Source], tmp_path: Path, metric: str
) -> None:
    """Polled at the newest sample, the fraud histogram's recent 20 minutes against the two
    hours before them is degraded, moving up, beyond its limit, and the evaluation opens one drift
    incident for it in SQLite; the churn histogram, unmoved, is ok below its limit although its
    two instances spell one bucket's bound differently (the bound, not its spelling, sums)."""
    config = _config(history, metric)
    now = history.last + timedelta(seconds=1)
    findings, stats = await poll.poll(config, sources, now, Bank())
    assert stats.failing == {}
    fraud = findings["fraud-scoring"]["scores"]
    churn = findings["churn-scoring"]["scores"]
    assert (fraud.status, fraud.detector) == ("degraded", metric), fraud.reason
    assert fraud.statistic is not None and fraud.limit is not None
    assert fraud.statistic > fraud.limit
    assert fraud.value is not None and fraud.reference is not None
    assert fraud.value > fraud.reference + 0.2, fraud.reason
    assert "moved up" in fraud.reason
    assert (churn.status, churn.detector) == ("ok", metric), churn.reason
    assert churn.statistic is not None and churn.limit is not None
    assert churn.statistic < churn.limit / 2

    store = SqlStore(f"sqlite:///{tmp_path / 's.db'}")
    store.open()
    try:
        pager = Pager(ids("notice"), lambda _i, _a, _r=None: None)
        runner.evaluate(store, config, findings, now, new_incident_id, pager)
        opened = store.incidents(unresolved=True)
        assert [(i.system, i.kind, i.rule) for i in opened] == [
            ("fraud-scoring", "drift", "drift:scores")
        ]
    finally:
        store.close()


async def test_an_accepted_level_moves_the_reference_window_after_the_accept(
    history: History, sources: dict[str, Source]
) -> None:
    """After ``resolve --accept`` two minutes into the shift, the fraud histogram's reference
    window starts after the accept: it holds only moved scores, so the recent window is ok
    against it. Accepted later, within the recent window, no reference is left yet: the
    finding is ``no_data`` (learning), which neither fires nor clears an incident."""
    config = _config(history, "psi")
    now = history.last + timedelta(seconds=1)
    shift = history.last - timedelta(minutes=HISTORY_MINUTES - 1 - SHIFT_BEGINS)
    key = ("fraud-scoring", "scores")

    bank = Bank()
    bank.accept(key, shift + timedelta(minutes=2))
    findings, stats = await poll.poll(config, sources, now, bank)
    assert stats.failing == {}
    fraud = findings["fraud-scoring"]["scores"]
    assert fraud.status == "ok", fraud.reason
    assert fraud.reference is not None and fraud.reference > 0.5, fraud.reason

    bank = Bank()
    bank.accept(key, now - timedelta(minutes=10))
    findings, _ = await poll.poll(config, sources, now, bank)
    fraud = findings["fraud-scoring"]["scores"]
    assert fraud.status == "no_data"
    assert "learning its reference since the level was accepted" in fraud.reason
    assert findings["churn-scoring"]["scores"].status == "ok"


async def test_replay_judges_psi_over_the_histogram_history(
    history: History, sources: dict[str, Source]
) -> None:
    """Replayed over the last 90 minutes, the fraud histogram's windows are read at every
    minute (two range queries): one drift incident opens after its scores moved, within the
    recent window's 20 minutes, and its flip to degraded is a change; the churn histogram
    opens nothing, and no query fails."""
    config = _config(history, "psi")
    shift = history.last - timedelta(minutes=HISTORY_MINUTES - 1 - SHIFT_BEGINS)
    result = await replay(config, sources, history.last - timedelta(minutes=90), history.last)
    assert result.failed_queries == 0, result.failures
    (incident,) = result.incidents
    assert (incident.system, incident.rule) == ("fraud-scoring", "drift:scores")
    assert shift < incident.opened_at <= shift + timedelta(minutes=20)
    assert [(c.system, c.direction) for c in result.changes] == [("fraud-scoring", "up")]
