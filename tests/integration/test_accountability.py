"""The accountability record over a real SQLite store: every action has a real actor (an
owner's token acts only as that owner, the admin token names who acts), every event says
through what it came (api, cli, link, slack, auto), and a handover credits each owner with
their own period in the report (HTTP and CLI) and in /metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from driftowner import service
from driftowner.api import Runtime
from driftowner.cli import main
from driftowner.configload import ConfigError, load_config
from driftowner.model import AUTO
from tests.integration.app_harness import NOW, Clock, serving
from tests.integration.test_slack_interactions import SIGNING_SECRET, SLACK_CHANNELS, click_body
from tests.integration.test_slack_interactions import signed as slack_signed

ADMIN = "admin-token-0123"
ALICE = "alice-token-4567"
BOB = "bob-token-89ab"
INCIDENT = "inc-acct"
OPENED = NOW - timedelta(minutes=5)
"""When the harness opened the incident (alice's)."""

CONFIG = """
server: {listen: "127.0.0.1:9587", external_url: "https://driftowner.test"%(admin)s}
storage: {url: "sqlite:///%(store)s"}
sources: {sim: {type: demo}}
owners:
  alice: {name: Alice Chen, email: alice@example.com, slack: U024BE7LH%(alice)s}
  bob: {name: Bob Diaz, email: bob@example.com, slack: U0BOB0001%(bob)s}
  dana: {name: Dana Ito, email: dana@example.com}
channels:
  console: {type: log}
%(channels)s
escalation_chains:
  standard:
    steps:
      - notify: owner
        via: [console]
      - {after: 15m, notify: [bob], via: [console]}
systems:
  fraud-scoring:
    owner: alice
    escalation: standard
    signals:
      accuracy: {layer: model, source: sim, query: accuracy, detect: {threshold: {min: 0.9}}}
"""


def write_config(
    tmp_path: Path, *, admin: bool = True, owners: bool = True, channels: str = ""
) -> Path:
    path = tmp_path / "driftowner.yaml"
    path.write_text(
        CONFIG
        % {
            "admin": f', api_token: "{ADMIN}"' if admin else "",
            "store": tmp_path / "store.db",
            "alice": f', api_token: "{ALICE}"' if owners else "",
            "bob": f', api_token: "{BOB}"' if owners else "",
            "channels": channels,
        }
    )
    return path


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def api(config_path: Path) -> Iterator[tuple[TestClient, Runtime]]:
    with serving(load_config(config_path), INCIDENT) as served:
        yield served


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


# (token, body, status, who the ack is recorded as)
ACK_CASES = [
    pytest.param(ALICE, {}, 200, "alice", id="owner-token-no-by"),
    pytest.param(ALICE, {"by": "alice"}, 200, "alice", id="owner-token-own-name"),
    pytest.param(ALICE, {"by": "bob"}, 403, None, id="owner-token-other-name"),
    pytest.param(BOB, {"by": "alice"}, 403, None, id="foreign-token-as-holder"),
    pytest.param(BOB, {}, 200, "bob", id="foreign-token-as-itself"),
    pytest.param(ADMIN, {"by": "alice"}, 200, "alice", id="admin-names-by"),
    pytest.param(ADMIN, {}, 422, None, id="admin-without-by"),
    pytest.param(ADMIN, {"by": "zed"}, 422, None, id="admin-unknown-owner"),
    pytest.param(None, {"by": "alice"}, 401, None, id="missing-token"),
    pytest.param("not-a-token", {"by": "alice"}, 401, None, id="wrong-token"),
]


@pytest.mark.parametrize(("token", "body", "status", "recorded"), ACK_CASES)
def test_an_ack_acts_as_the_tokens_owner_or_as_the_admin_names(
    api: tuple[TestClient, Runtime],
    token: str | None,
    body: dict[str, str],
    status: int,
    recorded: str | None,
) -> None:
    """An owner's token acts only as that owner (``by`` that owner or absent, anything else
    403); the admin token must name ``by`` (422 naming the field when it does not); without
    a configured token, 401. A refused request changes nothing; an accepted one records the
    actor and ``via: api``."""
    client, runtime = api
    answer = client.post(f"/api/v1/incidents/{INCIDENT}/ack", json=body, headers=bearer(token))
    assert answer.status_code == status, answer.text
    events = runtime.store.events(INCIDENT)
    if recorded is None:
        assert events == []
        if status == 422:
            assert answer.json()["detail"][0]["loc"] == ["body", "by"]
        return
    assert [(e.kind, e.actor, e.via) for e in events] == [("acknowledged", recorded, "api")]
    assert answer.json()["acknowledged_by"] == recorded


@pytest.mark.parametrize(
    ("token", "body", "status", "by"),
    [
        pytest.param(ALICE, {"to": "bob", "reason": "r"}, 200, "alice", id="owner-token"),
        pytest.param(
            ALICE, {"to": "bob", "reason": "r", "by": "dana"}, 403, None, id="owner-other"
        ),
        pytest.param(ADMIN, {"to": "bob", "reason": "r", "by": "dana"}, 200, "dana", id="admin"),
        pytest.param(ADMIN, {"to": "bob", "reason": "r"}, 422, None, id="admin-without-by"),
        pytest.param(None, {"to": "bob", "reason": "r", "by": "dana"}, 401, None, id="missing"),
    ],
)
def test_a_reassign_records_who_handed_over_by_the_same_rules(
    api: tuple[TestClient, Runtime],
    token: str | None,
    body: dict[str, str],
    status: int,
    by: str | None,
) -> None:
    """Reassign follows the ack's rules for ``by`` and records from, to, who, via and why."""
    client, runtime = api
    answer = client.post(f"/api/v1/incidents/{INCIDENT}/reassign", json=body, headers=bearer(token))
    assert answer.status_code == status, answer.text
    handed = runtime.store.handovers().get(INCIDENT, [])
    if by is None:
        assert handed == []
        return
    ((h),) = handed
    assert (h.from_owner, h.to_owner, h.by, h.via, h.reason) == ("alice", "bob", by, "api", "r")
    (event,) = runtime.store.events(INCIDENT)
    assert (event.kind, event.actor, event.via) == ("reassigned", by, "api")


def test_an_owner_token_cannot_reload_the_config(api: tuple[TestClient, Runtime]) -> None:
    """Reload is the admin's: an owner's token is 403, the admin token gets through (503
    here only because this runtime has no reload)."""
    client, _ = api
    assert client.post("/-/reload", headers=bearer(ALICE)).status_code == 403
    assert client.post("/-/reload", headers=bearer(ADMIN)).status_code == 503


@pytest.mark.parametrize(
    ("admin", "owners", "token", "status"),
    [
        pytest.param(False, True, ALICE, 200, id="owner-tokens-only"),
        pytest.param(False, True, ADMIN, 401, id="no-admin-token-configured"),
        pytest.param(False, False, ALICE, 403, id="no-token-configured"),
    ],
)
def test_owner_tokens_work_without_an_admin_token(
    tmp_path: Path, admin: bool, owners: bool, token: str, status: int
) -> None:
    """State-changing requests are disabled (403) only when no token at all is configured;
    owner tokens work on their own."""
    path = write_config(tmp_path, admin=admin, owners=owners)
    with serving(load_config(path), INCIDENT) as (client, _):
        answer = client.post(f"/api/v1/incidents/{INCIDENT}/ack", json={}, headers=bearer(token))
    assert answer.status_code == status, answer.text


def test_two_owners_sharing_a_token_is_a_config_error(tmp_path: Path) -> None:
    """A token must name one actor: an owner's token equal to another's or to the admin
    token is refused at load, located, without showing the token."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace(BOB, ALICE))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    (line,) = raised.value.errors
    assert "owners.bob.api_token" in line and "owners.alice.api_token" in line
    assert ALICE not in line


def test_a_blank_owner_token_is_a_config_error(tmp_path: Path) -> None:
    """An empty ``api_token`` is an error naming the field, not a token that matches an
    empty bearer."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace(BOB, " "))
    with pytest.raises(ConfigError, match=r"owners\.bob\.api_token"):
        load_config(path)


def test_a_link_action_is_recorded_as_through_a_link(api: tuple[TestClient, Runtime]) -> None:
    """A signed link acts as its recipient and the event says ``via: link``."""
    client, runtime = api
    url = runtime.links(INCIDENT, "ack", "alice")
    assert url is not None
    assert client.post("/a/" + url.rsplit("/", 1)[1], data={}).status_code == 200
    (event,) = runtime.store.events(INCIDENT)
    assert (event.kind, event.actor, event.via) == ("acknowledged", "alice", "link")


def test_a_slack_click_is_recorded_as_through_slack(tmp_path: Path) -> None:
    """A signed Slack button click acts as the clicking owner and the event says
    ``via: slack``."""
    path = write_config(tmp_path, channels=SLACK_CHANNELS)
    environ = {"DRIFTOWNER_CHANNELS__SLACK__SIGNING_SECRET": SIGNING_SECRET}
    with serving(load_config(path, environ=environ), INCIDENT) as (client, runtime):
        body = click_body(value=INCIDENT)
        answer = client.post("/slack/interactions", content=body, headers=slack_signed(body))
        assert answer.status_code == 200, answer.text
        (event,) = runtime.store.events(INCIDENT)
    assert (event.kind, event.actor, event.via) == ("acknowledged", "alice", "slack")


def test_an_automatic_resolution_is_recorded_as_auto(api: tuple[TestClient, Runtime]) -> None:
    """driftowner resolving on its own (actor ``auto``) records ``via: auto``, and the event
    JSON shows it."""
    _, runtime = api
    incident = service.get(runtime.store, INCIDENT)
    service.close(runtime.store, runtime.config, incident, AUTO, "clear", NOW, runtime.links)
    (event,) = runtime.store.events(INCIDENT)
    assert (event.actor, event.via) == (AUTO, "auto")
    assert service.event_json(event)["via"] == "auto"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_actions_are_recorded_as_through_the_cli(
    api: tuple[TestClient, Runtime], config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ack, reassign and resolve from the command line record ``--by`` as given and
    ``via: cli``; ``show`` prints the via column and ``show --json`` carries it."""
    _, runtime = api
    config = str(config_path)
    assert run_cli(capsys, "ack", INCIDENT, "--by", "alice", "--config", config)[0] == 0
    code, _, err = run_cli(
        capsys, "reassign", INCIDENT, "--to", "bob", "--reason", "rota", "--by", "dana",
        "--config", config,
    )  # fmt: skip
    assert code == 0, err
    assert run_cli(capsys, "resolve", INCIDENT, "--by", "bob", "--config", config)[0] == 0
    events = runtime.store.events(INCIDENT)
    assert [(e.kind, e.actor, e.via) for e in events] == [
        ("acknowledged", "alice", "cli"),
        ("reassigned", "dana", "cli"),
        ("resolved", "bob", "cli"),
    ]
    code, out, _ = run_cli(capsys, "show", INCIDENT, "--config", config, "--json")
    assert [e["via"] for e in json.loads(out)["events"]] == ["cli", "cli", "cli"]
    code, out, _ = run_cli(capsys, "show", INCIDENT, "--config", config)
    assert "reassigned          dana     cli   alice → bob: rota" in out


# -- the handover scenario --------------------------------------------------------------------

ACKED_AFTER = timedelta(seconds=28)
HANDED_OVER_AFTER = timedelta(minutes=10)
RESOLVED_AFTER = timedelta(minutes=40)


def report_rows(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["owner"]: row for row in document["rows"]}


def test_a_handover_credits_each_owner_with_their_own_period(
    api: tuple[TestClient, Runtime], config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Alice acks 28 s after opening; the admin (for dana) hands the incident to bob 10 min
    after opening, with a reason; bob resolves 30 min later. The report (HTTP and CLI) and
    /metrics credit the 28 s ack to alice, not bob; bob gets the 30 min resolution from when
    he received it; each has the time they held it and the handover they gave or got."""
    client, runtime = api
    clock = runtime.clock
    assert isinstance(clock, Clock)
    clock.now = OPENED + ACKED_AFTER
    acked = client.post(f"/api/v1/incidents/{INCIDENT}/ack", json={}, headers=bearer(ALICE))
    assert acked.status_code == 200, acked.text
    clock.now = OPENED + HANDED_OVER_AFTER
    moved = client.post(
        f"/api/v1/incidents/{INCIDENT}/reassign",
        json={"to": "bob", "reason": "bob owns the feature store", "by": "dana"},
        headers=bearer(ADMIN),
    )
    assert moved.status_code == 200, moved.text
    clock.now = OPENED + RESOLVED_AFTER
    done = client.post(f"/api/v1/incidents/{INCIDENT}/resolve", json={}, headers=bearer(BOB))
    assert done.status_code == 200, done.text

    events = client.get(f"/api/v1/incidents/{INCIDENT}").json()["events"]
    assert [(e["kind"], e["actor"], e["via"]) for e in events] == [
        ("acknowledged", "alice", "api"),
        ("reassigned", "dana", "api"),
        ("resolved", "bob", "api"),
    ]
    assert events[1]["detail"] == "alice → bob: bob owns the feature store"

    alice_row = {
        "owner": "alice",
        "system": "fraud-scoring",
        "open": 0,
        "acknowledged": 0,
        "resolved": 0,
        "time_to_acknowledge_seconds": {"median": 28.0, "p90": 28.0},
        "time_to_resolve_seconds": {"median": None, "p90": None},
        "slo_breaches": {"ack": 0, "resolve": 0},
        "oldest_unresolved_seconds": None,
        "held_seconds": 600.0,
        "handovers": {"given": 1, "received": 0},
    }
    bob_row = {
        "owner": "bob",
        "system": "fraud-scoring",
        "open": 0,
        "acknowledged": 0,
        "resolved": 1,
        "time_to_acknowledge_seconds": {"median": None, "p90": None},
        "time_to_resolve_seconds": {"median": 1800.0, "p90": 1800.0},
        "slo_breaches": {"ack": 0, "resolve": 0},
        "oldest_unresolved_seconds": None,
        "held_seconds": 1800.0,
        "handovers": {"given": 0, "received": 1},
    }
    over_http = client.get("/api/v1/report?since=30d").json()
    assert report_rows(over_http) == {"alice": alice_row, "bob": bob_row}
    # The CLI reads the same store at the real clock: the incident is resolved, so nothing in
    # its rows depends on now; the window is wide enough to hold it whatever the date.
    code, out, err = run_cli(
        capsys, "report", "--since", "520w", "--config", str(config_path), "--json"
    )
    assert code == 0, err
    assert report_rows(json.loads(out)) == {"alice": alice_row, "bob": bob_row}

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
    }

    def sample(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    tta = "driftowner_incident_time_to_acknowledge_seconds"
    ttr = "driftowner_incident_time_to_resolve_seconds"
    assert (sample(f"{tta}_count", owner="alice"), sample(f"{tta}_sum", owner="alice")) == (
        1.0,
        28.0,
    )
    assert sample(f"{tta}_bucket", owner="alice", le="60.0") == 1.0
    assert sample(f"{tta}_count", owner="bob") is None
    assert (sample(f"{ttr}_count", owner="bob"), sample(f"{ttr}_sum", owner="bob")) == (
        1.0,
        1800.0,
    )
    assert sample(f"{ttr}_bucket", owner="bob", le="900.0") == 0.0
    assert sample(f"{ttr}_bucket", owner="bob", le="1800.0") == 1.0
    assert sample(f"{ttr}_count", owner="alice") is None
    breaches = "driftowner_incident_slo_breaches_total"
    for owner in ("alice", "bob"):
        for slo in ("ack", "resolve"):
            assert sample(breaches, owner=owner, system="fraud-scoring", slo=slo) == 0.0
