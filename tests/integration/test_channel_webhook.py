"""The generic webhook channel against a small real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import struct
import textwrap
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr, ValidationError

from driftowner import escalation, render
from driftowner.channels import build_channel
from driftowner.channels.webhook import PAYLOAD_VERSION, WebhookChannel, build_payload
from driftowner.config import WebhookChannelConfig
from driftowner.model import Delivery, Evidence, Notification
from tests.unit import factories

pytestmark = pytest.mark.integration

SECRET_PATH = "/hooks/driftowner?token=SECRETtoken42"


def notification(notification_id: str = "notif-9", **changes: Any) -> Notification:
    """A post for Alice to the ops bridge; ``changes`` replace fields of its message."""
    return factories.notification(
        notification_id,
        channel="hook",
        recipient="alice",
        address="ops-bridge",
        created_at=datetime(2024, 5, 2, tzinfo=UTC),
        message=factories.full_message(**changes),
    )


@dataclass
class Receiver:
    """A loopback HTTP endpoint that records requests and answers from a script (default 200)."""

    script: deque[tuple[int, dict[str, str], str]] = field(default_factory=deque)
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{SECRET_PATH}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                state.requests.append((self.path, dict(self.headers.items()), body))
                status, headers, text = (
                    state.script.popleft() if state.script else (202, {}, "accepted")
                )
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def channel_for(receiver: Receiver) -> WebhookChannel:
    return WebhookChannel("hook", SecretStr(receiver.url), timeout=timedelta(seconds=5))


async def test_posts_the_versioned_document_with_an_idempotency_key(receiver: Receiver) -> None:
    """A 2xx answer is delivered; the body is the version-1 document with every Message
    field, datetimes in RFC 3339 UTC, and the Idempotency-Key is the notification id."""
    sent = notification(
        purpose="reminder",
        incident_id="inc-42",
        system="fraud-scoring",
        owner="alice",
        owner_name="Alice Chen",
        kind="drift",
        rule="drift:accuracy",
        state="acknowledged",
        layers=("model",),
        summary="accuracy below 0.90",
        evidence=(Evidence("accuracy", "model", "degraded", "0.71 < min 0.90", 0.71, None, 0.9),),
        opened_at=datetime(2024, 5, 1, 11, 30, tzinfo=timezone(timedelta(hours=2))),
        age_seconds=90061.5,
        step=0,
        recipient_name="Alice Chen",
        runbook=None,
        incident_url="https://driftowner.example.com/incidents/inc-42",
        ack_url=None,
        resolve_url="https://driftowner.example.com/a/resolve-token",
    )
    channel = channel_for(receiver)
    delivery = await channel.send(sent)
    await channel.aclose()
    assert delivery == Delivery.delivered()
    [(path, headers, body)] = receiver.requests
    assert path == SECRET_PATH
    assert headers["Idempotency-Key"] == "notif-9"
    assert headers["Content-Type"] == "application/json"
    document = json.loads(body)
    assert document == {
        "version": PAYLOAD_VERSION,
        "notification_id": "notif-9",
        "channel": "hook",
        "recipient": "alice",
        "address": "ops-bridge",
        "message": {
            "purpose": "reminder",
            "incident_id": "inc-42",
            "system": "fraud-scoring",
            "owner": "alice",
            "owner_name": "Alice Chen",
            "kind": "drift",
            "rule": "drift:accuracy",
            "state": "acknowledged",
            "layers": ["model"],
            "summary": "accuracy below 0.90",
            "evidence": ["accuracy (model): degraded — 0.71 < min 0.90"],
            "opened_at": "2024-05-01T09:30:00Z",
            "age_seconds": 90061.5,
            "step": 0,
            "recipient_name": "Alice Chen",
            "runbook": None,
            "incident_url": "https://driftowner.example.com/incidents/inc-42",
            "ack_url": None,
            "resolve_url": "https://driftowner.example.com/a/resolve-token",
            "note": "",
            "actor": "",
            "upstreams": [],
            "findings": [
                {
                    "signal": "accuracy",
                    "layer": "model",
                    "status": "degraded",
                    "reason": "0.71 < min 0.90",
                    "value": 0.71,
                    "reference": None,
                    "limit": 0.9,
                }
            ],
            "breach": None,
            "held_by": None,
        },
    }
    assert "X-Driftowner-Signature" not in headers  # no secret, no signature


async def test_a_retried_notification_keeps_its_idempotency_key(receiver: Receiver) -> None:
    """At-least-once delivery: the second attempt of one notification carries the same key,
    so the receiver can drop the duplicate."""
    receiver.script.append((503, {}, "busy"))
    channel = channel_for(receiver)
    first = await channel.send(notification())
    second = await channel.send(notification())
    await channel.aclose()
    assert first.recoverable
    assert second.ok
    keys = [headers["Idempotency-Key"] for _, headers, _ in receiver.requests]
    assert keys == ["notif-9", "notif-9"]


@pytest.mark.parametrize("status", [500, 502, 503, 408])
async def test_server_trouble_is_retried(receiver: Receiver, status: int) -> None:
    """5xx and 408 are the receiver's passing trouble: retry."""
    receiver.script.append((status, {}, "try later"))
    channel = channel_for(receiver)
    delivery = await channel.send(notification())
    await channel.aclose()
    assert not delivery.ok
    assert delivery.recoverable
    assert f"HTTP {status}" in delivery.detail


async def test_rate_limit_honours_retry_after(receiver: Receiver) -> None:
    """429 is retried no sooner than the receiver's Retry-After."""
    receiver.script.append((429, {"Retry-After": "17"}, "slow down"))
    channel = channel_for(receiver)
    delivery = await channel.send(notification())
    await channel.aclose()
    assert delivery.recoverable
    assert delivery.retry_after == 17


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
async def test_other_client_errors_give_up(receiver: Receiver, status: int) -> None:
    """Any other 4xx means the request itself is wrong or unwelcome: give up."""
    receiver.script.append((status, {}, "no"))
    channel = channel_for(receiver)
    delivery = await channel.send(notification())
    await channel.aclose()
    assert not delivery.ok
    assert not delivery.recoverable
    assert f"HTTP {status}" in delivery.detail


async def test_url_and_its_token_never_appear_in_details(receiver: Receiver) -> None:
    """Even when the receiver echoes the URL back, details show neither it nor its token."""
    receiver.script.append((400, {}, f"bad request to {receiver.url}"))
    receiver.script.append((500, {}, "token=SECRETtoken42 rejected"))
    channel = channel_for(receiver)
    details = [(await channel.send(notification())).detail for _ in range(2)]
    await channel.aclose()
    for detail in details:
        assert "SECRETtoken42" not in detail
        assert receiver.url not in detail


async def test_nobody_listening_is_retried() -> None:
    """A refused connection is retried later."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    channel = WebhookChannel(
        "hook", SecretStr(f"http://127.0.0.1:{port}/x"), timeout=timedelta(seconds=2)
    )
    delivery = await channel.send(notification())
    await channel.aclose()
    assert delivery.recoverable
    assert "ConnectError" in delivery.detail


async def test_timeout_is_retried() -> None:
    """No answer within the timeout: retry."""
    router = respx.MockRouter(assert_all_called=True)
    router.post("https://hooks.example/x").mock(side_effect=httpx.ReadTimeout("slow"))
    channel = WebhookChannel(
        "hook",
        SecretStr("https://hooks.example/x"),
        timeout=timedelta(seconds=2),
        transport=httpx.MockTransport(router.handler),
    )
    delivery = await channel.send(notification())
    await channel.aclose()
    assert delivery.recoverable
    assert "within 2s" in delivery.detail


async def test_build_channel_makes_a_webhook_channel_without_io() -> None:
    """``build_channel`` maps a ``webhook`` config to the channel; the client opens lazily."""
    built = build_channel(
        "hook", WebhookChannelConfig(type="webhook", url=SecretStr("https://hooks.invalid/x"))
    )
    assert isinstance(built, WebhookChannel)
    assert built._http is None
    await built.aclose()


def documented_verifier() -> Any:
    """``verify_driftowner`` exactly as docs/operations.md shows it (the block after the
    ``<!-- webhook-verify -->`` marker), compiled from the document itself."""
    text = (Path(__file__).parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    after = text.split("<!-- webhook-verify -->", 1)[1]
    block = after.split("```python", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(block), namespace)
    return namespace["verify_driftowner"]


async def test_the_documented_snippet_verifies_a_signed_request(receiver: Receiver) -> None:
    """With a ``secret``, the request carries a timestamp and a ``v1=`` HMAC-SHA256 that the
    verification code of the docs accepts over the raw body; a changed body, another secret,
    a replayed old timestamp and a missing signature are refused; the secret is not sent."""
    verify = documented_verifier()
    channel = WebhookChannel(
        "hook",
        SecretStr(receiver.url),
        timeout=timedelta(seconds=5),
        secret=SecretStr("whsec-Shared-42"),
    )
    assert (await channel.send(notification())).ok
    await channel.aclose()
    [(_, headers, body)] = receiver.requests
    timestamp, signed = headers["X-Driftowner-Timestamp"], headers["X-Driftowner-Signature"]
    assert signed.startswith("v1=")
    assert verify(b"whsec-Shared-42", body, timestamp, signed)
    assert not verify(b"whsec-Shared-42", body.replace(b"alice", b"mallory"), timestamp, signed)
    assert not verify(b"another-secret", body, timestamp, signed)
    assert not verify(b"whsec-Shared-42", body, "not-a-number", signed)
    assert not verify(b"whsec-Shared-42", body, timestamp, "")
    assert b"whsec-Shared-42" not in body and "whsec-Shared-42" not in str(headers)


async def test_an_old_signature_is_refused_as_a_replay(receiver: Receiver) -> None:
    """A request signed 10 minutes ago (the channel's clock) fails the documented check."""
    verify = documented_verifier()
    channel = WebhookChannel(
        "hook",
        SecretStr(receiver.url),
        timeout=timedelta(seconds=5),
        secret=SecretStr("whsec-Shared-42"),
        clock=lambda: time.time() - 600,
    )
    assert (await channel.send(notification())).ok
    await channel.aclose()
    [(_, headers, body)] = receiver.requests
    stamp, signed = headers["X-Driftowner-Timestamp"], headers["X-Driftowner-Signature"]
    assert not verify(b"whsec-Shared-42", body, stamp, signed)


def test_a_blank_secret_is_a_config_error() -> None:
    """An empty ``secret`` is refused (omit it to send unsigned), not read as no signing."""
    with pytest.raises(ValidationError) as caught:
        WebhookChannelConfig.model_validate(
            {"type": "webhook", "url": "https://hooks.example.com/x", "secret": "  "}
        )
    assert caught.value.errors()[0]["loc"] == ("secret",)


# -- the aiohttp transport against misbehaving receivers (real loopback sockets) -------------


async def _answer_closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    writer.close()


async def _answer_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()
    writer.close()


async def _answer_reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def _answer_never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


@pytest.mark.parametrize(
    ("server", "named"),
    [
        (_answer_closing, "RemoteProtocolError"),
        (_answer_garbage, "RemoteProtocolError"),
        (_answer_reset, "NetworkError"),
        (_answer_never, "no answer within 1s (ReadTimeout)"),
    ],
)
async def test_a_misbehaving_receiver_is_retried_with_what_went_wrong(
    server: Any, named: str
) -> None:
    """A receiver that closes without answering, answers something that is not HTTP, resets
    the connection or never answers: each is retried, the detail naming what happened (not a
    timeout for a closed connection), without the URL's secret path."""
    listening = await asyncio.start_server(server, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    channel = WebhookChannel(
        "hook", SecretStr(f"http://127.0.0.1:{port}/SECRETxyz"), timeout=timedelta(seconds=1)
    )
    try:
        delivery = await channel.send(notification())
    finally:
        await channel.aclose()
        listening.close()
    assert delivery.recoverable
    assert named in delivery.detail
    assert "SECRETxyz" not in delivery.detail


async def test_headers_go_out_as_written() -> None:
    """The idempotency and signature headers reach the receiver with their names as written
    (``Idempotency-Key``, ``X-Driftowner-Signature``), with driftowner's User-Agent."""
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    listening = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    channel = WebhookChannel(
        "hook",
        SecretStr(f"http://127.0.0.1:{port}/x"),
        timeout=timedelta(seconds=5),
        secret=SecretStr("s3cret"),
    )
    try:
        assert await channel.send(notification()) == Delivery.delivered()
    finally:
        await channel.aclose()
        listening.close()
    head = seen[0].decode()
    assert "\r\nIdempotency-Key: " in head
    assert "\r\nX-Driftowner-Signature: v1=" in head
    assert "\r\nX-Driftowner-Timestamp: " in head
    assert "\r\nContent-Type: application/json\r\n" in head
    assert "\r\nUser-Agent: driftowner/" in head


def documented_document(marker: str) -> Any:
    """The JSON example docs/operations.md shows after ``marker``."""
    text = (Path(__file__).parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    after = text.split(marker, 1)[1]
    return json.loads(after.split("```json", 1)[1].split("```", 1)[0])


def _shape(value: Any) -> Any:
    """A JSON value's shape: objects by key, a list by its first item, leaves by type."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    if value is None:
        return None
    return {bool: "bool", int: "number", float: "number", str: "string"}[type(value)]


def _same_shape(sent: Any, documented: Any, where: str = "$") -> None:
    """``sent`` has every key ``documented`` has and no other, each of the documented type
    (a null on either side matches anything: the example cannot show both)."""
    if sent is None or documented is None:
        return
    if isinstance(documented, dict):
        assert isinstance(sent, dict), where
        assert sorted(sent) == sorted(documented), (where, sorted(sent), sorted(documented))
        for key in documented:
            _same_shape(sent[key], documented[key], f"{where}.{key}")
    elif isinstance(documented, list):
        assert isinstance(sent, list), where
        if sent and documented:
            _same_shape(sent[0], documented[0], f"{where}[0]")
    else:
        assert sent == documented or {sent, documented} == {"number"}, (where, sent, documented)


def _escalated_breach() -> Notification:
    """What escalation makes for bob when fraud-scoring's ack_within passes: the SLO breach
    told to the chain's next step."""
    config = factories.make_config(
        {"channels": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/h"}}}
    )
    subject = factories.incident(config, escalation_steps_done=1)
    made = escalation.slo_breaches(
        config, subject, factories.at(31), factories.ids("n"), factories.links
    ).notifications
    told = next(n for n in made if n.recipient == "bob")
    return dataclasses.replace(told, channel="hook", address="ops-bridge")


async def test_what_a_webhook_receives_is_the_documented_json(receiver: Receiver) -> None:
    """A page (an SLO breach told to bob, as escalation makes it) and a group of two reach a
    real loopback receiver as the version 1 and version 2 documents docs/operations.md shows:
    the same keys at every level, of the same types; ``summary``, ``evidence`` and ``note``
    are render's words, the facts behind them are ``findings`` and ``breach``."""
    channel = channel_for(receiver)
    page = _escalated_breach()
    members = [notification(f"n-{i}", incident_id=f"inc-{i}", system=f"m-{i}") for i in (1, 2)]
    try:
        assert (await channel.send(page)).ok
        assert (await channel.send_group(members)).ok
    finally:
        await channel.aclose()
    single, group = (json.loads(body) for _, _, body in receiver.requests)
    v1 = documented_document("<!-- webhook-v1 -->")
    v2 = documented_document("<!-- webhook-v2 -->")
    _same_shape(_shape(single), _shape(v1))
    _same_shape(_shape({**group, "group": []}), _shape({**v2, "group": []}))
    for item, documented in zip(group["group"], v2["group"], strict=True):
        _same_shape(_shape({**item, "message": None}), _shape({**documented, "message": None}))
        _same_shape(_shape(item["message"]), _shape(v1["message"]))
    message = single["message"]
    assert message["summary"] == render.summary(page.message) != ""
    assert message["evidence"] == list(render.evidence_lines(page.message))
    assert message["note"] == render.note(page.message)
    assert message["note"].startswith("ack_within 30m passed with the incident open")
    assert message["breach"] == {"slo": "ack", "within_seconds": 1800.0, "overdue_seconds": 60.0}
    assert message["findings"][0]["signal"] == "accuracy"
    assert group["summary"] == render.group_summary([m.message for m in members])


async def test_a_test_message_reaches_a_webhook_with_a_summary(receiver: Receiver) -> None:
    """``notify-test`` through a webhook: escalation passes the facts (no summary of its own),
    and the receiver still gets render's summary, which says it is a test (a regression: the
    webhook sent the raw facts, an empty ``summary``)."""
    config = factories.make_config(
        {"channels": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/h"}}}
    )
    made = escalation.test_notifications(config, "alice", factories.T0, factories.ids("t"))
    sent = next(n for n in made if n.channel == "hook")
    channel = channel_for(receiver)
    try:
        assert (await channel.send(sent)).ok
    finally:
        await channel.aclose()
    [(_, _, body)] = receiver.requests
    message = json.loads(body)["message"]
    assert message["summary"] == "Test notification for Alice Chen: driftowner can reach you here."
    assert message["evidence"] == [] and message["purpose"] == "test"


# -- the network sender and an httpx transport send the same request ------------------------


async def test_the_network_and_an_httpx_transport_get_the_same_request_head_and_body() -> None:
    """aiohttp, called directly, puts on the wire the head httpx's Request gave it before
    (Host, Content-Type, User-Agent, Idempotency-Key, the timestamp and signature,
    Content-Length, then aiohttp's Accept and Accept-Encoding, in that order) and the bytes a
    test's httpx transport receives for the same send (the document as ``json.dumps`` with
    compact separators writes it): one request, not two that drift."""
    heads: list[bytes] = []
    bodies: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        heads.append(head)
        bodies.append(await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    listening = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/hooks?token=a%20b"
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="ok")

    made = [
        WebhookChannel(
            "hook",
            SecretStr(url),
            timeout=timedelta(seconds=5),
            secret=SecretStr("s3cret"),
            clock=lambda: 1_700_000_000.0,
            transport=transport,
        )
        for transport in (None, httpx.MockTransport(handler))
    ]
    try:
        for channel in made:
            assert await channel.send(notification()) == Delivery.delivered()
    finally:
        for channel in made:
            await channel.aclose()
        listening.close()
    lines = heads[0].decode().split("\r\n")
    assert lines[0] == "POST /hooks?token=a%20b HTTP/1.1"
    wire = [tuple(line.split(": ", 1)) for line in lines[1:] if line]
    assert [name for name, _ in wire] == [
        "Host",
        "Content-Type",
        "User-Agent",
        "Idempotency-Key",
        "X-Driftowner-Timestamp",
        "X-Driftowner-Signature",
        "Content-Length",
        "Accept",
        "Accept-Encoding",
    ]
    [request] = seen
    assert bodies[0] == request.content
    assert bodies[0] == json.dumps(build_payload(notification()), separators=(",", ":")).encode()
    mock_headers = {name: value for name, value in request.headers.items()}
    for name, value in wire[:-2]:
        assert mock_headers[name.lower()] == value, name
    assert dict(wire)["X-Driftowner-Timestamp"] == "1700000000"


async def test_a_compressed_error_answer_is_read_decoded_with_its_retry_after() -> None:
    """A 503 whose body is gzip-compressed, with ``Retry-After``, read through aiohttp (which
    does not decompress): retried after the server's delay, the detail quoting the decoded
    text, as when httpx read the answer."""
    import gzip

    text = b"overloaded, come back later"
    packed = gzip.compress(text)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Encoding: gzip\r\n"
            b"Retry-After: 42\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: " + str(len(packed)).encode() + b"\r\n"
            b"Connection: close\r\n\r\n" + packed
        )
        await writer.drain()
        writer.close()

    listening = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    channel = WebhookChannel(
        "hook", SecretStr(f"http://127.0.0.1:{port}/x"), timeout=timedelta(seconds=5)
    )
    try:
        delivery = await channel.send(notification())
    finally:
        await channel.aclose()
        listening.close()
    assert delivery == Delivery.retry(
        "webhook: HTTP 503 overloaded, come back later", retry_after=42.0
    )


async def test_a_url_that_is_not_http_gives_up_without_sending() -> None:
    """An ``ftp://`` URL reaches aiohttp, whose refusal reads as httpx's
    ``UnsupportedProtocol``: given up, the URL not shown; an unparseable one (a port that is
    not a number) is refused while it is parsed, as ``InvalidURL``."""
    for url, named in (
        ("ftp://127.0.0.1/SECRETpath", "UnsupportedProtocol"),
        ("http://127.0.0.1:notaport/SECRETpath", "InvalidURL"),
    ):
        channel = WebhookChannel("hook", SecretStr(url), timeout=timedelta(seconds=1))
        try:
            delivery = await channel.send(notification())
        finally:
            await channel.aclose()
        assert delivery == Delivery.give_up(f"webhook: the URL is not usable ({named})"), url
