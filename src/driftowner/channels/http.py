"""What the HTTP channels (Slack incoming webhook, JSON webhook, PagerDuty, Opsgenie) share:
a lazily created client, one POST mapped to a Delivery, keeping the URL (a secret) out of
every detail, and reading a field of a JSON answer."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from driftowner.channels import parse_retry_after, safe_detail, timeout_seconds
from driftowner.model import Delivery

ERROR_LIMIT = 300
"""Characters of an error body kept in a Delivery detail."""


def base_url(api_url: str) -> str:
    """An API's base URL ending in ``/``, so that paths join onto it."""
    return api_url if api_url.endswith("/") else api_url + "/"


def answer_field(response: httpx.Response, key: str) -> str | None:
    """The string ``key`` of a JSON object answer, or None (no JSON, not an object, no such
    string)."""
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    value = answer.get(key) if isinstance(answer, dict) else None
    return value if isinstance(value, str) else None


class HttpPostChannel:
    """POSTs JSON to one secret URL. 2xx is delivered; 408, 429, 5xx and transport trouble
    are retried (``Retry-After`` honoured); an unusable URL and any other answer give up.

    Args:
        name: The channel's name in the config.
        url: The endpoint; a secret (it carries a token), never shown in details.
        timeout: The whole-request timeout.
        transport: An httpx transport to use instead of the network (tests).
    """

    label = "http"
    """How details name this kind of channel (``slack``, ``webhook``)."""

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
        """The URL and its parts that are secret on their own (path token, query, password)."""
        url = self._url.get_secret_value()
        parts = urlsplit(url)
        found = [url]
        if len(parts.path) > 1:
            found.append(parts.path)
        if parts.query:
            found.append(parts.query)
        if parts.password:
            found.append(parts.password)
        return tuple(found)

    async def _post(
        self,
        payload: Mapping[str, Any] | bytes,
        headers: Mapping[str, str] | None = None,
        *,
        path: str = "",
    ) -> Delivery:
        """POST ``payload`` as JSON to the URL (plus ``path``); bytes are sent as they are (a
        body already signed)."""
        url = self._url.get_secret_value() + path
        try:
            if isinstance(payload, bytes):
                response = await self._client().post(
                    url,
                    content=payload,
                    headers={"Content-Type": "application/json", **(headers or {})},
                )
            else:
                response = await self._client().post(url, json=payload, headers=headers)
        except httpx.TimeoutException as exc:
            return Delivery.retry(
                f"{self.label}: no answer within {timeout_seconds(self._timeout):g}s "
                f"({type(exc).__name__})"
            )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            return Delivery.give_up(f"{self.label}: the URL is not usable ({type(exc).__name__})")
        except httpx.TransportError as exc:
            return Delivery.retry(
                safe_detail(f"{self.label}: {type(exc).__name__}: {exc}", self._secrets())
            )
        return self._judge(response)

    def _judge(self, response: httpx.Response) -> Delivery:
        status = response.status_code
        if 200 <= status < 300:
            return Delivery.delivered()
        body = safe_detail(response.text[:ERROR_LIMIT], self._secrets())
        detail = f"{self.label}: HTTP {status}" + (f" {body}" if body else "")
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
