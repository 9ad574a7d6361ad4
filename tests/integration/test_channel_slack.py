"""The Slack channel against a fake Slack incoming webhook on loopback (FakeSlack), plus
respx for transport failures a real server cannot easily produce."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from driftowner.channels import build_channel
from driftowner.channels.slack import SlackWebhookChannel, build_payload
from driftowner.config import SlackChannelConfig
from driftowner.model import Delivery, Evidence
from tests.fakes.slack import (
    ACTION_PROHIBITED,
    CHANNEL_IS_ARCHIVED,
    CHANNEL_NOT_FOUND,
    INVALID_PAYLOAD,
    NO_SERVICE,
    SERVER_ERROR,
    FakeSlack,
    Reply,
    rate_limited,
)
from tests.unit import factories

pytestmark = pytest.mark.integration

ACK = "https://driftowner.example.com/a/ack-token"
RESOLVE = "https://driftowner.example.com/a/resolve-token"
INCIDENT = "https://driftowner.example.com/incidents/inc-42"


notification = factories.slack_notification


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def channel_for(slack: FakeSlack) -> SlackWebhookChannel:
    return SlackWebhookChannel("slack", SecretStr(slack.url), timeout=timedelta(seconds=5))


def all_text(payload: dict[str, Any]) -> str:
    """Every string anywhere in the payload, for "does it mention X" checks."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            found.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(payload)
    return "\n".join(found)


def buttons(payload: dict[str, Any]) -> dict[str, str]:
    return {
        element["text"]["text"]: element["url"]
        for block in payload["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    }


async def test_delivered_message_names_everything_and_carries_buttons(slack: FakeSlack) -> None:
    """Slack accepts the Block Kit message; it names system, owner, layers, evidence, step and
    age, mentions the member, and offers Acknowledge / Resolve / Open incident buttons."""
    sent = notification(
        purpose="escalated",
        system="fraud-scoring",
        owner_name="Alice Chen",
        layers=("model", "business"),
        summary="accuracy fine, adoption falling",
        evidence=(
            Evidence("accuracy", "model", "ok", "0.95 >= min 0.90"),
            Evidence("adoption", "business", "degraded", "0.41, 38% below baseline 0.66"),
        ),
        age_seconds=16 * 60 + 3,
        step=2,
        runbook="https://wiki.example.com/fraud-scoring",
        incident_url=INCIDENT,
        ack_url=ACK,
        resolve_url=RESOLVE,
    )
    channel = channel_for(slack)
    try:
        delivery = await channel.send(sent)
    finally:
        await channel.aclose()
    assert delivery == Delivery.delivered(), slack.rejections
    [payload] = slack.received
    text = all_text(payload)
    for needle in (
        "fraud-scoring",
        "Alice Chen",
        "model, business",
        "accuracy (model): ok — 0.95 &gt;= min 0.90",
        "adoption (business): degraded — 0.41, 38% below baseline 0.66",
        "step 2",
        "16m 3s",
        "accuracy fine, adoption falling",
        "https://wiki.example.com/fraud-scoring",
        "inc-42",
    ):
        assert needle in text, needle
    assert payload["text"].startswith("<@U024BE7LH> ")
    assert "<@U024BE7LH>" in payload["blocks"][1]["text"]["text"]
    header = payload["blocks"][0]
    assert (header["type"], header["text"]["text"]) == ("header", "ESCALATED fraud-scoring")
    assert buttons(payload) == {"Acknowledge": ACK, "Resolve": RESOLVE, "Open incident": INCIDENT}
    request = slack.requests[0]
    assert request.headers["Content-Type"] == "application/json"


def action_elements(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        element
        for block in payload["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    ]


async def test_interactive_buttons_carry_the_incident_id(slack: FakeSlack) -> None:
    """A channel whose Slack app has a signing secret sends Acknowledge / Resolve as
    interactive buttons (action_id, value = incident id, no URL) for ``/slack/interactions``;
    Open incident stays a link; Slack accepts the message."""
    channel = SlackWebhookChannel(
        "slack", SecretStr(slack.url), timeout=timedelta(seconds=5), interactive=True
    )
    try:
        delivery = await channel.send(
            notification(incident_url=INCIDENT, ack_url=ACK, resolve_url=RESOLVE)
        )
    finally:
        await channel.aclose()
    assert delivery == Delivery.delivered(), slack.rejections
    [payload] = slack.received
    elements = action_elements(payload)
    assert [
        (e["text"]["text"], e.get("action_id"), e.get("value"), e.get("url")) for e in elements
    ] == [
        ("Acknowledge", "driftowner.ack", "inc-42", None),
        ("Resolve", "driftowner.resolve", "inc-42", None),
        ("Open incident", "driftowner_incident", None, INCIDENT),
    ]
    assert elements[0]["style"] == "primary"
    assert ACK not in all_text(payload) and RESOLVE not in all_text(payload)


async def test_without_a_signing_secret_the_buttons_are_signed_links(slack: FakeSlack) -> None:
    """The default (no signing secret): Acknowledge / Resolve open the signed one-click links
    and carry no value."""
    channel = channel_for(slack)
    await channel.send(notification(incident_url=INCIDENT, ack_url=ACK, resolve_url=RESOLVE))
    await channel.aclose()
    elements = action_elements(slack.received[0])
    assert [(e.get("action_id"), e.get("value"), e.get("url")) for e in elements] == [
        ("driftowner_ack", None, ACK),
        ("driftowner_resolve", None, RESOLVE),
        ("driftowner_incident", None, INCIDENT),
    ]


def test_interactive_buttons_do_not_need_links() -> None:
    """Interactive buttons act by incident id, so they are there even when the message has no
    signed links (no ``server.external_url``)."""
    payload = build_payload(
        notification(ack_url=None, resolve_url=None, incident_url=None), interactive=True
    )
    assert [e["action_id"] for e in action_elements(payload)] == [
        "driftowner.ack",
        "driftowner.resolve",
    ]


def test_an_informed_team_gets_no_interactive_action_buttons() -> None:
    """A contributor team's FYI is not a page: no interactive Acknowledge / Resolve, only the
    incident link."""
    payload = build_payload(
        notification(address="#ml-fraud", purpose="informed", ack_url=None, resolve_url=None),
        interactive=True,
    )
    assert [e["action_id"] for e in action_elements(payload)] == ["driftowner_incident"]


async def test_channel_address_is_named_not_mentioned(slack: FakeSlack) -> None:
    """A team's ``#channel`` address is named in the message, without a member mention."""
    channel = channel_for(slack)
    await channel.send(notification(address="#ml-fraud", purpose="informed", state="open", step=0))
    await channel.aclose()
    [payload] = slack.received
    assert payload["text"].startswith("#ml-fraud ")
    assert "<@" not in all_text(payload)
    assert "FYI OPEN" in payload["text"]


async def test_buttons_only_for_links_that_are_set(slack: FakeSlack) -> None:
    """A message without links has no actions block (an empty one would be invalid_blocks)."""
    channel = channel_for(slack)
    delivery = await channel.send(notification(ack_url=None, resolve_url=None, incident_url=None))
    await channel.aclose()
    assert delivery.ok, slack.rejections
    assert [b for b in slack.received[0]["blocks"] if b["type"] == "actions"] == []


async def test_hostile_text_cannot_ping_everyone_or_forge_links(slack: FakeSlack) -> None:
    """Summary and evidence are escaped for mrkdwn: ``<!channel>`` and ``<url|label>`` stay
    literal text."""
    channel = channel_for(slack)
    await channel.send(
        notification(
            summary="<!channel> look",
            evidence=(Evidence("accuracy", "model", "degraded", "<https://evil.example|click>"),),
        )
    )
    await channel.aclose()
    text = all_text(slack.received[0])
    assert "<!channel>" not in text
    assert "<https://evil.example" not in text
    assert "&lt;!channel&gt; look" in text


async def test_oversized_content_is_clipped_to_block_kit_limits(slack: FakeSlack) -> None:
    """Huge summaries and many evidence lines still produce a message Slack accepts."""
    channel = channel_for(slack)
    delivery = await channel.send(
        notification(
            system="s" * 400,
            summary="x" * 5000,
            evidence=tuple(
                Evidence(f"signal-{i}", "model", "degraded", "y" * 100) for i in range(200)
            ),
        )
    )
    await channel.aclose()
    assert delivery.ok, slack.rejections


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (INVALID_PAYLOAD, "invalid_payload"),
        (ACTION_PROHIBITED, "action_prohibited"),
        (NO_SERVICE, "no_service"),
        (CHANNEL_NOT_FOUND, "channel_not_found"),
        (CHANNEL_IS_ARCHIVED, "channel_is_archived"),
        (Reply(400, "user_not_found"), "user_not_found"),
    ],
)
async def test_permanent_slack_errors_give_up_with_slacks_error(
    slack: FakeSlack, reply: Reply, error: str
) -> None:
    """400/403/404/410 answers cannot succeed on retry: give up, quoting Slack's error."""
    slack.answer_next(reply)
    channel = channel_for(slack)
    delivery = await channel.send(notification())
    await channel.aclose()
    assert not delivery.ok
    assert not delivery.recoverable
    assert error in delivery.detail
    assert str(reply.status) in delivery.detail
    assert slack.received == []


async def test_rate_limit_is_retried_after_slacks_delay(slack: FakeSlack) -> None:
    """429 is retried, with Slack's Retry-After passed on for the outbox's backoff."""
    slack.answer_next(rate_limited(42))
    channel = channel_for(slack)
    delivery = await channel.send(notification())
    assert delivery.recoverable
    assert delivery.retry_after == 42
    assert "429" in delivery.detail
    # The next attempt goes through.
    assert await channel.send(notification()) == Delivery.delivered()
    await channel.aclose()
    assert len(slack.received) == 1


async def test_server_error_is_retried(slack: FakeSlack) -> None:
    """5xx (``rollup_error``) is Slack's trouble, not ours: retry."""
    slack.answer_next(SERVER_ERROR)
    channel = channel_for(slack)
    delivery = await channel.send(notification())
    await channel.aclose()
    assert delivery.recoverable
    assert "500 rollup_error" in delivery.detail


async def test_removed_webhook_path_gives_up(slack: FakeSlack) -> None:
    """Posting to a webhook that does not exist (another path) is no_service: give up."""
    channel = SlackWebhookChannel(
        "slack", SecretStr(slack.url + "gone"), timeout=timedelta(seconds=5)
    )
    delivery = await channel.send(notification())
    await channel.aclose()
    assert not delivery.recoverable
    assert "no_service" in delivery.detail


async def test_webhook_url_never_appears_in_any_detail(slack: FakeSlack) -> None:
    """Whatever goes wrong, the secret webhook URL (and its token path) stays out of details,
    even when the server echoes it back."""
    echo = Reply(404, f"no_service for {slack.url}")
    slack.answer_next(echo)
    slack.answer_next(SERVER_ERROR)
    slack.answer_next(rate_limited(1))
    slack.answer_next(INVALID_PAYLOAD)
    channel = channel_for(slack)
    details = [(await channel.send(notification())).detail for _ in range(4)]
    await channel.aclose()
    for detail in details:
        assert slack.url not in detail
        assert slack.path not in detail
        assert "fakeSecretToken123" not in detail


async def test_slow_slack_is_a_retry_not_a_hang(slack: FakeSlack) -> None:
    """A Slack that does not answer within the timeout is retried later."""
    slack.answer_next(Reply(200, "ok", delay=1.0))
    channel = SlackWebhookChannel("slack", SecretStr(slack.url), timeout=timedelta(seconds=0.2))
    delivery = await channel.send(notification())
    await channel.aclose()
    assert delivery.recoverable
    assert "0.2s" in delivery.detail


async def test_fake_slack_refuses_what_slack_refuses(slack: FakeSlack) -> None:
    """The fake validates like Slack: no text, unknown block types, >50 blocks, bad JSON."""
    async with httpx.AsyncClient() as client:
        cases: list[tuple[Any, int, str]] = [
            ({}, 400, "no_text"),
            ({"text": "hi", "blocks": [{"type": "banner"}]}, 400, "invalid_blocks"),
            ({"blocks": ["not an object"]}, 400, "invalid_blocks"),
            ({"blocks": [{"type": "divider"}] * 51}, 400, "invalid_payload"),
            (
                {"blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}]},
                400,
                "invalid_blocks",
            ),
            ({"text": "hello"}, 200, "ok"),
        ]
        for body, status, answer in cases:
            response = await client.post(slack.url, json=body)
            assert (response.status_code, response.text) == (status, answer), body
        response = await client.post(
            slack.url, content=b"{nope", headers={"Content-Type": "application/json"}
        )
        assert (response.status_code, response.text) == (400, "invalid_payload")
    assert slack.received == [{"text": "hello"}]


async def test_fake_slack_scripts_a_number_of_replies(slack: FakeSlack) -> None:
    """``answer_next(reply, times=n)`` answers exactly the next n requests, then validates."""
    slack.answer_next(SERVER_ERROR, times=2)
    channel = channel_for(slack)
    outcomes = [(await channel.send(notification())).ok for _ in range(3)]
    await channel.aclose()
    assert outcomes == [False, False, True]
    assert [r.reply.status for r in slack.requests] == [500, 500, 200]
    assert slack.wait_for(1, timeout=1)[0]["blocks"]


def test_payload_is_built_with_slack_sdk_models() -> None:
    """The payload is plain JSON produced by slack_sdk's block models (no hand-written
    dicts), with a text fallback."""
    payload = build_payload(notification())
    assert json.loads(json.dumps(payload)) == payload
    assert [b["type"] for b in payload["blocks"]] == [
        "header",
        "section",
        "section",
        "section",
        "actions",
        "context",
    ]
    assert payload["text"]


def test_build_channel_makes_a_slack_channel_without_io() -> None:
    """``build_channel`` maps a ``slack`` config to the webhook channel; nothing is opened."""
    config = SlackChannelConfig(type="slack", webhook_url=SecretStr("https://hooks.invalid/x"))
    channel = build_channel("slack", config)
    assert isinstance(channel, SlackWebhookChannel)
    assert channel._http is None


# -- transport edge cases (respx) ------------------------------------------------------------

SECRET_URL = "https://hooks.slack.com/services/T000/B000/SECRETxyz"


@pytest.mark.parametrize(
    ("error", "name"),
    [
        (httpx.ConnectTimeout("timed out connecting"), "ConnectTimeout"),
        (httpx.ReadTimeout("timed out reading"), "ReadTimeout"),
        (httpx.ReadError("[Errno 104] Connection reset by peer"), "ReadError"),
        (httpx.ConnectError(f"cannot connect to {SECRET_URL}"), "ConnectError"),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), "Remote"),
    ],
)
async def test_transport_failures_are_retried_without_leaking_the_url(
    error: Exception, name: str
) -> None:
    """Timeouts, resets and refused connections are retried; the URL is redacted even when
    the exception's message carries it."""
    router = respx.MockRouter(assert_all_called=True)
    router.post(SECRET_URL).mock(side_effect=error)
    channel = SlackWebhookChannel(
        "slack",
        SecretStr(SECRET_URL),
        timeout=timedelta(seconds=3),
        transport=httpx.MockTransport(router.handler),
    )
    delivery = await channel.send(notification())
    await channel.aclose()
    assert delivery.recoverable
    assert name in delivery.detail
    assert "SECRETxyz" not in delivery.detail
    assert "\n" not in delivery.detail


async def test_retry_after_as_http_date_is_understood() -> None:
    """A Retry-After given as an HTTP date becomes a delay in seconds."""
    later = datetime.now(UTC) + timedelta(seconds=120)
    header = later.strftime("%a, %d %b %Y %H:%M:%S GMT")
    router = respx.MockRouter(assert_all_called=True)
    router.post(SECRET_URL).mock(
        return_value=httpx.Response(429, text="rate_limited", headers={"Retry-After": header})
    )
    channel = SlackWebhookChannel(
        "slack",
        SecretStr(SECRET_URL),
        timeout=timedelta(seconds=3),
        transport=httpx.MockTransport(router.handler),
    )
    delivery = await channel.send(notification())
    await channel.aclose()
    assert delivery.retry_after is not None
    assert 100 < delivery.retry_after <= 120


async def test_unusable_webhook_url_gives_up() -> None:
    """A webhook URL that is not http(s) can never work: give up, without quoting it."""
    channel = SlackWebhookChannel(
        "slack", SecretStr("ftp://hooks.example/SECRETxyz"), timeout=timedelta(seconds=1)
    )
    delivery = await channel.send(notification())
    await channel.aclose()
    assert not delivery.recoverable
    assert "SECRETxyz" not in delivery.detail


async def test_transport_is_swappable_with_mock_transport() -> None:
    """Tests (and the e2e suite) can hand the channel an httpx MockTransport."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="ok")

    channel = SlackWebhookChannel(
        "slack",
        SecretStr(SECRET_URL),
        timeout=timedelta(seconds=1),
        transport=httpx.MockTransport(handler),
    )
    assert await channel.send(notification()) == Delivery.delivered()
    await channel.aclose()
    assert json.loads(seen[0].content)["blocks"]


async def test_a_slack_channel_with_a_signing_secret_is_built_interactive() -> None:
    """The config decides: with a signing secret, build_channel's Slack channel sends
    interactive Acknowledge/Resolve buttons (action_id, incident id as value); without one
    they stay signed URL buttons."""
    from driftowner.channels import build_channel
    from driftowner.channels.slack import ACK_ACTION
    from driftowner.config import SlackChannelConfig

    with FakeSlack() as slack:
        plain = SlackChannelConfig.model_validate({"type": "slack", "webhook_url": slack.url})
        signed = plain.model_copy(update={"signing_secret": SecretStr("s3cret")})
        for config in (plain, signed):
            channel = build_channel("slack", config)
            try:
                assert (await channel.send(notification())).ok
            finally:
                await channel.aclose()
        url_buttons, interactive_buttons = (
            [e for b in payload["blocks"] if b["type"] == "actions" for e in b["elements"]]
            for payload in slack.wait_for(2)
        )
    assert ACK_ACTION not in {b.get("action_id") for b in url_buttons}
    assert all("url" in b for b in url_buttons)
    ack = next(b for b in interactive_buttons if b.get("action_id") == ACK_ACTION)
    assert "url" not in ack and ack["value"] == notification().incident_id


async def test_a_group_of_300_lists_the_first_40_within_slacks_limits(slack: FakeSlack) -> None:
    """A group of 300 notifications to one member is one message the webhook accepts: at
    most 50 blocks, the summary in the header, the first 40 incidents each with its own
    acknowledge link, and "and 260 more — see the status page"."""
    members = [
        dataclasses.replace(
            notification(
                system=f"model-{i:03d}",
                upstreams=("features-v3",),
                ack_url=f"https://driftowner.example.com/a/ack-{i}",
            ),
            id=f"notif-{i}",
        )
        for i in range(300)
    ]
    channel = channel_for(slack)
    try:
        delivery = await channel.send_group(members)
    finally:
        await channel.aclose()
    assert delivery.ok, slack.rejections
    [payload] = slack.received
    assert len(payload["blocks"]) <= 50
    assert payload["blocks"][0]["text"]["text"].startswith("300 systems fed by features-v3")
    text = all_text(payload)
    for i in range(40):
        assert f"model-{i:03d}" in text and f"https://driftowner.example.com/a/ack-{i}|" in text
    assert "model-040" not in text
    assert "and 260 more — see the status page" in text
    assert "<@U024BE7LH>" in payload["text"]
