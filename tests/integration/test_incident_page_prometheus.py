"""The incident page's chart read through a real Prometheus (Debian's ``prometheus`` over
history loaded with ``promtool``): the range query over the evidence window, and the message
when Prometheus cannot be reached."""

from __future__ import annotations

import re
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from driftowner import incidents
from driftowner.api import create_app
from driftowner.configload import load_config
from driftowner.model import Finding, Incident
from driftowner.sources import build_source
from driftowner.store import Changes, SqlStore
from tests.integration.app_harness import runtime_over
from tests.integration.prometheus_server import Family, openmetrics, running_prometheus

NS = {"s": "http://www.w3.org/2000/svg"}
MINUTE = 60

CONFIG = """
server: {listen: "127.0.0.1:9587"}
storage: {url: "sqlite:///%(dir)s/store.db"}
sources:
  prom: {type: prometheus, url: "%(url)s", timeout: 5s}
owners:
  alice: {name: Alice Chen, email: alice@example.com}
channels: {console: {type: log}}
escalation_chains:
  standard: {steps: [{notify: owner}]}
systems:
  fraud-scoring:
    owner: alice
    escalation: standard
    signals:
      accuracy:
        layer: model
        source: prom
        query: model_accuracy{model="fraud"}
        bad: down
        detect: {threshold: {min: 0.9}}
"""


def _closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(tmp_path: Path, url: str, now: datetime) -> Iterator[TestClient]:
    """The app at ``now`` over a store holding one drift incident of accuracy (opened 20
    minutes before, its condition begun 30 minutes before), reading Prometheus at ``url``."""
    path = tmp_path / "driftowner.yaml"
    path.write_text(CONFIG % {"dir": tmp_path, "url": url})
    config = load_config(path)
    store = SqlStore(config.storage.url)
    store.open()
    runtime = runtime_over(
        config,
        store,
        lambda: now,
        {
            name: build_source(name, spec, clock=lambda: now)
            for name, spec in config.sources.items()
        },
    )
    evidence = Finding(
        "fraud-scoring", "accuracy", "model", "degraded", now, 0.8, limit=0.9, detector="threshold"
    )
    store.apply(
        Changes(
            opened=[
                Incident(
                    id="inc-prom",
                    system="fraud-scoring",
                    owner="alice",
                    kind="drift",
                    rule="drift:accuracy",
                    layers=("model",),
                    signals=("accuracy",),
                    state="open",
                    opened_at=now - timedelta(minutes=20),
                    condition_began_at=now - timedelta(minutes=30),
                    summary="accuracy falling",
                    chain=incidents.snapshot_chain(config, config.systems["fraud-scoring"]),
                    evidence=(evidence,),
                )
            ]
        )
    )
    try:
        with TestClient(create_app(runtime)) as client:
            yield client
    finally:
        store.close()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, datetime]]:
    """A Prometheus holding two hours of accuracy a minute apart up to now: 0.95, then 0.80
    for the last 30 minutes."""
    last = int(time.time()) // MINUTE * MINUTE
    samples = [
        ({"model": "fraud"}, at, 0.95 if at < last - 30 * MINUTE else 0.80)
        for at in range(last - 120 * MINUTE, last + 1, MINUTE)
    ]
    text = openmetrics(Family("model_accuracy", "gauge", samples))
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), text) as url:
        yield url, datetime.fromtimestamp(last, tz=UTC)


def test_the_chart_is_a_range_read_through_prometheus(
    prometheus: tuple[str, datetime], tmp_path: Path
) -> None:
    """The page reads the signal's query over the evidence window (an hour: from 30 minutes
    before the change to now) through the Prometheus source, a value a minute, and draws the
    step from 0.95 down to 0.80 against the 0.9 minimum."""
    url, now = prometheus
    with serving(tmp_path, url, now) as client:
        html = client.get("/incidents/inc-prom").text
        drawn = re.search(r"<svg.*?</svg>", html, re.S)
        assert drawn is not None, html
        chart = ET.fromstring(drawn.group(0))
        path = chart.find("s:path[@class='series']", NS)
        assert path is not None
        assert len(re.findall(r"[-\d.]+,[-\d.]+", path.attrib["d"])) == 61
        desc = chart.find("s:desc", NS)
        assert desc is not None and desc.text is not None
        assert "61 values from 0.8 to 0.95, the last 0.8" in desc.text
        assert chart.find("s:line[@class='limit']/s:title", NS).text == "limit 0.9"  # type: ignore[union-attr]


def test_an_unreachable_prometheus_gives_a_clear_message(tmp_path: Path) -> None:
    """Prometheus not answering: the page still shows the incident, says the source could not
    be read and why (the source's own error), and draws no chart."""
    now = datetime.now(UTC)
    with serving(tmp_path, f"http://127.0.0.1:{_closed_port()}", now) as client:
        answer = client.get("/incidents/inc-prom")
        assert answer.status_code == 200
        assert "The source &#39;prom&#39; could not be read: prometheus source" in answer.text
        assert "<svg" not in answer.text
        assert "accuracy falling" in answer.text
