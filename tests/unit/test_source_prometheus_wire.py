"""The Prometheus source on the network (aiohttp, as the daemon runs it) against a loopback
server that records the raw request: the request is byte for byte the one httpx's client sent
(request line, headers, auth), a compressed answer is read, and each failure of the wire keeps
the reason and the located message it had."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from driftowner import __version__
from driftowner.channels.http import HttpxSender
from driftowner.model import SourceResult
from driftowner.sources.prometheus import PrometheusSource

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
QUERY = 'avg by (model) (rate(x_total{job="a b",le=~"0.5|1"}[5m])) / 2 > bool 0.9'
PASSWORD = "p@ss:w/rd"
TOKEN = "tok-SECRET-123"
BODY = json.dumps(
    {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": {"model": "m-1"}, "value": [NOW.timestamp(), "0.25"]}],
        },
    }
).encode()

Answer = Callable[[bytes], bytes]
"""What the loopback server writes back, given the request head it read."""


def gzipped(_head: bytes) -> bytes:
    body = gzip.compress(BODY)
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


@asynccontextmanager
async def loopback(answer: Answer) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A server on a free loopback port; yields the port and the request heads it read. On
    leaving, waits for each connection to be closed by its client."""
    heads: list[bytes] = []
    serving: set[asyncio.Task[Any]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        serving.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                heads.append(head)
                writer.write(answer(head))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], heads
    finally:
        server.close()
        await asyncio.wait_for(asyncio.gather(*serving, return_exceptions=True), timeout=10)
        await server.wait_closed()


def parsed(head: bytes) -> tuple[str, dict[str, str]]:
    """The request line and the headers (names lower-cased) of a request head."""
    line, *fields = head.decode("latin-1").split("\r\n")
    headers = {}
    for field in filter(None, fields):
        name, _, value = field.partition(":")
        headers[name.strip().lower()] = value.strip()
    return line, headers


async def httpx_client_request(base: str, **auth: Any) -> None:
    """Send the request httpx's client sent, configured as the source configured it before it
    moved to aiohttp (base URL, default headers, basic or bearer auth, params)."""
    headers = {"User-Agent": f"driftowner/{__version__}", "Accept": "application/json"}
    basic: httpx.Auth | None = None
    if "bearer_token" in auth:
        headers["Authorization"] = f"Bearer {auth['bearer_token'].get_secret_value()}"
    elif "username" in auth:
        basic = httpx.BasicAuth(auth["username"], auth["password"].get_secret_value())
    async with httpx.AsyncClient(base_url=base, headers=headers, auth=basic) as client:
        params = {"query": QUERY, "time": f"{NOW.timestamp():.3f}"}
        (await client.get("/api/v1/query", params=params)).raise_for_status()


async def source_request(base: str, **auth: Any) -> SourceResult:
    """Send the request the source sends on the network; what it read from the answer."""
    source = PrometheusSource("prom", base, timeout=timedelta(seconds=10), **auth)
    try:
        return await source.read(QUERY, NOW, NOW, timedelta(minutes=1))
    finally:
        await source.aclose()


@pytest.mark.parametrize(
    ("url", "auth"),
    [
        ("http://127.0.0.1:PORT", {}),
        ("http://127.0.0.1:PORT/prefix/", {}),
        ("http://127.0.0.1:PORT", {"username": "reader", "password": SecretStr(PASSWORD)}),
        ("http://127.0.0.1:PORT", {"bearer_token": SecretStr(TOKEN)}),
        ("http://reader:p%40ss%3Aw%2Frd@127.0.0.1:PORT", {}),
    ],
    ids=["plain", "path prefix", "basic auth", "bearer", "user:password in the URL"],
)
async def test_the_request_on_the_wire_is_the_one_httpx_s_client_sent(
    url: str, auth: dict[str, Any]
) -> None:
    """Moving the source's requests from httpx's client to aiohttp changed nothing the server
    sees: the request line (path, prefix, the query encoded byte for byte as httpx encoded it)
    and every header that carries meaning (Host, Accept, Accept-Encoding, User-Agent,
    Authorization) are what httpx's client sent; and the gzip answer is read."""
    async with loopback(gzipped) as (port, heads):
        result = await source_request(url.replace("PORT", str(port)), **auth)
        await httpx_client_request(url.replace("PORT", str(port)), **auth)
    (line, headers), (expected_line, expected) = map(parsed, heads)
    assert line == expected_line
    meaningful = ("host", "accept", "accept-encoding", "user-agent", "authorization")
    assert {name: headers.get(name) for name in meaningful} == {
        name: expected.get(name) for name in meaningful
    }
    assert ("authorization" in headers) == bool(auth or "@" in url)
    assert result.error is None
    assert [sample.value for sample in result.samples] == [0.25]


async def read_once(answer: Answer) -> SourceResult:
    async with loopback(answer) as (port, _heads):
        source = PrometheusSource("prom", f"http://127.0.0.1:{port}", timeout=timedelta(seconds=5))
        try:
            return await source.read("up", NOW, NOW, timedelta(minutes=1))
        finally:
            await source.aclose()


def corrupt_gzip(_head: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 10\r\n\r\nnot gzip!!"


def not_http(_head: bytes) -> bytes:
    return b"SPEAKING NONSENSE\r\n\r\n"


def server_error(_head: bytes) -> bytes:
    body = b'{"status":"error","errorType":"timeout","error":"query timed out"}'
    return b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n" % len(body) + body


@pytest.mark.parametrize(
    ("answer", "reason", "says"),
    [
        (corrupt_gzip, "bad_response", "cannot decode the answer"),
        (not_http, "unreachable", "cannot reach http://127.0.0.1:"),
        (server_error, "timeout", "HTTP 503 Service Unavailable: timeout: query timed out"),
    ],
    ids=["corrupt gzip", "not HTTP", "503 with an API error"],
)
async def test_a_failing_answer_on_the_wire_keeps_its_reason_and_message(
    answer: Answer, reason: str, says: str
) -> None:
    """Each way the wire can fail is mapped as it was under httpx's client: a body that does
    not inflate is bad_response, an answer that is not HTTP leaves the server unreachable, a
    5xx keeps its status line and API error; the source is down each time, and the message
    names it."""
    result = await read_once(answer)
    assert result.error_reason == reason, result.error
    assert result.source_up is False
    assert result.error is not None
    assert result.error.startswith("prometheus source 'prom': ")
    assert says in result.error


async def test_a_refused_connection_on_the_wire_is_unreachable_and_names_the_url() -> None:
    """Nothing listening on the port: unreachable, down, the URL and the refusal named."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens
    source = PrometheusSource("prom", f"http://127.0.0.1:{port}", timeout=timedelta(seconds=5))
    try:
        result = await source.read("up", NOW, NOW, timedelta(minutes=1))
    finally:
        await source.aclose()
    assert result.error_reason == "unreachable" and result.source_up is False
    assert result.error is not None
    assert f"cannot reach http://127.0.0.1:{port}: " in result.error
    assert "refused" in result.error.lower() or "connect" in result.error.lower()


def test_a_transport_and_a_getter_together_are_refused() -> None:
    """The source sends through one thing: a transport (tests) or a getter (a wrapper around
    the network's sender), never both."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    with pytest.raises(ValueError, match="not both"):
        PrometheusSource(
            "prom",
            "http://127.0.0.1:9090",
            timeout=timedelta(seconds=1),
            transport=transport,
            getter=lambda seconds: HttpxSender(transport, seconds),
        )
