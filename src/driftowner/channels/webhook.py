"""The ``webhook`` channel: a versioned JSON document POSTed to any HTTP endpoint, with an
``Idempotency-Key`` so receivers can drop the duplicates at-least-once delivery produces, and,
with a ``secret``, an HMAC-SHA256 signature over the timestamp and the body.

Signature: ``X-Driftowner-Timestamp`` is the Unix time of the send in whole seconds;
``X-Driftowner-Signature`` is ``v1=`` and the hex HMAC-SHA256, keyed by the secret, of the
bytes ``timestamp + "." + body``. A receiver recomputes it over the raw body, compares in
constant time, and refuses a timestamp too far from its clock (a replay); see
docs/operations.md for the verification code.

Document (``version`` 1), one notification::

    {"version": 1, "notification_id": "...", "channel": "...", "recipient": "alice",
     "address": "...", "message": {every Message field; datetimes RFC 3339 UTC}}

In ``message``, ``summary``, ``evidence`` and ``note`` are what render says (the summary line,
one line per signal, the note: a person's, an SLO breach's, an upstream hold's); the facts
behind them are ``findings`` (one object per signal), ``breach`` and ``held_by`` (objects, or
null).

Group document (``version`` 2), several notifications to one recipient sent as one (see
:mod:`driftowner.grouping`); each ``group`` item is a version 1 document without its
``version``::

    {"version": 2, "channel": "...", "recipient": "alice", "address": "...",
     "summary": "12 systems fed by features-v3 ...", "count": 12, "group": [{...}, ...]}
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import httpx
from pydantic import SecretStr

from driftowner import render
from driftowner.channels.http import HttpPostChannel
from driftowner.clock import rfc3339
from driftowner.grouping import group_key
from driftowner.model import Delivery, GroupThread, Message, Notification

PAYLOAD_VERSION = 1
GROUP_PAYLOAD_VERSION = 2
SIGNATURE_HEADER = "X-Driftowner-Signature"
_COMPACT = json.JSONEncoder(separators=(",", ":"))
"""``json.dumps(..., separators=(",", ":"))``, its encoder made once, not once a page."""
TIMESTAMP_HEADER = "X-Driftowner-Timestamp"


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``v1=`` and the hex HMAC-SHA256 of ``timestamp.body`` keyed by ``secret``."""
    mac = hmac.new(secret, timestamp.encode() + b".", hashlib.sha256)
    mac.update(body)  # not concatenated: a page's body is not copied to be signed
    return f"v1={mac.hexdigest()}"


def message_document(message: Message) -> dict[str, Any]:
    """Every field of ``message`` as JSON-ready values (tuples as lists, datetimes RFC 3339,
    facts as objects), with render's words where a reader wants them: ``summary``,
    ``evidence`` (lines) and ``note``; the evidence's facts go as ``findings``."""
    document = {name: _json_ready(getattr(message, name)) for name in _field_names(Message)}
    document["findings"] = document["evidence"]
    document["summary"] = render.summary(message)
    document["evidence"] = list(render.evidence_lines(message))
    document["note"] = render.note(message)
    return document


@cache
def _field_names(kind: type[Any]) -> tuple[str, ...]:
    """The field names of a dataclass, in order (``dataclasses.fields`` is slow per page)."""
    return tuple(field.name for field in dataclasses.fields(kind))


def _json_ready(value: Any) -> Any:
    """A message field as JSON: a datetime RFC 3339, a tuple a list, a fact an object (as
    ``dataclasses.asdict`` makes it, without its deep copy of every value)."""
    if value is None or type(value) in _PLAIN:
        return value
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, tuple):
        return [_json_ready(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: _fact_value(getattr(value, name)) for name in _field_names(type(value))}
    return value


def _fact_value(value: Any) -> Any:
    """A fact's field as ``dataclasses.asdict`` has it, for JSON: a nested fact an object, a
    tuple or list a list, a dict a dict; anything else as it is."""
    if value is None or type(value) in _PLAIN:
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: _fact_value(getattr(value, name)) for name in _field_names(type(value))}
    if isinstance(value, (tuple, list)):
        return [_fact_value(item) for item in value]
    if isinstance(value, dict):
        return {_fact_value(key): _fact_value(item) for key, item in value.items()}
    return value


_PLAIN = frozenset({str, int, float, bool})
"""Types that are their own JSON (no subclass: an enum's value may differ from itself)."""


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


def build_group_payload(notifications: Sequence[Notification]) -> dict[str, Any]:
    """The JSON document for a group of notifications to one recipient (module docstring)."""
    first = notifications[0]
    return {
        "version": GROUP_PAYLOAD_VERSION,
        "channel": first.channel,
        "recipient": first.recipient,
        "address": first.address,
        "summary": render.group_summary([n.message for n in notifications]),
        "count": len(notifications),
        "group": [
            {k: v for k, v in build_payload(n).items() if k != "version"} for n in notifications
        ],
    }


class WebhookChannel(HttpPostChannel):
    """POSTs each notification as JSON to one URL, signed when the channel has a secret.

    2xx is delivered; 408, 429, 5xx and transport trouble are retried (``Retry-After``
    honoured); any other answer is given up.

    Args:
        name: The channel's name in the config.
        url: The endpoint; a secret (it may carry a token), never shown in details.
        timeout: The whole-request timeout.
        secret: The key of the body's HMAC-SHA256 signature, if any; never sent.
        transport: An httpx transport to use instead of the network (tests).
        clock: Unix seconds now, for the signature's timestamp (tests).
    """

    label = "webhook"

    def __init__(
        self,
        name: str,
        url: SecretStr,
        *,
        timeout: timedelta,
        secret: SecretStr | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name, url, timeout=timeout, transport=transport)
        self._secret = secret
        self._key = secret.get_secret_value().encode() if secret is not None else None
        self._clock = clock

    def _secrets(self) -> tuple[str, ...]:
        own = (self._secret.get_secret_value(),) if self._secret else ()
        return (*super()._secrets(), *own)

    async def send(self, notification: Notification) -> Delivery:
        """POST one notification; every outcome comes back as a Delivery."""
        return await self._post_document(build_payload(notification), notification.id)

    async def send_group(
        self, notifications: Sequence[Notification], thread: GroupThread | None = None
    ) -> Delivery:
        """POST a group of notifications as one version 2 document (a webhook has no
        thread: ``thread`` is not used)."""
        return await self._post_document(
            build_group_payload(notifications), group_key(notifications)
        )

    async def _post_document(self, document: dict[str, Any], key: str) -> Delivery:
        """POST ``document`` as compact JSON, signed when the channel has a secret."""
        body = _COMPACT.encode(document).encode()
        headers = {"Idempotency-Key": key}
        if self._key is not None:
            timestamp = str(int(self._clock()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = signature(self._key, timestamp, body)
        return await self._post(body, headers=headers)
