"""``POST /slack/interactions`` over a real SQLite store: clicks on the interactive
Acknowledge / Resolve buttons, signed with slack_sdk's real HMAC (nothing mocked), acting as
the owner whose Slack member id clicked; refused signatures change nothing; the reply goes to
the interaction's ``response_url`` (a FakeSlack server on loopback)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from slack_sdk.signature import SignatureVerifier

from driftowner.api import Runtime
from driftowner.configload import ConfigError, load_config
from tests.fakes.slack import SERVER_ERROR, FakeSlack
from tests.integration.app_harness import post_streamed, serving

pytestmark = pytest.mark.integration

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
OTHER_APP_SECRET = "0123456789abcdef0123456789abcdef"
ALICE_SLACK = "U024BE7LH"
BOB_SLACK = "U0BOB0001"
INCIDENT = "inc-slack"

CONFIG = """
server: {listen: "127.0.0.1:9587", external_url: "https://driftowner.test"}
storage: {url: "sqlite:///%s"}
sources: {sim: {type: demo}}
owners:
  alice: {name: Alice Chen, email: alice@example.com, slack: U024BE7LH}
  bob: {name: Bob Diaz, email: bob@example.com, slack: U0BOB0001}
  dana: {name: Dana Ito, email: dana@example.com}
channels:
  console: {type: log}
%s
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

SLACK_CHANNELS = """
  slack: {type: slack, webhook_url: "https://hooks.slack.com/services/T/B/X"}
  other-workspace: {type: slack, webhook_url: "https://hooks.slack.com/services/T/B/Y"}
"""


def make_api(
    tmp_path: Path, channels: str, environ: dict[str, str]
) -> Iterator[tuple[TestClient, Runtime]]:
    path = tmp_path / "driftowner.yaml"
    path.write_text(CONFIG % (tmp_path / "store.db", channels))
    with serving(load_config(path, environ=environ), INCIDENT) as served:
        yield served


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Runtime]]:
    """Two Slack apps (channels); only the first has a signing secret, from the environment
    like every secret."""
    yield from make_api(
        tmp_path,
        SLACK_CHANNELS,
        {"DRIFTOWNER_CHANNELS__SLACK__SIGNING_SECRET": SIGNING_SECRET},
    )


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    """Slack's side of an interaction's ``response_url``."""
    with FakeSlack(path="/actions/T0FAKE/1234567890/respOnseToken") as fake:
        yield fake


def click_body(
    action_id: str = "driftowner.ack",
    user: str = ALICE_SLACK,
    value: str = INCIDENT,
    response_url: str | None = None,
) -> bytes:
    """The form body Slack posts for a click on a message button (``block_actions``)."""
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user, "username": "someone", "team_id": "T0FAKE"},
        "api_app_id": "A0FAKE",
        "team": {"id": "T0FAKE", "domain": "example"},
        "container": {"type": "message", "message_ts": "1700000000.000100"},
        "channel": {"id": "C0FAKE", "name": "alerts"},
        "trigger_id": "123.456.abc",
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "b1",
                "text": {"type": "plain_text", "text": "Acknowledge"},
                "value": value,
                "action_ts": "1700000001.000200",
            }
        ],
    }
    if response_url is not None:
        payload["response_url"] = response_url
    return urlencode({"payload": json.dumps(payload)}).encode()


def signed(
    body: bytes, secret: str = SIGNING_SECRET, age: timedelta = timedelta(0)
) -> dict[str, str]:
    """Slack's signature headers for ``body``, made with slack_sdk's own HMAC."""
    timestamp = str(int(time.time() - age.total_seconds()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    assert signature is not None
    return {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }


def post(client: TestClient, body: bytes, headers: dict[str, str]) -> Any:
    return client.post("/slack/interactions", content=body, headers=headers)


def state(runtime: Runtime) -> str:
    incident = runtime.store.incident(INCIDENT)
    assert incident is not None
    return incident.state


def test_a_click_by_an_owner_acknowledges_and_a_second_is_told_nothing_to_do(
    api: tuple[TestClient, Runtime],
) -> None:
    """Alice's click on Acknowledge acks as alice, noted "via Slack", with an ephemeral reply
    naming her; the same click again is a friendly 200, not an error."""
    client, runtime = api
    body = click_body()
    answer = post(client, body, signed(body))
    assert answer.status_code == 200, answer.text
    reply = answer.json()
    assert reply["response_type"] == "ephemeral"
    assert reply["replace_original"] is False
    assert reply["text"].startswith("Acknowledged by Alice Chen")
    incident = runtime.store.incident(INCIDENT)
    assert incident is not None
    assert (incident.state, incident.acknowledged_by) == ("acknowledged", "alice")
    event = runtime.store.events(INCIDENT)[-1]
    assert (event.kind, event.actor, event.detail) == ("acknowledged", "alice", "via Slack")

    again = post(client, body, signed(body))
    assert again.status_code == 200
    assert again.json()["response_type"] == "ephemeral"
    assert "already acknowledged" in again.json()["text"]
    assert len(runtime.store.events(INCIDENT)) == 1


def test_resolve_by_another_owner_resolves(api: tuple[TestClient, Runtime]) -> None:
    """Bob's click on Resolve resolves as bob and says so; resolving again is nothing to do."""
    client, runtime = api
    body = click_body("driftowner.resolve", user=BOB_SLACK)
    answer = post(client, body, signed(body))
    assert answer.status_code == 200, answer.text
    assert answer.json()["text"].startswith("Resolved by Bob Diaz")
    incident = runtime.store.incident(INCIDENT)
    assert incident is not None
    assert (incident.state, incident.resolved_by) == ("resolved", "bob")
    assert runtime.store.events(INCIDENT)[-1].detail == "via Slack"
    again = post(client, body, signed(body))
    assert (again.status_code, "already resolved" in again.json()["text"]) == (200, True)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda b: signed(b, secret="not-the-signing-secret"), id="wrong-secret"),
        pytest.param(lambda b: signed(b, age=timedelta(minutes=10)), id="ten-minutes-old"),
        pytest.param(lambda b: signed(b, age=-timedelta(minutes=10)), id="from-the-future"),
        pytest.param(
            lambda b: {k: v for k, v in signed(b).items() if k != "X-Slack-Signature"},
            id="no-signature",
        ),
        pytest.param(
            lambda b: {k: v for k, v in signed(b).items() if k != "X-Slack-Request-Timestamp"},
            id="no-timestamp",
        ),
        pytest.param(lambda b: {**signed(b), "X-Slack-Request-Timestamp": "soon"}, id="bad-ts"),
        pytest.param(
            lambda b: {**signed(b), "X-Slack-Signature": "v0=café".encode()}, id="non-ascii"
        ),
        pytest.param(
            lambda b: signed(b.replace(b"inc-slack", b"inc-other")), id="signed-another-body"
        ),
    ],
)
def test_unsigned_stale_or_forged_requests_are_refused(
    api: tuple[TestClient, Runtime], headers: Any
) -> None:
    """A wrong, stale, missing or malformed signature: 401 and the incident unchanged."""
    client, runtime = api
    body = click_body()
    answer = post(client, body, headers(body))
    assert answer.status_code == 401, answer.text
    assert SIGNING_SECRET not in answer.text
    assert state(runtime) == "open"
    assert runtime.store.events(INCIDENT) == []


def test_an_unknown_slack_user_is_told_nothing_about_the_owners(
    api: tuple[TestClient, Runtime],
) -> None:
    """A click by a Slack member no owner has: 200 with an ephemeral explanation that names
    no owner (a stranger learns nobody's name), and nothing changes."""
    client, runtime = api
    body = click_body(user="U0STRANGER")
    answer = post(client, body, signed(body))
    assert answer.status_code == 200
    reply = answer.json()
    assert reply["response_type"] == "ephemeral"
    assert "Nothing changed" in reply["text"]
    for name in ("Alice", "Bob", "Dana", "alice", "bob", "dana"):
        assert name not in reply["text"]
    assert "U0STRANGER" in reply["text"]
    assert state(runtime) == "open"


@pytest.mark.parametrize("declare_length", [True, False])
def test_large_interaction_posts_get_413_without_the_body_being_read(
    api: tuple[TestClient, Runtime], declare_length: bool
) -> None:
    """Ten 50 MB POSTs: each answered 413 before the signature is checked; with a
    Content-Length none of the body is read, streamed reading stops within one chunk past
    the limit."""
    client, runtime = api
    for _ in range(10):
        status, pulled = post_streamed(
            client.app, "/slack/interactions", 50 << 20, declare_length=declare_length
        )
        assert status == 413
        assert pulled == 0 if declare_length else pulled <= 2 << 20
    assert state(runtime) == "open"


@pytest.mark.parametrize(
    "payload",
    [
        '{"type": "block_actions", "user": {"id": "\\ud800"}, "actions": []}',
        '{"type": "block_actions", "user": {"id": "U024BE7LH"}, '
        '"actions": [{"action_id": "driftowner.ack", "value": "inc-\\udfff"}]}',
        '{"type": "block_actions", "user": {"id": "U024BE7LH"}, '
        '"actions": [{"action_id": "driftowner.ack", "value": "%s"}]}' % ("i" * 500),
    ],
)
def test_a_payload_that_is_not_text_is_a_located_400(
    api: tuple[TestClient, Runtime], payload: str
) -> None:
    """A signed payload whose user id or incident id holds a lone surrogate, or is over-long:
    400 naming the payload field, never a 500; nothing changes."""
    client, runtime = api
    body = urlencode({"payload": payload}).encode()
    answer = post(client, body, signed(body))
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"][0]["loc"][:2] == ["body", "payload"]
    assert state(runtime) == "open"


def test_other_clicks_and_interactions_are_acknowledged_and_ignored(
    api: tuple[TestClient, Runtime],
) -> None:
    """Slack also reports clicks on URL buttons (Open incident) and other interaction types:
    200, nothing changes. An unknown incident is a friendly reply; a body without a payload is
    a 400 naming the field."""
    client, runtime = api
    for body in (
        click_body("driftowner_incident"),
        urlencode({"payload": json.dumps({"type": "view_closed", "user": {"id": "U1"}})}).encode(),
    ):
        answer = post(client, body, signed(body))
        assert (answer.status_code, answer.json()) == (200, {})
    body = click_body(value="inc-nope")
    answer = post(client, body, signed(body))
    assert answer.status_code == 200
    assert "no incident inc-nope" in answer.json()["text"]
    body = b"nothing=here"
    answer = post(client, body, signed(body))
    assert answer.status_code == 400
    assert answer.json()["detail"][0]["loc"] == ["body", "payload"]
    assert state(runtime) == "open"


def test_the_reply_goes_to_the_response_url(
    api: tuple[TestClient, Runtime], slack: FakeSlack
) -> None:
    """Slack ignores the body of a block_actions response; the ephemeral reply is posted to
    the interaction's response_url, which Slack accepts."""
    client, runtime = api
    body = click_body(response_url=slack.url)
    answer = post(client, body, signed(body))
    assert answer.status_code == 200
    [posted] = slack.wait_for(1)
    assert posted == answer.json()
    assert posted["response_type"] == "ephemeral"
    assert posted["text"].startswith("Acknowledged by Alice Chen")
    assert slack.requests[0].headers["Content-Type"] == "application/json"
    assert state(runtime) == "acknowledged"


def test_a_failing_response_url_does_not_undo_the_click(
    api: tuple[TestClient, Runtime], slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    """Slack refusing the reply is logged, without the URL or the secret; the ack stands."""
    client, runtime = api
    slack.answer_next(SERVER_ERROR)
    body = click_body(response_url=slack.url)
    with caplog.at_level(logging.DEBUG):
        answer = post(client, body, signed(body))
        deadline = time.monotonic() + 5
        while not slack.requests and time.monotonic() < deadline:
            time.sleep(0.01)
    assert answer.status_code == 200
    assert state(runtime) == "acknowledged"
    assert [r.reply.status for r in slack.requests] == [500]
    # driftowner's own lines (the daemon keeps httpx's request log, which names URLs, at
    # WARNING).
    ours = [r for r in caplog.records if r.name.startswith("driftowner")]
    assert any("HTTP 500" in r.getMessage() for r in ours)
    logged = "\n".join(record.getMessage() for record in ours)
    assert "respOnseToken" not in logged
    assert SIGNING_SECRET not in logged


def test_a_second_slack_app_secret_also_verifies(tmp_path: Path) -> None:
    """Each slack channel may be its own Slack app: any configured secret verifies; the
    secret may come from the secrets directory."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "driftowner_channels__other-workspace__signing_secret").write_text(OTHER_APP_SECRET)
    path = tmp_path / "driftowner.yaml"
    path.write_text(CONFIG % (tmp_path / "store.db", SLACK_CHANNELS))
    config = load_config(path, environ={}, secrets_dir=secrets)
    secret = config.channels["other-workspace"].signing_secret  # type: ignore[union-attr]
    assert secret is not None and secret.get_secret_value() == OTHER_APP_SECRET
    apps = make_api(
        tmp_path,
        SLACK_CHANNELS,
        {
            "DRIFTOWNER_CHANNELS__SLACK__SIGNING_SECRET": SIGNING_SECRET,
            "DRIFTOWNER_CHANNELS__OTHER-WORKSPACE__SIGNING_SECRET": OTHER_APP_SECRET,
        },
    )
    client, runtime = next(apps)
    try:
        body = click_body()
        assert post(client, body, signed(body, secret=OTHER_APP_SECRET)).status_code == 200
        assert state(runtime) == "acknowledged"
    finally:
        apps.close()


def test_interactivity_not_configured_is_404(tmp_path: Path) -> None:
    """Without any signing secret the endpoint does not exist: 404 saying why."""
    apps = make_api(tmp_path, SLACK_CHANNELS, {})
    client, runtime = next(apps)
    try:
        body = click_body()
        answer = post(client, body, signed(body))
        assert answer.status_code == 404
        assert "not configured" in answer.json()["detail"]
        assert state(runtime) == "open"
    finally:
        apps.close()


def test_a_blank_signing_secret_is_a_config_error(tmp_path: Path) -> None:
    """An empty signing secret is refused with its YAML path, never taken as "no secret"."""
    path = tmp_path / "driftowner.yaml"
    path.write_text(CONFIG % (tmp_path / "store.db", SLACK_CHANNELS))
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={"DRIFTOWNER_CHANNELS__SLACK__SIGNING_SECRET": "  "})
    assert "channels.slack.signing_secret" in str(raised.value)
