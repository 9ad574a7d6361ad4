"""The whole path on real parts: a model server's metrics scraped by a real Prometheus (with
history loaded by promtool), the daemon as a process querying it, the owner mailed through a
real SMTP server and pinged on a faithful Slack fake; then the source goes down and nobody is
paged for it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from tests.e2e.test_daemon import Deployment, free_port, wait_for
from tests.fakes.mailbox import Mailbox, running_smtp
from tests.fakes.slack import FakeSlack
from tests.integration.prometheus_server import Family, openmetrics, running_prometheus

pytestmark = pytest.mark.e2e


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    with running_smtp() as running:
        yield running


class ModelServer:
    """A model server's own /metrics, as Prometheus scrapes it in production."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accuracy = Gauge(
            "model_accuracy", "offline accuracy", ["model"], registry=self.registry
        )
        self.adoption = Gauge(
            "fraud_alert_adoption_ratio", "share of alerts acted on", registry=self.registry
        )
        self.accuracy.labels("fraud").set(0.95)
        self.adoption.set(0.62)
        self.port = free_port()
        self.server, _ = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    def close(self) -> None:
        self.server.shutdown()


def history(now: float, instance: str) -> str:
    """Twenty healthy minutes of the same series the scrape continues (same job and instance
    labels), up to a minute ago: the baseline's reference."""
    moments = [now - 1200 + 15 * i for i in range(76)]
    target = {"job": "model-monitoring", "instance": instance}
    return openmetrics(
        Family(
            "model_accuracy", "gauge", [({**target, "model": "fraud"}, t, 0.95) for t in moments]
        ),
        Family("fraud_alert_adoption_ratio", "gauge", [(target, t, 0.62) for t in moments]),
    )


CONFIG = """
server: {{listen: "127.0.0.1:{port}", api_token: "real-parts-token"}}
storage: {{url: "sqlite:///{db}"}}
evaluation: {{interval: 1s, escalation_interval: 500ms}}
sources:
  prom: {{type: prometheus, url: "{prometheus}", timeout: 2s}}
owners:
  alice: {{name: Alice Chen, email: alice@example.com, slack: U0ALICE}}
  bob: {{name: Bob Diaz, email: bob@example.com}}
teams:
  ml-fraud: {{email: ml-fraud@example.com}}
channels:
  slack: {{type: slack, webhook_url: "{slack}"}}
  email: {{type: email, host: 127.0.0.1, port: {smtp}, starttls: false,
          from: driftowner@example.com}}
escalation_chains:
  standard:
    steps:
      - notify: owner
        via: [slack, email]
      - after: 4s
        notify: [bob]
        via: [email]
systems:
  fraud-scoring:
    owner: alice
    escalation: standard
    resolve_after: 2s
    stale_for: 1m
    contributors: {{model: ml-fraud}}
    signals:
      accuracy:
        layer: model
        source: prom
        query: model_accuracy{{model="fraud"}}
        bad: down
        detect: {{threshold: {{min: 0.9}}}}
      adoption:
        layer: business
        source: prom
        query: fraud_alert_adoption_ratio
        bad: down
        detect: {{baseline: {{reference: 10m, max_change: 20%}}}}
    disagreements:
      - {{name: accuracy-fine-adoption-falling, healthy: [accuracy], degraded: [adoption],
          for: 2s}}
"""


def test_a_falling_business_metric_reaches_its_owner_through_real_prometheus_and_smtp(
    tmp_path: Path, mailbox: tuple[Mailbox, int]
) -> None:
    """Adoption falls on the model server while accuracy holds: Prometheus scrapes it, the
    daemon opens one disagreement incident, mails and pings alice, mails ml-fraud, escalates
    to bob by mail, stops on alice's ack, resolves when adoption recovers and tells everyone.
    Then Prometheus goes away: the source is down, and nobody is paged for that."""
    box, smtp_port = mailbox
    model = ModelServer()
    try:
        with (
            FakeSlack() as slack,
            running_prometheus(
                tmp_path / "prom",
                history(time.time(), f"127.0.0.1:{model.port}"),
                scrape_targets=[f"127.0.0.1:{model.port}"],
            ) as prometheus,
        ):
            port = free_port()
            config = tmp_path / "driftowner.yaml"
            config.write_text(
                CONFIG.format(
                    port=port,
                    db=tmp_path / "store.db",
                    prometheus=prometheus,
                    slack=slack.url,
                    smtp=smtp_port,
                )
            )
            deployment = Deployment(tmp_path, config, port, slack)
            deployment.start()
            try:
                _the_story(deployment, box, slack, model)
            finally:
                if deployment.process and deployment.process.poll() is None:
                    deployment.process.kill()
    finally:
        model.close()


def _the_story(deployment: Deployment, box: Mailbox, slack: FakeSlack, model: ModelServer) -> None:
    wait_for(
        lambda: (
            deployment.metrics().get(
                'driftowner_signal_status{layer="business",'
                'signal="adoption",status="ok",'
                'system="fraud-scoring"}'
            )
            == 1
        ),
        "adoption judged ok against its history",
        20,
    )
    assert deployment.incidents() == []

    model.adoption.set(0.30)
    incident = wait_for(deployment.incidents, "the disagreement incident", 20)[0]
    assert (incident["kind"], incident["owner"]) == ("disagreement", "alice")
    assert incident["layers"] == ["model", "business"]

    to_alice = wait_for(lambda: box.to("alice@example.com"), "alice's mail", 10)[0]
    subject = str(to_alice["Subject"])
    assert "fraud-scoring" in subject and incident["id"] in subject
    body = to_alice.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    for needed in ("Alice Chen", "adoption", "business", "model", "/a/", "step 1"):
        assert needed in text, needed
    assert wait_for(lambda: box.to("ml-fraud@example.com"), "the team informed", 10)
    assert "<@U0ALICE>" in json.dumps(slack.wait_for(1, timeout=10)[0])

    wait_for(lambda: box.to("bob@example.com"), "step 2 by mail to bob", 15)
    deployment.cli("ack", incident["id"], "--by", "alice", "--note", "rolling back the model")

    model.adoption.set(0.62)
    wait_for(lambda: deployment.incidents()[0]["state"] == "resolved", "auto-resolution", 30)
    resolved_mail = wait_for(
        lambda: [m for m in box.to("bob@example.com") if m["X-Driftowner-Purpose"] == "resolved"],
        "bob told of the resolution",
        10,
    )
    # One thread per incident and address: bob's later mails reply to his first one.
    first_to_bob = box.to("bob@example.com")[0]
    assert resolved_mail[0]["In-Reply-To"] == first_to_bob["Message-ID"]
    assert resolved_mail[0]["Subject"] == f"Re: {first_to_bob['Subject']}"
    kinds = [e["kind"] for e in deployment.show(incident["id"])["events"]]
    assert kinds.count("escalated") == 1
    assert kinds[-1] == "resolved"
    metrics = deployment.metrics()
    assert metrics['driftowner_source_up{source="prom"}'] == 1
    assert metrics['driftowner_source_query_duration_seconds_count{source="prom"}'] > 0
    assert metrics['driftowner_notifications_total{channel="email",outcome="delivered"}'] >= 5

    # The source goes away: the operator's problem, visible in /metrics, and no page.
    model.close()
    deployment_prometheus_down(deployment)


def deployment_prometheus_down(deployment: Deployment) -> None:
    """Point the daemon at a closed port by reloading with SIGHUP, then watch."""
    text = deployment.config.read_text()
    start = text.index('url: "http://127.0.0.1:') + len('url: "http://127.0.0.1:')
    end = text.index('"', start)
    deployment.config.write_text(text[:start] + str(free_port()) + text[end:])
    assert deployment.process is not None
    deployment.process.send_signal(1)  # SIGHUP: reload
    wait_for(
        lambda: deployment.metrics().get('driftowner_source_up{source="prom"}') == 0,
        "the source marked down",
        15,
    )
    time.sleep(3)  # several evaluations with the source down
    metrics = deployment.metrics()
    assert metrics['driftowner_source_errors_total{reason="unreachable",source="prom"}'] > 0
    assert metrics["driftowner_config_last_reload_successful"] == 1
    assert (
        metrics[
            'driftowner_signal_status{layer="business",signal="adoption",'
            'status="no_data",system="fraud-scoring"}'
        ]
        == 1
    )
    assert len(deployment.incidents()) == 1, "a source down pages nobody"
