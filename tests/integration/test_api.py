"""The HTTP API over a real SQLite store: incidents, bearer-token actions, signed one-click
links, errors naming the request field, health and metrics."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from itsdangerous import URLSafeTimedSerializer

from driftowner.api import Runtime
from driftowner.configload import load_config
from driftowner.links import LinkSigner
from tests.integration.app_harness import NOW, post_streamed, serving

TOKEN = "api-test-token"

CONFIG = """
server: {listen: "127.0.0.1:9587", external_url: "https://driftowner.test", api_token: "%s"}
storage: {url: "sqlite:///%s"}
sources: {sim: {type: demo}, am: {type: alertmanager}}
owners:
  alice: {name: Alice Chen, email: alice@example.com}
  bob: {name: Bob Diaz, email: bob@example.com}
channels: {console: {type: log}}
escalation_chains:
  standard:
    steps:
      - notify: owner
      - {after: 15m, notify: [bob]}
systems:
  fraud-scoring:
    owner: alice
    escalation: standard
    signals:
      accuracy: {layer: model, source: sim, query: accuracy, detect: {threshold: {min: 0.9}}}
"""


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Runtime, str]]:
    path = tmp_path / "driftowner.yaml"
    path.write_text(CONFIG % (TOKEN, tmp_path / "store.db"))
    with serving(load_config(path), "inc-test") as (client, runtime):
        yield client, runtime, "inc-test"


def test_incidents_are_listed_and_shown_with_events(api: tuple[TestClient, Runtime, str]) -> None:
    """GET lists incidents with the contract's fields and filters by state."""
    client, _, incident_id = api
    listed = client.get("/api/v1/incidents").json()["incidents"]
    assert [i["id"] for i in listed] == [incident_id]
    assert listed[0]["opened_at"] == "2026-11-27T11:55:00Z"
    assert listed[0]["acknowledged_at"] is None
    assert client.get("/api/v1/incidents?state=resolved").json()["incidents"] == []
    bad = client.get("/api/v1/incidents?state=closed")
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "state"]
    assert client.get(f"/api/v1/incidents/{incident_id}").json()["events"] == []
    assert client.get("/api/v1/incidents/nope").status_code == 404


def test_actions_need_the_bearer_token(api: tuple[TestClient, Runtime, str]) -> None:
    """POST ack without or with a wrong token is refused and changes nothing; with it, acks."""
    client, runtime, incident_id = api
    url = f"/api/v1/incidents/{incident_id}/ack"
    assert client.post(url, json={"by": "alice"}).status_code == 401
    wrong = client.post(url, json={"by": "alice"}, headers={"Authorization": "Bearer x"})
    assert wrong.status_code == 401
    assert runtime.store.incident(incident_id).state == "open"  # type: ignore[union-attr]
    ok = client.post(url, json={"by": "alice"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert ok.json()["state"] == "acknowledged"
    again = client.post(url, json={"by": "alice"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert again.status_code == 409


def test_bad_request_bodies_name_the_field(api: tuple[TestClient, Runtime, str]) -> None:
    """An unknown owner, a missing field or an unknown field: 422 naming the body field."""
    client, _, incident_id = api
    auth = {"Authorization": f"Bearer {TOKEN}"}
    unknown = client.post(f"/api/v1/incidents/{incident_id}/ack", json={"by": "zed"}, headers=auth)
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "by"]
    missing = client.post(
        f"/api/v1/incidents/{incident_id}/reassign", json={"to": "bob"}, headers=auth
    )
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "reason"]
    extra = client.post(
        f"/api/v1/incidents/{incident_id}/resolve", json={"by": "alice", "byy": 1}, headers=auth
    )
    assert extra.status_code == 422
    assert extra.json()["detail"][0]["loc"] == ["body", "byy"]


def test_a_note_is_added_with_the_token_and_shown_as_an_event(
    api: tuple[TestClient, Runtime, str],
) -> None:
    """POST note without the token is 401 and records nothing; with it, 200 answering the
    ``note`` event (actor, via ``api``, the text) and the incident, unchanged, whose events
    then list the note; an owner's note on a resolved incident is taken too."""
    client, runtime, incident_id = api
    url = f"/api/v1/incidents/{incident_id}/note"
    body = {"by": "alice", "note": "rolled back features-v3, watching"}
    assert client.post(url, json=body).status_code == 401
    assert runtime.store.events(incident_id) == []
    auth = {"Authorization": f"Bearer {TOKEN}"}
    ok = client.post(url, json=body, headers=auth)
    assert ok.status_code == 200, ok.text
    answer = ok.json()
    assert answer["event"] == {
        "at": "2026-11-27T12:00:00Z",
        "kind": "note",
        "actor": "alice",
        "via": "api",
        "detail": "rolled back features-v3, watching",
    }
    assert (answer["incident"]["id"], answer["incident"]["state"]) == (incident_id, "open")
    shown = client.get(f"/api/v1/incidents/{incident_id}").json()["events"]
    assert [(e["kind"], e["actor"], e["detail"]) for e in shown] == [
        ("note", "alice", "rolled back features-v3, watching")
    ]
    resolved = client.post(
        f"/api/v1/incidents/{incident_id}/resolve", json={"by": "alice"}, headers=auth
    )
    assert resolved.status_code == 200
    later = client.post(url, json={"by": "bob", "note": "cause: schema change"}, headers=auth)
    assert later.status_code == 200 and later.json()["incident"]["state"] == "resolved"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"by": "alice"}, "note"),
        ({"by": "alice", "note": ""}, "note"),
        ({"by": "alice", "note": "   "}, "note"),
        ({"by": "alice", "note": "n" * 2001}, "note"),
        ({"note": "on it"}, "by"),
        ({"by": "zed", "note": "on it"}, "by"),
        ({"by": "alice", "note": "on it", "text": "x"}, "text"),
    ],
)
def test_a_bad_note_is_a_422_naming_the_field(
    api: tuple[TestClient, Runtime, str], body: dict[str, str], field: str
) -> None:
    """A missing, empty, blank or over-long note, a missing or unknown ``by``, an unknown
    field: 422 naming that body field; nothing recorded."""
    client, runtime, incident_id = api
    answer = client.post(
        f"/api/v1/incidents/{incident_id}/note",
        json=body,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["body", field]
    assert runtime.store.events(incident_id) == []


def test_a_note_on_an_unknown_incident_is_a_404(api: tuple[TestClient, Runtime, str]) -> None:
    """A note on an incident that does not exist: 404 naming it."""
    client, _, _ = api
    answer = client.post(
        "/api/v1/incidents/nope/note",
        json={"by": "alice", "note": "on it"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status_code == 404
    assert "nope" in answer.json()["detail"]


def test_signed_link_get_only_confirms_and_post_acts(api: tuple[TestClient, Runtime, str]) -> None:
    """Opening a signed ack link changes nothing (mail scanners follow links); confirming it
    acknowledges as the link's recipient; the link only works for its own incident and
    action."""
    client, runtime, incident_id = api
    url = runtime.links(incident_id, "ack", "alice")
    assert url is not None and url.startswith("https://driftowner.test/a/")
    path = url.removeprefix("https://driftowner.test")
    page = client.get(path)
    assert page.status_code == 200
    assert "Acknowledge this incident?" in page.text
    assert "fraud-scoring" in page.text and "Alice Chen" in page.text
    assert "You will act as Alice Chen" in page.text
    assert "<select" not in page.text
    assert runtime.store.incident(incident_id).state == "open"  # type: ignore[union-attr]
    done = client.post(path, data={"note": "on it"})
    assert done.status_code == 200, done.text
    assert "Acknowledged by Alice Chen" in done.text
    acked = runtime.store.incident(incident_id)
    assert acked is not None and acked.state == "acknowledged"
    assert runtime.store.events(incident_id)[-1].detail == "on it"


@pytest.mark.parametrize("accept", [True, False])
def test_a_resolve_link_can_accept_the_new_level(
    api: tuple[TestClient, Runtime, str], accept: bool
) -> None:
    """Issue 6: the owner can accept a new level as normal from the link as from the CLI and
    the API: the resolve link's form offers it, and ticking it logs the ``accepted`` event
    the detector bank re-learns from; left unticked, a plain resolve logs none. An ack link
    does not offer it."""
    client, runtime, incident_id = api
    ack = runtime.links(incident_id, "ack", "alice")
    assert ack is not None
    assert 'name="accept"' not in client.get(ack.removeprefix("https://driftowner.test")).text
    url = runtime.links(incident_id, "resolve", "alice")
    assert url is not None
    path = url.removeprefix("https://driftowner.test")
    page = client.get(path)
    assert page.status_code == 200
    assert 'name="accept"' in page.text
    form = {"note": "new normal", **({"accept": "on"} if accept else {})}
    done = client.post(path, data=form)
    assert done.status_code == 200, done.text
    assert ("re-learn" in done.text) is accept
    resolved = runtime.store.incident(incident_id)
    assert resolved is not None and resolved.state == "resolved"
    kinds = [event.kind for event in runtime.store.events(incident_id)]
    assert ("accepted" in kinds) is accept


def test_a_resolve_link_refuses_an_accept_box_it_cannot_read(
    api: tuple[TestClient, Runtime, str],
) -> None:
    """An ``accept`` value that is neither on nor off is a 422 naming the field; nothing
    changes."""
    client, runtime, incident_id = api
    url = runtime.links(incident_id, "resolve", "alice")
    assert url is not None
    answer = client.post(url.removeprefix("https://driftowner.test"), data={"accept": "maybe"})
    assert answer.status_code == 422
    assert "accept: expected on or off" in answer.text
    assert runtime.store.incident(incident_id).state == "open"  # type: ignore[union-attr]


def test_forged_and_expired_links_are_refused(api: tuple[TestClient, Runtime, str]) -> None:
    """A tampered token, a token signed with another secret, and an expired one: 403, and the
    incident stays as it was."""
    client, runtime, incident_id = api
    url = runtime.links(incident_id, "resolve", "alice")
    assert url is not None
    token = url.rsplit("/", 1)[1]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert client.post(f"/a/{tampered}", data={"by": "alice"}).status_code == 403
    other = LinkSigner("another-secret", "https://x")(incident_id, "resolve", "alice")
    assert other is not None
    assert client.post(f"/a/{other.rsplit('/', 1)[1]}", data={"by": "alice"}).status_code == 403
    with pytest.raises(Exception, match="expired"):
        runtime.links.verify(token, max_age_s=-1)
    assert runtime.store.incident(incident_id).state == "open"  # type: ignore[union-attr]


def test_health_readiness_and_metrics(api: tuple[TestClient, Runtime, str]) -> None:
    """/healthz and /readyz answer 200; /metrics exports the open incident by owner."""
    client, _, _ = api
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    text = client.get("/metrics").text
    assert (
        'driftowner_incidents_open{owner="alice",state="open",system="fraud-scoring"} 1.0' in text
    )
    assert TOKEN not in text
    assert "openapi" in client.get("/openapi.json").json()


def test_status_page_lists_unresolved_incidents_by_owner(
    api: tuple[TestClient, Runtime, str],
) -> None:
    """The status page names each unresolved incident under its accountable owner, with its
    age, state and escalation level, and drops it once resolved."""
    client, runtime, incident_id = api
    page = client.get("/")
    assert page.status_code == 200
    assert "Alice Chen" in page.text
    assert incident_id in page.text
    assert "5m" in page.text
    assert "step 0 of 2" in page.text
    runtime.clock.now = NOW + timedelta(minutes=1)  # type: ignore[attr-defined]
    client.post(
        f"/api/v1/incidents/{incident_id}/resolve",
        json={"by": "alice"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert incident_id not in client.get("/").text
    assert "No unresolved incidents" in client.get("/").text


def test_a_non_ascii_bearer_token_is_refused_not_a_server_error(
    api: tuple[TestClient, Runtime, str],
) -> None:
    """A garbage Authorization header with non-ASCII bytes is a 401, never a 500."""
    client, runtime, incident_id = api
    answer = client.post(
        f"/api/v1/incidents/{incident_id}/ack",
        json={"by": "alice"},
        headers={"Authorization": "Bearer café".encode()},
    )
    assert answer.status_code == 401
    assert runtime.store.incident(incident_id).state == "open"  # type: ignore[union-attr]


def link_path(runtime: Runtime, incident_id: str, action: str, recipient: str) -> str:
    url = runtime.links(incident_id, action, recipient)
    assert url is not None
    return url.removeprefix("https://driftowner.test")


def test_a_link_acts_as_its_recipient_never_as_the_form_says(
    api: tuple[TestClient, Runtime, str],
) -> None:
    """A link made for bob acknowledges as bob: a form naming carol or alice is refused and
    changes nothing, so the audit trail records who was really paged."""
    client, runtime, incident_id = api
    path = link_path(runtime, incident_id, "ack", "bob")
    forged = client.post(path, data={"by": "alice"})
    assert forged.status_code == 403
    assert "this link acts only as Bob Diaz" in forged.text
    assert runtime.store.incident(incident_id).state == "open"  # type: ignore[union-attr]
    done = client.post(path, data={"by": "bob"})
    assert done.status_code == 200, done.text
    acked = runtime.store.incident(incident_id)
    assert acked is not None and acked.acknowledged_by == "bob"
    resolve = link_path(runtime, incident_id, "resolve", "bob")
    assert client.post(resolve, data={"note": "réparé"}).status_code == 200
    resolved = runtime.store.incident(incident_id)
    assert resolved is not None and resolved.resolved_by == "bob"
    assert runtime.store.events(incident_id)[-1].detail == "réparé"


def test_a_link_that_names_no_recipient_is_refused(
    api: tuple[TestClient, Runtime, str],
) -> None:
    """A token signed before links named their recipient cannot say who acts: 403 with a
    message saying so, on the confirm page and on POST; the incident stays open."""
    client, runtime, incident_id = api
    secret = runtime.store.secret("links")
    old = URLSafeTimedSerializer(secret, salt="driftowner.action-link.v1").dumps(
        {"i": incident_id, "a": "ack"}
    )
    for answer in (client.get(f"/a/{old}"), client.post(f"/a/{old}", data={"by": "alice"})):
        assert answer.status_code == 403
        assert "does not name who acts" in answer.text
    assert runtime.store.incident(incident_id).state == "open"  # type: ignore[union-attr]


def test_the_bearer_scheme_is_case_insensitive(api: tuple[TestClient, Runtime, str]) -> None:
    """RFC 7235: ``bearer`` and ``BEARER`` name the same scheme as ``Bearer``; the token itself
    is still compared exactly."""
    client, runtime, incident_id = api
    url = f"/api/v1/incidents/{incident_id}/ack"
    wrong_case_token = client.post(
        url, json={"by": "alice"}, headers={"Authorization": f"bearer {TOKEN.upper()}"}
    )
    assert wrong_case_token.status_code == 401
    ok = client.post(url, json={"by": "alice"}, headers={"Authorization": f"bearer {TOKEN}"})
    assert ok.status_code == 200, ok.text
    assert runtime.store.incident(incident_id).state == "acknowledged"  # type: ignore[union-attr]


def test_the_token_is_checked_before_the_body_is_parsed(
    api: tuple[TestClient, Runtime, str],
) -> None:
    """Invalid JSON without a token is 401, not a 422 that reveals the body was parsed."""
    client, _, incident_id = api
    for route in ("ack", "resolve", "reassign", "note"):
        answer = client.post(
            f"/api/v1/incidents/{incident_id}/{route}",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 401, (route, answer.text)


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("ack", '{"by": "\\ud800"}', "by"),
        ("ack", '{"by": "alice", "note": "\\ud800"}', "note"),
        ("resolve", '{"by": "alice", "note": "a\\udfffb"}', "note"),
        ("reassign", '{"to": "\\ud800", "reason": "r"}', "to"),
        ("reassign", '{"to": "bob", "reason": "\\ud800"}', "reason"),
        ("ack", '{"by": "alice", "note": "nul\\u0000"}', "note"),
        ("ack", '{"by": "alice", "note": "%s"}' % ("n" * 5000), "note"),
        ("reassign", '{"to": "%s", "reason": "r"}' % ("b" * 500), "to"),
    ],
)
def test_body_strings_that_are_not_text_are_a_located_422(
    api: tuple[TestClient, Runtime, str], route: str, body: str, field: str
) -> None:
    """A lone surrogate, a NUL or an over-long string in a body field is a 422 naming that
    field, never a 500, and changes nothing."""
    client, runtime, incident_id = api
    answer = client.post(
        f"/api/v1/incidents/{incident_id}/{route}",
        content=body.encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["body", field]
    assert runtime.store.incident(incident_id).state == "open"  # type: ignore[union-attr]


def test_link_form_fields_that_are_not_text_are_refused(
    api: tuple[TestClient, Runtime, str],
) -> None:
    """A note that is not UTF-8, holds a NUL or is over-long: 422 naming ``note``; nothing
    changes."""
    client, runtime, incident_id = api
    path = link_path(runtime, incident_id, "ack", "alice")
    for body in (b"note=%ED%A0%80", b"note=a%00b", b"note=" + b"n" * 5000):
        answer = client.post(
            path, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert answer.status_code == 422, answer.text
        assert "note" in answer.text
    assert runtime.store.incident(incident_id).state == "open"  # type: ignore[union-attr]


@pytest.mark.parametrize("since", ["300000w", "99999999999999999w", "11000d"])
def test_an_absurd_report_window_is_a_located_422(
    api: tuple[TestClient, Runtime, str], since: str
) -> None:
    """A report window past the maximum is a 422 naming ``since``, never an overflow's 500."""
    client, _, _ = api
    answer = client.get(f"/api/v1/report?since={since}")
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["query", "since"]
    assert client.get("/api/v1/report?since=3650d").status_code == 200


@pytest.mark.parametrize("declare_length", [True, False])
def test_large_link_posts_get_413_without_the_body_being_read(
    api: tuple[TestClient, Runtime, str], declare_length: bool
) -> None:
    """Ten 50 MB POSTs to a link: each answered 413; with a Content-Length none of the body
    is read, streamed (no length) reading stops within one chunk past the limit."""
    client, runtime, incident_id = api
    path = link_path(runtime, incident_id, "ack", "alice")
    for _ in range(10):
        status, pulled = post_streamed(client.app, path, 50 << 20, declare_length=declare_length)
        assert status == 413
        assert pulled == 0 if declare_length else pulled <= 2 << 20
    assert runtime.store.incident(incident_id).state == "open"  # type: ignore[union-attr]


def test_every_route_limits_its_body(api: tuple[TestClient, Runtime, str]) -> None:
    """A JSON action body over the limit is 413 before the token or JSON is looked at."""
    client, _, incident_id = api
    big = b"{" + b" " * (1 << 20) + b"}"
    for path in (
        f"/api/v1/incidents/{incident_id}/ack",
        f"/api/v1/incidents/{incident_id}/note",
        "/-/reload",
        "/api/v1/incidents",
    ):
        answer = client.post(path, content=big, headers={"Content-Type": "application/json"})
        assert answer.status_code == 413, (path, answer.status_code)
