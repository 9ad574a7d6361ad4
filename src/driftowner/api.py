"""HTTP: /metrics, health, the incidents API and reload. Thin: every operation is a service
function; this module maps requests to them and errors to status codes with the field named."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

import jinja2
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from driftowner import __version__, service
from driftowner.config import Config, format_duration, parse_duration
from driftowner.incidents import LifecycleError
from driftowner.links import InvalidLink, LinkSigner
from driftowner.metrics import Metrics
from driftowner.model import Incident
from driftowner.store import Conflict, Store


@dataclass
class Runtime:
    """What the HTTP layer needs from the running daemon. ``config`` changes on reload."""

    config: Config
    store: Store
    metrics: Metrics
    clock: Callable[[], datetime]
    links: LinkSigner
    healthy: Callable[[], bool]
    reload: Callable[[], Any] | None = None
    findings: dict[str, dict[str, Any]] = field(default_factory=dict)


class ActionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: str = Field(min_length=1)
    note: str = ""


class ReassignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    by: str = "api"


def create_app(runtime: Runtime) -> FastAPI:
    """The driftowner HTTP application over a running daemon's runtime."""
    app = FastAPI(title="driftowner", version=__version__, docs_url=None, redoc_url=None)

    def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        token = runtime.config.server.api_token
        if token is None:
            raise HTTPException(403, "state-changing requests are disabled: set server.api_token")
        expected = f"Bearer {token.get_secret_value()}"
        # Bytes, not str: compare_digest refuses non-ASCII str, which would be a 500.
        given = (authorization or "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, expected.encode("utf-8")):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    @app.exception_handler(service.NotFound)
    async def _not_found(_: Request, error: service.NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=404)

    @app.exception_handler(service.BadRequest)
    async def _bad(_: Request, error: service.BadRequest) -> JSONResponse:
        return JSONResponse(
            {"detail": [{"loc": ["body", error.field], "msg": str(error)}]}, status_code=422
        )

    @app.exception_handler(LifecycleError)
    async def _lifecycle(_: Request, error: LifecycleError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=409)

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, error: Conflict) -> JSONResponse:
        return JSONResponse({"detail": f"{error}; retry"}, status_code=409)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> PlainTextResponse:
        if runtime.healthy():
            return PlainTextResponse("ok\n")
        return PlainTextResponse("evaluation loop stalled\n", status_code=503)

    @app.get("/readyz", response_class=PlainTextResponse)
    def readyz() -> PlainTextResponse:
        if not runtime.store.ping():
            return PlainTextResponse("store unreachable\n", status_code=503)
        return PlainTextResponse("ready\n")

    @app.get("/api/v1/incidents")
    def list_incidents(
        state: Annotated[Literal["open", "acknowledged", "resolved"] | None, Query()] = None,
        owner: str | None = None,
        system: str | None = None,
    ) -> dict[str, Any]:
        now = runtime.clock()
        found = runtime.store.incidents(state=state, owner=owner, system=system)
        return {"incidents": [service.incident_json(i, now) for i in found]}

    @app.get("/api/v1/incidents/{incident_id}")
    def show_incident(incident_id: str) -> dict[str, Any]:
        incident = service.get(runtime.store, incident_id)
        body = service.incident_json(incident, runtime.clock())
        body["events"] = [service.event_json(e) for e in runtime.store.events(incident_id)]
        return body

    @app.post("/api/v1/incidents/{incident_id}/ack", dependencies=[Depends(authorized)])
    def ack(incident_id: str, body: ActionBody) -> dict[str, Any]:
        now = runtime.clock()
        incident = service.acknowledge(
            runtime.store, runtime.config, incident_id, body.by, body.note, now
        )
        return service.incident_json(incident, now)

    @app.post("/api/v1/incidents/{incident_id}/resolve", dependencies=[Depends(authorized)])
    def resolve(incident_id: str, body: ActionBody) -> dict[str, Any]:
        now = runtime.clock()
        incident = service.resolve(
            runtime.store, runtime.config, incident_id, body.by, body.note, now, runtime.links
        )
        return service.incident_json(incident, now)

    @app.post("/api/v1/incidents/{incident_id}/reassign", dependencies=[Depends(authorized)])
    def reassign(incident_id: str, body: ReassignBody) -> dict[str, Any]:
        now = runtime.clock()
        incident = service.reassign(
            runtime.store, runtime.config, incident_id, body.to, body.reason, body.by, now
        )
        return service.incident_json(incident, now)

    @app.get("/api/v1/report")
    def report(since: str = "30d") -> dict[str, Any]:
        try:
            window = parse_duration(since)
        except ValueError as error:
            raise HTTPException(422, [{"loc": ["query", "since"], "msg": str(error)}]) from error
        rows = service.report(runtime.store, window, runtime.clock())
        return {"since": since, "rows": [service.report_row_json(r) for r in rows]}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def status_page() -> HTMLResponse:
        """Open incidents by accountable owner, with age, state and escalation level."""
        now = runtime.clock()
        unresolved = runtime.store.incidents(unresolved=True)
        by_owner: dict[str, list[dict[str, Any]]] = {}
        for incident in sorted(unresolved, key=lambda i: i.opened_at):
            steps = len(incident.chain.steps)
            level = (
                f"step {min(incident.escalation_steps_done, steps)} of {steps}"
                if incident.state == "open"
                else f"acknowledged by {incident.acknowledged_by}"
            )
            by_owner.setdefault(incident.owner, []).append(
                {
                    "id": incident.id,
                    "system": incident.system,
                    "summary": incident.summary,
                    "layers": ", ".join(incident.layers),
                    "state": incident.state,
                    "age": format_duration(
                        timedelta(seconds=round(incident.age(now).total_seconds()))
                    ),
                    "breach": service.breached_ack(incident, now)
                    or service.breached_resolve(incident, now),
                    "level": level,
                }
            )
        owners = runtime.config.owners
        html = (
            _templates()
            .get_template("status.html")
            .render(
                now=now.strftime("%Y-%m-%d %H:%M:%S UTC"),
                unresolved=unresolved,
                by_owner=[
                    (key, owners[key].name if key in owners else key, rows)
                    for key, rows in sorted(by_owner.items())
                ],
                systems=systems()["systems"],
            )
        )
        return HTMLResponse(html)

    @app.get("/api/v1/systems")
    def systems() -> dict[str, Any]:
        config = runtime.config
        out = []
        for name, system in config.systems.items():
            owner = config.owners.get(system.owner)
            out.append(
                {
                    "name": name,
                    "owner": system.owner,
                    "owner_name": owner.name if owner else None,
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
            )
        return {"systems": out}

    @app.post("/-/reload", dependencies=[Depends(authorized)])
    def reload() -> dict[str, Any]:
        if runtime.reload is None:
            raise HTTPException(503, "reload is not available")
        errors = runtime.reload()
        if errors:
            return JSONResponse({"reloaded": False, "errors": errors}, status_code=422)  # type: ignore[return-value]
        return {"reloaded": True}

    @app.get("/a/{token}", response_class=HTMLResponse, include_in_schema=False)
    def action_page(token: str) -> HTMLResponse:
        """A signed link opened: show the incident and ask to confirm (mail scanners and link
        previews follow GETs, so a GET never changes anything)."""
        try:
            link = runtime.links.verify(token)
            incident = service.get(runtime.store, link.incident_id)
        except (InvalidLink, service.NotFound) as error:
            return _page(runtime, "Link not usable", error=str(error), status=403)
        verb = "Acknowledge" if link.action == "ack" else "Resolve"
        if incident.state == "resolved" or (link.action == "ack" and incident.state != "open"):
            return _page(
                runtime,
                f"{verb}: nothing to do",
                incident=incident,
                message=f"This incident is already {incident.state}.",
            )
        return _page(runtime, f"{verb} this incident?", incident=incident, confirm=verb)

    @app.post("/a/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def action(token: str, request: Request) -> HTMLResponse:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        by = (form.get("by") or [""])[0]
        note = (form.get("note") or [""])[0]
        # The store is synchronous: act in the threadpool, as the plain-def routes do, so a
        # busy store never stalls the event loop.
        return await run_in_threadpool(act_on_link, token, by, note)

    def act_on_link(token: str, by: str, note: str) -> HTMLResponse:
        try:
            link = runtime.links.verify(token)
        except InvalidLink as error:
            return _page(runtime, "Link not usable", error=str(error), status=403)
        now = runtime.clock()
        try:
            if link.action == "ack":
                incident = service.acknowledge(
                    runtime.store, runtime.config, link.incident_id, by, note, now
                )
                done = f"Acknowledged by {by}. Escalation has stopped."
            else:
                incident = service.resolve(
                    runtime.store, runtime.config, link.incident_id, by, note, now, runtime.links
                )
                done = f"Resolved by {by}. Everyone who was notified will hear of it."
        except service.BadRequest as error:
            return _page(runtime, "Not done", error=f"{error.field}: {error}", status=422)
        except service.NotFound as error:
            return _page(runtime, "Not done", error=str(error), status=404)
        except (LifecycleError, Conflict) as error:
            return _page(runtime, "Not done", error=str(error), status=409)
        return _page(runtime, "Done", incident=incident, message=done)

    return app


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("driftowner", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def _page(
    runtime: Runtime,
    title: str,
    *,
    incident: Incident | None = None,
    error: str = "",
    message: str = "",
    confirm: str = "",
    status: int = 200,
) -> HTMLResponse:
    config = runtime.config
    owner = config.owners.get(incident.owner) if incident else None
    html = (
        _templates()
        .get_template("action.html")
        .render(
            title=title,
            incident=incident,
            owner_name=owner.name if owner else (incident.owner if incident else ""),
            age=format_duration(
                timedelta(seconds=round(incident.age(runtime.clock()).total_seconds()))
            )
            if incident
            else "",
            error=error,
            message=message,
            confirm=confirm,
            owners=[(key, o.name) for key, o in config.owners.items()],
        )
    )
    return HTMLResponse(html, status_code=status)
