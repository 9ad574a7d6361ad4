"""Warm start against a real Prometheus (issue 6, point 5): at start every chart is rebuilt
from range queries over its reference window, so a restart neither forgets a drift in
progress nor mistakes a healthy model for a new one.

Prometheus (Debian's, history loaded with promtool) holds five hours at one sample a minute
of a templated signal, adoption split by ``model``: three models steady near 0.41, one whose
adoption fell to 0.31 forty minutes before now. A fresh bank (a daemon just started) is
polled once by :func:`driftowner.poll.poll`, the daemon's own first cycle: its read readies the
bank (:func:`driftowner.sources.history.prepare`, the warm start from range queries), then
judges the newest sample."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from driftowner.clock import utcnow
from driftowner.configload import load_config_text
from driftowner.detect.bank import Bank
from driftowner.poll import poll
from driftowner.sources import build_source
from tests.integration.prometheus_server import (
    CONFIG_HEAD,
    Family,
    openmetrics,
    running_prometheus,
)

pytestmark = pytest.mark.integration

MINUTES = 300
FELL_MINUTES_AGO = 40
STEADY = ("m-0", "m-1", "m-2")
FALLING = "m-3"

CONFIG = (
    CONFIG_HEAD
    + """\
signal_templates:
  adoption:
    layer: business
    source: prom
    query: avg by (model) (fraud_alert_adoption_ratio)
    system_label: model
    bad: down
systems:
%(systems)s
"""
)


def noise(series: str, index: int) -> float:
    """Deterministic noise in ``[-1, 1)``."""
    digest = hashlib.blake2b(f"{series}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**63 - 1.0


def adoption(model: str, index: int) -> float:
    fell = model == FALLING and index >= MINUTES - FELL_MINUTES_AGO
    return (0.31 if fell else 0.41) + 0.01 * noise(model, index)


@dataclass(frozen=True)
class History:
    url: str
    last: datetime


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """Five hours of adoption for four models, the newest sample 30 s old."""
    first = int(time.time()) - 30 - (MINUTES - 1) * 60
    times = [first + i * 60 for i in range(MINUTES)]
    family = Family(
        "fraud_alert_adoption_ratio",
        "gauge",
        [
            ({"model": model}, at, adoption(model, i))
            for model in (*STEADY, FALLING)
            for i, at in enumerate(times)
        ],
    )
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), openmetrics(family)) as url:
        yield History(url=url, last=datetime.fromtimestamp(times[-1], tz=UTC))


async def test_a_fresh_start_learns_each_model_from_history_and_keeps_a_drift_in_progress(
    history: History,
) -> None:
    """After the daemon's warm start over the real Prometheus, every steady model's chart has
    a reference learned from the range reads (none is left learning), the steady models are ``ok``
    against a level near 0.41, and the model whose adoption fell 40 minutes ago is degraded
    at once, its change dated to within a few minutes of the fall and its reference the level
    it left (its chart is learning the new level meanwhile): the first cycle after a restart
    already sees the drift."""
    systems = "\n".join(
        f"  {model}:\n    owner: alice\n    escalation: standard\n"
        f"    signals: {{adoption: {{template: adoption}}}}"
        for model in (*STEADY, FALLING)
    )
    config = load_config_text(CONFIG % {"url": history.url, "systems": systems}, environ={})
    source = build_source("prom", config.sources["prom"], clock=utcnow)
    try:
        now = history.last + timedelta(seconds=20)
        bank = Bank()
        findings, stats = await poll(config, {"prom": source}, now, bank)
    finally:
        await source.aclose()

    assert stats.failing == {} and stats.up == {"prom": True}
    for model in STEADY:
        reference = bank.watches[(model, "adoption")].state.reference
        assert reference is not None, f"{model} is still learning after the warm start"
    for model in STEADY:
        found = findings[model]["adoption"]
        assert found.status == "ok", found.reason
        assert found.reference == pytest.approx(0.41, abs=0.01)
    drifting = findings[FALLING]["adoption"]
    assert drifting.status == "degraded", drifting.reason
    assert drifting.reference == pytest.approx(0.41, abs=0.01)
    fell_at = history.last - (FELL_MINUTES_AGO - 1) * timedelta(minutes=1)
    assert drifting.began_at is not None
    assert abs(drifting.began_at - fell_at) <= timedelta(minutes=5)
