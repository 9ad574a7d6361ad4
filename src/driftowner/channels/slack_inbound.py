"""What Slack sends back to driftowner: a click on a message's interactive Acknowledge /
Resolve button. Verifies Slack's signature, reads the click out of the payload, and posts the
ephemeral reply to the interaction's ``response_url``. The HTTP route lives in
:mod:`driftowner.api.slack`; the buttons themselves in :mod:`driftowner.channels.slack`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx
from slack_sdk.signature import SignatureVerifier

from driftowner.channels.slack import ACK_ACTION, RESOLVE_ACTION, escape
from driftowner.config import Config, SlackChannelConfig
from driftowner.service import MAX_NAME_CHARS, text_problem

log = logging.getLogger("driftowner.api")

RESPONSE_TIMEOUT_S = 2.5
"""How long to wait for Slack to take a reply posted to an interaction's ``response_url``."""


@dataclass(frozen=True, slots=True)
class SlackClick:
    """One click on an interactive driftowner button, as Slack reported it."""

    action: str
    incident_id: str
    user_id: str
    response_url: str | None


def signing_secrets(config: Config) -> list[str]:
    """Every slack channel's signing secret (one per Slack app), in config order."""
    return [
        channel.signing_secret.get_secret_value()
        for channel in config.channels.values()
        if isinstance(channel, SlackChannelConfig) and channel.signing_secret is not None
    ]


def signed(secrets: list[str], body: bytes, timestamp: str | None, signature: str | None) -> bool:
    """Whether any configured signing secret verifies the request (slack_sdk's check: HMAC
    over ``v0:timestamp:body``, and a timestamp within five minutes of now)."""
    for secret in secrets:
        try:
            if SignatureVerifier(secret).is_valid(body, timestamp, signature):
                return True
        except (ValueError, TypeError):
            # A timestamp that is not a number, a body that is not UTF-8, a signature that is
            # not ASCII: not a request Slack signed.
            return False
    return False


def click_in(body: bytes) -> SlackClick | None:
    """The driftowner button click in a signed interaction request, or ``None`` when the
    request is some other interaction.

    Raises:
        ValueError: the form field ``payload`` is missing or not a JSON object as Slack sends.
    """
    payload = _payload(body)
    if payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    user = payload.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("payload.user.id is missing")
    _payload_text("payload.user.id", user_id)
    for action in actions if isinstance(actions, list) else []:
        if not isinstance(action, dict) or action.get("action_id") not in (
            ACK_ACTION,
            RESOLVE_ACTION,
        ):
            continue
        incident_id = action.get("value")
        if not isinstance(incident_id, str) or not incident_id:
            raise ValueError(f"payload.actions: {action.get('action_id')} carries no value")
        _payload_text("payload.actions.value", incident_id)
        response_url = payload.get("response_url")
        return SlackClick(
            action=str(action["action_id"]),
            incident_id=incident_id,
            user_id=user_id,
            response_url=response_url
            if isinstance(response_url, str) and response_url.startswith(("https://", "http://"))
            else None,
        )
    return None


def _payload(body: bytes) -> dict[str, Any]:
    """The JSON object in the form field ``payload``.

    Raises:
        ValueError: naming what is wrong with the body.
    """
    try:
        fields = parse_qs(body.decode("utf-8"), errors="strict")
    except UnicodeDecodeError as error:
        raise ValueError("the body is not UTF-8 text") from error
    raw = (fields.get("payload") or [""])[0]
    if not raw:
        raise ValueError("the form field payload is missing")
    try:
        payload = json.loads(raw)
    except ValueError as error:
        raise ValueError(f"payload is not JSON: {error}") from error
    if not isinstance(payload, dict):
        raise ValueError("payload is not a JSON object")
    return payload


def _payload_text(where: str, value: str) -> None:
    """Raises ValueError naming ``where`` when a payload string is not text or too long."""
    problem = text_problem(value, MAX_NAME_CHARS)
    if problem is not None:
        raise ValueError(f"{where}: {problem}")


def ephemeral(text: str) -> dict[str, Any]:
    """A reply only the person who clicked sees, leaving the original message as it is;
    ``text`` is escaped for mrkdwn (names and ids can neither form links nor mention)."""
    return {"response_type": "ephemeral", "replace_original": False, "text": escape(text)}


async def post_reply(response_url: str, reply: dict[str, Any]) -> None:
    """Post the reply to the interaction's ``response_url``. Best effort: the click's change
    is already committed, so a failure is logged (never with the URL, which lets anyone post
    into the conversation for a while) and dropped."""
    try:
        async with httpx.AsyncClient(timeout=RESPONSE_TIMEOUT_S) as client:
            response = await client.post(response_url, json=reply)
        if response.status_code >= 300:
            log.warning("slack did not take the interaction reply: HTTP %s", response.status_code)
    except httpx.HTTPError as error:
        log.warning("slack interaction reply not sent: %s", type(error).__name__)
