"""The ``webhook`` channel: a versioned JSON document POSTed to any HTTP endpoint, with an
``Idempotency-Key`` so receivers can drop the duplicates at-least-once delivery produces.

Document (``version`` 1)::

    {"version": 1, "notification_id": "...", "channel": "...", "recipient": "alice",
     "address": "...", "message": {every Message field; datetimes RFC 3339 UTC}}
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from driftowner.channels import parse_retry_after, safe_detail, timeout_seconds
from driftowner.model import Delivery, Message, Notification

PAYLOAD_VERSION = 1
_ERROR_LIMIT = 100


def rfc3339(at: datetime) -> str:
    """``at`` in UTC as RFC 3339 with a ``Z`` suffix (naive times are taken as UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


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


class WebhookChannel:
    """POSTs each notification as JSON to one URL.

    2xx is delivered; 408, 429, 5xx and transport trouble are retried (``Retry-After``
    honoured); any other answer is given up.

    Args:
        name: The channel's name in the config.
        url: The endpoint; a secret (it may carry a token), never shown in details.
        timeout: The whole-request timeout.
        transport: An httpx transport to use instead of the network (tests).
    """

    def __init__(
        self,
        name: str,
        url: SecretStr,
        *,
        timeout: timedelta,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self._url = url
        self._timeout = timeout
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=timeout_seconds(self._timeout),
                transport=self._transport,
                follow_redirects=False,
            )
        return self._http

    def _secrets(self) -> tuple[str, ...]:
        url = self._url.get_secret_value()
        parts = urlsplit(url)
        secrets = [url]
        if len(parts.path) > 1:
            secrets.append(parts.path)
        if parts.query:
            secrets.append(parts.query)
        if parts.password:
            secrets.append(parts.password)
        return tuple(secrets)

    async def send(self, notification: Notification) -> Delivery:
        """POST one notification; every outcome comes back as a Delivery."""
        try:
            response = await self._client().post(
                self._url.get_secret_value(),
                json=build_payload(notification),
                headers={"Idempotency-Key": notification.id},
            )
        except httpx.TimeoutException as exc:
            return Delivery.retry(
                f"webhook: no answer within {timeout_seconds(self._timeout):g}s "
                f"({type(exc).__name__})"
            )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            return Delivery.give_up(f"webhook: the URL is not usable ({type(exc).__name__})")
        except httpx.TransportError as exc:
            return Delivery.retry(
                safe_detail(f"webhook: {type(exc).__name__}: {exc}", self._secrets())
            )
        return self._judge(response)

    def _judge(self, response: httpx.Response) -> Delivery:
        status = response.status_code
        if 200 <= status < 300:
            return Delivery.delivered()
        body = safe_detail(response.text[:_ERROR_LIMIT], self._secrets())
        detail = f"webhook: HTTP {status}" + (f" {body}" if body else "")
        if status in (408, 429) or status >= 500:
            return Delivery.retry(
                detail, retry_after=parse_retry_after(response.headers.get("Retry-After"))
            )
        return Delivery.give_up(detail)

    async def aclose(self) -> None:
        """Close the HTTP client; a later send opens a new one."""
        if self._http is not None:
            client, self._http = self._http, None
            await client.aclose()
