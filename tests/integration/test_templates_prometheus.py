"""Signal templates against a real Prometheus: one query per cycle serves every model's
system, each judged on its own series, live and in a backtest."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from driftowner.config import Config
from driftowner.poll import poll
from driftowner.replay import replay
from driftowner.sources import build_source
from tests.integration.prometheus_server import Family, openmetrics, running_prometheus
from tests.unit.factories import templated_document

MODELS = ("fraud", "churn", "ranking")


def history(now: float) -> str:
    """Two hours of accuracy per model at 1-minute resolution; ``churn`` drops below 0.9 for
    the 30 minutes from an hour ago, the others hold."""
    samples = []
    for minute in range(120):
        at = now - 7200 + 60 * minute
        for model in MODELS:
            bad = model == "churn" and 60 <= minute < 90
            for instance in ("a", "b"):  # two replicas: the template averages them by model
                samples.append(({"model": model, "instance": instance}, at, 0.7 if bad else 0.95))
    return openmetrics(Family("model_accuracy", "gauge", samples))


def config_for(url: str) -> Config:
    document, system = templated_document(url, timeout="5s")
    document["evaluation"] = {"interval": "1m"}
    system["resolve_after"] = "0s"
    for model in MODELS:
        document["systems"][f"{model}-system"] = {**system, "labels": {"model": model}}
    return Config.model_validate(document)


async def test_one_template_query_judges_every_model_live_and_in_replay(tmp_path: Path) -> None:
    """Live: each model's system gets its own averaged series (two replicas are one series
    after ``avg by (model)``), all healthy now. Replay over the two hours: exactly one
    incident, churn's, opened when its accuracy fell and resolved when it recovered."""
    now = time.time()
    with running_prometheus(tmp_path, history(now)) as url:
        config = config_for(url)
        source = build_source("prom", config.sources["prom"], clock=lambda: datetime.now(UTC))
        try:
            at = datetime.fromtimestamp(now - 60, UTC)
            findings, stats = await poll(config, {"prom": source}, at)
            assert stats.up == {"prom": True} and stats.errors == {}
            for model in MODELS:
                finding = findings[f"{model}-system"]["accuracy"]
                assert finding.status == "ok", finding
                assert finding.value == 0.95

            start = datetime.fromtimestamp(now - 7200 + 300, UTC)
            result = await replay(config, {"prom": source}, start, at)
        finally:
            await source.aclose()
    assert result.failed_queries == 0
    (incident,) = result.incidents
    assert incident.system == "churn-system" and incident.rule == "drift:accuracy"
    drop = datetime.fromtimestamp(now - 3600, UTC)
    assert abs(incident.condition_began_at - drop) <= timedelta(minutes=1)
    assert incident.resolved_at is not None
    assert abs(incident.resolved_at - (drop + timedelta(minutes=30))) <= timedelta(minutes=2)
