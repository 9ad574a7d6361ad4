"""The Prometheus source against a hostile server on loopback (a broken Prometheus, or a
proxy in front of one): each odd, malformed or abusive answer is one located error (or the
values the answer allows), the same through the network's aiohttp sender and through an
httpx transport (what the source used before), a large or inflating body refused before it
fills memory; and through the daemon's poll of a template of several systems, no answer
crashes the cycle or puts a value on the wrong system."""

from __future__ import annotations

import asyncio
import json
import socket
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from driftowner.channels import http as channels_http
from driftowner.config import Config
from driftowner.detect.bank import Bank
from driftowner.poll import poll
from driftowner.sources import LabelledResult, LabelledValues, build_source
from driftowner.sources.prometheus import PrometheusSource
from tests.unit.factories import templated_document

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
INDEX = {"a": 0, "b": 1, "c": 2}
MODELS = ("a", "b", "c")

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
"""What the server does with one connection after reading a request head."""


def vector(*pairs: tuple[str, Any], at: Any = None) -> bytes:
    """A vector answer, one series per ``(model, value)``, at ``at`` (default: NOW)."""
    stamp = NOW.timestamp() if at is None else at
    result = [{"metric": {"model": name}, "value": [stamp, value]} for name, value in pairs]
    return json.dumps(
        {"status": "success", "data": {"resultType": "vector", "result": result}}
    ).encode()


def http(status: bytes, body: bytes, *headers: bytes) -> bytes:
    """A whole HTTP/1.1 answer."""
    head = b"".join(header + b"\r\n" for header in headers)
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n" % (status, len(body), head) + body


def bomb(inflated: int) -> bytes:
    """A gzip body of a few hundred KB that inflates to ``inflated`` bytes of a JSON string."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(b'{"status":"success","padding":"')]
    zeros = b"0" * (1 << 20)
    parts += [packer.compress(zeros) for _ in range(inflated >> 20)]
    return b"".join([*parts, packer.flush()])


def answering(*answers: bytes) -> Serve:
    """Each request answered with the next of ``answers`` (the last one repeated)."""
    left = list(answers)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(left.pop(0) if len(left) > 1 else left[0])
            await writer.drain()

    return serve


LIMIT = 8 << 20
"""The answer limit the size tests read with (the real one, 256 MiB, would make each of them
move and inflate a quarter of a gigabyte)."""


SENT_WHOLE: list[bool] = []
"""Whether :func:`enormous` got its whole body out, per connection."""


async def enormous(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A 200 OK announcing, and trying to send, four times the limit."""
    await reader.readuntil(b"\r\n\r\n")
    size = 4 * LIMIT
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
    chunk = b" " * (1 << 20)
    SENT_WHOLE.append(False)
    for _ in range(size >> 20):
        writer.write(chunk)
        await writer.drain()
    SENT_WHOLE[-1] = True


def holding(first: bytes) -> Serve:
    """Writes ``first`` (nothing, a head, part of a body), then holds the connection open."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(first)
        await writer.drain()
        await asyncio.Event().wait()

    return serve


async def reset_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Sends a head and 20 bytes of a 1,000-byte body, then resets the connection (RST)."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + vector(("a", "1"))[:20])
    await writer.drain()
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()


@asynccontextmanager
async def loopback(serve: Serve) -> AsyncIterator[tuple[str, list[int]]]:
    """A server on a free loopback port running ``serve`` per connection; yields its URL and
    a list that counts its connections. On leaving, stops every connection still held."""
    tasks: set[asyncio.Task[Any]] = set()
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        connections.append(1)
        try:
            await serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", connections
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


SENDERS = ["aiohttp", "httpx"]
"""The network's sender (aiohttp), and an httpx transport on the same network: the path the
source took before it moved to aiohttp."""


async def read_values(url: str, sender: str, seconds: float = 5) -> LabelledValues | LabelledResult:
    """One steady read of a template through ``sender``."""
    transport = httpx.AsyncHTTPTransport() if sender == "httpx" else None
    source = PrometheusSource("prom", url, timeout=timedelta(seconds=seconds), transport=transport)
    try:
        return await source.read_values_by_label("model_accuracy", NOW, "model", INDEX)
    finally:
        await source.aclose()


def failed(read: LabelledValues | LabelledResult) -> tuple[str | None, bool, str]:
    """A failed read's reason, whether the source counts as up, and its message."""
    assert isinstance(read, LabelledResult) and read.error is not None, read
    assert read.error.startswith("prometheus source 'prom': ")
    return read.error_reason, read.source_up, read.error


TOO_LARGE = "the answer to 'model_accuracy' is larger than 8 MiB"


@pytest.mark.parametrize("sender", SENDERS)
@pytest.mark.parametrize(
    ("serve", "sent_whole"),
    [
        (answering(http(b"200 OK", bomb(LIMIT + (16 << 20)), b"Content-Encoding: gzip")), []),
        (enormous, [False]),
    ],
    ids=["gzip bomb", "enormous body"],
)
async def test_an_answer_past_the_limit_is_refused_before_it_is_held(
    serve: Serve, sent_whole: list[bool], sender: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gzip body that inflates past the limit, or a plain body past it, is one
    ``bad_response`` naming the query and the limit, the source down; it is not read (or
    inflated) further: a body four times the limit is never sent whole. The old paths read
    both whole (a 400 MB bomb took 1.3 GB of memory) and then said 'not JSON'."""
    monkeypatch.setattr(channels_http, "GET_LIMIT", LIMIT)
    SENT_WHOLE.clear()
    async with loopback(serve) as (url, _):
        reason, up, error = failed(await read_values(url, sender))
    assert (reason, up) == ("bad_response", False)
    assert TOO_LARGE in error and "narrow the query" in error
    assert sent_whole == SENT_WHOLE  # the enormous body: one connection, cut off short


def test_the_answer_limit_admits_a_large_template_s_warm_start() -> None:
    """The real limit is above a template's warm start over 10,000 systems at a 1-minute
    interval (300 points each, as Prometheus writes them), so that no legitimate answer of
    the scale the daemon is measured at is refused."""
    point = b'[1714564800,"0.50123"],'
    series = b'{"metric":{"model":"m-10000"},"values":[' + point * 300 + b"]},"
    assert len(series) * 10_000 < channels_http.GET_LIMIT


@pytest.mark.parametrize("sender", SENDERS)
@pytest.mark.parametrize(
    ("answer", "reason", "says"),
    [
        (
            http(b"200 OK", b"\x1f\x8b\x08\x00not gzip at all", b"Content-Encoding: gzip"),
            "bad_response",
            "cannot decode the answer",
        ),
        (
            http(b"301 Moved Permanently", b"", b"Location: http://127.0.0.1:1/elsewhere"),
            "http_status",
            "HTTP 301",
        ),
        (
            http(b"429 Too Many Requests", b"slow down", b"Retry-After: 30"),
            "http_status",
            "HTTP 429 Too Many Requests",
        ),
        (
            http(
                b"503 Service Unavailable",
                b"<html><h1>down</h1></html>",
                b"Content-Type: text/html",
            ),
            "http_status",
            "HTTP 503 Service Unavailable",
        ),
        (
            http(b"200 OK", b"<html><body>login required</body></html>"),
            "bad_response",
            "the answer is not JSON: <html><body>login required",
        ),
        (http(b"200 OK", b"[" * 10_000 + b"]" * 10_000), "bad_response", "not JSON: [[[["),
        (
            http(b"200 OK", vector(("a", "1"), at=1e20)),
            "bad_response",
            "timestamp out of range",
        ),
    ],
    ids=["corrupt gzip", "redirect", "429", "503 HTML", "200 HTML", "deep", "time 1e20"],
)
async def test_a_broken_answer_is_one_located_error_on_either_path(
    answer: bytes, reason: str, says: str, sender: str
) -> None:
    """Each is one error naming the source and what was wrong, with the same reason on the
    aiohttp path as on the httpx path; a redirect is not followed (one connection, nothing
    sent to its Location)."""
    async with loopback(answering(answer)) as (url, connections):
        got_reason, up, error = failed(await read_values(url, sender))
    assert got_reason == reason and up is False
    assert says in error
    assert len(connections) == 1


@pytest.mark.parametrize("sender", SENDERS)
@pytest.mark.parametrize(
    "serve",
    [
        holding(b""),
        holding(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
        holding(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + vector(("a", "1"))),
    ],
    ids=["never answers", "chunked body that never ends", "Content-Length past the body"],
)
async def test_a_server_that_stops_answering_is_bounded_by_the_timeout(
    serve: Serve, sender: str
) -> None:
    """Whatever the server has sent when it stops, the source's timeout bounds the whole
    request: a ``timeout`` error naming the URL and the timeout."""
    async with loopback(serve) as (url, _):
        reason, up, error = failed(await read_values(url, sender, seconds=0.5))
    assert (reason, up) == ("timeout", False)
    assert f"no answer from {url} within 0.5s" in error


@pytest.mark.parametrize("sender", SENDERS)
async def test_a_connection_reset_mid_body_is_unreachable(sender: str) -> None:
    """A reset after part of the body: ``unreachable``, the URL named."""
    async with loopback(reset_mid_body) as (url, _):
        reason, up, error = failed(await read_values(url, sender))
    assert (reason, up) == ("unreachable", False)
    assert f"cannot reach {url}" in error


async def test_an_answer_that_is_not_http_is_an_error_at_once() -> None:
    """A server speaking another protocol: aiohttp refuses its status line at once
    (``unreachable``, the line quoted); httpx's path waited for the timeout."""
    async with loopback(answering(b"SSH-2.0-OpenSSH_9.2\r\n")) as (url, _):
        reason, up, error = failed(await read_values(url, "aiohttp"))
    assert (reason, up) == ("unreachable", False)
    assert "SSH-2.0" in error


def config_for(url: str) -> Config:
    """A template of three systems (model a, b, c) on the default chart over ``url``."""
    document, system = templated_document(url, timeout="2s")
    del document["signal_templates"]["accuracy"]["detect"]  # the default chart: arrays
    for model in MODELS:
        document["systems"][f"{model}-system"] = {**system, "labels": {"model": model}}
    return Config.model_validate(document)


def range_or(answers: list[bytes]) -> Serve:
    """History (range) queries get an empty matrix; instant queries the next of ``answers``
    (the last one repeated), whichever connection they come on."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            if b"/api/v1/query_range" in head:
                empty = b'{"status":"success","data":{"resultType":"matrix","result":[]}}'
                writer.write(http(b"200 OK", empty))
            else:
                writer.write(http(b"200 OK", answers.pop(0) if len(answers) > 1 else answers[0]))
            await writer.drain()

    return serve


CYCLE_ANSWERS = {
    "time 1e20": vector(("a", "0.9"), ("b", "0.9"), ("c", "0.9"), at=1e20),
    "time NaN": vector(("a", "0.9"), ("b", "0.9")).replace(
        b'[1714564800.0, "0.9"]}]', b'[NaN, "0.9"]}]'
    ),
    "nested 10,000 deep": b"[" * 10_000 + b"]" * 10_000,
    "point of three": vector(("a", "0.9")).replace(b'"0.9"]', b'"0.9", 7]'),
}


@pytest.mark.parametrize("answer", CYCLE_ANSWERS.values(), ids=CYCLE_ANSWERS.keys())
async def test_a_malformed_answer_fails_the_template_not_the_cycle(answer: bytes) -> None:
    """Through the daemon's poll: the cycle completes; every system of the template is
    ``no_data`` with the source's located error; the source is down and the failure counted
    once, as ``bad_response``; nothing logged carries a traceback. (Old code: a time out of
    range or NaN, or a deep answer, raised out of ``poll``.)"""
    async with loopback(range_or([answer])) as (url, _):
        config = config_for(url)
        source = build_source("prom", config.sources["prom"], clock=lambda: NOW)
        try:
            with capture_logs() as logs:
                findings, stats = await poll(config, {"prom": source}, NOW, Bank())
        finally:
            await source.aclose()
    assert stats.up == {"prom": False}
    assert stats.errors == {("prom", "bad_response"): 1}
    for model in MODELS:
        finding = findings[f"{model}-system"]["accuracy"]
        assert finding.status == "no_data" and finding.value is None
        assert finding.reason.startswith("prometheus source 'prom': ")
    assert not any("exc_info" in entry or "exception" in entry for entry in logs)


async def test_odd_series_leave_the_other_systems_values_across_cycles() -> None:
    """Cycle after cycle the answer changes order, grows a duplicate for one system, loses
    the label on another series, gains a lone surrogate and control characters in an unknown
    value: each system gets its own series' value (never a neighbour's), a duplicated system
    its ambiguity error, and the cycle never fails."""
    labelled: list[list[tuple[str, str]]] = [
        [("a", "0.91"), ("b", "0.92"), ("c", "0.93")],
        [("a", "0.94"), ("b", "0.95"), ("c", "0.96")],
        [("c", "0.97"), ("a", "0.98"), ("b", "0.99")],
        [("a", "0.71"), ("b", "0.72"), ("c", "0.73")],  # and a series without the label
        [("c", "0.81"), ("a", "0.82"), ("a", "0.83"), ("b", "0.84")],
        [("\ud800", "1"), ("b", "0.85"), ("x\x00\x1b", "1"), ("c", "0.86"), ("a", "0.87")],
        [("b", "0.88"), ("c", "0.89")],  # a gone
    ]
    expected: list[dict[str, float | str]] = [
        {"a": 0.91, "b": 0.92, "c": 0.93},
        {"a": 0.94, "b": 0.95, "c": 0.96},
        {"a": 0.98, "b": 0.99, "c": 0.97},
        {"a": 0.71, "b": 0.72, "c": 0.73},
        {"a": "several series", "b": 0.84, "c": 0.81},
        {"a": 0.87, "b": 0.85, "c": 0.86},
        {"a": "returns no series with model='a'", "b": 0.88, "c": 0.89},
    ]
    answers = []
    for cycle, pairs in enumerate(labelled):
        document = json.loads(vector(*pairs, at=(NOW + timedelta(minutes=cycle)).timestamp()))
        if cycle == 3:
            point = [(NOW + timedelta(minutes=cycle)).timestamp(), "5"]
            document["data"]["result"].insert(1, {"metric": {"job": "x"}, "value": point})
        answers.append(json.dumps(document).encode())
    serve = range_or(answers)

    async with loopback(serve) as (url, _):
        config = config_for(url)
        source = build_source("prom", config.sources["prom"], clock=lambda: NOW)
        bank = Bank()
        try:
            for cycle, wanted in enumerate(expected):
                at = NOW + timedelta(minutes=cycle)
                findings, stats = await poll(config, {"prom": source}, at, bank)
                assert stats.up == {"prom": True}, stats.errors
                for model, value in wanted.items():
                    finding = findings[f"{model}-system"]["accuracy"]
                    if isinstance(value, str):
                        assert finding.value is None and value in (finding.reason or "")
                    else:
                        assert finding.value == value, (cycle, model, finding)
        finally:
            await source.aclose()


async def test_a_broken_query_s_reason_quoting_hostile_labels_can_be_stored_and_shown() -> None:
    """Through poll: a template answer whose series all lack the label, one carrying a lone
    surrogate and a terminal escape in another label, is a broken query (``query_error``, the
    source up: it becomes a stale incident whose summary quotes the reason). The reason each
    system gets is printable and encodes as UTF-8 (SQLite refuses a lone surrogate: the
    incident could not have been stored)."""
    metric = {"job": "\ud800\x1b[31mred"}
    document = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": metric, "value": [NOW.timestamp(), "1"]}],
        },
    }
    async with loopback(range_or([json.dumps(document).encode()])) as (url, _):
        config = config_for(url)
        source = build_source("prom", config.sources["prom"], clock=lambda: NOW)
        try:
            findings, stats = await poll(config, {"prom": source}, NOW, Bank())
        finally:
            await source.aclose()
    assert stats.up == {"prom": True} and stats.errors == {("prom", "query_error"): 1}
    for model in MODELS:
        finding = findings[f"{model}-system"]["accuracy"]
        assert finding.error_reason == "query_error" and finding.reason is not None
        assert finding.reason.isprintable() and "\\ud800\\x1b[31mred" in finding.reason
        finding.reason.encode("utf-8")
