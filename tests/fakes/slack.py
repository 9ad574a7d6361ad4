"""A fake Slack incoming webhook: a real HTTP server on loopback that validates payloads the
way Slack does, records what it accepted, and answers with scripted errors on request.

Usage::

    with FakeSlack() as slack:
        channel = SlackWebhookChannel("slack", SecretStr(slack.url), timeout=...)
        slack.answer_next(rate_limited(30))      # the next request gets 429 + Retry-After
        ...
        assert slack.received[0]["blocks"][0]["type"] == "header"

What it checks, following Slack's documented behaviour for incoming webhooks: only POST to the
webhook's own path (another path is a removed webhook: ``404 no_service``); a JSON body (or a
form field ``payload``) that is an object (else ``400 invalid_payload``); some ``text``,
``blocks`` or ``attachments`` (else ``400 no_text``); at most 50 blocks (else ``400
invalid_payload``); every block an object of a known type with valid text objects, within
Block Kit's size limits, with unique ``block_id`` and ``action_id`` values (else ``400
invalid_blocks``). A valid request gets ``200 ok``.

The same server is a Web API too: ``POST /api/chat.postMessage`` (``.api_url`` is the base
URL, ``.token`` the bot token it accepts). It answers JSON like Slack: ``Authorization: Bearer
<token>`` required (else ``invalid_auth``); ``channel`` required and known (a member id in
``members`` opens the DM, a name in ``channels`` with or without ``#`` or a conversation id in
``channels`` is that channel; else ``channel_not_found``; ``archived`` ones are ``is_archived``,
``not_joined`` ones ``not_in_channel``); the same block rules (``invalid_blocks``, ``no_text``),
``text`` at most 40,000 characters (else ``msg_too_long``). Accepted messages are recorded,
with their ``channel``, in ``.posted``. Scripted replies (``api_error``, ``api_rate_limited``,
``SERVER_ERROR``) answer the next requests of either kind.

Threads: a ``thread_ts`` must name a message the fake accepted in that conversation (else
``thread_not_found``); it is kept in the posted message, so ``.posted`` shows which replies
went into which thread. ``POST /api/chat.update`` takes ``channel`` (the conversation id a
post answered with), ``ts`` and new ``text`` / ``blocks`` (the same rules): an unknown channel
is ``channel_not_found``, an unknown ``ts`` there ``message_not_found``; an accepted update
replaces the message (``.message(channel, ts)``) and is recorded in ``.updated``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

__all__ = [
    "ACTION_PROHIBITED",
    "CHANNEL_IS_ARCHIVED",
    "CHANNEL_NOT_FOUND",
    "INVALID_PAYLOAD",
    "NO_SERVICE",
    "OK",
    "SERVER_ERROR",
    "FakeSlack",
    "RecordedRequest",
    "Reply",
    "api_error",
    "api_rate_limited",
    "rate_limited",
]

API_PATH = "/api/chat.postMessage"
UPDATE_PATH = "/api/chat.update"
MAX_TEXT = 40_000

MAX_BLOCKS = 50
KNOWN_BLOCK_TYPES = frozenset(
    {
        "actions",
        "context",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "markdown",
        "rich_text",
        "section",
        "video",
    }
)
KNOWN_ELEMENT_TYPES = frozenset(
    {
        "button",
        "checkboxes",
        "datepicker",
        "datetimepicker",
        "email_text_input",
        "image",
        "multi_static_select",
        "overflow",
        "plain_text_input",
        "radio_buttons",
        "static_select",
        "timepicker",
        "url_text_input",
    }
)
TEXT_TYPES = frozenset({"plain_text", "mrkdwn"})


@dataclass(frozen=True)
class Reply:
    """One scripted answer: status, plain-text body, extra headers, and a delay before it."""

    status: int
    body: str
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    content_type: str = "text/html"


OK = Reply(200, "ok")
INVALID_PAYLOAD = Reply(400, "invalid_payload")
ACTION_PROHIBITED = Reply(403, "action_prohibited")
NO_SERVICE = Reply(404, "no_service")
CHANNEL_NOT_FOUND = Reply(404, "channel_not_found")
CHANNEL_IS_ARCHIVED = Reply(410, "channel_is_archived")
SERVER_ERROR = Reply(500, "rollup_error")


def rate_limited(retry_after: int | str = 30) -> Reply:
    """Slack's answer to too many messages: ``429`` with ``Retry-After`` in seconds (or any
    header text, e.g. ``"1e12"`` or an HTTP date, to test what a hostile server may send)."""
    return Reply(429, "rate_limited", (("Retry-After", str(retry_after)),))


def api_reply(body: Mapping[str, Any], status: int = 200, **headers: str) -> Reply:
    """A Web API answer: a JSON body (``{"ok": ...}``) with ``status`` and extra headers."""
    return Reply(
        status,
        json.dumps(dict(body)),
        tuple((name.replace("_", "-"), value) for name, value in headers.items()),
        content_type="application/json; charset=utf-8",
    )


def api_error(error: str, status: int = 200) -> Reply:
    """The Web API refusing a call: ``{"ok": false, "error": error}`` (HTTP 200 like Slack)."""
    return api_reply({"ok": False, "error": error}, status)


def api_rate_limited(retry_after: int | str = 30) -> Reply:
    """The Web API's rate limit: ``429``, ``Retry-After`` (seconds or any header text) and
    ``{"ok": false, "error": "ratelimited"}``."""
    return api_reply({"ok": False, "error": "ratelimited"}, 429, Retry_After=str(retry_after))


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the fake saw it, accepted or not."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    reply: Reply


class BlockError(ValueError):
    """A payload that Slack would refuse, with the error string Slack would answer."""

    def __init__(self, error: str, why: str) -> None:
        super().__init__(why)
        self.error = error


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    script: deque[Reply] = field(default_factory=deque)
    received: list[dict[str, Any]] = field(default_factory=list)
    posted: list[dict[str, Any]] = field(default_factory=list)
    updated: list[dict[str, Any]] = field(default_factory=list)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """(conversation id, ts) → the message as it now stands."""
    requests: list[RecordedRequest] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)


class FakeSlack:
    """A Slack incoming webhook on ``127.0.0.1`` at a free port, served from a thread.

    Args:
        path: The webhook's path; requests to any other path (but the Web API's) get ``404
            no_service``.
        token: The bot token the Web API accepts.
        members: Member ids the Web API can open a DM with.
        channels: Channel names (``#name`` or ``name``) and conversation ids the bot can post
            to.
        archived: Channels that exist but are archived (``is_archived``).
        not_joined: Channels that exist but the bot is not in (``not_in_channel``).
    """

    def __init__(
        self,
        path: str = "/services/T0FAKE/B0FAKE/fakeSecretToken123",
        *,
        token: str = "xoxb-0000-fakeBotToken4567",
        members: Iterable[str] = ("U024BE7LH", "U0BOB0001", "U0CAROL01"),
        channels: Iterable[str] = ("#ml-fraud", "#ml-platform", "C0FRAUD01"),
        archived: Iterable[str] = ("#old-team",),
        not_joined: Iterable[str] = ("#private-team",),
    ) -> None:
        self.path = path
        self.token = token
        self._api = _Api(
            token=token,
            members=frozenset(members),
            channels=frozenset(c.lstrip("#") for c in channels),
            archived=frozenset(c.lstrip("#") for c in archived),
            not_joined=frozenset(c.lstrip("#") for c in not_joined),
        )
        self._state = _State()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        """Bind a free loopback port and serve in a background thread."""
        if self._server is not None:
            return self
        handler = _make_handler(self.path, self._state, self._api)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-slack",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeSlack is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The webhook URL to configure (``http://127.0.0.1:PORT/services/...``)."""
        return f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def api_url(self) -> str:
        """The Web API's base URL to configure (``http://127.0.0.1:PORT/api/``)."""
        return f"http://127.0.0.1:{self.port}/api/"

    # -- scripting and inspection ---------------------------------------------------------

    def answer_next(self, reply: Reply, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``reply`` instead of validating them.

        A scripted ``200`` still records the payload (when it parses) as received.
        """
        with self._state.lock:
            self._state.script.extend([reply] * times)

    @property
    def received(self) -> list[dict[str, Any]]:
        """Payloads accepted with ``200 ok``, oldest first (a copy)."""
        with self._state.lock:
            return list(self._state.received)

    @property
    def posted(self) -> list[dict[str, Any]]:
        """Web API messages accepted by ``chat.postMessage`` (with their ``channel``), oldest
        first (a copy)."""
        with self._state.lock:
            return list(self._state.posted)

    def wait_for_posted(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until ``count`` Web API messages were accepted, then return them.

        Raises:
            TimeoutError: when fewer arrived within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._state.arrived:
            while len(self._state.posted) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"FakeSlack posted {len(self._state.posted)} of {count} messages"
                    )
                self._state.arrived.wait(left)
            return list(self._state.posted)

    @property
    def updated(self) -> list[dict[str, Any]]:
        """``chat.update`` calls accepted (with their ``channel`` and ``ts``), oldest first."""
        with self._state.lock:
            return list(self._state.updated)

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        """A message as it stands now (posted, then updated), by conversation id and ts."""
        with self._state.lock:
            return dict(self._state.messages[(channel, ts)])

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request that arrived, accepted or not, oldest first (a copy)."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def rejections(self) -> list[str]:
        """Why the fake refused payloads it validated, e.g. ``invalid_blocks: ...``."""
        with self._state.lock:
            return list(self._state.rejections)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until ``count`` payloads were accepted, then return them.

        Raises:
            TimeoutError: when fewer arrived within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._state.arrived:
            while len(self._state.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"FakeSlack received {len(self._state.received)} of {count} payloads"
                    )
                self._state.arrived.wait(left)
            return list(self._state.received)

    def reset(self) -> None:
        """Forget everything received and every scripted reply."""
        with self._state.lock:
            self._state.script.clear()
            self._state.received.clear()
            self._state.posted.clear()
            self._state.updated.clear()
            self._state.messages.clear()
            self._state.requests.clear()
            self._state.rejections.clear()


@dataclass(frozen=True)
class _Api:
    token: str
    members: frozenset[str]
    channels: frozenset[str]
    archived: frozenset[str]
    not_joined: frozenset[str]

    def post_message(
        self, headers: Mapping[str, str], body: bytes, messages: dict[tuple[str, str], Any]
    ) -> tuple[Reply, Any]:
        """Slack's answer to one ``chat.postMessage`` call, and the message when accepted
        (``messages``, the conversation's messages by ts, gains it)."""
        payload, refused = self._authorized_payload(headers, body)
        if refused is not None:
            return refused, None
        channel = payload.get("channel")
        if not isinstance(channel, str) or not channel.strip():
            return api_error("channel_not_found"), None
        name = channel.strip().lstrip("#")
        if name in self.archived:
            return api_error("is_archived"), None
        if name in self.not_joined:
            return api_error("not_in_channel"), None
        if name in self.members:
            resolved = "D" + name[1:]
        elif name in self.channels:
            resolved = name if name[:1] in ("C", "G") and name.upper() == name else "C0" + name
        elif any(key[0] == name for key in messages):  # a conversation id a post answered
            resolved = name
        else:
            return api_error("channel_not_found"), None
        try:
            _validate(payload)
        except BlockError as exc:
            error = "invalid_blocks" if exc.error == "invalid_payload" else exc.error
            return api_error(error), None
        if len(payload.get("text") or "") > MAX_TEXT:
            return api_error("msg_too_long"), None
        thread_ts = payload.get("thread_ts")
        if thread_ts is not None and (resolved, thread_ts) not in messages:
            return api_error("thread_not_found"), None
        ts = f"{time.time():.6f}"
        while (resolved, ts) in messages:  # two posts within a microsecond
            ts = f"{float(ts) + 0.000001:.6f}"
        messages[(resolved, ts)] = dict(payload)
        return api_reply({"ok": True, "channel": resolved, "ts": ts}), payload

    def update(
        self, headers: Mapping[str, str], body: bytes, messages: dict[tuple[str, str], Any]
    ) -> tuple[Reply, Any]:
        """Slack's answer to one ``chat.update`` call, and the update when accepted (the
        message in ``messages`` is replaced)."""
        payload, refused = self._authorized_payload(headers, body)
        if refused is not None:
            return refused, None
        channel, ts = payload.get("channel"), payload.get("ts")
        if not isinstance(channel, str) or not any(key[0] == channel for key in messages):
            return api_error("channel_not_found"), None
        if (channel, ts) not in messages:
            return api_error("message_not_found"), None
        try:
            _validate(payload)
        except BlockError as exc:
            error = "invalid_blocks" if exc.error == "invalid_payload" else exc.error
            return api_error(error), None
        messages[(channel, ts)] = {**messages[(channel, ts)], **payload}
        return api_reply({"ok": True, "channel": channel, "ts": ts, "text": ""}), payload

    def _authorized_payload(
        self, headers: Mapping[str, str], body: bytes
    ) -> tuple[dict[str, Any], Reply | None]:
        auth = headers.get("Authorization", "")
        if auth != f"Bearer {self.token}":
            return {}, api_error("not_authed" if not auth else "invalid_auth")
        try:
            payload = _parse(headers.get("Content-Type", ""), body, api=True)
        except BlockError as exc:
            return {}, api_error(exc.error)
        if isinstance(payload.get("blocks"), str):  # form-encoded: blocks as a JSON string
            try:
                payload["blocks"] = json.loads(payload["blocks"])
            except ValueError:
                return {}, api_error("invalid_blocks")
        return payload, None


def _make_handler(path: str, state: _State, api: _Api) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with state.lock:
                scripted = state.script.popleft() if state.script else None
            payload: dict[str, Any] | None = None
            if scripted is None and self.path in (API_PATH, UPDATE_PATH):
                with state.arrived:
                    call = api.post_message if self.path == API_PATH else api.update
                    reply, posted = call(self.headers, body, state.messages)
                    state.requests.append(
                        RecordedRequest("POST", self.path, dict(self.headers.items()), body, reply)
                    )
                    if posted is not None:
                        (state.posted if self.path == API_PATH else state.updated).append(posted)
                        state.arrived.notify_all()
                    else:
                        state.rejections.append(f"api: {json.loads(reply.body)['error']}")
                self._answer(reply)
                return
            if scripted is not None:
                reply = scripted
                if reply.status == 200 and self.path not in (API_PATH, UPDATE_PATH):
                    try:
                        payload = _parse(self.headers.get("Content-Type", ""), body)
                    except BlockError:
                        payload = None
            elif self.path != path:
                reply = NO_SERVICE
            else:
                try:
                    payload = _parse(self.headers.get("Content-Type", ""), body)
                    _validate(payload)
                    reply = OK
                except BlockError as exc:
                    payload = None
                    reply = Reply(400, exc.error)
                    with state.lock:
                        state.rejections.append(f"{exc.error}: {exc}")
            with state.arrived:
                state.requests.append(
                    RecordedRequest("POST", self.path, dict(self.headers.items()), body, reply)
                )
                if payload is not None and reply.status == 200:
                    state.received.append(payload)
                    state.arrived.notify_all()
            self._answer(reply)

        def do_GET(self) -> None:
            self._answer(Reply(405, "invalid_method"))

        do_PUT = do_GET
        do_DELETE = do_GET

        def _answer(self, reply: Reply) -> None:
            if reply.delay:
                time.sleep(reply.delay)
            data = reply.body.encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test); nothing to answer

    return Handler


def _parse(content_type: str, body: bytes, *, api: bool = False) -> dict[str, Any]:
    media_type = content_type.split(";")[0].strip().lower()
    try:
        if media_type == "application/x-www-form-urlencoded" and api:
            return {k: v[0] for k, v in parse_qs(body.decode("utf-8")).items()}
        if media_type == "application/x-www-form-urlencoded":
            fields = parse_qs(body.decode("utf-8"))
            raw = fields.get("payload", [""])[0]
        else:
            raw = body.decode("utf-8")
        payload = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BlockError("invalid_payload", f"body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise BlockError("invalid_payload", "payload is not a JSON object")
    return payload


def _validate(payload: dict[str, Any]) -> None:
    text = payload.get("text")
    blocks = payload.get("blocks")
    if text is not None and not isinstance(text, str):
        raise BlockError("invalid_payload", "text must be a string")
    if blocks is not None and not isinstance(blocks, list):
        raise BlockError("invalid_payload", "blocks must be a list")
    if not text and not blocks and not payload.get("attachments"):
        raise BlockError("no_text", "payload has no text, blocks or attachments")
    if blocks is None:
        return
    if len(blocks) > MAX_BLOCKS:
        raise BlockError("invalid_payload", f"{len(blocks)} blocks, at most {MAX_BLOCKS}")
    block_ids: set[str] = set()
    for index, block in enumerate(blocks):
        _validate_block(index, block, block_ids)


def _validate_block(index: int, block: object, block_ids: set[str]) -> None:
    where = f"blocks[{index}]"
    if not isinstance(block, dict):
        raise BlockError("invalid_blocks", f"{where} is not an object")
    kind = block.get("type")
    if kind not in KNOWN_BLOCK_TYPES:
        raise BlockError("invalid_blocks", f"{where} has unknown type {kind!r}")
    block_id = block.get("block_id")
    if block_id is not None:
        if not isinstance(block_id, str) or not 0 < len(block_id) <= 255:
            raise BlockError("invalid_blocks", f"{where}.block_id must be 1-255 characters")
        if block_id in block_ids:
            raise BlockError("invalid_blocks", f"{where}.block_id {block_id!r} is repeated")
        block_ids.add(block_id)
    if kind == "header":
        _text_object(f"{where}.text", block.get("text"), limit=150, plain_only=True)
    elif kind == "section":
        text, fields = block.get("text"), block.get("fields")
        if text is None and not fields:
            raise BlockError("invalid_blocks", f"{where} needs text or fields")
        if text is not None:
            _text_object(f"{where}.text", text, limit=3000)
        if fields is not None:
            if not isinstance(fields, list) or not 0 < len(fields) <= 10:
                raise BlockError("invalid_blocks", f"{where}.fields must hold 1-10 items")
            for position, item in enumerate(fields):
                _text_object(f"{where}.fields[{position}]", item, limit=2000)
        if block.get("accessory") is not None:
            _element(f"{where}.accessory", block["accessory"], set())
    elif kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 0 < len(elements) <= 10:
            raise BlockError("invalid_blocks", f"{where}.elements must hold 1-10 items")
        for position, item in enumerate(elements):
            if isinstance(item, dict) and item.get("type") == "image":
                continue
            _text_object(f"{where}.elements[{position}]", item, limit=3000)
    elif kind == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 0 < len(elements) <= 25:
            raise BlockError("invalid_blocks", f"{where}.elements must hold 1-25 items")
        action_ids: set[str] = set()
        for position, item in enumerate(elements):
            _element(f"{where}.elements[{position}]", item, action_ids)


def _text_object(where: str, value: object, *, limit: int, plain_only: bool = False) -> None:
    if not isinstance(value, dict):
        raise BlockError("invalid_blocks", f"{where} is not a text object")
    kind = value.get("type")
    allowed = {"plain_text"} if plain_only else TEXT_TYPES
    if kind not in allowed:
        raise BlockError("invalid_blocks", f"{where} has text type {kind!r}")
    text = value.get("text")
    if not isinstance(text, str) or not text:
        raise BlockError("invalid_blocks", f"{where}.text must be a non-empty string")
    if len(text) > limit:
        raise BlockError("invalid_blocks", f"{where}.text is {len(text)} characters, max {limit}")


def _element(where: str, value: object, action_ids: set[str]) -> None:
    if not isinstance(value, dict):
        raise BlockError("invalid_blocks", f"{where} is not an object")
    kind = value.get("type")
    if kind not in KNOWN_ELEMENT_TYPES:
        raise BlockError("invalid_blocks", f"{where} has unknown element type {kind!r}")
    action_id = value.get("action_id")
    if action_id is not None:
        if not isinstance(action_id, str) or not 0 < len(action_id) <= 255:
            raise BlockError("invalid_blocks", f"{where}.action_id must be 1-255 characters")
        if action_id in action_ids:
            raise BlockError("invalid_blocks", f"{where}.action_id {action_id!r} is repeated")
        action_ids.add(action_id)
    if kind == "button":
        _text_object(f"{where}.text", value.get("text"), limit=75, plain_only=True)
        url = value.get("url")
        if url is not None and (not isinstance(url, str) or not 0 < len(url) <= 3000):
            raise BlockError("invalid_blocks", f"{where}.url must be 1-3000 characters")
        style = value.get("style")
        if style is not None and style not in ("primary", "danger"):
            raise BlockError("invalid_blocks", f"{where}.style {style!r} is not allowed")
