"""The ``webhook`` channel: a versioned JSON document POSTed to any HTTP endpoint, with an
``Idempotency-Key`` so receivers can drop the duplicates at-least-once delivery produces.

Document (``version`` 1)::

    {"version": 1, "notification_id": "...", "channel": "...", "recipient": "alice",
     "address": "...", "message": {every Message field; datetimes RFC 3339 UTC}}
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from driftowner.channels.http import HttpPostChannel
from driftowner.clock import rfc3339
from driftowner.model import Delivery, Message, Notification

PAYLOAD_VERSION = 1


def message_document(message: Message) -> dict[str, Any]:
    """Every field of ``message`` as JSON-ready values: tuples as lists, datetimes RFC 3339."""
    document: dict[str, Any] = {}
    for field in dataclasses.fields(message):
        value = getattr(message, field.name)
        if isinstance(value, datetime):
            value = rfc3339(value)
        elif isinstance(value, tuple):
            value = list(value)
        document[field.name] = value
    return document


def build_payload(notification: Notification) -> dict[str, Any]:
    """The JSON document for one notification (see the module docstring)."""
    return {
        "version": PAYLOAD_VERSION,
        "notification_id": notification.id,
        "channel": notification.channel,
        "recipient": notification.recipient,
        "address": notification.address,
        "message": message_document(notification.message),
    }


class WebhookChannel(HttpPostChannel):
    """POSTs each notification as JSON to one URL.

    2xx is delivered; 408, 429, 5xx and transport trouble are retried (``Retry-After``
    honoured); any other answer is given up.

    Args:
        name: The channel's name in the config.
        url: The endpoint; a secret (it may carry a token), never shown in details.
        timeout: The whole-request timeout.
        transport: An httpx transport to use instead of the network (tests).
    """

    label = "webhook"

    async def send(self, notification: Notification) -> Delivery:
        """POST one notification; every outcome comes back as a Delivery."""
        return await self._post(
            build_payload(notification), headers={"Idempotency-Key": notification.id}
        )
