"""HTTP: /metrics, health, the incidents API, action links, Slack interactivity, reload, the
status page and the incident pages. Thin: one small router per part, every action one service
call, every refusal one error mapping (:mod:`driftowner.api.errors`)."""

from __future__ import annotations

from fastapi import FastAPI

from driftowner import __version__
from driftowner.api import (
    actions,
    alertmanager,
    errors,
    incident_page,
    incidents,
    operations,
    slack,
    status_page,
)
from driftowner.api.runtime import Runtime

__all__ = ["BODY_LIMIT", "Runtime", "create_app"]

BODY_LIMIT = 64 * 1024
"""Largest request body of any route without its own limit (the JSON actions): 413 above."""


def create_app(runtime: Runtime) -> FastAPI:
    """The driftowner HTTP application over a running daemon's runtime."""
    app = FastAPI(
        title="driftowner",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        max_body_size=BODY_LIMIT,
    )
    errors.install(app)
    app.include_router(operations.router(runtime))
    app.include_router(status_page.router(runtime))
    app.include_router(incident_page.router(runtime))
    app.include_router(incidents.router(runtime))
    app.include_router(actions.router(runtime))
    app.include_router(actions.links_router(runtime))
    app.include_router(slack.router(runtime))
    app.include_router(alertmanager.router(runtime))
    # Silences (/api/v1/silences) get their own router here.
    return app
