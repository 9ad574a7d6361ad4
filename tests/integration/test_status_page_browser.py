"""The status page and the signed one-click links in a real browser (Debian's Chromium driven
by Playwright): what an owner sees and clicks."""

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

from driftowner.api import Runtime, create_app
from driftowner.configload import load_config
from driftowner.incidents import snapshot_chain
from driftowner.links import LinkSigner
from driftowner.metrics import Metrics
from driftowner.model import Finding, Incident
from driftowner.store import Changes, SqlStore
from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parents[2]
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
    runtime = Runtime(
        config=config,
        store=store,
        metrics=Metrics(store, lambda: datetime.now(UTC)),
        clock=lambda: datetime.now(UTC),
        links=LinkSigner(store.secret("links"), config.server.base_url),
        healthy=lambda: True,
    )
    evidence = (
        Finding(
            "fraud-scoring", "accuracy", "model", "ok", now, 0.94, reason="0.94 within min 0.9"
        ),
        Finding(
            "fraud-scoring",
            "adoption",
            "business",
            "degraded",
            now,
            0.3,
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
                    summary="accuracy fine, adoption falling",
                    evidence=evidence,
                    chain=snapshot_chain(config, config.systems["fraud-scoring"]),
                    escalation_steps_done=2,
                    ack_within=timedelta(seconds=30),
                )
            ]
        )
    )
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
    served: tuple[str, Runtime], browser: Any, tmp_path: Path
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
    page.screenshot(path=str(tmp_path / "status.png"), full_page=True)


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
