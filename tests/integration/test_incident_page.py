"""The incident page (``GET /incidents/{id}``) over a real SQLite store and a real file source:
the chart drawn from the signal's history, and a clear message when there is none; the view
link messages carry opens it."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from driftowner import incidents
from driftowner.api import Runtime, create_app
from driftowner.config import Config
from driftowner.configload import load_config
from driftowner.model import Finding, Incident, SourceResult
from driftowner.sources import Source, build_source
from driftowner.store import Changes, SqlStore
from tests.integration.app_harness import runtime_over

NS = {"s": "http://www.w3.org/2000/svg"}
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
BEGAN = NOW - timedelta(minutes=28)
"""When accuracy started to fall (11:32)."""

CONFIG = """
server: {listen: "127.0.0.1:9587", external_url: "https://driftowner.test/base"}
storage: {url: "sqlite:///%(dir)s/store.db"}
sources:
  metrics: {type: file, path: "%(dir)s/metrics.csv"}
  lost: {type: file, path: "%(dir)s/missing.csv"}
owners:
  alice: {name: Alice Chen, email: alice@example.com}
channels: {console: {type: log}}
escalation_chains:
  standard: {steps: [{notify: owner}]}
systems:
  fraud-scoring:
    owner: alice
    escalation: standard
    runbook: https://wiki.example.com/fraud-scoring
    signals:
      accuracy: {layer: model, source: metrics, query: accuracy, bad: down,
                 detect: {threshold: {min: 0.9}}}
      adoption: {layer: business, source: metrics, query: adoption, bad: down,
                 detect: {baseline: {reference: 30m, max_change: 20%%}}}
      latency: {layer: engineering, source: lost, query: p99, bad: up,
                detect: {threshold: {max: 0.5}}}
"""


def history() -> str:
    """Two hours of accuracy, a minute apart: 0.94 until 11:32, then falling to 0.80 by 11:40
    and staying there. Adoption: the same shape from 0.62 to 0.40. No p99 at all."""
    rows = ["timestamp,series,value"]
    for minute in range(121):
        at = NOW - timedelta(minutes=120 - minute)
        fallen = min(1.0, max(0.0, (at - BEGAN) / timedelta(minutes=8)))
        stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append(f"{stamp},accuracy,{0.94 - 0.14 * fallen:.4f}")
        rows.append(f"{stamp},adoption,{0.62 - 0.22 * fallen:.4f}")
    return "\n".join(rows) + "\n"


def drift(config: Config, incident_id: str, signal: str, **changes: object) -> Incident:
    """An open drift incident of fraud-scoring on ``signal``, opened at 11:40, its condition
    begun at 11:32, with the evidence its detector gave."""
    evidence = {
        "accuracy": Finding(
            "fraud-scoring",
            "accuracy",
            "model",
            "degraded",
            NOW - timedelta(minutes=20),
            0.8,
            limit=0.9,
            detector="threshold",
            reason="0.8 < min 0.9",
        ),
        "adoption": Finding(
            "fraud-scoring",
            "adoption",
            "business",
            "degraded",
            NOW - timedelta(minutes=20),
            0.4,
            reference=0.62,
            statistic=-0.355,
            limit=0.2,
            detector="baseline",
            reason="0.4 is -35% against the 30m mean 0.62 (limit -20%)",
        ),
    }
    incident = Incident(
        id=incident_id,
        system="fraud-scoring",
        owner="alice",
        kind="drift",
        rule=f"drift:{signal}",
        layers=("model",),
        signals=(signal,),
        state="open",
        opened_at=NOW - timedelta(minutes=20),
        condition_began_at=BEGAN,
        summary=f"{signal} falling <b>fast</b>",
        runbook="https://wiki.example.com/fraud-scoring",
        chain=incidents.snapshot_chain(config, config.systems["fraud-scoring"]),
        evidence=tuple(f for name, f in evidence.items() if name == signal),
    )
    return replace(incident, **changes)  # type: ignore[arg-type]


class CountingSource:
    """A source that counts the reads it passes on (to see the page's cache at work)."""

    def __init__(self, inner: Source) -> None:
        self.name = inner.name
        self.inner = inner
        self.reads = 0

    async def read(
        self, query: str, start: datetime, end: datetime, step: timedelta
    ) -> SourceResult:
        self.reads += 1
        return await self.inner.read(query, start, end, step)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[TestClient, Runtime]]:
    """The app at NOW over a store holding drift incidents on accuracy (inc-acc), adoption
    (inc-adopt), latency (inc-lat, its source's file missing) and a signal since removed from
    the config (inc-gone); the file source holds :func:`history`."""
    (tmp_path / "metrics.csv").write_text(history())
    config_path = tmp_path / "driftowner.yaml"
    config_path.write_text(CONFIG % {"dir": tmp_path})
    config = load_config(config_path)
    store = SqlStore(config.storage.url)
    store.open()
    runtime = runtime_over(
        config,
        store,
        lambda: NOW,
        {
            name: CountingSource(build_source(name, spec, clock=lambda: NOW))
            for name, spec in config.sources.items()
        },
    )
    store.apply(
        Changes(
            opened=[
                drift(config, "inc-acc", "accuracy"),
                drift(config, "inc-adopt", "adoption"),
                drift(config, "inc-lat", "latency"),
                drift(config, "inc-gone", "throughput"),
            ]
        )
    )
    try:
        with TestClient(create_app(runtime)) as client:
            yield client, runtime
    finally:
        store.close()


def chart_of(html: str, signal: str) -> ET.Element | None:
    """The SVG chart in the figure of ``signal``, parsed; None when the figure has none."""
    figure = re.search(rf'<figure[^>]*data-signal="{signal}".*?</figure>', html, re.S)
    assert figure is not None, f"no figure for {signal}"
    drawn = re.search(r"<svg.*?</svg>", figure.group(0), re.S)
    return None if drawn is None else ET.fromstring(drawn.group(0))


def points(chart: ET.Element) -> list[tuple[float, float]]:
    path = chart.find("s:path[@class='series']", NS)
    assert path is not None
    return [(float(x), float(y)) for x, y in re.findall(r"([-\d.]+),([-\d.]+)", path.attrib["d"])]


def test_the_page_charts_the_signal_history_with_its_limit_and_change_start(
    site: tuple[TestClient, Runtime],
) -> None:
    """The accuracy incident's page is HTML with a chart of accuracy read from the file source
    over the evidence window (11:04 to 12:00: 57 values, one a minute), the threshold's minimum
    as the limit, the change start at 11:32 and the opening at 11:40; the drop shows (the last
    value is drawn lower than the first), and the incident's text is escaped."""
    client, _ = site
    answer = client.get("/incidents/inc-acc")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    html = answer.text
    assert "accuracy falling &lt;b&gt;fast&lt;/b&gt;" in html and "<b>fast" not in html
    chart = chart_of(html, "accuracy")
    assert chart is not None
    drawn = points(chart)
    assert len(drawn) == 57
    assert drawn[-1][1] > drawn[0][1], "0.80 is drawn below 0.94 (SVG y grows downwards)"
    limits = [line.find("s:title", NS).text for line in chart.findall("s:line[@class='limit']", NS)]  # type: ignore[union-attr]
    assert limits == ["limit 0.9"]
    began = chart.find("s:g[@class='change-start']/s:title", NS)
    assert began is not None and began.text == "change began 2026-11-27 11:32:00 UTC"
    opened = chart.find("s:g[@class='marker']/s:title", NS)
    assert opened is not None and opened.text == "opened 2026-11-27 11:40:00 UTC"
    desc = chart.find("s:desc", NS)
    assert desc is not None and desc.text is not None
    assert "57 values from 0.8 to 0.94, the last 0.8" in desc.text
    assert "limits lower 0.9" in desc.text
    assert "0.8 &lt; min 0.9" in html, "the evidence's reason is shown"
    assert 'href="https://wiki.example.com/fraud-scoring"' in html
    assert 'href="../api/v1/incidents/inc-acc"' in html


def test_a_baseline_chart_shows_its_reference_and_the_limit_on_the_bad_side(
    site: tuple[TestClient, Runtime],
) -> None:
    """A baseline's evidence (reference 0.62, max change 20%, bad down) draws the reference at
    0.62 and one limit at 0.496, below it."""
    client, _ = site
    chart = chart_of(client.get("/incidents/inc-adopt").text, "adoption")
    assert chart is not None
    reference = chart.find("s:line[@class='reference']/s:title", NS)
    assert reference is not None and reference.text == "reference 0.62"
    limits = [line.find("s:title", NS).text for line in chart.findall("s:line[@class='limit']", NS)]  # type: ignore[union-attr]
    assert limits == ["limit 0.496"]
    band = chart.find("s:rect[@class='band']", NS)
    assert band is not None and float(band.attrib["y"]) == 14, "open-ended above the limit"


def test_a_source_that_cannot_be_read_gives_a_clear_message_and_no_chart(
    site: tuple[TestClient, Runtime],
) -> None:
    """The latency signal's file is missing: the page still answers 200 with the incident, says
    which source could not be read and why, and draws no chart."""
    client, _ = site
    answer = client.get("/incidents/inc-lat")
    assert answer.status_code == 200
    assert chart_of(answer.text, "latency") is None
    assert "The source &#39;lost&#39; could not be read:" in answer.text
    assert "missing.csv does not exist" in answer.text
    assert "Events" in answer.text


def test_a_signal_no_longer_configured_says_so(site: tuple[TestClient, Runtime]) -> None:
    """An incident on a signal removed from the config since shows the incident and says its
    history cannot be read, rather than failing."""
    client, _ = site
    answer = client.get("/incidents/inc-gone")
    assert answer.status_code == 200
    assert "fraud-scoring.throughput is no longer in the config" in answer.text
    assert chart_of(answer.text, "throughput") is None


def test_an_empty_window_says_the_source_has_no_values(
    site: tuple[TestClient, Runtime], tmp_path: Path
) -> None:
    """A source that answers with no values in the window gets a message naming the query and
    the window, with the chart's axes and levels still drawn."""
    client, _ = site
    (tmp_path / "metrics.csv").write_text("timestamp,series,value\n2020-01-01T00:00:00Z,x,1\n")
    answer = client.get("/incidents/inc-acc")
    assert "has no values of &#39;accuracy&#39; between 2026-11-27 11:04:00 UTC" in answer.text
    chart = chart_of(answer.text, "accuracy")
    assert chart is not None and chart.find("s:path[@class='series']", NS) is None


def test_an_unknown_incident_is_a_404_page(site: tuple[TestClient, Runtime]) -> None:
    """A page for no incident answers 404 in HTML, naming it."""
    client, _ = site
    answer = client.get("/incidents/nope")
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert "nope" in answer.text


def test_page_loads_within_seconds_share_one_read(site: tuple[TestClient, Runtime]) -> None:
    """Reloading an incident's page at once reads its source once (the read is cached); another
    incident's page makes its own read."""
    client, runtime = site
    source = runtime.sources["metrics"]
    assert isinstance(source, CountingSource)
    client.get("/incidents/inc-acc")
    client.get("/incidents/inc-acc")
    assert source.reads == 1
    client.get("/incidents/inc-adopt")
    assert source.reads == 2


def test_the_view_link_messages_carry_opens_the_incident_page(
    site: tuple[TestClient, Runtime],
) -> None:
    """The ``view`` URL a notification carries is the incident's HTML page under the external
    URL (it used to be the JSON API), and that page answers."""
    client, runtime = site
    url = runtime.links("inc-acc", "view")
    assert url == "https://driftowner.test/base/incidents/inc-acc"
    answer = client.get(url.removeprefix("https://driftowner.test/base"))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert chart_of(answer.text, "accuracy") is not None


def test_an_incident_id_is_escaped_in_the_view_link(site: tuple[TestClient, Runtime]) -> None:
    """An id with a slash or a space stays one path segment of the link."""
    _, runtime = site
    assert runtime.links("a/b c", "view") == "https://driftowner.test/base/incidents/a%2Fb%20c"
