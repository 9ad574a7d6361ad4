"""The ``opsgenie`` channel: Opsgenie's Alert API, one alert per incident whose ``alias`` is the
incident id, authenticated by an API integration's key (``Authorization: GenieKey ...``).

A page (opened, reopened, escalated, reminder, test) creates the alert (``POST /v2/alerts``;
Opsgenie folds a create with the alias of an open alert into it); an acknowledgement
acknowledges it, a resolution closes it, and a reassignment, an escalation step told to
the alert's conversation (``stepped_up``: never a second create) or a person's note
(``noted``: its text, the person as the note's ``user``) adds a note
(``POST /v2/alerts/{alias}/acknowledge|close|notes?identifierType=alias``). A contributor
team informed sends nothing. Opsgenie routes the alert to the team of the API integration.

Opsgenie answers ``202`` with ``{"result": ..., "requestId": ...}`` (the request is processed
asynchronously); ``400``, ``401``, ``403``, ``404`` and ``422`` when the request can never
succeed (given up, with Opsgenie's message); ``429`` and 5xx (retried).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from driftowner import render
from driftowner.channels.http import Answer, HttpPostChannel, answer_field, base_url
from driftowner.model import Delivery, Message, Notification

Priority = Literal["P1", "P2", "P3", "P4", "P5"]
MESSAGE_LIMIT = 130
ALIAS_LIMIT = 512
DESCRIPTION_LIMIT = 15000
NOTE_LIMIT = 25000
USER_LIMIT = 100
SOURCE = "driftowner"

_PAGES = frozenset({"opened", "reopened", "escalated", "reminder", "test"})
_ACTIONS = {
    "acknowledged": "acknowledge",
    "resolved": "close",
    "reassigned": "notes",
    "stepped_up": "notes",
    "noted": "notes",
}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_request(
    notification: Notification, priority: Priority
) -> tuple[str, dict[str, Any]] | None:
    """``(path, body)`` of the Alert API request for one notification, or None when it sends
    nothing. The path is relative to the API's base URL.

    Args:
        notification: What happened, to whom.
        priority: The priority of a created alert (a test message is always ``P5``).
    """
    message = notification.message
    alias = _clip(message.incident_id, ALIAS_LIMIT)
    if message.purpose in _PAGES:
        return "v2/alerts", _create(message, alias, "P5" if message.purpose == "test" else priority)
    action = _ACTIONS.get(message.purpose)
    if action is None:
        return None
    note = render.action_note(message)
    body: dict[str, Any] = {"source": SOURCE, "user": _clip(message.actor or SOURCE, USER_LIMIT)}
    if note:
        body["note"] = _clip(note, NOTE_LIMIT)
    return f"v2/alerts/{quote(alias, safe='')}/{action}?identifierType=alias", body


def _create(message: Message, alias: str, priority: Priority) -> dict[str, Any]:
    return {
        "message": _clip(render.alert_title(message), MESSAGE_LIMIT),
        "alias": alias,
        "description": _clip(render.text(message), DESCRIPTION_LIMIT),
        "tags": ["driftowner", message.kind, *message.layers],
        "details": {
            "system": message.system,
            "accountable_owner": message.owner_name,
            "owner_key": message.owner,
            "recipient": message.recipient_name,
            "rule": message.rule,
            "state": message.state,
            "escalation_step": str(message.step),
            **({"incident_url": message.incident_url} if message.incident_url else {}),
            **({"runbook": message.runbook} if message.runbook else {}),
        },
        "entity": message.system,
        "source": SOURCE,
        "priority": priority,
    }


class OpsgenieChannel(HttpPostChannel):
    """Sends each notification as one Alert API request.

    Args:
        name: The channel's name in the config.
        api_url: The API's base URL (``https://api.opsgenie.com/``, or the EU one).
        api_key: The API integration's key; a secret, sent only as ``GenieKey``.
        priority: The priority of created alerts.
        timeout: The whole-request timeout.
        transport: An httpx transport to use instead of the network (tests).
    """

    label = "opsgenie"

    def __init__(
        self,
        name: str,
        *,
        api_url: str,
        api_key: SecretStr,
        priority: Priority = "P1",
        timeout: timedelta,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        base = base_url(api_url)
        super().__init__(name, SecretStr(base), timeout=timeout, transport=transport)
        self._api_key = api_key
        self._priority = priority

    def _secrets(self) -> tuple[str, ...]:
        return (self._api_key.get_secret_value(),)

    async def send(self, notification: Notification) -> Delivery:
        """Send one notification's request; every outcome comes back as a Delivery."""
        request = build_request(notification, self._priority)
        if request is None:
            purpose = notification.message.purpose
            return Delivery.delivered(f"opsgenie: nothing to send for a {purpose} message")
        path, body = request
        headers = {"Authorization": f"GenieKey {self._api_key.get_secret_value()}"}
        return await self._post(body, headers=headers, path=path)

    def _judge(self, answer: Answer) -> Delivery:
        delivery = super()._judge(answer)
        if not delivery.ok:
            return delivery
        request_id = answer_field(answer, "requestId")
        if request_id is None:
            return delivery
        return Delivery.delivered(f"opsgenie: requestId {request_id}")
