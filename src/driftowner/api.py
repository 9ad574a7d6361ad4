"""HTTP: /metrics, health, the incidents API, action links, Slack interactivity and reload.
Thin: every operation is a service function; this module maps requests to them and errors to
status codes with the field named."""

from __future__ import annotations

import functools
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

import httpx
import jinja2
from fastapi import BackgroundTasks, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from slack_sdk.signature import SignatureVerifier

from driftowner import __version__, service
from driftowner.channels.slack import ACK_ACTION, RESOLVE_ACTION, escape
from driftowner.config import Config, SlackChannelConfig, format_duration, parse_duration
from driftowner.incidents import LifecycleError
from driftowner.links import InvalidLink, LinkSigner
from driftowner.metrics import Metrics
from driftowner.model import Incident
from driftowner.store import Conflict, Store, StoreUnavailable

log = logging.getLogger("driftowner.api")

SLACK_RESPONSE_TIMEOUT_S = 2.5
"""How long to wait for Slack to take a reply posted to an interaction's ``response_url``."""


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

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(_: Request, error: StoreUnavailable) -> JSONResponse:
        # Nothing was changed: the client may retry once the store is back.
        return JSONResponse({"detail": str(error)}, status_code=503, headers={"Retry-After": "30"})

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> PlainTextResponse:
        if runtime.healthy():
            return PlainTextResponse("ok\n")
        unwritable = runtime.store.unwritable()
        if unwritable is not None:
            return PlainTextResponse(f"no work gets recorded: {unwritable}\n", status_code=503)
        return PlainTextResponse("evaluation loop stalled\n", status_code=503)

    @app.get("/readyz", response_class=PlainTextResponse)
    def readyz() -> PlainTextResponse:
        # The outcome of the writes made anyway (lease renewals, cycles, actions), not a
        # write per probe.
        unwritable = runtime.store.unwritable()
        if unwritable is not None:
            return PlainTextResponse(f"{unwritable}\n", status_code=503)
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

    @app.post("/slack/interactions")
    async def slack_interactions(request: Request, background: BackgroundTasks) -> JSONResponse:
        """A click on an interactive Acknowledge / Resolve button in a Slack message.

        Slack signs every request with the app's signing secret; one that no configured
        secret verifies (missing, older than five minutes, or wrong) changes nothing. Slack
        shows nothing of this response's body for ``block_actions``: the reply to the person
        who clicked goes to the payload's ``response_url`` as an ephemeral message, after
        the response. The body carries the same reply (for logs and tests).
        """
        secrets = _slack_signing_secrets(runtime.config)
        if not secrets:
            return JSONResponse(
                {
                    "detail": "Slack interactivity is not configured: set signing_secret on a "
                    "slack channel"
                },
                status_code=404,
            )
        body = await request.body()
        if not _slack_signed(
            secrets,
            body,
            request.headers.get("x-slack-request-timestamp"),
            request.headers.get("x-slack-signature"),
        ):
            return JSONResponse(
                {"detail": "missing, expired or wrong Slack signature"}, status_code=401
            )
        try:
            click = _slack_click(body)
        except ValueError as error:
            return JSONResponse(
                {"detail": [{"loc": ["body", "payload"], "msg": str(error)}]}, status_code=400
            )
        if click is None:
            # Another kind of interaction, or a URL button (Slack reports those clicks too):
            # acknowledged, nothing to do.
            return JSONResponse({})
        reply = await run_in_threadpool(act_on_slack_click, click)
        if click.response_url:
            background.add_task(_post_slack_reply, click.response_url, reply)
        return JSONResponse(reply)

    def act_on_slack_click(click: _SlackClick) -> dict[str, Any]:
        config = runtime.config
        by = next(
            (key for key, owner in config.owners.items() if owner.slack == click.user_id), None
        )
        if by is None:
            who = ", ".join(o.name for o in config.owners.values() if o.slack) or "nobody yet"
            return _ephemeral(
                "Nothing changed: your Slack account is not one of driftowner's owners. "
                f"Only an owner whose Slack member id is configured can act here ({who}); "
                f"to be one, ask an operator to set `slack: {click.user_id}` on your entry "
                "under `owners`."
            )
        name = config.owners[by].name
        now = runtime.clock()
        try:
            if click.action == ACK_ACTION:
                service.acknowledge(runtime.store, config, click.incident_id, by, "via Slack", now)
                text = (
                    f"Acknowledged by {name} via Slack: incident {click.incident_id}. "
                    "Escalation has stopped."
                )
            else:
                service.resolve(
                    runtime.store,
                    config,
                    click.incident_id,
                    by,
                    "via Slack",
                    now,
                    runtime.links,
                )
                text = (
                    f"Resolved by {name} via Slack: incident {click.incident_id}. "
                    "Everyone who was notified will hear of it."
                )
        except service.NotFound:
            text = f"Nothing changed: there is no incident {click.incident_id}."
        except LifecycleError as error:
            text = f"Nothing to do: {error}."
        except Conflict:
            text = (
                f"Nothing changed: incident {click.incident_id} changed at the same moment. "
                "Look at it again and retry."
            )
        except service.BadRequest as error:
            text = f"Nothing changed: {error}."
        return _ephemeral(text)

    return app


@dataclass(frozen=True, slots=True)
class _SlackClick:
    """One click on an interactive driftowner button, as Slack reported it."""

    action: str
    incident_id: str
    user_id: str
    response_url: str | None


def _slack_signing_secrets(config: Config) -> list[str]:
    """Every slack channel's signing secret (one per Slack app), in config order."""
    return [
        channel.signing_secret.get_secret_value()
        for channel in config.channels.values()
        if isinstance(channel, SlackChannelConfig) and channel.signing_secret is not None
    ]


def _slack_signed(
    secrets: list[str], body: bytes, timestamp: str | None, signature: str | None
) -> bool:
    """Whether any configured signing secret verifies the request (slack_sdk's check: HMAC
    over ``v0:timestamp:body``, and a timestamp within five minutes of now)."""
    for secret in secrets:
        try:
            if SignatureVerifier(secret).is_valid(body, timestamp, signature):
                return True
        except (ValueError, TypeError):
            # A timestamp that is not a number, a body that is not UTF-8, a signature that is
            # not ASCII: not a request Slack signed.
            return False
    return False


def _slack_click(body: bytes) -> _SlackClick | None:
    """The driftowner button click in a signed interaction request, or ``None`` when the
    request is some other interaction.

    Raises:
        ValueError: the form field ``payload`` is missing or not a JSON object as Slack sends.
    """
    fields = parse_qs(body.decode("utf-8", "replace"))
    raw = (fields.get("payload") or [""])[0]
    if not raw:
        raise ValueError("the form field payload is missing")
    try:
        payload = json.loads(raw)
    except ValueError as error:
        raise ValueError(f"payload is not JSON: {error}") from error
    if not isinstance(payload, dict):
        raise ValueError("payload is not a JSON object")
    if payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    user = payload.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("payload.user.id is missing")
    for action in actions if isinstance(actions, list) else []:
        if not isinstance(action, dict) or action.get("action_id") not in (
            ACK_ACTION,
            RESOLVE_ACTION,
        ):
            continue
        incident_id = action.get("value")
        if not isinstance(incident_id, str) or not incident_id:
            raise ValueError(f"payload.actions: {action.get('action_id')} carries no value")
        response_url = payload.get("response_url")
        return _SlackClick(
            action=str(action["action_id"]),
            incident_id=incident_id,
            user_id=user_id,
            response_url=response_url
            if isinstance(response_url, str) and response_url.startswith(("https://", "http://"))
            else None,
        )
    return None


def _ephemeral(text: str) -> dict[str, Any]:
    """A reply only the person who clicked sees, leaving the original message as it is;
    ``text`` is escaped for mrkdwn (names and ids can neither form links nor mention)."""
    return {"response_type": "ephemeral", "replace_original": False, "text": escape(text)}


async def _post_slack_reply(response_url: str, reply: dict[str, Any]) -> None:
    """Post the reply to the interaction's ``response_url``. Best effort: the click's change
    is already committed, so a failure is logged (never with the URL, which lets anyone post
    into the conversation for a while) and dropped."""
    try:
        async with httpx.AsyncClient(timeout=SLACK_RESPONSE_TIMEOUT_S) as client:
            response = await client.post(response_url, json=reply)
        if response.status_code >= 300:
            log.warning("slack did not take the interaction reply: HTTP %s", response.status_code)
    except httpx.HTTPError as error:
        log.warning("slack interaction reply not sent: %s", type(error).__name__)


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
