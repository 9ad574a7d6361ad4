"""What the HTTP channels (Slack incoming webhook, JSON webhook, PagerDuty, Opsgenie) share:
a lazily opened sender, one POST mapped to a Delivery, keeping the URL (a secret) out of
every detail, and reading a field of a JSON answer.

A channel POSTs through a :class:`Sender` and judges the :class:`Answer`, the same code
whichever sender it is. In production that is :class:`AiohttpSender`, aiohttp called directly:
building httpx's ``Request`` and ``Response`` around it cost as much CPU as aiohttp's own
request (benchmarks/README.md, "Delivering 10,000 pages"), so a delivered page has neither.
Tests hand the channel any httpx transport instead (``httpx.MockTransport``, or
``httpx.MockTransport(respx_router.handler)``), which :class:`HttpxSender` calls with the same
body, headers and timeouts. An answer past its status (an error's text, ``Retry-After``, a JSON
field) is read as httpx's ``Response`` (:meth:`Answer.response`), whichever sender it came
from. The Prometheus source sends its queries through the same senders (``get``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol
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

HEADERS = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
"""The headers of every POST, before a channel's own (which may replace them)."""

GET_LIMIT = 256 * 1024 * 1024
"""Bytes of a GET's answer read at most, after its ``Content-Encoding`` is undone (256 MiB).
A Prometheus source's largest answers are a template's warm start (a range read of every
member's history: about 75 MB for 10,000 systems at a 1-minute interval) and an instant
vector of 100,000 series (about 15 MB with a few labels each). A larger answer, or a
compressed one that would inflate past it, is refused with :class:`AnswerTooLarge` before
more of it is held in memory: neither aiohttp's client nor httpx's bounds what it reads, and
both undo a ``Content-Encoding`` whole."""

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


class AnswerTooLarge(httpx.TransportError):
    """A GET's answer (decoded) is larger than the limit it was read with."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the answer is larger than {limit:,} bytes (the most read)")
        self.limit = limit


def _decoded_headers(raw: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``raw`` header lines without ``Content-Encoding``: the body was decoded as it was read
    (bounded), and :meth:`Answer.response` must not decode it again (unbounded). An encoding
    the reader did not know (aiohttp: other than gzip, deflate, br, zstd; httpx: the same,
    br and zstd only with their packages) leaves the body as it came, as httpx leaves it."""
    return [(name, value) for name, value in raw if name.lower() != b"content-encoding"]


def _undecodable(error: BaseException) -> str:
    """What aiohttp said when it could not undo an answer's ``Content-Encoding`` (a corrupt
    body, or an encoding whose package is not installed), else the empty string: httpx read
    that as ``DecodingError``, not as a failure of the network."""
    from aiohttp.http_exceptions import ContentEncodingError

    cause = error.__cause__
    if isinstance(cause, ContentEncodingError):
        return str(cause.message)
    message = str(getattr(error, "message", ""))
    return message if message.startswith("Can not decode content-encoding") else ""


def httpx_error(error: BaseException) -> httpx.TransportError:
    """The httpx error that an aiohttp error (or a bare timeout) stands for.

    Args:
        error: What aiohttp raised while sending a request or reading its answer.
    """
    for aiohttp_error, httpx_kind in _aiohttp_errors():
        if isinstance(error, aiohttp_error):
            return httpx_kind(str(error) or type(error).__name__)
    return httpx.TransportError(f"{type(error).__name__}: {error}")


class Answer:
    """A destination's answer as a sender read it: the status, and (read only when a channel
    looks past the status) the answer as httpx's ``Response``, its body decoded by its
    ``Content-Encoding`` and its text by its charset.

    Args:
        status: The HTTP status.
        raw_headers: The answer's header lines, as they came.
        body: The answer's body, as it came (not decompressed).
        response: The answer already as httpx's ``Response`` (an httpx transport's), if it is.
    """

    __slots__ = ("_body", "_raw_headers", "_response", "status")

    def __init__(
        self,
        status: int,
        raw_headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes = b"",
        *,
        response: httpx.Response | None = None,
    ) -> None:
        self.status = status
        self._raw_headers = raw_headers
        self._body = body
        self._response = response

    def response(self) -> httpx.Response:
        """The answer as httpx's ``Response``, built on first use (a delivered page's never is:
        it costs about as much as the rest of reading the answer)."""
        if self._response is None:
            self._response = httpx.Response(
                self.status, headers=self._raw_headers, content=self._body
            )
        return self._response


class Sender(Protocol):
    """What a channel POSTs through: one request to one URL, its whole answer read."""

    async def post(self, url: httpx.URL, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST ``body`` with ``headers`` to ``url`` and read the whole answer.

        Raises:
            httpx.TransportError: The request could not be sent or its answer not read, as
                the httpx error it is (``ConnectError``, ``ReadTimeout``, ...).
        """
        ...

    async def aclose(self) -> None:
        """Release connections; the sender may be used again afterwards."""
        ...


class AiohttpSender:
    """The network: an aiohttp session, as the channels had it under httpx: the connection
    limits of :data:`LIMITS`; TLS verified with httpx's context (certifi's CAs, or
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``); an HTTP proxy from the environment (``HTTP_PROXY``,
    ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``); redirects not followed; each phase (waiting
    for a connection, connecting, reading) bounded by ``timeout``. Header names go out as
    written. The answer is read whole, and every failure is raised as the httpx error it is
    (:func:`httpx_error`).

    aiohttp is called directly, with no httpx ``Request`` or ``Response`` built around it:
    those cost as much CPU as aiohttp's own request (benchmarks/README.md, "Delivering 10,000
    pages"). The session opens on the first request (inside the running loop); after
    :meth:`aclose` the next request opens a new one.

    ``httpx-aiohttp`` (the OpenAI SDK's) was tried first and left: its 0.2 reads every aiohttp
    connection error as ``ConnectTimeout`` (a refused connection or a reset would read "no
    answer within 10s"), lets a malformed answer's error through unmapped, and sends header
    names lower-cased.

    Args:
        timeout: Seconds each phase of a request may take.
    """

    def __init__(self, timeout: float) -> None:
        self._seconds = timeout
        self._session: aiohttp.ClientSession | None = None
        self._timeout: aiohttp.ClientTimeout | None = None
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
            # httpx's Timeout(t): t to wait for a free connection, t to connect, t to read.
            self._timeout = aiohttp.ClientTimeout(
                total=None,
                connect=self._seconds,
                sock_connect=self._seconds,
                sock_read=self._seconds,
            )
        return self._session

    async def post(self, url: httpx.URL, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST ``body`` and read the whole answer; raises only httpx's errors."""
        import aiohttp

        try:
            async with self._open().post(
                str(url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                proxy=self._proxy(url),
                timeout=self._timeout,
            ) as answer:
                content = await answer.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise httpx_error(error) from error
        # Not decompressed by aiohttp: Answer.response() decodes it by its Content-Encoding.
        return Answer(answer.status, answer.raw_headers, content)

    async def get(self, url: httpx.URL, headers: Mapping[str, str]) -> Answer:
        """GET ``url``, its query sent byte for byte as httpx encoded it, and read the whole
        answer; raises only httpx's errors."""
        import aiohttp
        import yarl

        try:
            async with self._open().get(
                yarl.URL(str(url), encoded=True),
                headers=headers,
                allow_redirects=False,
                proxy=self._proxy(url),
                timeout=self._timeout,
                auto_decompress=True,  # in bounded steps, which the limit then counts
            ) as answer:
                content = await _bounded(answer.content.iter_any(), GET_LIMIT)
                return Answer(answer.status, _decoded_headers(answer.raw_headers), content)
        except (aiohttp.ClientError, TimeoutError) as error:
            undecodable = _undecodable(error)
            if undecodable:
                raise httpx.DecodingError(undecodable) from error
            raise httpx_error(error) from error

    async def aclose(self) -> None:
        """Close the session; the next request opens a new one."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


class HttpxSender:
    """An httpx transport as a :class:`Sender` (tests: ``httpx.MockTransport``,
    ``httpx.MockTransport(respx_router.handler)``): the request goes to the transport as
    httpx's ``Request``, with the same body, headers and timeouts the network would get.

    Args:
        transport: The httpx transport.
        timeout: Seconds each phase of a request may take (httpx's ``Timeout(timeout)``).
    """

    def __init__(self, transport: httpx.AsyncBaseTransport, timeout: float) -> None:
        self._transport = transport
        self._timeouts = httpx.Timeout(timeout).as_dict()

    async def post(self, url: httpx.URL, body: bytes, headers: Mapping[str, str]) -> Answer:
        """Hand the POST to the transport and read its whole answer."""
        request = httpx.Request("POST", url, content=body, headers=headers)
        request.extensions["timeout"] = self._timeouts
        response = await self._transport.handle_async_request(request)
        await response.aread()
        return Answer(response.status_code, response=response)

    async def get(self, url: httpx.URL, headers: Mapping[str, str]) -> Answer:
        """Hand the GET to the transport and read its whole answer, decoded, up to
        :data:`GET_LIMIT` bytes (each of the transport's chunks is decoded whole)."""
        request = httpx.Request("GET", url, headers=headers)
        request.extensions["timeout"] = self._timeouts
        response = await self._transport.handle_async_request(request)
        try:
            content = await _bounded(response.aiter_bytes(), GET_LIMIT)
        finally:
            await response.aclose()
        return Answer(response.status_code, _decoded_headers(response.headers.raw), content)

    async def aclose(self) -> None:
        """Close the transport."""
        await self._transport.aclose()


async def _bounded(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The ``chunks`` joined.

    Raises:
        AnswerTooLarge: They come to more than ``limit`` bytes (no more is read).
    """
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise AnswerTooLarge(limit)
    return bytes(body)


def json_body(document: Mapping[str, Any]) -> bytes:
    """``document`` as compact UTF-8 JSON, byte for byte as httpx's ``json=`` wrote it."""
    return _JSON.encode(document).encode()


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
"""httpx's ``json_dumps`` arguments, the encoder made once."""


def base_url(api_url: str) -> str:
    """An API's base URL ending in ``/``, so that paths join onto it."""
    return api_url if api_url.endswith("/") else api_url + "/"


def answer_field(answer: Answer, key: str) -> str | None:
    """The string ``key`` of a JSON object answer, or None (no JSON, not an object, no such
    string)."""
    try:
        document = answer.response().json()
    except ValueError:
        document = {}
    value = document.get(key) if isinstance(document, dict) else None
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
        self._given = transport
        self._http: Sender | None = None
        self._parsed: httpx.URL | None = None

    def _target(self, path: str) -> httpx.URL:
        """The URL to POST to (plus ``path``); the channel's own URL is parsed once."""
        if path:
            return httpx.URL(self._url.get_secret_value() + path)
        if self._parsed is None:
            self._parsed = httpx.URL(self._url.get_secret_value())
        return self._parsed

    def _sender(self) -> Sender:
        """The network (or the transport given), opened on first use."""
        if self._http is None:
            seconds = timeout_seconds(self._timeout)
            given = self._given
            self._http = AiohttpSender(seconds) if given is None else HttpxSender(given, seconds)
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
        body = payload if isinstance(payload, bytes) else json_body(payload)
        try:
            # Content-Length last among the channel's headers, where httpx's Request put it.
            every = {**HEADERS, **(headers or {}), "Content-Length": str(len(body))}
            answer = await self._sender().post(self._target(path), body, every)
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
        return self._judge(answer)

    def _judge(self, answer: Answer) -> Delivery:
        status = answer.status
        if 200 <= status < 300:
            return Delivery.delivered()
        response = answer.response()
        body = safe_detail(response.text[:ERROR_LIMIT], self._secrets())
        detail = f"{self.label}: HTTP {status}" + (f" {body}" if body else "")
        if status in (408, 429) or status >= 500:
            return Delivery.retry(
                detail, retry_after=parse_retry_after(response.headers.get("Retry-After"))
            )
        return Delivery.give_up(detail)

    async def aclose(self) -> None:
        """Close the sender; a later send opens a new one."""
        if self._http is not None:
            sender, self._http = self._http, None
            await sender.aclose()
