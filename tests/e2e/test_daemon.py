"""The daemon as a process, end to end: a metric history in, an accountable owner notified,
escalation, acknowledgement, auto-resolution, /metrics and the CLI agreeing, and kill -9."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.fakes.slack import FakeSlack, Reply

pytestmark = pytest.mark.e2e

TOKEN = "e2e-secret-token"
STARTED: list[subprocess.Popen[bytes]] = []
"""Every daemon a test started; tests/e2e/conftest.py kills those still running after it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_history(path: Path, start: datetime, drop_at: float, recover_at: float) -> None:
    """One sample a second from 10 minutes before ``start`` to 2 minutes after: accuracy stays
    fine; adoption falls from 0.62 to 0.30 between ``drop_at`` and ``recover_at`` seconds."""
    lines = ["timestamp,series,value"]
    for second in range(-600, 120):
        at = (start + timedelta(seconds=second)).timestamp()
        adoption = 0.30 if drop_at <= second < recover_at else 0.62
        lines.append(f"{at:.0f},accuracy,0.95")
        lines.append(f"{at:.0f},adoption,{adoption}")
    path.write_text("\n".join(lines) + "\n")


CONFIG = """
server: {{listen: "127.0.0.1:{port}", api_token: "{token}"}}
storage: {{url: "sqlite:///{db}"}}
evaluation: {{interval: 1s, escalation_interval: 500ms}}
sources:
  history: {{type: file, path: "{csv}"}}
owners:
  alice: {{name: Alice Chen, email: alice@example.com, slack: U0ALICE}}
  bob: {{name: Bob Diaz, email: bob@example.com, slack: U0BOB}}
  dana: {{name: Dana Ito, email: dana@example.com}}
channels:
  # One message per notification: these tests follow one incident's lifecycle message by
  # message (tests/e2e/test_storm.py and tests/unit/test_grouping.py cover grouping).
  console: {{type: log, group_wait: 0s}}
  slack: {{type: slack, webhook_url: "{slack}", group_wait: 0s}}
escalation_chains:
  standard:
    steps:
      - notify: owner
        via: [console, slack]
      - after: {step2}
        notify: [bob]
        via: [console, slack]
      - after: 10m
        notify: [dana]
        via: [console]
systems:
  fraud-scoring:
    owner: alice
    escalation: standard
    ack_within: 1m
    resolve_within: 10m
    resolve_after: 2s
    signals:
      accuracy:
        {{layer: model, source: history, query: accuracy, bad: down,
         detect: {{threshold: {{min: 0.9}}}}}}
      adoption:
        {{layer: business, source: history, query: adoption, bad: down,
         detect: {{baseline: {{reference: 5m, max_change: 20%}}}}}}
    disagreements:
      - {{name: accuracy-fine-adoption-falling, healthy: [accuracy], degraded: [adoption],
          for: 1s}}
"""


@dataclass
class Deployment:
    """A config and its store on disk, and the daemon processes run over them."""

    root: Path
    config: Path
    port: int
    slack: FakeSlack
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.root / "daemon.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "driftowner.cli", "run", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
        )
        STARTED.append(self.process)
        wait_for(lambda: _get(f"{self.url}/readyz") == 200, "the daemon to become ready", 20)

    def stop(self, signum: int = signal.SIGTERM) -> float:
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signum)
        self.process.wait(timeout=10)
        return time.monotonic() - started

    def cli(self, *args: str) -> Any:
        out = subprocess.run(
            [sys.executable, "-m", "driftowner.cli", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            cwd=self.root,
            check=True,
        )
        return json.loads(out.stdout) if "--json" in args else out.stdout

    def incidents(self) -> list[dict[str, Any]]:
        return list(self.cli("incidents", "--json")["incidents"])

    def show(self, incident_id: str) -> dict[str, Any]:
        return dict(self.cli("show", incident_id, "--json"))

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def log(self) -> str:
        return (self.root / "daemon.log").read_text(errors="replace")


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=1).status_code
    except httpx.HTTPError:
        return 0


def wait_for(check: Callable[[], Any], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with FakeSlack() as slack:
        yield _deployment(tmp_path, slack, drop_at=3, recover_at=25, step2="4s")


def _deployment(
    tmp_path: Path, slack: FakeSlack, *, drop_at: float, recover_at: float, step2: str
) -> Deployment:
    csv = tmp_path / "history.csv"
    write_history(csv, datetime.now(UTC), drop_at, recover_at)
    port = free_port()
    config = tmp_path / "driftowner.yaml"
    config.write_text(
        CONFIG.format(
            port=port,
            token=TOKEN,
            db=tmp_path / "store.db",
            csv=csv,
            slack=slack.url,
            step2=step2,
        )
    )
    return Deployment(tmp_path, config, port, slack)


def events_of(deployment: Deployment, incident_id: str) -> list[str]:
    return [e["kind"] for e in deployment.show(incident_id)["events"]]


def test_incident_goes_from_opened_through_escalation_and_ack_to_auto_resolution(
    deployment: Deployment,
) -> None:
    """A disagreement opens one incident; the owner is told at once on Slack, bob at step 2;
    an HTTP ack stops escalation; when adoption recovers the incident resolves itself; the
    CLI and /metrics agree on what happened; SIGTERM stops the daemon within 5 s."""
    deployment.start()
    opened = wait_for(deployment.incidents, "an incident to open", 30)
    assert len(opened) == 1
    incident = opened[0]
    assert incident["kind"] == "disagreement"
    assert incident["owner"] == "alice"
    assert incident["layers"] == ["model", "business"]
    assert incident["rule"] == "disagreement:accuracy-fine-adoption-falling"
    first = deployment.slack.wait_for(1, timeout=10)[0]
    assert "<@U0ALICE>" in json.dumps(first)
    assert "fraud-scoring" in json.dumps(first)

    wait_for(lambda: "escalated" in events_of(deployment, incident["id"]), "step 2", 15)
    # Step 2 pages bob, and alice's conversation is told of it (an incoming webhook cannot
    # thread: a message of its own), in either order.
    step2 = [json.dumps(p) for p in deployment.slack.wait_for(3, timeout=10)[1:]]
    assert sum("<@U0BOB>" in m for m in step2) == 1
    (told,) = [m for m in step2 if "<@U0ALICE>" in m]
    assert "Escalated to step 2" in told

    refused = httpx.post(
        f"{deployment.url}/api/v1/incidents/{incident['id']}/ack", json={"by": "alice"}, timeout=5
    )
    assert refused.status_code == 401
    acked = httpx.post(
        f"{deployment.url}/api/v1/incidents/{incident['id']}/ack",
        json={"by": "alice", "note": "looking"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert acked.status_code == 200, acked.text
    assert acked.json()["state"] == "acknowledged"

    resolved = wait_for(
        lambda: [i for i in deployment.incidents() if i["state"] == "resolved"],
        "auto-resolution",
        45,
    )[0]
    kinds = events_of(deployment, incident["id"])
    assert kinds[:4] == ["opened", "notified", "escalated", "acknowledged"]
    assert kinds[-2:] == ["condition_cleared", "resolved"]
    assert kinds.count("escalated") == 1, "an ack stops escalation"
    detail = deployment.show(incident["id"])
    assert detail["resolved_by"] == "auto"
    assert detail["time_to_acknowledge_seconds"] > 0
    assert detail["time_to_resolve_seconds"] > detail["time_to_acknowledge_seconds"]
    # Everyone who was told of the incident is told it was acknowledged, then resolved:
    # alice and bob on Slack.
    payloads = deployment.slack.wait_for(7, timeout=10)
    headers = [p["blocks"][0]["text"]["text"].split()[0] for p in payloads]
    assert (headers.count("ACKNOWLEDGED"), headers.count("RESOLVED")) == (2, 2), headers

    metrics = wait_for(
        lambda: (m := deployment.metrics()) and m.get("driftowner_outbox_pending") == 0.0 and m,
        "the outbox to drain",
        10,
    )
    assert (
        metrics['driftowner_incidents_opened_total{kind="disagreement",system="fraud-scoring"}']
        == 1
    )
    assert (
        metrics['driftowner_incidents_open{owner="alice",state="open",system="fraud-scoring"}'] == 0
    )
    assert metrics['driftowner_incident_time_to_resolve_seconds_count{owner="alice"}'] == 1
    assert metrics['driftowner_incident_time_to_resolve_seconds_sum{owner="alice"}'] == (
        pytest.approx(resolved["time_to_resolve_seconds"], abs=0.01)
    )
    assert metrics['driftowner_incident_time_to_acknowledge_seconds_count{owner="alice"}'] == 1
    assert metrics['driftowner_source_up{source="history"}'] == 1
    assert metrics['driftowner_notifications_total{channel="slack",outcome="delivered"}'] == 7
    assert TOKEN not in deployment.log()
    assert "fakeSecretToken" not in deployment.log()

    took = deployment.stop(signal.SIGTERM)
    assert deployment.process is not None and deployment.process.returncode == 0
    assert took < 5
    assert "CancelledError" not in deployment.log(), "a stop waits for the running cycle"
    assert "Traceback" not in deployment.log()


def test_kill_9_after_opening_loses_nothing_and_sends_no_step_twice(tmp_path: Path) -> None:
    """SIGKILL right after the owner was notified, then a restart on the same store: the
    incident and its events are all there, escalation resumes at step 2 (bob paged, alice
    told of it), and no step's message is sent twice."""
    with FakeSlack() as slack:
        deployment = _deployment(tmp_path, slack, drop_at=3, recover_at=90, step2="8s")
        deployment.start()
        incident = wait_for(deployment.incidents, "an incident to open", 30)[0]
        slack.wait_for(1, timeout=10)
        wait_for(
            lambda: deployment.metrics().get("driftowner_outbox_pending") == 0.0,
            "step 1 delivered",
            10,
        )
        deployment.stop(signal.SIGKILL)
        before = deployment.show(incident["id"])

        deployment.start()
        wait_for(lambda: "escalated" in events_of(deployment, incident["id"]), "step 2", 20)
        slack.wait_for(3, timeout=10)
        time.sleep(2)  # several more evaluation and escalation ticks after the restart
        after = deployment.show(incident["id"])
        assert after["id"] == before["id"]
        assert after["opened_at"] == before["opened_at"]
        assert after["events"][: len(before["events"])] == before["events"]
        kinds = [e["kind"] for e in after["events"]]
        assert kinds.count("opened") == 1
        assert kinds.count("notified") == 1
        assert kinds.count("escalated") == 1
        assert len(deployment.incidents()) == 1
        mentions = [json.dumps(p) for p in slack.received]
        assert sum("<@U0ALICE>" in m for m in mentions) == 2
        assert sum("<@U0ALICE>" in m and "Escalated to step 2" in m for m in mentions) == 1
        assert sum("<@U0BOB>" in m for m in mentions) == 1
        deployment.stop()


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_bad_config_exits_1_naming_file_and_path(tmp_path: Path) -> None:
    """A daemon started on a broken config exits 1 and prints the file and YAML path."""
    config = tmp_path / "bad.yaml"
    config.write_text("evaluation: {interval: soon}\n")
    out = subprocess.run(
        [sys.executable, "-m", "driftowner.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert f"{config}: evaluation.interval" in out.stderr
    assert "Traceback" not in out.stderr


def test_sigint_stops_the_daemon_cleanly_within_5_seconds(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) stops the daemon as cleanly as SIGTERM: exit 0, within 5 s."""
    with FakeSlack() as slack:
        deployment = _deployment(tmp_path, slack, drop_at=3, recover_at=25, step2="4s")
        deployment.start()
        took = deployment.stop(signal.SIGINT)
        assert deployment.process is not None and deployment.process.returncode == 0
        assert took < 5
        assert '"stopped"' in deployment.log()
        assert "Traceback" not in deployment.log()


def test_a_taken_port_exits_1_before_evaluating_anything(tmp_path: Path) -> None:
    """Another process holds the listen port: the daemon says so in one line and exits 1,
    having evaluated nothing and paged nobody (no store was even opened)."""
    with FakeSlack() as slack, socket.socket() as holder:
        deployment = _deployment(tmp_path, slack, drop_at=-600, recover_at=120, step2="4s")
        holder.bind(("127.0.0.1", deployment.port))
        holder.listen()
        out = subprocess.run(
            [sys.executable, "-m", "driftowner.cli", "run", "--config", str(deployment.config)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
        )
        assert out.returncode == 1
        assert "cannot listen" in out.stderr
        assert "Traceback" not in out.stderr
        assert not (tmp_path / "store.db").exists()
        assert slack.received == []


def test_an_unusable_store_path_is_one_clear_error(tmp_path: Path) -> None:
    """A storage.url under a regular file: exit 1 naming the store, no traceback, for the
    daemon and for the CLI alike."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with FakeSlack() as slack:
        deployment = _deployment(tmp_path, slack, drop_at=3, recover_at=25, step2="4s")
    text = deployment.config.read_text()
    deployment.config.write_text(
        text.replace(f"sqlite:///{tmp_path / 'store.db'}", f"sqlite:///{blocker}/store.db")
    )
    for command in (["run"], ["incidents"]):
        out = subprocess.run(
            [sys.executable, "-m", "driftowner.cli", *command, "--config", str(deployment.config)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
        )
        assert out.returncode == 1, command
        assert "cannot create the store" in out.stderr, command
        assert "Traceback" not in out.stderr, command


def test_kill_9_in_the_middle_of_a_send_still_delivers_the_page(tmp_path: Path) -> None:
    """Killed while Slack has the owner's page but has not answered: the notification was
    committed before sending, so the restarted daemon sends it again once its lease runs out
    (at least once: Slack may see it twice), and the owner's step is still recorded once."""
    with FakeSlack() as slack:
        deployment = _deployment(tmp_path, slack, drop_at=3, recover_at=90, step2="5m")
        text = deployment.config.read_text()
        deployment.config.write_text(
            text.replace(
                f'webhook_url: "{slack.url}"}}', f'webhook_url: "{slack.url}", timeout: 2s}}'
            )
        )
        slack.answer_next(Reply(200, "ok", delay=8))
        deployment.start()
        wait_for(lambda: slack.requests, "the page to reach Slack", 30)
        deployment.stop(signal.SIGKILL)
        assert slack.received and "<@U0ALICE>" in json.dumps(slack.received[0])

        deployment.start()  # lease: max(15s, 2 x 2s + 10s) = 15s
        pages = wait_for(
            lambda: [p for p in slack.received if "<@U0ALICE>" in json.dumps(p)][1:],
            "the page sent again after the lease",
            40,
        )
        assert pages
        wait_for(
            lambda: deployment.metrics().get("driftowner_outbox_pending") == 0.0,
            "the outbox to drain",
            10,
        )
        incident = deployment.incidents()[0]
        assert events_of(deployment, incident["id"]).count("notified") == 1
        assert len(deployment.incidents()) == 1
        deployment.stop()
