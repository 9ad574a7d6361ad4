"""A small JSON HTTP service on loopback for the fakes of paging services: it records every
request, answers each through the fake's own ``answer`` function, or with scripted replies
(rate limits, server errors) queued in advance."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


@dataclass(frozen=True)
class Reply:
    """One answer: status, JSON body, extra headers."""

    status: int
    body: Any
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Request:
    """A request as the fake saw it, with the reply it got."""

    path: str
    headers: Mapping[str, str]
    body: Any
    """The parsed JSON body, or None when it was not JSON."""
    reply: Reply


Answer = Callable[[str, Mapping[str, str], Any], Reply]
"""(path with query, headers, parsed body or None) → the service's reply."""


class JsonService:
    """Serves ``answer`` on ``127.0.0.1`` at a free port from a thread.

    Args:
        answer: How the service answers a request nothing was scripted for.
        name: The thread's name.
    """

    def __init__(self, answer: Answer, name: str) -> None:
        self._answer = answer
        self._name = name
        self._lock = threading.Lock()
        self._script: deque[Reply] = deque()
        self._requests: list[Request] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        handler = self._handler()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self._name,
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def url(self) -> str:
        """The base URL, ending with ``/``."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def answer_next(self, reply: Reply, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``reply``."""
        with self._lock:
            self._script.extend([reply] * times)

    @property
    def requests(self) -> list[Request]:
        """Every request, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Keep test output quiet."""

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                headers = dict(self.headers.items())
                with service._lock:
                    scripted = service._script.popleft() if service._script else None
                reply = scripted or service._answer(self.path, headers, body)
                with service._lock:
                    service._requests.append(Request(self.path, headers, body, reply))
                data = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler
