"""The status page's figures over a real SQLite store: each owner's record is the report's
(``/api/v1/report``), and each source's health is what the last evaluation saw."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from driftowner import incidents, service
from driftowner.api import Runtime
from driftowner.api.runtime import observe_sources
from driftowner.audit import audit
from driftowner.configload import load_config
from driftowner.model import Incident
from driftowner.render import format_age
from driftowner.store import Changes
from tests.integration.app_harness import NOW, serving

CONFIG = """
server: {listen: "127.0.0.1:9587", external_url: "https://driftowner.test"}
storage: {url: "sqlite:///%s"}
sources:
  prom: {type: prometheus, url: "http://127.0.0.1:9"}
  sim: {type: demo}
owners:
  alice: {name: Alice Chen, email: alice@example.com}
  bob: {name: Bob Diaz, email: bob@example.com}
channels: {console: {type: log}}
escalation_chains:
  standard: {steps: [{notify: owner}]}
systems:
  fraud-scoring:
    owner: alice
    escalation: standard
    ack_within: 30m
    resolve_within: 2h
    signals:
      accuracy: {layer: model, source: sim, query: accuracy, detect: {threshold: {min: 0.9}}}
  churn:
    owner: bob
    escalation: standard
    signals:
      retention: {layer: business, source: prom, query: retention, detect: {threshold: {min: 0.5}}}
"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[TestClient, Runtime]]:
    path = tmp_path / "driftowner.yaml"
    path.write_text(CONFIG % (tmp_path / "store.db"))
    with serving(load_config(path), "inc-open") as (client, runtime):
        yield client, runtime


def opened(runtime: Runtime, incident_id: str, system: str, owner: str, ago: timedelta) -> None:
    """An open drift incident of ``system`` held by ``owner``, opened ``ago`` before NOW."""
    config = runtime.config
    runtime.store.apply(
        Changes(
            opened=[
                Incident(
                    id=incident_id,
                    system=system,
                    owner=owner,
                    kind="drift",
                    rule=f"drift:{incident_id}",
                    layers=("model",),
                    signals=("accuracy",),
                    state="open",
                    opened_at=NOW - ago,
                    summary="falling",
                    chain=incidents.snapshot_chain(config, config.systems[system]),
                    ack_within=config.systems[system].ack_within,
                    resolve_within=config.systems[system].resolve_within,
                )
            ]
        )
    )


def act(runtime: Runtime, action: service.Action, incident_id: str, by: str, at: datetime) -> None:
    service.act(
        runtime.store, runtime.config, runtime.links, action, incident_id, by, "", at, "api"
    )


def record_cells(html: str, owner: str, system: str) -> list[str]:
    """The cells of ``owner``'s record row for ``system`` on the status page."""
    section = re.search(
        rf'<section class="owner"[^>]*data-owner="{owner}".*?</section>', html, re.S
    )
    assert section is not None, f"no section for {owner}"
    row = re.search(rf'<tr data-system="{system}">(.*?)</tr>', section.group(0), re.S)
    assert row is not None, f"no record row for {owner} on {system}"
    return [cell.strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)]


def words(seconds: float | None) -> str:
    return "—" if seconds is None else format_age(seconds)


def test_each_owners_record_agrees_with_the_report(site: tuple[TestClient, Runtime]) -> None:
    """Three resolved incidents of alice's (acknowledged after 10, 40 and 20 minutes, resolved
    after 1, 3 and 1.5 hours) and bob's open one: the status page shows, per owner and system,
    the counts, the median and p90 time to acknowledge and to resolve, and the SLO breaches
    exactly as /api/v1/report gives them."""
    client, runtime = site
    for n, (ack_m, fix_m) in enumerate([(10, 60), (40, 180), (20, 90)]):
        incident_id = f"inc-a{n}"
        opened(runtime, incident_id, "fraud-scoring", "alice", timedelta(hours=10 - n))
        at = NOW - timedelta(hours=10 - n)
        act(runtime, "ack", incident_id, "alice", at + timedelta(minutes=ack_m))
        act(runtime, "resolve", incident_id, "alice", at + timedelta(minutes=fix_m))
    opened(runtime, "inc-b", "churn", "bob", timedelta(minutes=50))
    report = client.get("/api/v1/report").json()["rows"]
    html = client.get("/").text
    assert {(r["owner"], r["system"]) for r in report} == {
        ("alice", "fraud-scoring"),
        ("bob", "churn"),
    }
    for row in report:
        cells = record_cells(html, row["owner"], row["system"])
        ack, fix, breaches = (
            row["time_to_acknowledge_seconds"],
            row["time_to_resolve_seconds"],
            row["slo_breaches"],
        )
        assert cells == [
            row["system"],
            str(row["open"]),
            str(row["acknowledged"]),
            str(row["resolved"]),
            words(ack["median"]),
            words(ack["p90"]),
            words(fix["median"]),
            words(fix["p90"]),
            f"{breaches['ack']} / {breaches['resolve']}",
        ]
    alice = record_cells(html, "alice", "fraud-scoring")
    assert alice[4:] == ["20m 0s", "36m 0s", "1h 30m", "2h 42m", "1 / 1"], "the figures themselves"


def test_the_source_health_shows_up_down_and_the_last_error(
    site: tuple[TestClient, Runtime],
) -> None:
    """Before any evaluation a source is 'not polled yet'; after one where prom was down,
    it shows down (0) and the error, failing now; after the next, where it answered, up (1)
    and the same error as its last, with how long ago."""
    client, runtime = site
    assert "not polled yet" in source_row(client.get("/").text, "prom")
    runtime.source_health = observe_sources(
        {},
        runtime.config,
        {"prom": False, "sim": True},
        {("churn", "retention"): "prometheus source 'prom': connection refused <x>"},
        NOW - timedelta(minutes=3),
    )
    down = source_row(client.get("/").text, "prom")
    assert "down (0)" in down and "failing now" in down
    assert "connection refused &lt;x&gt;" in down
    assert "up (1)" in source_row(client.get("/").text, "sim")
    runtime.source_health = observe_sources(
        runtime.source_health, runtime.config, {"prom": True, "sim": True}, {}, NOW
    )
    back = source_row(client.get("/").text, "prom")
    assert "up (1)" in back and "3m 0s ago" in back and "connection refused" in back


def source_row(html: str, name: str) -> str:
    row = re.search(rf'<tr data-source="{name}">(.*?)</tr>', html, re.S)
    assert row is not None, f"no row for source {name}"
    return row.group(1)


def test_the_status_page_reloads_itself_and_fits_a_phone(site: tuple[TestClient, Runtime]) -> None:
    """The page refreshes itself without script and declares a device-width viewport; its
    incident row links to the incident page, the JSON, and nothing runs script."""
    client, _ = site
    html = client.get("/").text
    assert '<meta http-equiv="refresh" content="10">' in html
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "@media (max-width: 40rem)" in html
    assert 'href="incidents/inc-open"' in html
    assert 'href="api/v1/incidents/inc-open"' in html
    assert "<script" not in html


def test_the_status_page_names_every_gap_the_audit_finds(
    site: tuple[TestClient, Runtime],
) -> None:
    """The ownership registry's gaps are on the page, each worded as ``driftowner audit``
    words it, and nothing else is listed as one."""
    client, runtime = site
    gaps = audit(runtime.config).gaps
    assert gaps, "the test config is expected to have at least one gap"
    html = client.get("/").text
    section = html[html.index('<section id="registry">') : html.index('<section id="systems">')]
    for gap in gaps:
        assert f'data-gap="{gap.code}"' in section
        assert str(escape(gap.message)) in section
    assert section.count("<li ") == len(gaps)
