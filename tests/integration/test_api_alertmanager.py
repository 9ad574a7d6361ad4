"""``POST /api/v1/alertmanager`` over a real SQLite store: Alertmanager's bearer token (the
source's, or the admin token; never an owner's), the body limit, payload version 4 validated
with located errors, the alerts kept for the source to read, several sources named by
``?source=``."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from driftowner.api import Runtime
from driftowner.configload import load_config
from driftowner.sources import build_source
from tests.integration.app_harness import NOW, post_streamed, serving

ADMIN = "admin-token"
RECEIVER = "alertmanager-token"
ALICE = "alice-token"
URL = "/api/v1/alertmanager"

CONFIG = """
server: {listen: "127.0.0.1:9587", api_token: "%(admin)s"}
storage: {url: "sqlite:///%(db)s"}
sources:
  sim: {type: demo}
  am: {type: alertmanager, token: "%(receiver)s"}
%(more)s
owners:
  alice: {name: Alice Chen, email: alice@example.com, api_token: "%(alice)s"}
channels: {console: {type: log}}
escalation_chains:
  standard: {steps: [{notify: owner}]}
systems:
  fraud-scoring:
    owner: alice
    escalation: standard
    signals:
      accuracy: {layer: model, source: sim, query: accuracy, detect: {threshold: {min: 0.9}}}
      serving_errors: {layer: engineering, source: am, query: ServingErrors}
"""

FIRING: dict[str, Any] = {
    "version": "4",
    "groupKey": '{}:{alertname="ServingErrors"}',
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "driftowner",
    "groupLabels": {"alertname": "ServingErrors"},
    "commonLabels": {"alertname": "ServingErrors", "system": "fraud-scoring"},
    "commonAnnotations": {},
    "externalURL": "http://127.0.0.1:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "ServingErrors", "system": "fraud-scoring"},
            "annotations": {"summary": "5xx above 2%"},
            "startsAt": "2026-11-27T11:50:00.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph",
            "fingerprint": "1a30ba71cca2921f",
        },
        {
            "status": "firing",
            "labels": {"alertname": "DiskFull", "system": "nobody-knows"},
            "startsAt": "2026-11-27T11:50:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": "00000000000000b2",
        },
    ],
}


def serve(tmp_path: Path, more: str = "", admin: str = ADMIN, receiver: str = RECEIVER) -> Any:
    path = tmp_path / "driftowner.yaml"
    text = CONFIG % {
        "admin": admin,
        "db": tmp_path / "store.db",
        "receiver": receiver,
        "alice": ALICE,
        "more": more,
    }
    if not admin:
        text = text.replace(', api_token: ""', "")
    if not receiver:
        text = text.replace(', token: ""', "")
    path.write_text(text)
    return serving(load_config(path), "inc-test")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Runtime]]:
    with serve(tmp_path) as served:
        yield served


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_source_token_or_the_admin_token_posts_alerts(
    api: tuple[TestClient, Runtime],
) -> None:
    """Alertmanager's own token and the admin token are taken; the answer counts what came,
    and the alerts no signal selects."""
    client, _ = api
    for token in (RECEIVER, ADMIN):
        answer = client.post(URL, json=FIRING, headers=bearer(token))
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"source": "am", "firing": 2, "resolved": 0, "unmatched": 1}


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), (bearer("wrong"), 401), ({"Authorization": RECEIVER}, 401), (bearer(ALICE), 403)],
)
def test_without_the_receivers_token_nothing_is_kept(
    api: tuple[TestClient, Runtime], headers: dict[str, str], status: int
) -> None:
    """A missing or wrong token is a 401 and an owner's token a 403, whatever the body holds
    (checked before it is read); nothing is kept."""
    client, runtime = api
    answer = client.post(URL, json={"not": "a payload"}, headers=headers)
    assert answer.status_code == status
    if status == 403:
        assert "acts only as alice" in answer.json()["detail"]
    assert runtime.store.received_alerts("am", NOW - timedelta(days=1), NOW) == []


def test_without_any_token_configured_the_webhook_is_disabled(tmp_path: Path) -> None:
    """No source token and no admin token: 403 saying what to set."""
    with serve(tmp_path, admin="", receiver="") as (client, _):
        answer = client.post(URL, json=FIRING, headers=bearer("anything"))
    assert answer.status_code == 403
    assert "set sources.am.token or server.api_token" in answer.json()["detail"]


def test_the_alerts_are_kept_for_the_source_to_read(api: tuple[TestClient, Runtime]) -> None:
    """What the webhook kept, the alertmanager source reads: the signal's alert fires, and
    stops once Alertmanager sends the resolve."""
    client, runtime = api
    assert client.post(URL, json=FIRING, headers=bearer(RECEIVER)).status_code == 200
    source = build_source(
        "am", runtime.config.sources["am"], clock=runtime.clock, alerts=runtime.store
    )
    query = runtime.config.systems["fraud-scoring"].signals["serving_errors"].query

    def count() -> float:
        result = asyncio.run(source.read(query, NOW, NOW, timedelta(minutes=1)))
        assert result.error is None
        return result.samples[-1].value

    assert count() == 1.0
    resolved = copy.deepcopy(FIRING)
    resolved["status"] = "resolved"
    resolved["alerts"] = [
        dict(FIRING["alerts"][0], status="resolved", endsAt="2026-11-27T11:58:00Z")
    ]
    answer = client.post(URL, json=resolved, headers=bearer(RECEIVER))
    assert answer.json() == {"source": "am", "firing": 0, "resolved": 1, "unmatched": 0}
    assert count() == 0.0


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"version": "3"}, ["body", "version"]),
        ({"status": "pending"}, ["body", "status"]),
        ({"alerts": None}, ["body", "alerts"]),
        ({"truncatedAlerts": -1}, ["body", "truncatedAlerts"]),
        (
            {"alerts": [dict(FIRING["alerts"][0], startsAt="yesterday")]},
            ["body", "alerts", 0, "startsAt"],
        ),
        (
            {"alerts": [dict(FIRING["alerts"][0], startsAt="0001-01-01T00:00:00Z")]},
            ["body", "alerts", 0, "startsAt"],
        ),
        (
            {"alerts": [dict(FIRING["alerts"][0], endsAt="2026-11-27T12:00:00")]},
            ["body", "alerts", 0, "endsAt"],
        ),
        (
            {"alerts": [dict(FIRING["alerts"][0], fingerprint="not hex")]},
            ["body", "alerts", 0, "fingerprint"],
        ),
        ({"alerts": [dict(FIRING["alerts"][0], labels={})]}, ["body", "alerts", 0, "labels"]),
        (
            {"alerts": [dict(FIRING["alerts"][0], status="silenced")]},
            ["body", "alerts", 0, "status"],
        ),
    ],
)
def test_a_bad_payload_is_a_422_naming_the_field(
    api: tuple[TestClient, Runtime], change: dict[str, Any], loc: list[Any]
) -> None:
    """Each broken field of a version 4 payload is a 422 whose ``loc`` names it (a time
    without a zone, Go's zero time as a start, a fingerprint that is not hex); nothing is
    kept."""
    client, runtime = api
    body = {**FIRING, **change}
    answer = client.post(URL, json=body, headers=bearer(RECEIVER))
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == loc
    assert runtime.store.received_alerts("am", NOW - timedelta(days=1), NOW) == []


def test_a_body_over_the_limit_is_a_413(api: tuple[TestClient, Runtime]) -> None:
    """A webhook body above 4 MiB is refused whether it declares its length or streams."""
    client, _ = api
    for declare in (True, False):
        status, _ = post_streamed(
            _authorized(client.app, RECEIVER), URL, 5 * 1024 * 1024, declare_length=declare
        )
        assert status == 413


def _authorized(app: Any, token: str) -> Any:
    """``app`` with the bearer token added to every request (post_streamed sends none)."""

    async def with_token(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = [*scope["headers"], (b"authorization", f"Bearer {token}".encode())]
            scope = {**scope, "headers": headers}
        await app(scope, receive, send)

    return with_token


def test_several_sources_are_named_by_the_query(tmp_path: Path) -> None:
    """With two alertmanager sources a request names one (``?source=``); naming none is a
    422 on ``source``, naming an unknown one a 404."""
    more = "  am2: {type: alertmanager, token: other-token}"
    with serve(tmp_path, more=more) as (client, runtime):
        unnamed = client.post(URL, json=FIRING, headers=bearer(ADMIN))
        assert unnamed.status_code == 422
        assert unnamed.json()["detail"][0]["loc"] == ["query", "source"]
        assert (
            client.post(f"{URL}?source=nope", json=FIRING, headers=bearer(ADMIN)).status_code == 404
        )
        # Each source's token posts to its own source only.
        assert (
            client.post(f"{URL}?source=am2", json=FIRING, headers=bearer(RECEIVER)).status_code
            == 401
        )
        named = client.post(f"{URL}?source=am2", json=FIRING, headers=bearer("other-token"))
        assert named.json()["source"] == "am2"
        assert len(runtime.store.received_alerts("am2", NOW, NOW)) == 2
        assert runtime.store.received_alerts("am", NOW, NOW) == []


def test_without_an_alertmanager_source_the_route_is_a_404(tmp_path: Path) -> None:
    """A config without an alertmanager source answers 404 naming why."""
    path = tmp_path / "driftowner.yaml"
    text = CONFIG % {
        "admin": ADMIN,
        "db": tmp_path / "s.db",
        "receiver": RECEIVER,
        "alice": ALICE,
        "more": "",
    }
    text = text.replace('  am: {type: alertmanager, token: "alertmanager-token"}\n', "").replace(
        "      serving_errors: {layer: engineering, source: am, query: ServingErrors}\n", ""
    )
    path.write_text(text)
    with serving(load_config(path), "inc-test") as (client, _):
        answer = client.post(URL, json=FIRING, headers=bearer(ADMIN))
    assert answer.status_code == 404
    assert answer.json()["detail"] == "no alertmanager source is configured"
