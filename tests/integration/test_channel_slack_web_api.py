"""The Slack channel in Web API mode (a bot token, ``chat.postMessage``) against FakeSlack's
Web API on loopback: where messages land, how Slack's answers map to deliveries, and that the
token stays secret.

slack_sdk's ``AsyncWebClient`` speaks aiohttp, which respx (an httpx mock) cannot intercept:
transport failures are produced by real loopback sockets instead (a server that never
answers, one that resets the connection, a port nobody listens on)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from driftowner.channels import build_channel
from driftowner.channels.slack import SlackWebApiChannel, SlackWebhookChannel
from driftowner.config import SlackChannelConfig
from driftowner.model import Delivery, Notification
from tests.fakes.slack import (
    SERVER_ERROR,
    FakeSlack,
    Reply,
    api_error,
    api_rate_limited,
    api_reply,
)
from tests.unit import factories

pytestmark = pytest.mark.integration


notification = factories.slack_notification


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def api_channel(slack: FakeSlack, *, timeout: float = 5, token: str | None = None) -> Any:
    return SlackWebApiChannel(
        "slack",
        SecretStr(token or slack.token),
        api_url=slack.api_url,
        timeout=timedelta(seconds=timeout),
    )


async def send_once(channel: SlackWebApiChannel, note: Notification) -> Delivery:
    try:
        return await channel.send(note)
    finally:
        await channel.aclose()


# -- where messages land ---------------------------------------------------------------------


async def test_a_member_id_is_posted_as_a_dm(slack: FakeSlack) -> None:
    """An owner's member id is the ``channel`` of chat.postMessage (Slack opens the DM)."""
    delivery = await send_once(api_channel(slack), notification("U024BE7LH"))
    (posted,) = slack.posted
    assert delivery.ok, slack.rejections
    assert delivery.ref is not None and delivery.ref.startswith("D024BE7LH:")
    assert posted["channel"] == "U024BE7LH"
    assert posted["blocks"][0]["type"] == "header"
    assert posted["text"]
    assert slack.received == []  # nothing went to the webhook


async def test_a_team_channel_name_is_posted_to_that_channel(slack: FakeSlack) -> None:
    """A team's ``slack_channel`` (``#ml-fraud``) or a conversation id is where the message
    lands, not merely named in the text."""
    channel = api_channel(slack)
    assert (await channel.send(notification("#ml-fraud"))).ok
    assert (await channel.send(notification("C0FRAUD01"))).ok
    await channel.aclose()
    assert [p["channel"] for p in slack.posted] == ["#ml-fraud", "C0FRAUD01"]


async def test_the_bot_token_is_sent_as_a_bearer_header(slack: FakeSlack) -> None:
    """The call carries ``Authorization: Bearer <token>`` to ``<api_url>chat.postMessage``."""
    assert (await send_once(api_channel(slack), notification())).ok
    (request,) = slack.requests
    assert request.path == "/api/chat.postMessage"
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["authorization"] == f"Bearer {slack.token}"


async def test_blocks_and_text_are_the_same_as_the_webhooks(slack: FakeSlack) -> None:
    """Web API mode sends exactly the webhook's Block Kit blocks and text fallback, in both
    the URL-button and the interactive variant."""
    for interactive in (False, True):
        slack.reset()
        hook = SlackWebhookChannel(
            "slack", SecretStr(slack.url), timeout=timedelta(seconds=5), interactive=interactive
        )
        api = SlackWebApiChannel(
            "slack",
            SecretStr(slack.token),
            api_url=slack.api_url,
            timeout=timedelta(seconds=5),
            interactive=interactive,
        )
        for channel in (hook, api):
            assert (await channel.send(notification())).ok, slack.rejections
            await channel.aclose()
        (webhook_payload,) = slack.received
        (posted,) = slack.posted
        assert posted["blocks"] == webhook_payload["blocks"]
        assert posted["text"] == webhook_payload["text"]


# -- Slack's answers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "error"),
    [
        ("#no-such-team", "channel_not_found"),
        ("U0NOBODY1", "channel_not_found"),
        ("#private-team", "not_in_channel"),
        ("#old-team", "is_archived"),
    ],
)
async def test_unreachable_addresses_give_up_with_slacks_error(
    slack: FakeSlack, address: str, error: str
) -> None:
    """Unknown channels and members, channels the bot is not in and archived channels are
    answered ``ok: false`` by the fake's own checks: give up, naming the error."""
    delivery = await send_once(api_channel(slack), notification(address))
    assert not delivery.ok and not delivery.recoverable
    assert error in delivery.detail
    assert slack.posted == []


async def test_a_wrong_token_gives_up_with_invalid_auth(slack: FakeSlack) -> None:
    """A token Slack does not know is ``invalid_auth``: give up; retrying cannot help."""
    delivery = await send_once(api_channel(slack, token="xoxb-wrong-token"), notification())
    assert not delivery.recoverable
    assert "invalid_auth" in delivery.detail


@pytest.mark.parametrize(
    "error",
    [
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "missing_scope",
        "invalid_blocks",
        "msg_too_long",
        "no_text",
        "some_error_slack_invents_tomorrow",
    ],
)
async def test_permanent_api_errors_give_up(slack: FakeSlack, error: str) -> None:
    """Every ``ok: false`` error that a retry cannot fix, unknown ones included, gives up
    with the error in the detail."""
    slack.answer_next(api_error(error))
    delivery = await send_once(api_channel(slack), notification())
    assert not delivery.ok and not delivery.recoverable
    assert error in delivery.detail
    assert delivery.detail.startswith("slack: chat.postMessage")


async def test_rate_limit_is_retried_after_slacks_delay(slack: FakeSlack) -> None:
    """HTTP 429 ``ratelimited`` is retried with Slack's Retry-After; the next try lands."""
    slack.answer_next(api_rate_limited(42))
    channel = api_channel(slack)
    delivery = await channel.send(notification())
    assert delivery.recoverable
    assert delivery.retry_after == 42
    assert "ratelimited" in delivery.detail
    assert (await channel.send(notification())).ok
    await channel.aclose()
    assert len(slack.posted) == 1
    assert len(slack.requests) == 2  # the client itself did not retry behind our back


async def test_ratelimited_error_without_429_is_retried(slack: FakeSlack) -> None:
    """``ok: false, error: ratelimited`` is retried even when the status is 200."""
    slack.answer_next(api_error("ratelimited"))
    delivery = await send_once(api_channel(slack), notification())
    assert delivery.recoverable


@pytest.mark.parametrize(
    "reply",
    [
        SERVER_ERROR,  # an HTML 500, no JSON
        api_reply({"ok": False, "error": "fatal_error"}, 500),
        Reply(503, "<html>unavailable</html>"),
        api_error("internal_error"),
        api_error("service_unavailable"),
    ],
)
async def test_slack_side_trouble_is_retried(slack: FakeSlack, reply: Reply) -> None:
    """5xx answers (JSON or not) and Slack's own transient errors are retried."""
    slack.answer_next(reply)
    delivery = await send_once(api_channel(slack), notification())
    assert delivery.recoverable, delivery


async def test_the_fake_checks_blocks_like_the_webhook(slack: FakeSlack) -> None:
    """The fake's Web API applies the same Block Kit rules: a bad block is invalid_blocks,
    an empty message no_text, a huge text msg_too_long, a missing channel channel_not_found."""
    import httpx

    auth = {"Authorization": f"Bearer {slack.token}"}
    url = slack.api_url + "chat.postMessage"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"channel": "#ml-fraud", "text": "x", "blocks": [{"type": "banner"}]}, "invalid_blocks"),
        ({"channel": "#ml-fraud"}, "no_text"),
        ({"channel": "#ml-fraud", "text": "x" * 40_001}, "msg_too_long"),
        ({"text": "hello"}, "channel_not_found"),
    ]
    async with httpx.AsyncClient() as client:
        for body, error in cases:
            answer = (await client.post(url, json=body, headers=auth)).json()
            assert answer == {"ok": False, "error": error}, body
        answer = (await client.post(url, json={"channel": "ml-fraud", "text": "hi"})).json()
        assert answer == {"ok": False, "error": "not_authed"}
        answer = (
            await client.post(url, json={"channel": "ml-fraud", "text": "hi"}, headers=auth)
        ).json()
        assert answer["ok"] is True
    assert slack.posted == [{"channel": "ml-fraud", "text": "hi"}]


# -- secrets ---------------------------------------------------------------------------------


async def test_the_token_never_appears_in_any_detail(slack: FakeSlack) -> None:
    """Whatever goes wrong, even when Slack echoes the token back, details show ``***``."""
    token = slack.token
    slack.answer_next(api_error(f"invalid_auth:{token}"))
    slack.answer_next(api_reply({"ok": False, "error": f"fatal {token}"}, 500))
    slack.answer_next(Reply(500, f"<html>{token}</html>"))
    slack.answer_next(api_rate_limited(1))
    slack.answer_next(api_error("token_revoked"))
    slack.answer_next(Reply(200, "ok", delay=1.0))
    channel = api_channel(slack, timeout=0.3)
    details = [(await channel.send(notification())).detail for _ in range(6)]
    await channel.aclose()
    wrong = api_channel(slack, token="xoxb-another-secret-token")
    details.append((await wrong.send(notification())).detail)
    await wrong.aclose()
    for detail in details:
        assert detail
        assert token not in detail
        assert "fakeBotToken" not in detail
        assert "another-secret" not in detail
    assert "***" in details[0]


# -- transport -------------------------------------------------------------------------------


async def test_slow_slack_is_a_retry_not_a_hang(slack: FakeSlack) -> None:
    """A Web API that does not answer within the timeout is retried later."""
    slack.answer_next(Reply(200, "ok", delay=1.0))
    delivery = await send_once(api_channel(slack, timeout=0.2), notification())
    assert delivery.recoverable
    assert "0.2s" in delivery.detail


@pytest.fixture
def resetting_server() -> Iterator[str]:
    """A loopback server that accepts each connection, reads the request, and resets it
    (RST) without answering."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            try:
                conn.settimeout(2)
                conn.recv(65536)
            except OSError:
                pass
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/api/"
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()


async def test_a_connection_reset_is_retried(resetting_server: str) -> None:
    """A connection reset by Slack (or a proxy) is transport trouble: retry."""
    channel = SlackWebApiChannel(
        "slack",
        SecretStr("xoxb-reset-secret"),
        api_url=resetting_server,
        timeout=timedelta(seconds=3),
    )
    delivery = await send_once(channel, notification())
    assert delivery.recoverable, delivery
    assert "reset-secret" not in delivery.detail


async def test_nobody_listening_is_retried() -> None:
    """A refused connection (Slack or the proxy down) is retried."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
    channel = SlackWebApiChannel(
        "slack",
        SecretStr("xoxb-refused-secret"),
        api_url=f"http://127.0.0.1:{port}/api/",
        timeout=timedelta(seconds=3),
    )
    delivery = await send_once(channel, notification())
    assert delivery.recoverable, delivery
    assert "refused-secret" not in delivery.detail


# -- config and wiring -----------------------------------------------------------------------


async def test_build_channel_makes_a_web_api_channel_without_io(slack: FakeSlack) -> None:
    """A slack config with a token becomes the Web API channel, opening nothing until the
    first send; a signing secret makes its buttons interactive, as in webhook mode."""
    config = SlackChannelConfig.model_validate(
        {"type": "slack", "token": slack.token, "api_url": slack.api_url, "signing_secret": "s"}
    )
    channel = build_channel("slack", config)
    assert isinstance(channel, SlackWebApiChannel)
    assert channel._session is None and channel._web is None
    assert channel.interactive
    assert (await send_once(channel, notification("#ml-fraud"))).ok
    assert channel._session is None  # aclose closed it
    actions = [b for b in slack.posted[0]["blocks"] if b["type"] == "actions"]
    assert actions[0]["elements"][0]["action_id"] == "driftowner.ack"


def test_api_url_defaults_to_slack_and_gains_a_trailing_slash() -> None:
    """Without ``api_url`` the channel talks to https://slack.com/api/; a given one is
    normalised to end with ``/``."""
    plain = SlackChannelConfig.model_validate({"type": "slack", "token": "xoxb-1"})
    assert plain.api_url == "https://slack.com/api/"
    proxied = SlackChannelConfig.model_validate(
        {"type": "slack", "token": "xoxb-1", "api_url": "https://proxy.example/slack/api"}
    )
    assert proxied.api_url == "https://proxy.example/slack/api/"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"webhook_url": "https://hooks.slack.com/services/T/B/X", "token": "xoxb-1"},
            "not both",
        ),
        ({}, "neither is set"),
        ({"token": "   "}, "must not be empty"),
        ({"token": "hunter2"}, "not a Slack token"),
        ({"token": "xoxb-1", "api_url": "slack.com/api"}, "http(s) URL"),
    ],
)
def test_config_wants_exactly_one_of_webhook_url_and_token(
    section: dict[str, str], message: str
) -> None:
    """Both or neither of webhook_url and token, a blank or foreign token, and an api_url that is
    not http(s) are refused with a message saying what to fix (the text the config loader
    shows, which never echoes the token)."""
    with pytest.raises(ValidationError) as info:
        SlackChannelConfig.model_validate({"type": "slack", **section})
    messages = " ".join(error["msg"] for error in info.value.errors())
    assert message in messages
    assert "xoxb-1" not in messages
