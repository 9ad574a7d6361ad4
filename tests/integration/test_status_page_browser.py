"""The status page, the incident page and the signed one-click links in a real browser
(Debian's Chromium driven by Playwright): what an owner sees and clicks, on a desktop and on a
phone. Screenshots are kept under ``test-artifacts/`` (ignored by git); each test prints where."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from driftowner import service
from driftowner.api import Runtime, create_app
from driftowner.api.runtime import observe_sources
from driftowner.configload import load_config
from driftowner.incidents import snapshot_chain
from driftowner.links import LinkSigner
from driftowner.metrics import Metrics
from driftowner.model import Finding, Incident
from driftowner.sources.demo import DemoSource
from driftowner.store import Changes, SqlStore
from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
PHONE = {"width": 390, "height": 844}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Runtime]]:
    """The HTTP app of a daemon over a real store holding one open disagreement incident,
    served by uvicorn on a free loopback port."""
    port = _free_port()
    config_path = tmp_path / "demo.yaml"
    text = (ROOT / "config" / "demo.yaml").read_text()
    text = text.replace("sqlite:///var/demo.db", f"sqlite:///{tmp_path}/s.db")
    config_path.write_text(text.replace('listen: "127.0.0.1:9587"', f'listen: "127.0.0.1:{port}"'))
    config = load_config(config_path)
    store = SqlStore(config.storage.url)
    store.open()
    now = datetime.now(UTC)
    drift_began = now - timedelta(minutes=16)
    demo = DemoSource(
        "demo",
        seed=7,
        started_at=now - timedelta(minutes=30),
        drift_starts_after=timedelta(minutes=14),
        drift_lasts=timedelta(hours=1),
    )
    runtime = Runtime(
        config=config,
        store=store,
        metrics=Metrics(store, lambda: datetime.now(UTC)),
        clock=lambda: datetime.now(UTC),
        links=LinkSigner(store.secret("links"), config.server.base_url),
        healthy=lambda: True,
        sources={"demo": demo},
    )
    runtime.source_health = observe_sources({}, config, {"demo": True}, {}, now)
    evidence = (
        Finding(
            "fraud-scoring", "accuracy", "model", "ok", now, 0.94, reason="0.94 within min 0.9"
        ),
        Finding(
            "fraud-scoring",
            "adoption",
            "business",
            "degraded",
            now - timedelta(minutes=4),
            0.3,
            reference=0.62,
            statistic=-0.516,
            limit=0.2,
            detector="baseline",
            reason="0.3 is -51% against the 5m mean 0.62 (limit -20%)",
        ),
    )
    store.apply(
        Changes(
            opened=[
                Incident(
                    id="inc-browser",
                    system="fraud-scoring",
                    owner="alice",
                    kind="disagreement",
                    rule="disagreement:accuracy-fine-adoption-falling",
                    layers=("model", "business"),
                    signals=("accuracy", "adoption"),
                    state="open",
                    opened_at=now - timedelta(minutes=4),
                    condition_began_at=drift_began,
                    summary="accuracy fine, adoption falling",
                    evidence=evidence,
                    chain=snapshot_chain(config, config.systems["fraud-scoring"]),
                    escalation_steps_done=2,
                    ack_within=timedelta(seconds=30),
                )
            ]
        )
    )
    resolved_before(runtime, now)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(runtime), host="127.0.0.1", port=port, log_config=None, lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}", runtime
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        store.close()


def resolved_before(runtime: Runtime, now: datetime) -> None:
    """An earlier incident of alice's, acknowledged after 12 minutes and resolved after 50,
    three hours ago: her record on the status page has figures."""
    config = runtime.config
    opened_at = now - timedelta(hours=3)
    runtime.store.apply(
        Changes(
            opened=[
                Incident(
                    id="inc-earlier",
                    system="fraud-scoring",
                    owner="alice",
                    kind="drift",
                    rule="drift:adoption",
                    layers=("business",),
                    signals=("adoption",),
                    state="open",
                    opened_at=opened_at,
                    summary="adoption falling",
                    chain=snapshot_chain(config, config.systems["fraud-scoring"]),
                    ack_within=timedelta(seconds=30),
                    resolve_within=timedelta(minutes=5),
                )
            ]
        )
    )
    for action, after in (("ack", 12), ("resolve", 50)):
        service.act(
            runtime.store,
            config,
            runtime.links,
            action,  # type: ignore[arg-type]
            "inc-earlier",
            "alice",
            "",
            opened_at + timedelta(minutes=after),
            "api",
        )


def shot(page: Any, name: str) -> Path:
    """A full-page screenshot kept under ``test-artifacts/browser/``; its path is printed."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def fits_the_width(page: Any) -> bool:
    """Nothing on the page is wider than the viewport (no sideways scrolling on a phone)."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


@pytest.fixture
def browser() -> Iterator[Any]:
    executable = require_binary("chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def test_the_status_page_shows_the_open_incident_under_its_owner(
    served: tuple[str, Runtime], browser: Any
) -> None:
    """An owner opening the status page sees, under their name, the incident's system,
    problem, layers, state, age past its SLO, and escalation level; and every signal's status."""
    base_url, _ = served
    page = browser.new_page()
    page.goto(f"{base_url}/")
    assert page.title() == "driftowner · 1 unresolved"
    assert page.locator("h2").first.inner_text().startswith("Alice Chen")
    row = page.locator("tbody tr").first
    cells = [c.inner_text() for c in row.locator("td").all()]
    assert cells[:5] == [
        "inc-browser",
        "fraud-scoring",
        "accuracy fine, adoption falling",
        "model, business",
        "open",
    ]
    assert cells[5].startswith("4m")
    assert row.locator("td.breach").count() == 1, "past ack_within is marked"
    assert cells[6] == "step 2 of 3"
    record = page.locator("section[data-owner=alice] table.record tbody tr").first
    assert [c.inner_text() for c in record.locator("td").all()][4:] == [
        "12m 0s",
        "12m 0s",
        "50m 0s",
        "50m 0s",
        "2 / 1",
    ], "the earlier incident's times and its breaches (this one is past ack_within too)"
    assert "up (1)" in page.locator("tr[data-source=demo]").inner_text()
    shot(page, "status-desktop")


def test_the_status_page_reads_on_a_phone(served: tuple[str, Runtime], browser: Any) -> None:
    """On a phone-sized viewport nothing scrolls sideways, and each incident is a card whose
    cells say what they are (the table's header is hidden)."""
    base_url, _ = served
    page = browser.new_page(viewport=PHONE, device_scale_factor=2)
    page.goto(f"{base_url}/")
    assert fits_the_width(page)
    assert not page.locator("table.incidents thead").is_visible()
    row = page.locator("table.incidents tbody tr").first
    assert row.bounding_box()["width"] <= PHONE["width"]
    label = page.evaluate(
        "getComputedStyle(document.querySelector('table.incidents td'), '::before').content"
    )
    assert label == '"Incident: "'
    shot(page, "status-phone")


def test_the_incident_page_draws_the_drift(served: tuple[str, Runtime], browser: Any) -> None:
    """Following the incident from the status page opens its page with a drawn chart of each
    signal: adoption's line, its reference, its limit and the change-start mark are visible;
    the chart names itself for screen readers; and the page reads on a phone too."""
    base_url, _ = served
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{base_url}/")
    page.click("table.incidents a:text('inc-browser')")
    page.wait_for_url(f"{base_url}/incidents/inc-browser")
    assert page.locator("h1").inner_text() == "fraud-scoring: accuracy fine, adoption falling"
    chart = page.locator("figure[data-signal=adoption] svg")
    assert chart.is_visible()
    box = chart.bounding_box()
    assert box is not None and box["width"] > 600
    for part in ("path.series", "line.reference", "line.limit", "g.change-start"):
        assert chart.locator(part).count() == 1, part
        assert chart.locator(part).bounding_box() is not None, f"{part} is drawn"
    assert chart.locator("title").first.text_content() == "adoption (business) of fraud-scoring"
    assert page.locator("figure[data-signal=accuracy] svg path.series").count() == 1
    assert "0.3 is -51%" in page.locator("figure[data-signal=adoption] figcaption").inner_text()
    shot(page, "incident-desktop")
    phone = browser.new_page(viewport=PHONE, device_scale_factor=2)
    phone.goto(f"{base_url}/incidents/inc-browser")
    assert fits_the_width(phone)
    assert (
        phone.locator("figure[data-signal=adoption] svg").bounding_box()["width"] <= PHONE["width"]
    )
    shot(phone, "incident-phone")
    chart_shot = ARTIFACTS / "incident-phone-chart.png"
    phone.locator("figure[data-signal=adoption]").screenshot(path=str(chart_shot))
    print(f"screenshot: {chart_shot}")


def test_an_owner_acknowledges_from_the_signed_link_in_the_browser(
    served: tuple[str, Runtime], browser: Any
) -> None:
    """Following alice's ack link shows a confirmation naming her (nothing changes on GET);
    confirming with a note acknowledges the incident as alice, and the status page then says
    so."""
    base_url, runtime = served
    link = runtime.links("inc-browser", "ack", "alice")
    assert link is not None
    page = browser.new_page()
    page.goto(link)
    assert page.locator("h1").inner_text() == "Acknowledge this incident?"
    assert runtime.store.incident("inc-browser").state == "open"  # type: ignore[union-attr]
    assert "You will act as Alice Chen" in page.locator("form").inner_text()
    page.fill("input[name=note]", "rolling back the ranking change")
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "Done"
    assert "Acknowledged by Alice Chen" in page.locator("[role=status]").inner_text()
    incident = runtime.store.incident("inc-browser")
    assert incident is not None and incident.state == "acknowledged"
    assert runtime.store.events("inc-browser")[-1].detail == "rolling back the ranking change"
    page.goto(f"{base_url}/")
    assert page.locator("tbody tr").first.locator("td").nth(6).inner_text() == (
        "acknowledged by alice"
    )
    page.goto(link)
    assert "already acknowledged" in page.locator("[role=status]").inner_text()
