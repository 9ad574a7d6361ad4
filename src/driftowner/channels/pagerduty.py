"""The ``pagerduty`` channel: PagerDuty's Events API v2 (``POST /v2/enqueue``), one alert per
incident and routing key, deduplicated by the incident id.

A page (opened, reopened, escalated, reminder, test) is a ``trigger`` event: PagerDuty folds
repeated triggers of one ``dedup_key`` into the alert already open. An acknowledgement is an
``acknowledge`` event, a resolution a ``resolve`` event. Messages that page nobody (a
contributor team informed, a reassignment, an escalation step told to a conversation the
incident started: ``stepped_up``, never a second trigger; a person's note, ``noted``: the
Events API has no notes) send nothing: PagerDuty has no such event.

Routing: each event goes to the routing key (an Events API v2 integration key) configured for
its recipient, an owner or team key, under ``routing_keys``; else to the channel's
``routing_key``. Keys are secrets: they stay in the config, never in the store or a detail.

PagerDuty answers ``202`` with ``{"status": "success", "dedup_key": ...}``; ``400`` when the
event is invalid (given up, with PagerDuty's errors in the detail); ``429`` when rate limited
and 5xx when in trouble (both retried).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from driftowner import render
from driftowner.channels import safe_detail
from driftowner.channels.http import Answer, HttpPostChannel, answer_field, base_url
from driftowner.clock import rfc3339
from driftowner.model import Delivery, Message, Notification, Purpose

Severity = Literal["critical", "error", "warning", "info"]
SUMMARY_LIMIT = 1024
DEDUP_KEY_LIMIT = 255
ENQUEUE_PATH = "v2/enqueue"

_ACTIONS: dict[Purpose, str] = {
    "opened": "trigger",
    "reopened": "trigger",
    "escalated": "trigger",
    "reminder": "trigger",
    "test": "trigger",
    "acknowledged": "acknowledge",
    "resolved": "resolve",
}
"""The Events API action of each purpose; purposes absent here send nothing."""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def event_action(purpose: Purpose) -> str | None:
    """``trigger``, ``acknowledge`` or ``resolve`` for a purpose, or None to send nothing."""
    return _ACTIONS.get(purpose)


def build_event(
    notification: Notification, routing_key: str, severity: Severity
) -> dict[str, Any] | None:
    """The Events API v2 event of one notification, or None when it sends nothing.

    Args:
        notification: What happened, to whom.
        routing_key: The integration key of the recipient's PagerDuty service.
        severity: The severity of a trigger (a test message is always ``info``).
    """
    message = notification.message
    action = event_action(message.purpose)
    if action is None:
        return None
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": _clip(message.incident_id, DEDUP_KEY_LIMIT),
    }
    if action != "trigger":
        return event
    event["payload"] = {
        "summary": _clip(render.subject(message), SUMMARY_LIMIT),
        "source": message.system,
        "severity": "info" if message.purpose == "test" else severity,
        "timestamp": rfc3339(message.opened_at),
        "component": ", ".join(message.layers) or message.system,
        "group": message.system,
        "class": message.kind,
        "custom_details": _details(message),
    }
    event["client"] = "driftowner"
    if message.incident_url:
        event["client_url"] = message.incident_url
    links = [
        {"href": url, "text": text}
        for url, text in (
            (message.incident_url, render.PROVIDER_LINK_LABELS["view"]),
            (message.runbook, render.PROVIDER_LINK_LABELS["runbook"]),
            (message.ack_url, render.PROVIDER_LINK_LABELS["ack"]),
        )
        if url
    ]
    if links:
        event["links"] = links
    return event


def _details(message: Message) -> dict[str, Any]:
    return {
        "accountable_owner": message.owner_name,
        "owner_key": message.owner,
        "recipient": message.recipient_name,
        "purpose": message.purpose,
        "state": message.state,
        "escalation_step": message.step,
        "rule": message.rule,
        "layers": list(message.layers),
        "age": render.format_age(message.age_seconds),
        "summary": render.summary(message),
        "evidence": list(render.evidence_lines(message)),
    }


class PagerDutyChannel(HttpPostChannel):
    """Sends each notification as one Events API v2 event.

    Args:
        name: The channel's name in the config.
        api_url: The Events API's base URL (``https://events.pagerduty.com/``).
        routing_key: The integration key used for recipients without their own.
        routing_keys: Integration keys by owner or team key.
        severity: The severity of triggers.
        timeout: The whole-request timeout.
        transport: An httpx transport to use instead of the network (tests).
    """

    label = "pagerduty"

    def __init__(
        self,
        name: str,
        *,
        api_url: str,
        routing_key: SecretStr | None,
        routing_keys: Mapping[str, SecretStr],
        severity: Severity = "critical",
        timeout: timedelta,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        base = base_url(api_url)
        super().__init__(name, SecretStr(base + ENQUEUE_PATH), timeout=timeout, transport=transport)
        self._routing_key = routing_key
        self._routing_keys = dict(routing_keys)
        self._severity = severity

    def _secrets(self) -> tuple[str, ...]:
        keys = [self._routing_key, *self._routing_keys.values()]
        return tuple(key.get_secret_value() for key in keys if key is not None)

    async def send(self, notification: Notification) -> Delivery:
        """Send one notification's event; every outcome comes back as a Delivery."""
        key = self._routing_keys.get(notification.recipient, self._routing_key)
        if key is None:
            return Delivery.give_up(
                f"pagerduty: no routing key for {notification.recipient!r} and no default "
                "routing_key"
            )
        event = build_event(notification, key.get_secret_value(), self._severity)
        if event is None:
            purpose = notification.message.purpose
            return Delivery.delivered(f"pagerduty: nothing to send for a {purpose} message")
        return await self._post(event)

    def _judge(self, answer: Answer) -> Delivery:
        delivery = super()._judge(answer)
        if not delivery.ok:
            return delivery
        dedup_key = answer_field(answer, "dedup_key")
        if dedup_key is None:
            return delivery
        return Delivery.delivered(
            safe_detail(f"pagerduty: dedup_key {dedup_key}", self._secrets()), ref=dedup_key
        )
