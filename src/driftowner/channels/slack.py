"""The ``slack`` channel: a Block Kit message posted to a Slack incoming webhook or, with a
bot token, through the Web API's ``chat.postMessage``; and the mapping of Slack's answers to
deliveries.

Slack answers an incoming webhook with ``200 ok``; with 400 (``invalid_payload``,
``user_not_found``, ...), 403 (``action_prohibited``, ``invalid_token``, ...), 404
(``no_service``, ``channel_not_found``, ...) or 410 (``channel_is_archived``) when the message
can never be posted as sent; with 429 and ``Retry-After`` when rate limited; with 5xx
(``rollup_error``) when something broke on its side.

``chat.postMessage`` answers ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``
(``channel_not_found``, ``not_in_channel``, ``invalid_auth``, ...), HTTP 429 with
``Retry-After`` (``ratelimited``), and 5xx when Slack is in trouble.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr
from slack_sdk.errors import SlackApiError, SlackClientError, SlackObjectFormationError
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
from driftowner.channels import parse_retry_after, safe_detail, timeout_seconds
from driftowner.channels.http import HttpPostChannel, base_url
from driftowner.model import Delivery, GroupThread, Message, Notification

if TYPE_CHECKING:
    import aiohttp
    from slack_sdk.web.async_client import AsyncWebClient

_TS = re.compile(r"^[0-9]+\.[0-9]+$")
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
    # A team informed is not paged: it gets no Acknowledge / Resolve, interactive or not.
    paged = message.purpose != "informed"
    labels = render.ACTION_LABELS
    for text, style, action, url, wanted in (
        (labels["ack"], "primary", ACK_ACTION, message.ack_url, message.state == "open"),
        (labels["resolve"], None, RESOLVE_ACTION, message.resolve_url, message.state != "resolved"),
    ):
        if (
            interactive
            and paged
            and wanted
            and message.incident_id
            and len(message.incident_id) <= _BUTTON_VALUE_LIMIT
        ):
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
                text=PlainTextObject(text=labels["view"]), action_id="driftowner_incident", url=url
            )
        )
    return out


def build_blocks(
    message: Message, address: str, *, interactive: bool = False, root: bool = False
) -> list[Block]:
    """The Block Kit blocks of one message, every text within Slack's size limits (longer
    text is cut and ends with ``…``, never refused).

    Args:
        message: What to say.
        address: The notification's address (member id, channel id or ``#name``).
        interactive: Acknowledge / Resolve are interactive buttons (``action_id``
            ``driftowner.ack`` / ``driftowner.resolve``, ``value`` the incident id) handled by
            ``POST /slack/interactions``, instead of URL buttons opening the signed links.
        root: The blocks of a thread's root message as updated with ``chat.update``: the
            header names the incident's current state (``ACKNOWLEDGED fraud-scoring``)
            rather than why this message was sent.
    """
    said = render.card(message, root)
    who = mention(address)
    lead = f"{who} " if who else ""
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=_clip(said.headline, _HEADER_LIMIT))),
        SectionBlock(
            text=MarkdownTextObject(
                text=_clip(f"{lead}*{escape(said.summary)}*\n{escape(said.intro)}", _SECTION_LIMIT)
            )
        ),
    ]
    fields = [
        f"*{escape(f.title)}*\n" + (_link(f.url, f.value) if f.url is not None else escape(f.value))
        for f in said.fields
    ]
    blocks.append(
        SectionBlock(fields=[MarkdownTextObject(text=_clip(f, _FIELD_LIMIT)) for f in fields])
    )
    evidence = "\n".join(f"• {escape(line)}" for line in said.evidence)
    blocks.append(
        SectionBlock(
            text=MarkdownTextObject(
                text=_clip(f"*{escape(said.evidence_title)}*\n{evidence}", _SECTION_LIMIT)
            )
        )
    )
    if said.note_title is not None:
        note = f"*{escape(said.note_title)}*\n{escape(said.note)}"
        blocks.append(SectionBlock(text=MarkdownTextObject(text=_clip(note, _SECTION_LIMIT))))
    buttons = _buttons(message, interactive)
    if buttons:
        blocks.append(ActionsBlock(elements=buttons))
    blocks.append(
        ContextBlock(elements=[MarkdownTextObject(text=_clip(escape(said.footer), _FIELD_LIMIT))])
    )
    return blocks


def build_payload(
    notification: Notification, *, interactive: bool = False, root: bool = False
) -> dict[str, Any]:
    """The JSON body posted to the webhook: Block Kit blocks plus a ``text`` fallback (shown
    in notifications and by clients that cannot render blocks).

    Args:
        notification: What to post, and to whom.
        interactive: As for :func:`build_blocks`.
        root: As for :func:`build_blocks`.

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
            for block in build_blocks(
                message, notification.address, interactive=interactive, root=root
            )
        ],
    }


GROUP_SHOWN = 40
"""Incidents a group's Slack message lists (one block each, within Slack's 50 blocks); the
rest are counted, pointing to the status page."""


def _group_line(message: Message, root: bool) -> str:
    """One incident of a group: tag, system, rule, age, first evidence line, its links."""
    entry = render.group_entry(message, root)
    labels = render.ACTION_LABELS
    links = " · ".join(
        _link(url, label)
        for url, label in (
            (message.ack_url, labels["ack"]),
            (message.resolve_url, labels["resolve"]),
            (message.incident_url, labels["view"]),
        )
        if url and len(url) <= _BUTTON_URL_LIMIT
    )
    return (
        f"*{escape(entry['label'])} {escape(message.system)}* (`{escape(message.rule)}`), "
        f"{escape(entry['age_phrase'])}\n{escape(entry['evidence'])}"
        + (f"\n{links}" if links else "")
    )


def build_group_payload(
    notifications: Sequence[Notification], *, listed: Sequence[Message] = ()
) -> dict[str, Any]:
    """The message of a group of notifications to one address: the summary, then each
    incident (at most :data:`GROUP_SHOWN`, the rest counted) with its own links; within
    Slack's limits (50 blocks, 3,000 characters a section).

    Args:
        notifications: What goes out now, to one address.
        listed: With messages, the group thread's root as updated with ``chat.update``:
            these incidents, each tagged with its current state, instead.

    Raises:
        SlackObjectFormationError: when a block breaks Block Kit's rules.
    """
    root = bool(listed)
    messages = list(listed) if root else [n.message for n in notifications]
    context = render.group_context(messages, GROUP_SHOWN, root)
    who = mention(notifications[0].address)
    lead = f"{who} " if who else ""
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=_clip(context["summary"], _HEADER_LIMIT))),
        SectionBlock(
            text=MarkdownTextObject(
                text=_clip(f"{lead}{escape(render.group_lead(len(messages)))}", _SECTION_LIMIT)
            )
        ),
    ]
    blocks += [
        SectionBlock(text=MarkdownTextObject(text=_clip(_group_line(m, root), _SECTION_LIMIT)))
        for m in messages[:GROUP_SHOWN]
    ]
    if context["more"]:
        more = escape(render.more_line(context["more"]))
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=more)]))
    fallback = escape(render.group_subject(messages))
    return {
        "text": f"{who} {fallback}" if who else fallback,
        "blocks": [block.to_dict() for block in blocks],
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

    async def send_group(
        self, notifications: Sequence[Notification], thread: GroupThread | None = None
    ) -> Delivery:
        """Post a group of notifications as one message (an incoming webhook cannot thread:
        each of a group's messages is posted on its own)."""
        try:
            payload = build_group_payload(notifications)
        except SlackObjectFormationError as exc:
            return Delivery.give_up(safe_detail(f"slack: cannot build the message: {exc}"))
        return await self._post(payload)


RETRYABLE_API_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
"""``ok: false`` errors of ``chat.postMessage`` that are Slack's trouble, not the message's:
retried. Every other error (``channel_not_found``, ``not_in_channel``, ``invalid_auth``,
``missing_scope``, ``invalid_blocks``, unknown ones, ...) gives up."""

_API_HINTS = {
    "channel_not_found": "no such channel or member, or the bot cannot see it",
    "not_in_channel": "invite the bot to the channel",
    "is_archived": "the channel is archived",
    "invalid_auth": "the token is not valid",
    "account_inactive": "the token's bot or user was deactivated",
    "token_revoked": "the token was revoked",
    "missing_scope": "the bot token lacks a scope (chat:write, im:write)",
}


def parse_thread(thread: str | None) -> tuple[str, str] | None:
    """``(channel id, ts)`` of a root reference ``C0123:1700000000.000100``, or None when
    there is none or it is not one (a reference another channel type stored)."""
    if not thread:
        return None
    channel, _, ts = thread.partition(":")
    if not channel or not _TS.match(ts):
        return None
    return channel, ts


class SlackWebApiChannel:
    """Posts notifications with the Web API's ``chat.postMessage`` (slack_sdk's
    ``AsyncWebClient``): each message goes to its notification's address, a member id (Slack
    opens the DM), a ``#channel-name`` or a conversation id.

    Args:
        name: The channel's name in the config.
        token: The bot token (``xoxb-...``); a secret, never shown in details.
        api_url: The Web API's base URL, ending with ``/``.
        timeout: The whole-request timeout.
        interactive: As for :class:`SlackWebhookChannel`.
    """

    label = "slack"

    def __init__(
        self,
        name: str,
        token: SecretStr,
        *,
        api_url: str = "https://slack.com/api/",
        timeout: timedelta,
        interactive: bool = False,
    ) -> None:
        self.name = name
        self._token = token
        self._api_url = base_url(api_url)
        self._timeout = timeout
        self.interactive = interactive
        self._session: aiohttp.ClientSession | None = None
        self._web: AsyncWebClient | None = None

    def _client(self) -> AsyncWebClient:
        """The Web API client and its HTTP session, made on first use (inside the loop)."""
        # Imported here: aiohttp (9 MB resident) is needed only once a Web API channel sends.
        import aiohttp
        from slack_sdk.web.async_client import AsyncWebClient

        if self._web is None or self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=timeout_seconds(self._timeout))
            )
            self._web = AsyncWebClient(
                token=self._token.get_secret_value(),
                base_url=self._api_url,
                timeout=max(1, round(timeout_seconds(self._timeout))),
                session=self._session,
                retry_handlers=[],  # the outbox owns retries and backoff
            )
        return self._web

    def _safe(self, text: str) -> str:
        return safe_detail(text, (self._token.get_secret_value(),))

    async def send(self, notification: Notification) -> Delivery:
        """Post one notification; every outcome, failures included, comes back as a Delivery.

        The first message of a conversation (no ``notification.thread``) is posted on its
        own and its ``channel:ts`` comes back as the delivery's ``ref``. A later one first
        updates that root with ``chat.update`` to show the incident's current state, then
        posts as a reply in its thread (``thread_ts``). The update is idempotent, so a retry
        after a failed reply repeats it harmlessly; a root Slack no longer has
        (``message_not_found``, ``cant_update_message``) leaves the reply unthreaded."""
        try:
            payload = build_payload(notification, interactive=self.interactive)
            root = build_payload(notification, interactive=self.interactive, root=True)
        except SlackObjectFormationError as exc:
            return Delivery.give_up(self._safe(f"slack: cannot build the message: {exc}"))
        thread = parse_thread(notification.thread)
        if thread is None:
            return await self._call(
                "chat.postMessage", channel=notification.address.strip(), **payload
            )
        channel, ts = thread
        updated = await self._call("chat.update", channel=channel, ts=ts, **root)
        if not updated.ok and updated.recoverable:
            return updated
        note = "" if updated.ok else f"; the root was not updated ({updated.detail})"
        if not updated.ok:
            # The root is gone: the reply goes to the conversation on its own.
            replied = await self._call("chat.postMessage", channel=channel, **payload)
        else:
            replied = await self._call("chat.postMessage", channel=channel, thread_ts=ts, **payload)
        if not replied.ok:
            return replied
        return Delivery.delivered(f"replied in thread {channel}:{ts}{note}")

    async def send_group(
        self, notifications: Sequence[Notification], thread: GroupThread | None = None
    ) -> Delivery:
        """Post a group of notifications as one message to their conversation.

        The group's first message (no ``thread.ref``) is posted on its own and its
        ``channel:ts`` comes back as the delivery's ``ref``: the group thread's root. A later
        one first updates that root with ``chat.update`` to list every incident of the
        thread (``thread.listed``) with its current state, then posts as a reply in the
        thread. A root Slack no longer has makes this message the root of a new thread."""
        thread = thread or GroupThread()
        try:
            payload = build_group_payload(notifications)
            root = build_group_payload(notifications, listed=thread.listed)
        except SlackObjectFormationError as exc:
            return Delivery.give_up(self._safe(f"slack: cannot build the message: {exc}"))
        where = parse_thread(thread.ref)
        if where is not None:
            channel, ts = where
            updated = await self._call("chat.update", channel=channel, ts=ts, **root)
            if not updated.ok and updated.recoverable:
                return updated
            if updated.ok:
                replied = await self._call(
                    "chat.postMessage", channel=channel, thread_ts=ts, **payload
                )
                if not replied.ok:
                    return replied
                return Delivery.delivered(
                    f"replied to group thread {channel}:{ts} with {len(notifications)}",
                    ref=f"{channel}:{ts}",
                )
        posted = await self._call(
            "chat.postMessage", channel=notifications[0].address.strip(), **payload
        )
        if not posted.ok:
            return posted
        return Delivery.delivered(
            f"posted a group of {len(notifications)} as {posted.ref}", ref=posted.ref
        )

    async def _call(self, method: str, **arguments: Any) -> Delivery:
        """One Web API call mapped to a Delivery; a posted message's ``channel:ts`` is its
        ``ref``."""
        import aiohttp  # loaded by _client; see there

        client = self._client()
        call = client.chat_update if method == "chat.update" else client.chat_postMessage
        try:
            response = await call(**arguments)
        except SlackApiError as exc:
            return self._judge(method, exc)
        except TimeoutError as exc:  # asyncio.TimeoutError is TimeoutError on 3.11+
            return Delivery.retry(
                f"slack: no answer within {timeout_seconds(self._timeout):g}s "
                f"({type(exc).__name__})"
            )
        except (aiohttp.InvalidURL, ValueError) as exc:
            return Delivery.give_up(
                self._safe(f"slack: the api_url is not usable ({type(exc).__name__}: {exc})")
            )
        except (aiohttp.ClientError, OSError) as exc:
            return Delivery.retry(self._safe(f"slack: {type(exc).__name__}: {exc}"))
        except SlackClientError as exc:
            return Delivery.give_up(self._safe(f"slack: {type(exc).__name__}: {exc}"))
        channel, ts = response.get("channel"), response.get("ts")
        ref = f"{channel}:{ts}" if isinstance(channel, str) and isinstance(ts, str) else None
        return Delivery.delivered(ref=ref)

    def _judge(self, method: str, exc: SlackApiError) -> Delivery:
        response = exc.response
        status = getattr(response, "status_code", None) or getattr(response, "status", None)
        data = getattr(response, "data", None)
        error = data.get("error") if isinstance(data, dict) else None
        headers = getattr(response, "headers", None) or {}
        if not error:
            error = "(no error given)" if isinstance(data, dict) else str(exc).split("(")[0]
        hint = _API_HINTS.get(str(error))
        detail = self._safe(
            f"slack: {method} HTTP {status} {error}" + (f" ({hint})" if hint else "")
        )
        if status == 429 or error == "ratelimited":
            return Delivery.retry(detail, retry_after=parse_retry_after(headers.get("Retry-After")))
        if isinstance(status, int) and (status >= 500 or status == 408):
            return Delivery.retry(detail)
        if error in RETRYABLE_API_ERRORS:
            return Delivery.retry(detail)
        return Delivery.give_up(detail)

    async def aclose(self) -> None:
        """Close the HTTP session; a later send opens a new one."""
        session, self._session, self._web = self._session, None, None
        if session is not None and not session.closed:
            await session.close()
