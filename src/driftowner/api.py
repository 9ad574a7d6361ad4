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
from fastapi import APIRouter, BackgroundTasks, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
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

BODY_LIMIT = 64 * 1024
"""Largest request body of any route without its own limit (the JSON actions): 413 above."""
LINK_FORM_LIMIT = 16 * 1024
"""Largest confirm form posted to ``/a/{token}`` (a note of ``MAX_TEXT_CHARS``, encoded)."""
SLACK_BODY_LIMIT = 1024 * 1024
"""Largest ``/slack/interactions`` body. A ``block_actions`` payload carries the clicked
message: at most 50 blocks of at most 3,000 characters each, form-encoded, well under this."""
MAX_REPORT_WINDOW = timedelta(days=3650)
"""Longest report window (``since``): ten years, well past any incident history."""


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


def _text(limit: int) -> AfterValidator:
    """A pydantic check that a body string is text (service.text_problem)."""

    def check(value: str) -> str:
        problem = service.text_problem(value, limit)
        if problem is not None:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


Name = Annotated[
    str, Field(min_length=1, max_length=service.MAX_NAME_CHARS), _text(service.MAX_NAME_CHARS)
]
Text = Annotated[str, Field(max_length=service.MAX_TEXT_CHARS), _text(service.MAX_TEXT_CHARS)]


class ActionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: Name
    note: Text = ""


class ResolveBody(ActionBody):
    accept: bool = False
    """The new level is normal: the signals' detectors re-learn their reference."""


class ReassignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: Name
    reason: Annotated[Text, Field(min_length=1)]
    by: Name = "api"


class Problem(BaseModel):
    """An error answer: a sentence, or located errors (``loc`` names the request field)."""

    detail: str | list[dict[str, Any]]


class ReloadAnswer(BaseModel):
    """Whether ``/-/reload`` took the new config, and every error when it did not."""

    reloaded: bool
    errors: list[str] = []


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: an answer that echoes what the client
    sent (a validation error's ``input``) stays valid even when that held a lone surrogate,
    which UTF-8 cannot encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI declaration of the error answers a route may give."""
    said = {
        400: "the body is not a request of this kind",
        401: "missing or wrong bearer token, or Slack signature",
        403: "state-changing requests are disabled (no server.api_token)",
        404: "no such incident, or the feature is not configured",
        409: "the incident's state does not allow this, or it changed concurrently",
        413: "the request body is larger than this route accepts",
        422: "a request field is invalid; loc names it",
    }
    return {code: {"model": Problem, "description": said[code]} for code in codes}


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` under the Bearer scheme. The
    scheme is case-insensitive (RFC 7235); the token is compared in constant time, as bytes
    (compare_digest refuses non-ASCII str)."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "replace"), token.encode("utf-8")
    )


def _checked_first(check: Callable[[Request], None]) -> type[APIRoute]:
    """A route class that runs ``check`` on the request before FastAPI reads or parses the
    body: a request without the token is a 401 whatever its body holds."""

    class CheckedFirst(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Any]:
            handler = super().get_route_handler()

            async def checked(request: Request) -> Response:
                check(request)
                return await handler(request)

            return checked

    return CheckedFirst


def create_app(runtime: Runtime) -> FastAPI:
    """The driftowner HTTP application over a running daemon's runtime."""
    app = FastAPI(
        title="driftowner",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        max_body_size=BODY_LIMIT,
    )

    def authorized(request: Request) -> None:
        token = runtime.config.server.api_token
        if token is None:
            raise HTTPException(403, "state-changing requests are disabled: set server.api_token")
        if not bearer_matches(request.headers.get("authorization"), token.get_secret_value()):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    # State-changing routes: the token is checked before the body is read or parsed.
    protected = APIRouter(route_class=_checked_first(authorized))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return AsciiJSONResponse({"detail": jsonable_encoder(error.errors())}, status_code=422)

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

    @app.get("/api/v1/incidents", responses=_errors(422))
    def list_incidents(
        state: Annotated[Literal["open", "acknowledged", "resolved"] | None, Query()] = None,
        owner: str | None = None,
        system: str | None = None,
    ) -> dict[str, Any]:
        now = runtime.clock()
        found = runtime.store.incidents(state=state, owner=owner, system=system)
        return {"incidents": [service.incident_json(i, now) for i in found]}

    @app.get("/api/v1/incidents/{incident_id}", responses=_errors(404, 422))
    def show_incident(incident_id: str) -> dict[str, Any]:
        incident = service.get(runtime.store, incident_id)
        body = service.incident_json(incident, runtime.clock())
        body["events"] = [service.event_json(e) for e in runtime.store.events(incident_id)]
        return body

    @protected.post(
        "/api/v1/incidents/{incident_id}/ack", responses=_errors(400, 401, 403, 404, 409, 413, 422)
    )
    def ack(incident_id: str, body: ActionBody) -> dict[str, Any]:
        now = runtime.clock()
        incident = service.acknowledge(
            runtime.store, runtime.config, incident_id, body.by, body.note, now
        )
        return service.incident_json(incident, now)

    @protected.post(
        "/api/v1/incidents/{incident_id}/resolve",
        responses=_errors(400, 401, 403, 404, 409, 413, 422),
    )
    def resolve(incident_id: str, body: ResolveBody) -> dict[str, Any]:
        now = runtime.clock()
        incident = service.resolve(
            runtime.store,
            runtime.config,
            incident_id,
            body.by,
            body.note,
            now,
            runtime.links,
            accept=body.accept,
        )
        return service.incident_json(incident, now)

    @protected.post(
        "/api/v1/incidents/{incident_id}/reassign",
        responses=_errors(400, 401, 403, 404, 409, 413, 422),
    )
    def reassign(incident_id: str, body: ReassignBody) -> dict[str, Any]:
        now = runtime.clock()
        incident = service.reassign(
            runtime.store, runtime.config, incident_id, body.to, body.reason, body.by, now
        )
        return service.incident_json(incident, now)

    @app.get("/api/v1/report", responses=_errors(422))
    def report(since: str = "30d") -> dict[str, Any]:
        window = _report_window(since)
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

    @protected.post(
        "/-/reload",
        response_model=ReloadAnswer,
        responses={
            **_errors(401, 403, 413),
            422: {"model": ReloadAnswer, "description": "the new config is invalid; not taken"},
            503: {"model": Problem, "description": "reload is not available"},
        },
    )
    def reload() -> Any:
        if runtime.reload is None:
            raise HTTPException(503, "reload is not available")
        errors = runtime.reload()
        if errors:
            return JSONResponse({"reloaded": False, "errors": errors}, status_code=422)
        return {"reloaded": True, "errors": []}

    app.include_router(protected)

    @app.get("/a/{token}", response_class=HTMLResponse, include_in_schema=False)
    def action_page(token: str) -> HTMLResponse:
        """A signed link opened: show the incident, who acts, and ask to confirm (mail
        scanners and link previews follow GETs, so a GET never changes anything)."""
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
        return _page(
            runtime,
            f"{verb} this incident?",
            incident=incident,
            confirm=verb,
            acting_as=_owner_name(runtime.config, link.recipient),
        )

    @app.post(
        "/a/{token}",
        response_class=HTMLResponse,
        include_in_schema=False,
        max_body_size=LINK_FORM_LIMIT,
    )
    async def action(token: str, request: Request) -> HTMLResponse:
        # Latin-1 maps every byte to one character: each field is then decoded as UTF-8 on
        # its own, so an error names the field.
        form = parse_qs((await request.body()).decode("latin-1"), encoding="latin-1")
        try:
            by = _form_field(form, "by")
            note = _form_field(form, "note") or ""
        except service.BadRequest as error:
            return _page(runtime, "Not done", error=str(error), status=422)
        # The store is synchronous: act in the threadpool, as the plain-def routes do, so a
        # busy store never stalls the event loop.
        return await run_in_threadpool(act_on_link, token, by, note)

    def act_on_link(token: str, form_by: str | None, note: str) -> HTMLResponse:
        """Act as the link's recipient; a form naming anyone else is refused (the audit trail
        records who was paged, never who a form claims to be)."""
        try:
            link = runtime.links.verify(token)
        except InvalidLink as error:
            return _page(runtime, "Link not usable", error=str(error), status=403)
        by = link.recipient
        if form_by is not None and form_by != by:
            name = _owner_name(runtime.config, by)
            return _page(runtime, "Not done", error=f"this link acts only as {name}", status=403)
        now = runtime.clock()
        try:
            if link.action == "ack":
                incident = service.acknowledge(
                    runtime.store, runtime.config, link.incident_id, by, note, now
                )
                done = f"Acknowledged by {_owner_name(runtime.config, by)}. Escalation has stopped."
            else:
                incident = service.resolve(
                    runtime.store, runtime.config, link.incident_id, by, note, now, runtime.links
                )
                done = (
                    f"Resolved by {_owner_name(runtime.config, by)}. "
                    "Everyone who was notified will hear of it."
                )
        except service.BadRequest as error:
            return _page(runtime, "Not done", error=f"{error.field}: {error}", status=422)
        except service.NotFound as error:
            return _page(runtime, "Not done", error=str(error), status=404)
        except (LifecycleError, Conflict) as error:
            return _page(runtime, "Not done", error=str(error), status=409)
        return _page(runtime, "Done", incident=incident, message=done)

    @app.post(
        "/slack/interactions",
        max_body_size=SLACK_BODY_LIMIT,
        responses=_errors(400, 401, 404, 413),
    )
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
            # Name nobody: whoever clicked is not an owner and learns no one's name.
            return _ephemeral(
                "Nothing changed: your Slack account is not one of driftowner's owners. "
                "Only an owner whose Slack member id is configured can act here; to be one, "
                f"ask an operator to set `slack: {click.user_id}` on your entry under `owners`."
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
    try:
        fields = parse_qs(body.decode("utf-8"), errors="strict")
    except UnicodeDecodeError as error:
        raise ValueError("the body is not UTF-8 text") from error
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
    _payload_text("payload.user.id", user_id)
    for action in actions if isinstance(actions, list) else []:
        if not isinstance(action, dict) or action.get("action_id") not in (
            ACK_ACTION,
            RESOLVE_ACTION,
        ):
            continue
        incident_id = action.get("value")
        if not isinstance(incident_id, str) or not incident_id:
            raise ValueError(f"payload.actions: {action.get('action_id')} carries no value")
        _payload_text("payload.actions.value", incident_id)
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


def _form_field(form: dict[str, list[str]], name: str) -> str | None:
    """The first value of a form field (parsed as Latin-1) as text, or None when absent.

    Raises:
        service.BadRequest: the value is not UTF-8.
    """
    values = form.get(name)
    if not values:
        return None
    try:
        return values[0].encode("latin-1").decode("utf-8")
    except UnicodeDecodeError as error:
        raise service.BadRequest(name, f"{name}: not valid UTF-8 text") from error


def _payload_text(where: str, value: str) -> None:
    """Raises ValueError naming ``where`` when a payload string is not text or too long."""
    problem = service.text_problem(value, service.MAX_NAME_CHARS)
    if problem is not None:
        raise ValueError(f"{where}: {problem}")


def _report_window(since: str) -> timedelta:
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


def _owner_name(config: Config, key: str) -> str:
    """An owner's display name, or the key itself when the config no longer has them."""
    owner = config.owners.get(key)
    return owner.name if owner else key


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
    acting_as: str = "",
    status: int = 200,
) -> HTMLResponse:
    html = (
        _templates()
        .get_template("action.html")
        .render(
            title=title,
            incident=incident,
            owner_name=_owner_name(runtime.config, incident.owner) if incident else "",
            age=format_duration(
                timedelta(seconds=round(incident.age(runtime.clock()).total_seconds()))
            )
            if incident
            else "",
            error=error,
            message=message,
            confirm=confirm,
            acting_as=acting_as,
        )
    )
    return HTMLResponse(html, status_code=status)
