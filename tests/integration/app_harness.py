"""The HTTP app of a daemon over a real store, in process: what the API tests drive."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Message, Scope

from driftowner import incidents
from driftowner.api import Runtime, create_app
from driftowner.config import Config
from driftowner.links import LinkSigner
from driftowner.metrics import Metrics
from driftowner.model import Finding, Incident
from driftowner.sources import Source
from driftowner.store import Changes, SqlStore

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Clock:
    """A settable clock, at NOW until a test moves it."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def runtime_over(
    config: Config,
    store: SqlStore,
    clock: Callable[[], datetime],
    sources: Mapping[str, Source] | None = None,
) -> Runtime:
    """A healthy daemon's runtime over an open ``store`` at ``clock``'s time, its links signed
    with the store's key, reading ``sources`` for the incident pages."""
    return Runtime(
        config=config,
        store=store,
        metrics=Metrics(store, clock),
        clock=clock,
        links=LinkSigner(store.secret("links"), config.server.base_url),
        healthy=lambda: True,
        sources=dict(sources or {}),
    )


@contextmanager
def serving(config: Config, incident_id: str) -> Iterator[tuple[TestClient, Runtime]]:
    """The app over ``config``'s store holding one open drift incident of fraud-scoring
    (accuracy 0.7 below its 0.9 minimum, opened five minutes before NOW)."""
    store = SqlStore(config.storage.url)
    store.open()
    clock = Clock()
    runtime = runtime_over(config, store, clock)
    finding = Finding("fraud-scoring", "accuracy", "model", "degraded", NOW, 0.7, reason="low")
    store.apply(
        Changes(
            opened=[
                Incident(
                    id=incident_id,
                    system="fraud-scoring",
                    owner="alice",
                    kind="drift",
                    rule="drift:accuracy",
                    layers=("model",),
                    signals=("accuracy",),
                    state="open",
                    opened_at=NOW - timedelta(minutes=5),
                    summary="accuracy falling: 0.7 < min 0.9",
                    chain=incidents.snapshot_chain(config, config.systems["fraud-scoring"]),
                    evidence=(finding,),
                )
            ]
        )
    )
    try:
        with TestClient(create_app(runtime)) as client:
            yield client, runtime
    finally:
        store.close()


def post_streamed(app: ASGIApp, path: str, size: int, *, declare_length: bool) -> tuple[int, int]:
    """POST ``size`` bytes to ``path`` straight through the ASGI interface, in 1 MiB chunks,
    with a Content-Length header or streamed (chunked, no length).

    Returns:
        The response status and how many body bytes the app pulled from the client.
    """
    chunk = 1 << 20
    remaining = size
    pulled = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal remaining, pulled
        if remaining == 0:
            return {"type": "http.disconnect"}
        n = min(chunk, remaining)
        remaining -= n
        pulled += n
        return {"type": "http.request", "body": b"x" * n, "more_body": remaining > 0}

    async def send(message: Message) -> None:
        sent.append(message)

    length = [(b"content-length", str(size).encode())] if declare_length else []
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/x-www-form-urlencoded"), *length],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 9587),
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return int(status), pulled
