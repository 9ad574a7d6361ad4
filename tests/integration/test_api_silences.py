"""Silences over HTTP, on a real SQLite store: who may add and expire them (an owner's token,
a foreign token, the admin token, no token), the errors naming the body field, and the list."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from driftowner.api import Runtime
from driftowner.configload import load_config
from tests.integration.app_harness import NOW, serving

ADMIN = "admin-token"
ALICE = "alice-token"
BOB = "bob-token"

CONFIG = """
server: {listen: "127.0.0.1:9587", api_token: "%s"}
storage: {url: "sqlite:///%s"}
sources: {sim: {type: demo}}
owners:
  alice: {name: Alice Chen, email: alice@example.com, api_token: "%s"}
  bob: {name: Bob Diaz, email: bob@example.com, api_token: "%s"}
channels: {console: {type: log}}
escalation_chains:
  standard:
    steps:
      - notify: owner
systems:
  fraud-scoring:
    owner: alice
    escalation: standard
    labels: {team: risk}
    signals:
      accuracy: {layer: model, source: sim, query: accuracy, detect: {threshold: {min: 0.9}}}
  ranking:
    owner: bob
    escalation: standard
    labels: {team: risk}
    signals:
      ctr: {layer: business, source: sim, query: ctr, detect: {threshold: {min: 0.1}}}
"""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Runtime]]:
    path = tmp_path / "driftowner.yaml"
    path.write_text(CONFIG % (ADMIN, tmp_path / "store.db", ALICE, BOB))
    with serving(load_config(path), "inc-test") as (client, runtime):
        yield client, runtime


HOLD = {"system": "fraud-scoring", "for": "2h", "reason": "retraining"}


def test_an_owner_silences_their_own_system_as_themselves(
    api: tuple[TestClient, Runtime],
) -> None:
    """alice's token silences fraud-scoring: 201, recorded as by alice via api, holding from
    now for two hours; it is listed until expired, and expiring it is recorded too."""
    client, runtime = api
    made = client.post("/api/v1/silences", json=HOLD, headers=bearer(ALICE))
    assert made.status_code == 201, made.text
    body = made.json()
    assert (body["by"], body["via"], body["systems"], body["active"]) == (
        "alice",
        "api",
        ["fraud-scoring"],
        True,
    )
    assert body["ends_at"] == "2026-11-27T14:00:00Z"
    listed = client.get("/api/v1/silences").json()["silences"]
    assert [s["id"] for s in listed] == [body["id"]]
    gone = client.delete(f"/api/v1/silences/{body['id']}", headers=bearer(ALICE))
    assert gone.status_code == 200
    assert (gone.json()["expired_by"], gone.json()["active"]) == ("alice", False)
    assert client.get("/api/v1/silences").json()["silences"] == []
    assert [s["id"] for s in client.get("/api/v1/silences?all=true").json()["silences"]] == [
        body["id"]
    ]
    (kept,) = runtime.store.silences()
    assert kept.expired_at == NOW


@pytest.mark.parametrize(
    ("body", "token", "status", "says"),
    [
        ({**HOLD, "system": "ranking"}, ALICE, 403, "not accountable for ranking"),
        ({**HOLD, "system": None, "labels": {"team": "risk"}}, ALICE, 403, "ranking"),
        ({**HOLD, "by": "bob"}, ALICE, 403, "acts only as alice"),
        (HOLD, None, 401, "bearer token"),
        (HOLD, "wrong", 401, "bearer token"),
        (HOLD, ADMIN, 422, "by"),
    ],
    ids=[
        "a foreign system",
        "labels that cover a foreign system",
        "acting as another owner",
        "no token",
        "a wrong token",
        "the admin token naming nobody",
    ],
)
def test_silences_are_refused_to_whoever_may_not_hold_those_pages(
    api: tuple[TestClient, Runtime],
    body: dict[str, object],
    token: str | None,
    status: int,
    says: str,
) -> None:
    """An owner's token may silence only systems that owner is accountable for, and only as
    that owner; without a valid token nothing is silenced; the admin token must name ``by``."""
    client, runtime = api
    answer = client.post("/api/v1/silences", json=body, headers=bearer(token) if token else {})
    assert answer.status_code == status
    assert says in answer.text
    assert runtime.store.silences() == []


def test_the_admin_token_silences_any_system_as_the_owner_it_names(
    api: tuple[TestClient, Runtime],
) -> None:
    """The admin token silences alice's and bob's systems by label, as the owner ``by``
    names, and must name ``by`` to expire it too (recorded); an unknown id is a 404 and no
    token a 401."""
    client, _ = api
    made = client.post(
        "/api/v1/silences",
        json={"labels": {"team": "risk"}, "for": "30m", "reason": "pipeline", "by": "bob"},
        headers=bearer(ADMIN),
    )
    assert made.status_code == 201, made.text
    assert made.json()["systems"] == ["fraud-scoring", "ranking"]
    assert made.json()["by"] == "bob"
    silence_id = made.json()["id"]
    nobody = client.delete(f"/api/v1/silences/{silence_id}", headers=bearer(ADMIN))
    assert nobody.status_code == 422
    gone = client.delete(f"/api/v1/silences/{silence_id}?by=alice", headers=bearer(ADMIN))
    assert gone.json()["expired_by"] == "alice"
    assert client.delete("/api/v1/silences/sil-none", headers=bearer(BOB)).status_code == 404
    assert client.delete(f"/api/v1/silences/{silence_id}").status_code == 401


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({**HOLD, "for": "forever"}, "for", "invalid duration"),
        ({**HOLD, "for": "31d"}, "for", "at most 4w2d"),
        ({**HOLD, "for": "0s"}, "for", "longer than 0s"),
        ({**HOLD, "system": "fraud-scorin"}, "system", "unknown system"),
        ({**HOLD, "owner": "alice"}, "system", "exactly one of system, owner or labels"),
        ({**HOLD, "reason": "   "}, "reason", "say why"),
        ({**HOLD, "reason": "a\x00b"}, "reason", "control character"),
        ({"system": "fraud-scoring", "for": "1h"}, "reason", "Field required"),
    ],
    ids=[
        "bad duration",
        "too long",
        "zero",
        "unknown system",
        "two matchers",
        "blank reason",
        "NUL in reason",
        "no reason",
    ],
)
def test_a_bad_silence_is_refused_naming_its_field(
    api: tuple[TestClient, Runtime], body: dict[str, object], field: str, says: str
) -> None:
    """Each mistake is a 422 whose ``loc`` names the body field; nothing is kept."""
    client, runtime = api
    answer = client.post("/api/v1/silences", json=body, headers=bearer(ALICE))
    assert answer.status_code == 422, answer.text
    (error,) = answer.json()["detail"]
    assert error["loc"][-1] == field
    assert says in error["msg"]
    assert runtime.store.silences() == []


def test_maintenance_windows_are_listed_while_they_hold(tmp_path: Path) -> None:
    """A weekly window holding now is listed with the kept silences, by ``config``."""
    path = tmp_path / "driftowner.yaml"
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[NOW.weekday()]
    window = (
        f'maintenance:\n  - {{systems: [ranking], every: weekly, day: {day}, at: "11:00",'
        " for: 2h, reason: retraining}\n"
    )
    path.write_text(CONFIG % (ADMIN, tmp_path / "store.db", ALICE, BOB) + window)
    with serving(load_config(path), "inc-test") as (client, runtime):
        (listed,) = client.get("/api/v1/silences").json()["silences"]
        assert (listed["id"], listed["by"], listed["system"]) == (
            "maintenance-0",
            "config",
            "ranking",
        )
        runtime.clock.now = NOW + timedelta(hours=1)  # type: ignore[attr-defined]
        assert client.get("/api/v1/silences").json()["silences"] == []
