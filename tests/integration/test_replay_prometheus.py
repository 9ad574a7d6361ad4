"""Replay against a real Prometheus serving two hours of promtool-loaded history in which
business adoption falls for 30 minutes while model accuracy holds."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from driftowner.clock import utcnow
from driftowner.config import Config
from driftowner.configload import load_config_text
from driftowner.replay import replay, replay_json
from driftowner.sources import Source, build_source
from tests.integration.prometheus_server import (
    CONFIG_HEAD,
    Family,
    openmetrics,
    running_prometheus,
)

pytestmark = pytest.mark.integration

MINUTE = timedelta(minutes=1)
HISTORY_MINUTES = 120
DROP_BEGINS = 45
"""Minutes into the history when adoption falls ..."""
DROP_ENDS = 75
"""... and when it is back."""

CONFIG = (
    CONFIG_HEAD
    + """\
systems:
  fraud-scoring:
    owner: alice
    escalation: standard
    resolve_after: 5m
    signals:
      accuracy:
        layer: model
        source: prom
        query: avg_over_time(model_accuracy{model="fraud"}[5m])
        bad: down
        detect: {threshold: {min: 0.90}}
      adoption:
        layer: business
        source: prom
        query: fraud_alert_adoption_ratio
        bad: down
        detect: {baseline: {reference: 1h, max_change: 20%%}}
    disagreements:
      - name: accuracy-fine-adoption-falling
        healthy: [accuracy]
        degraded: [adoption]
        for: 10m
"""
)


@dataclass(frozen=True)
class History:
    """The server and the instant of its first and last loaded sample (one a minute)."""

    url: str
    first: datetime
    last: datetime

    def minute(self, n: int) -> datetime:
        return self.first + n * MINUTE


def noise(series: str, index: int) -> float:
    """Deterministic noise in ``[-1, 1)``."""
    digest = hashlib.blake2b(f"{series}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**63 - 1.0


def adoption(index: int) -> float:
    centre = 0.30 if DROP_BEGINS <= index < DROP_ENDS else 0.62
    return centre + 0.01 * noise("adoption", index)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """Prometheus with two hours of history at one sample a minute, the newest 90 s old:
    accuracy near 0.94 throughout (and another model's at 0.5), adoption near 0.62 except near
    0.30 from minute 45 to minute 75."""
    first = int(time.time()) - 90 - (HISTORY_MINUTES - 1) * 60
    times = [first + i * 60 for i in range(HISTORY_MINUTES)]
    accuracy = Family(
        "model_accuracy",
        "gauge",
        [
            ({"model": "fraud"}, at, 0.94 + 0.005 * noise("accuracy", i))
            for i, at in enumerate(times)
        ]
        + [({"model": "other"}, at, 0.5) for at in times],
    )
    ratio = Family(
        "fraud_alert_adoption_ratio", "gauge", [({}, at, adoption(i)) for i, at in enumerate(times)]
    )
    with running_prometheus(
        tmp_path_factory.mktemp("prometheus"), openmetrics(accuracy, ratio)
    ) as url:
        yield History(
            url=url,
            first=datetime.fromtimestamp(first, tz=UTC),
            last=datetime.fromtimestamp(times[-1], tz=UTC),
        )


@pytest.fixture
def config(history: History) -> Config:
    return load_config_text(CONFIG % {"url": history.url}, environ={})


@pytest.fixture
async def sources(config: Config) -> AsyncIterator[dict[str, Source]]:
    built = {name: build_source(name, spec, clock=utcnow) for name, spec in config.sources.items()}
    yield built
    for source in built.values():
        await source.aclose()


async def test_a_thirty_minute_adoption_drop_replays_as_one_disagreement(
    history: History, config: Config, sources: dict[str, Source]
) -> None:
    """Replayed over the two hours, the history gives exactly one disagreement incident: its
    condition began within one interval of the drop, it opened ``for`` (10m) later, and it
    resolved after adoption recovered; no query failed."""
    result = await replay(config, sources, history.first, history.last)
    assert result.failed_queries == 0, result.failures
    assert result.evaluations == HISTORY_MINUTES
    assert len(result.incidents) == 1, result.incidents
    (incident,) = result.incidents
    assert (incident.kind, incident.rule) == (
        "disagreement",
        "disagreement:accuracy-fine-adoption-falling",
    )
    assert incident.layers == ("model", "business")
    drop = history.minute(DROP_BEGINS)
    assert drop <= incident.condition_began_at <= drop + MINUTE
    assert incident.opened_at == incident.condition_began_at + timedelta(minutes=10)
    assert incident.resolved_at is not None
    assert incident.resolved_at >= history.minute(DROP_ENDS) + timedelta(minutes=5)
    assert incident.resolved_at <= history.minute(DROP_ENDS) + timedelta(minutes=7)
    document = replay_json(result)
    assert document["incidents"][0]["state"] == "resolved"
    assert document["incidents"][0]["acknowledged_at"] is None


async def test_a_replay_ending_inside_the_drop_leaves_the_incident_open(
    history: History, config: Config, sources: dict[str, Source]
) -> None:
    """Replayed up to minute 70, while adoption is still down, the disagreement is open."""
    result = await replay(config, sources, history.first, history.minute(70))
    (incident,) = result.incidents
    assert incident.state == "open"
    assert incident.resolved_at is None


async def test_a_query_prometheus_rejects_is_a_failed_query_and_a_stale_incident(
    history: History, config: Config, sources: dict[str, Source]
) -> None:
    """A signal whose PromQL Prometheus rejects is counted as a failed query with the server's
    error; Prometheus being up, that is broken monitoring, the owner's problem: one stale
    incident whose evidence says the query is broken, and no disagreement."""
    system = config.systems["fraud-scoring"]
    broken_signal = system.signals["adoption"].model_copy(
        update={"query": "rate(fraud_alert_adoption_ratio"}
    )
    broken = config.model_copy(
        update={
            "systems": {
                "fraud-scoring": system.model_copy(
                    update={"signals": {**system.signals, "adoption": broken_signal}}
                )
            }
        }
    )
    result = await replay(broken, sources, history.first, history.last)
    (stale,) = result.incidents
    assert (stale.kind, stale.rule, stale.owner) == ("stale", "stale:adoption", "alice")
    assert stale.summary.startswith("adoption cannot be read, its query is broken")
    assert "query rejected" in stale.summary
    assert result.failed_queries == 1
    (failure,) = result.failures
    assert failure.signal == "adoption"
    assert "query rejected" in failure.error
