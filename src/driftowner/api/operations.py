"""Operating driftowner over HTTP: /metrics, health and readiness, reload, the report and the
ownership registry (the status page is :mod:`driftowner.api.status_page`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from driftowner import report as reports
from driftowner.api.auth import caller_of, token_checked
from driftowner.api.errors import Problem, responses
from driftowner.api.runtime import Runtime
from driftowner.audit import audit, gap_json, system_audit_json
from driftowner.config import format_duration, parse_duration

MAX_REPORT_WINDOW = timedelta(days=3650)
"""Longest report window (``since``): ten years, well past any incident history."""


class ReloadAnswer(BaseModel):
    """Whether ``/-/reload`` took the new config, and every error when it did not."""

    reloaded: bool
    errors: list[str] = []


def router(runtime: Runtime) -> APIRouter:
    """Health, metrics, report and registry; reload (admin token only)."""
    r = APIRouter()

    @r.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @r.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> PlainTextResponse:
        if runtime.healthy():
            return PlainTextResponse("ok\n")
        unwritable = runtime.store.unwritable()
        if unwritable is not None:
            return PlainTextResponse(f"no work gets recorded: {unwritable}\n", status_code=503)
        return PlainTextResponse("evaluation loop stalled\n", status_code=503)

    @r.get("/readyz", response_class=PlainTextResponse)
    def readyz() -> PlainTextResponse:
        # The outcome of the writes made anyway (lease renewals, cycles, actions), not a
        # write per probe.
        unwritable = runtime.store.unwritable()
        if unwritable is not None:
            return PlainTextResponse(f"{unwritable}\n", status_code=503)
        if not runtime.store.ping():
            return PlainTextResponse("store unreachable\n", status_code=503)
        return PlainTextResponse("ready\n")

    @r.get("/api/v1/report", responses=responses(422))
    def report(since: str = "30d") -> dict[str, Any]:
        window = report_window(since)
        rows = reports.report(runtime.store, window, runtime.clock())
        return {"since": since, "rows": [reports.report_row_json(row) for row in rows]}

    @r.get("/api/v1/systems")
    def systems() -> dict[str, Any]:
        """Every system with its registry entry, signal status and ``audit`` (its gaps), and
        the ``registry`` gaps across systems (:mod:`driftowner.audit`)."""
        checked = audit(runtime.config)
        rows = registry(runtime)
        for row, system in zip(rows, checked.systems, strict=True):
            row["audit"] = system_audit_json(system)
        return {"systems": rows, "registry": [gap_json(gap) for gap in checked.registry]}

    admin = APIRouter(route_class=token_checked(lambda: runtime.config))

    @admin.post(
        "/-/reload",
        response_model=ReloadAnswer,
        responses={
            **responses(401, 403, 413),
            422: {"model": ReloadAnswer, "description": "the new config is invalid; not taken"},
            503: {"model": Problem, "description": "reload is not available"},
        },
    )
    def reload(request: Request) -> Any:
        caller_of(request).admin()
        if runtime.reload is None:
            raise HTTPException(503, "reload is not available")
        errors = runtime.reload()
        if errors:
            return JSONResponse({"reloaded": False, "errors": errors}, status_code=422)
        return {"reloaded": True, "errors": []}

    r.include_router(admin)
    return r


def registry(runtime: Runtime) -> list[dict[str, Any]]:
    """Every system with its owner, chain, runbook, contributors and current signal status."""
    config = runtime.config
    return [
        {
            "name": name,
            "owner": system.owner,
            "owner_name": owner.name if (owner := config.owners.get(system.owner)) else None,
            "escalation": system.escalation,
            "runbook": system.runbook,
            "contributors": dict(system.contributors),
            "signals": [
                {
                    "name": signal_name,
                    "layer": signal.layer,
                    **runtime.findings.get(name, {}).get(signal_name, {"status": None}),
                }
                for signal_name, signal in system.signals.items()
            ],
        }
        for name, system in config.systems.items()
    ]


def report_window(since: str) -> timedelta:
    """The report's ``since`` as a window of at most ``MAX_REPORT_WINDOW``.

    Raises:
        HTTPException: 422 naming ``since``: not a duration, or absurdly long.
    """
    try:
        window = parse_duration(since)
    except (ValueError, OverflowError) as error:
        # OverflowError: a number of units past what a duration can hold.
        problem = str(error) if isinstance(error, ValueError) else f"{since!r} is too long"
        raise HTTPException(422, [{"loc": ["query", "since"], "msg": problem}]) from error
    if window > MAX_REPORT_WINDOW:
        raise HTTPException(
            422,
            [
                {
                    "loc": ["query", "since"],
                    "msg": f"at most {format_duration(MAX_REPORT_WINDOW)} (got {since})",
                }
            ],
        )
    return window
