"""The ``slack`` channel: a Block Kit message posted to a Slack incoming webhook, and the
mapping of Slack's answers to deliveries.

Slack answers an incoming webhook with ``200 ok``; with 400 (``invalid_payload``,
``user_not_found``, ...), 403 (``action_prohibited``, ``invalid_token``, ...), 404
(``no_service``, ``channel_not_found``, ...) or 410 (``channel_is_archived``) when the message
can never be posted as sent; with 429 and ``Retry-After`` when rate limited; with 5xx
(``rollup_error``) when something broke on its side.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
from pydantic import SecretStr
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from driftowner import render
from driftowner.channels import safe_detail
from driftowner.channels.http import HttpPostChannel
from driftowner.model import Delivery, Message, Notification

_MEMBER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_CONVERSATION_ID = re.compile(r"^[CG][A-Z0-9]{2,}$")
_HEADER_LIMIT = 150
_SECTION_LIMIT = 3000
_FIELD_LIMIT = 2000
_BUTTON_URL_LIMIT = 3000
_BUTTON_VALUE_LIMIT = 2000

ACK_ACTION = "driftowner.ack"
"""``action_id`` of the interactive Acknowledge button; its ``value`` is the incident id."""
RESOLVE_ACTION = "driftowner.resolve"
"""``action_id`` of the interactive Resolve button; its ``value`` is the incident id."""


def escape(text: str) -> str:
    """``text`` safe inside Slack mrkdwn: ``&``, ``<`` and ``>`` escaped, so user text can
    neither form links nor mention ``<!channel>``."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mention(address: str) -> str:
    """How a message addresses its recipient: ``<@U024BE7LH>`` for a member id, ``<#C123>``
    for a conversation id, ``#ml-fraud`` for a channel name, else nothing."""
    address = address.strip()
    if _MEMBER_ID.match(address):
        return f"<@{address}>"
    if _CONVERSATION_ID.match(address):
        return f"<#{address}>"
    if address.startswith("#") and len(address) > 1:
        return escape(address)
    return ""


def _link(url: str, label: str) -> str:
    return f"<{escape(url)}|{escape(label)}>"


def _buttons(message: Message, interactive: bool) -> list[ButtonElement]:
    """Acknowledge / Resolve / Open incident. Interactive: Acknowledge and Resolve carry the
    incident id for ``POST /slack/interactions``; otherwise all three open URLs (the signed
    one-click links)."""
    out: list[ButtonElement] = []
    for text, style, action, url in (
        ("Acknowledge", "primary", ACK_ACTION, message.ack_url),
        ("Resolve", None, RESOLVE_ACTION, message.resolve_url),
    ):
        if interactive and message.incident_id and len(message.incident_id) <= _BUTTON_VALUE_LIMIT:
            out.append(
                ButtonElement(
                    text=PlainTextObject(text=text),
                    action_id=action,
                    value=message.incident_id,
                    style=style,
                )
            )
        elif not interactive and url and len(url) <= _BUTTON_URL_LIMIT:
            out.append(
                ButtonElement(
                    text=PlainTextObject(text=text),
                    action_id=action.replace(".", "_"),
                    url=url,
                    style=style,
                )
            )
    url = message.incident_url
    if url and len(url) <= _BUTTON_URL_LIMIT:
        out.append(
            ButtonElement(
                text=PlainTextObject(text="Open incident"), action_id="driftowner_incident", url=url
            )
        )
    return out


def build_blocks(message: Message, address: str, *, interactive: bool = False) -> list[Block]:
    """The Block Kit blocks of one message, every text within Slack's size limits.

    Args:
        message: What to say.
        address: The notification's address (member id, channel id or ``#name``).
        interactive: Acknowledge / Resolve are interactive buttons (``action_id``
            ``driftowner.ack`` / ``driftowner.resolve``, ``value`` the incident id) handled by
            ``POST /slack/interactions``, instead of URL buttons opening the signed links.
    """
    who = mention(address)
    lead = f"{who} " if who else ""
    blocks: list[Block] = [
        HeaderBlock(
            text=PlainTextObject(
                text=_clip(f"{render.label(message)} {message.system}", _HEADER_LIMIT)
            )
        ),
        SectionBlock(
            text=MarkdownTextObject(
                text=_clip(
                    f"{lead}*{escape(render.one_line(message.summary))}*\n"
                    f"{escape(render.intro(message))}",
                    _SECTION_LIMIT,
                )
            )
        ),
    ]
    fields = [
        f"*Accountable owner*\n{escape(message.owner_name)}",
        f"*Layers*\n{escape(', '.join(message.layers) or '-')}",
        f"*State*\n{escape(message.state)} ({escape(message.purpose)})",
        f"*Age*\n{escape(render.age_phrase(message))}",
        f"*Kind*\n{escape(message.kind)}: `{escape(message.rule)}`",
    ]
    if message.step > 0:
        fields.append(f"*Escalation*\n{render.step_label(message)}")
    if message.runbook:
        fields.append(f"*Runbook*\n{_link(message.runbook, 'runbook')}")
    blocks.append(
        SectionBlock(fields=[MarkdownTextObject(text=_clip(f, _FIELD_LIMIT)) for f in fields])
    )
    evidence = "\n".join(f"• {escape(line)}" for line in message.evidence) or "(none recorded)"
    blocks.append(
        SectionBlock(text=MarkdownTextObject(text=_clip(f"*Evidence*\n{evidence}", _SECTION_LIMIT)))
    )
    buttons = _buttons(message, interactive)
    if buttons:
        blocks.append(ActionsBlock(elements=buttons))
    blocks.append(
        ContextBlock(
            elements=[
                MarkdownTextObject(
                    text=_clip(
                        f"driftowner · incident `{escape(message.incident_id)}` · "
                        f"recipient {escape(message.recipient_name)}",
                        _FIELD_LIMIT,
                    )
                )
            ]
        )
    )
    return blocks


def build_payload(notification: Notification, *, interactive: bool = False) -> dict[str, Any]:
    """The JSON body posted to the webhook: Block Kit blocks plus a ``text`` fallback (shown
    in notifications and by clients that cannot render blocks).

    Args:
        notification: What to post, and to whom.
        interactive: As for :func:`build_blocks`.

    Raises:
        SlackObjectFormationError: when a block breaks Block Kit's rules.
    """
    message = notification.message
    who = mention(notification.address)
    fallback = escape(render.subject(message))
    return {
        "text": f"{who} {fallback}" if who else fallback,
        "blocks": [
            block.to_dict()
            for block in build_blocks(message, notification.address, interactive=interactive)
        ],
    }


class SlackWebhookChannel(HttpPostChannel):
    """Posts notifications to one Slack incoming webhook.

    Args:
        name: The channel's name in the config.
        webhook_url: The incoming webhook URL; a secret, never shown in details.
        timeout: The whole-request timeout.
        interactive: Send interactive Acknowledge / Resolve buttons (the channel's Slack app
            has a signing secret configured) instead of URL buttons.
        transport: An httpx transport to use instead of the network (tests).
    """

    label = "slack"

    def __init__(
        self,
        name: str,
        webhook_url: SecretStr,
        *,
        timeout: timedelta,
        interactive: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(name, webhook_url, timeout=timeout, transport=transport)
        self.interactive = interactive

    async def send(self, notification: Notification) -> Delivery:
        """Post one notification; every outcome, failures included, comes back as a Delivery."""
        try:
            payload = build_payload(notification, interactive=self.interactive)
        except SlackObjectFormationError as exc:
            return Delivery.give_up(safe_detail(f"slack: cannot build the message: {exc}"))
        return await self._post(payload)
