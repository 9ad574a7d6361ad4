"""What the HTTP channels (Slack incoming webhook, JSON webhook, PagerDuty, Opsgenie) share:
a lazily opened transport, one POST mapped to a Delivery, keeping the URL (a secret) out of
every detail, and reading a field of a JSON answer.

The channels speak httpx's transport interface (one method, ``handle_async_request``). In
production that is :class:`AiohttpTransport`, aiohttp behind that interface: about a
fifteenth of the CPU of httpx's own client per request (benchmarks/README.md,
``bench_delivery.py``). Tests hand the channel any httpx transport instead
(``httpx.MockTransport``, or ``httpx.MockTransport(respx_router.handler)``). The channel calls
the transport directly: the client layer above it (cookies, redirects, auth, URL merging) is
work a POST to one configured URL never needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from urllib.request import getproxies_environment, proxy_bypass

import httpx
from pydantic import SecretStr

from driftowner import __version__
from driftowner.channels import parse_retry_after, safe_detail, timeout_seconds
from driftowner.model import Delivery

if TYPE_CHECKING:  # aiohttp is imported where a channel first sends (about 7 MB, 75 ms)
    import aiohttp

ERROR_LIMIT = 300
"""Characters of an error body kept in a Delivery detail."""

USER_AGENT = f"driftowner/{__version__}"

LIMITS = httpx.Limits(max_connections=100, keepalive_expiry=5.0)
"""Connections a channel opens to its destination at most, and how long an idle one is kept:
httpx's defaults, which the channels had before their transport moved to aiohttp."""


@cache
def _aiohttp_errors() -> tuple[tuple[type[BaseException], type[httpx.TransportError]], ...]:
    """aiohttp's errors as httpx's, the first match winning (the more specific come first)."""
    import aiohttp

    return (
        (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
        (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
        (TimeoutError, httpx.TimeoutException),
        (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
        (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
        (aiohttp.ClientConnectorError, httpx.ConnectError),
        (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
        (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError, httpx.ReadError),
        (aiohttp.ClientOSError, httpx.NetworkError),
        (aiohttp.ClientError, httpx.TransportError),
    )


def httpx_error(error: BaseException, request: httpx.Request) -> httpx.TransportError:
    """The httpx error that an aiohttp error (or a bare timeout) stands for.

    Args:
        error: What aiohttp raised while sending ``request`` or reading its answer.
        request: The request.
    """
    for aiohttp_error, httpx_kind in _aiohttp_errors():
        if isinstance(error, aiohttp_error):
            return httpx_kind(str(error) or type(error).__name__, request=request)
    return httpx.TransportError(f"{type(error).__name__}: {error}", request=request)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx's transport interface over an aiohttp session, as the channels had it under
    httpx: the connection limits of :data:`LIMITS`; TLS verified with httpx's context
    (certifi's CAs, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``); an HTTP proxy from the
    environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``); redirects not
    followed; each phase (waiting for a connection, connecting, reading) bounded by the
    request's httpx timeout. Header names go out as written. The answer is read whole before
    it is returned, and every failure is raised as the httpx error it is
    (:func:`httpx_error`).

    The session opens on the first request (inside the running loop); after :meth:`aclose`
    the next request opens a new one.

    ``httpx-aiohttp`` (the OpenAI SDK's) was tried first and left: its 0.2 reads every aiohttp
    connection error as ``ConnectTimeout`` (a refused connection or a reset would read "no
    answer within 10s"), lets a malformed answer's error through unmapped, and sends header
    names lower-cased.
    """

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], str | None] = {}

    def _proxy(self, url: httpx.URL) -> str | None:
        """The proxy the environment names for ``url``, looked up once per scheme and host
        (aiohttp's own ``trust_env`` looks it up in a worker thread on every request)."""
        key = (url.scheme, url.host)
        if key not in self._proxies:
            proxies = getproxies_environment()
            proxy = proxies.get(url.scheme) or proxies.get("all")
            bypass = proxy is not None and bool(proxy_bypass(url.host))
            self._proxies[key] = None if bypass else proxy
        return self._proxies[key]

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=LIMITS.max_connections or 0,
                keepalive_timeout=LIMITS.keepalive_expiry,
                ssl=httpx.create_ssl_context(verify=True, trust_env=True),
            )
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and read its whole answer; raises only httpx's errors."""
        import aiohttp

        timeout = request.extensions.get("timeout", {})
        headers = [
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw
        ]
        try:
            async with self._open().request(
                request.method,
                str(request.url),
                headers=headers,
                data=request.content or None,
                allow_redirects=False,
                proxy=self._proxy(request.url),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            ) as answer:
                body = await answer.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise httpx_error(error, request) from error
        # Not decompressed by aiohttp: httpx decodes the body by its Content-Encoding.
        return httpx.Response(
            answer.status, headers=answer.raw_headers, content=body, request=request
        )

    async def aclose(self) -> None:
        """Close the session; the next request opens a new one."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


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
        timeout: The timeout of each phase of a request (connecting, waiting for a free
            connection, reading), as httpx's ``Timeout(timeout)``.
        transport: An httpx transport to use instead of the network (tests:
            ``httpx.MockTransport``, ``httpx.MockTransport(respx_router.handler)``).
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
        self._timeouts = httpx.Timeout(timeout_seconds(timeout)).as_dict()
        self._given = transport
        self._http: httpx.AsyncBaseTransport | None = None
        self._parsed: httpx.URL | None = None

    def _target(self, path: str) -> httpx.URL:
        """The URL to POST to (plus ``path``); the channel's own URL is parsed once."""
        if path:
            return httpx.URL(self._url.get_secret_value() + path)
        if self._parsed is None:
            self._parsed = httpx.URL(self._url.get_secret_value())
        return self._parsed

    def _transport(self) -> httpx.AsyncBaseTransport:
        """The transport, opened on first use (a closed one is replaced)."""
        if self._http is None:
            self._http = self._given or AiohttpTransport()
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
        try:
            request = httpx.Request(
                "POST",
                self._target(path),
                content=payload if isinstance(payload, bytes) else None,
                json=None if isinstance(payload, bytes) else payload,
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": USER_AGENT,
                    **(headers or {}),
                },
                extensions={"timeout": self._timeouts},
            )
            response = await self._transport().handle_async_request(request)
            await response.aread()
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
        """Close the transport; a later send opens a new one."""
        if self._http is not None:
            transport, self._http = self._http, None
            await transport.aclose()
