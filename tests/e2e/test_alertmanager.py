"""A real Alertmanager (Debian's ``prometheus-alertmanager``) sends its webhook to the daemon's
alertmanager source: the alert fires, the daemon opens one incident and pages the owner; the
daemon restarts with the alert still firing and keeps that one incident; Alertmanager's resolve
auto-resolves it."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.test_daemon import STARTED, Deployment, events_of, free_port, wait_for
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.e2e

ADMIN = "e2e-admin-token"
RECEIVER = "e2e-alertmanager-token"
BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

CONFIG = """
server: {{listen: "127.0.0.1:{port}", api_token: "{admin}"}}
storage: {{url: "sqlite:///{db}"}}
evaluation: {{interval: 1s, escalation_interval: 500ms}}
sources:
  history: {{type: file, path: "{csv}"}}
  am: {{type: alertmanager, token: "{receiver}"}}
owners:
  alice: {{name: Alice Chen, email: alice@example.com, slack: U0ALICE}}
channels:
  console: {{type: log}}
  slack: {{type: slack, webhook_url: "{slack}"}}
escalation_chains:
  standard:
    steps: [{{notify: owner, via: [console, slack]}}]
systems:
  fraud-scoring:
    owner: alice
    escalation: standard
    resolve_after: 2s
    signals:
      accuracy:
        {{layer: model, source: history, query: accuracy, detect: {{threshold: {{min: 0.9}}}}}}
      serving_errors: {{layer: engineering, source: am, query: ServingErrors}}
    disagreements:
      - {{name: serving-errors-while-model-fine, healthy: [accuracy], degraded: [serving_errors]}}
"""

ALERTMANAGER = """
route:
  receiver: driftowner
  group_by: [alertname, system]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: driftowner
    webhook_configs:
      - url: http://127.0.0.1:{port}/api/v1/alertmanager
        send_resolved: true
        max_alerts: 500
        http_config:
          authorization:
            credentials_file: {token_file}
"""


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A lone Alertmanager on a loopback port (clustering off) that sends to the daemon's port;
    its base URL and that port."""
    if BINARY is None:
        pytest.fail("needs Debian's prometheus-alertmanager (make system-deps)")
    daemon_port, port = free_port(), free_port()
    token_file = tmp_path / "am-token"
    token_file.write_text(RECEIVER)
    config = tmp_path / "alertmanager.yml"
    config.write_text(ALERTMANAGER.format(port=daemon_port, token_file=token_file))
    log = (tmp_path / "alertmanager.log").open("ab")
    process = subprocess.Popen(
        [
            BINARY,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    STARTED.append(process)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _ready(url), "Alertmanager to become ready", 20)
    yield url, daemon_port
    process.terminate()
    process.wait(timeout=10)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _degraded(deployment: Deployment) -> bool:
    """Whether /metrics says serving_errors is degraded."""
    return any(
        'signal="serving_errors"' in name and 'status="degraded"' in name and value == 1
        for name, value in deployment.metrics().items()
    )


def post_alert(url: str, ends_at: datetime | None, starts_at: datetime) -> None:
    """Post ServingErrors of fraud-scoring to Alertmanager's API, as Prometheus would."""
    alert: dict[str, Any] = {
        "labels": {"alertname": "ServingErrors", "system": "fraud-scoring", "severity": "page"},
        "annotations": {"summary": "5xx above 2%"},
        "startsAt": starts_at.isoformat(),
    }
    if ends_at is not None:
        alert["endsAt"] = ends_at.isoformat()
    answer = httpx.post(f"{url}/api/v2/alerts", json=[alert], timeout=5)
    assert answer.status_code == 200, answer.text


def test_an_alertmanager_alert_pages_the_owner_and_its_resolve_resolves_the_incident(
    tmp_path: Path, alertmanager: tuple[str, int]
) -> None:
    """ServingErrors firing while the model is fine opens one disagreement incident and pages
    alice; a restart keeps that incident (alert state is in the store); Alertmanager's resolve
    (the alert posted again with endsAt in the past) auto-resolves it."""
    am_url, port = alertmanager
    csv = tmp_path / "history.csv"
    now = datetime.now(UTC)
    rows = [
        f"{(now + timedelta(seconds=s)).timestamp():.0f},accuracy,0.95" for s in range(-60, 600)
    ]
    csv.write_text("timestamp,series,value\n" + "\n".join(rows) + "\n")
    with FakeSlack() as slack:
        config = tmp_path / "driftowner.yaml"
        config.write_text(
            CONFIG.format(
                port=port,
                admin=ADMIN,
                receiver=RECEIVER,
                db=tmp_path / "store.db",
                csv=csv,
                slack=slack.url,
            )
        )
        deployment = Deployment(tmp_path, config, port, slack)
        deployment.start()
        started = datetime.now(UTC)
        post_alert(am_url, None, started)

        opened = wait_for(deployment.incidents, "an incident to open", 30)
        assert len(opened) == 1
        incident = opened[0]
        assert (incident["kind"], incident["rule"], incident["owner"]) == (
            "disagreement",
            "disagreement:serving-errors-while-model-fine",
            "alice",
        )
        assert incident["layers"] == ["model", "engineering"]
        page = json.dumps(slack.wait_for(1, timeout=10)[0])
        assert "<@U0ALICE>" in page and "fraud-scoring" in page and "ServingErrors" in page

        deployment.stop()
        deployment.start()
        # The restarted daemon reads the alert from the store: still firing, still one
        # incident, still open.
        wait_for(lambda: _degraded(deployment), "the restarted daemon to see the alert", 15)
        assert [i["state"] for i in deployment.incidents()] == ["open"]

        post_alert(am_url, datetime.now(UTC) - timedelta(seconds=1), started)
        resolved = wait_for(
            lambda: [i for i in deployment.incidents() if i["state"] == "resolved"],
            "Alertmanager's resolve to resolve the incident",
            45,
        )
        assert [i["id"] for i in resolved] == [incident["id"]]
        assert len(deployment.incidents()) == 1
        assert deployment.show(incident["id"])["resolved_by"] == "auto"
        assert events_of(deployment, incident["id"])[-2:] == ["condition_cleared", "resolved"]
        log = deployment.log()
        deployment.stop()
    assert RECEIVER not in log and ADMIN not in log
    assert "Traceback" not in log
