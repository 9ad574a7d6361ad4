"""Acting on incidents over HTTP: the bearer-token JSON actions (ack, resolve, reassign,
note) and the signed one-click links. Each action is one service call; each refusal goes through
:func:`driftowner.api.errors.refusal`."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from driftowner import service
from driftowner.api.auth import caller_of, token_checked
from driftowner.api.errors import refusal, responses
from driftowner.api.pages import owner_name, page
from driftowner.api.runtime import Runtime
from driftowner.links import InvalidLink

LINK_FORM_LIMIT = 16 * 1024
"""Largest confirm form posted to ``/a/{token}`` (a note of ``MAX_TEXT_CHARS``, encoded)."""
ACTION_ERRORS = responses(400, 401, 403, 404, 409, 413, 422)


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
    """An ack or resolve. ``by`` is the owner acting: with an owner's token it may be left
    out (it is that owner); the admin token must name it."""

    model_config = ConfigDict(extra="forbid")
    by: Name | None = None
    note: Text = ""


class ResolveBody(ActionBody):
    """A resolve; ``accept``: the new level is normal, the signals' detectors re-learn their
    reference."""

    accept: bool = False


class ReassignBody(BaseModel):
    """A handover to ``to``, for ``reason``; ``by`` as for :class:`ActionBody`."""

    model_config = ConfigDict(extra="forbid")
    to: Name
    reason: Annotated[Text, Field(min_length=1)]
    by: Name | None = None


class NoteBody(BaseModel):
    """A note added to an incident, in any state; ``by`` as for :class:`ActionBody`."""

    model_config = ConfigDict(extra="forbid")
    note: Annotated[Text, Field(min_length=1)]
    by: Name | None = None


def router(runtime: Runtime) -> APIRouter:
    """``POST /api/v1/incidents/{id}/ack|resolve|reassign|note``: the token is checked
    first."""
    r = APIRouter(route_class=token_checked(lambda: runtime.config))

    def act(
        action: service.Action, incident_id: str, body: ActionBody, request: Request
    ) -> dict[str, Any]:
        by = caller_of(request).acting_as(body.by)
        now = runtime.clock()
        incident = service.act(
            runtime.store,
            runtime.config,
            runtime.links,
            action,
            incident_id,
            by,
            body.note,
            now,
            "api",
            accept=isinstance(body, ResolveBody) and body.accept,
        )
        return service.incident_json(incident, now)

    @r.post("/api/v1/incidents/{incident_id}/ack", name="ack", responses=ACTION_ERRORS)
    def ack(incident_id: str, body: ActionBody, request: Request) -> dict[str, Any]:
        return act("ack", incident_id, body, request)

    @r.post("/api/v1/incidents/{incident_id}/resolve", name="resolve", responses=ACTION_ERRORS)
    def resolve(incident_id: str, body: ResolveBody, request: Request) -> dict[str, Any]:
        return act("resolve", incident_id, body, request)

    @r.post("/api/v1/incidents/{incident_id}/reassign", responses=ACTION_ERRORS)
    def reassign(incident_id: str, body: ReassignBody, request: Request) -> dict[str, Any]:
        by = caller_of(request).acting_as(body.by)
        now = runtime.clock()
        incident = service.reassign(
            runtime.store,
            runtime.config,
            incident_id,
            body.to,
            body.reason,
            by,
            now,
            "api",
            runtime.links,
        )
        return service.incident_json(incident, now)

    @r.post("/api/v1/incidents/{incident_id}/note", responses=ACTION_ERRORS)
    def note(incident_id: str, body: NoteBody, request: Request) -> dict[str, Any]:
        """Add a note: recorded as a ``note`` event and told to every conversation the
        incident started; the answer is the event and the incident (unchanged)."""
        by = caller_of(request).acting_as(body.by)
        now = runtime.clock()
        incident, event = service.add_note(
            runtime.store, runtime.config, incident_id, by, body.note, now, "api", runtime.links
        )
        return {
            "event": service.event_json(event),
            "incident": service.incident_json(incident, now),
        }

    return r


def links_router(runtime: Runtime) -> APIRouter:
    """``GET /a/{token}`` shows what a signed link would do; ``POST`` does it, as the
    link's recipient."""
    r = APIRouter()

    @r.get("/a/{token}", response_class=HTMLResponse, include_in_schema=False)
    def action_page(token: str) -> HTMLResponse:
        """A signed link opened: show the incident, who acts, and ask to confirm (mail
        scanners and link previews follow GETs, so a GET never changes anything)."""
        try:
            link = runtime.links.verify(token)
            incident = service.get(runtime.store, link.incident_id)
        except (InvalidLink, service.NotFound) as error:
            return page(runtime, "Link not usable", error=str(error), status=403)
        verb = "Acknowledge" if link.action == "ack" else "Resolve"
        if incident.state == "resolved" or (link.action == "ack" and incident.state != "open"):
            return page(
                runtime,
                f"{verb}: nothing to do",
                incident=incident,
                message=f"This incident is already {incident.state}.",
            )
        return page(
            runtime,
            f"{verb} this incident?",
            incident=incident,
            confirm=verb,
            acting_as=owner_name(runtime.config, link.recipient),
            offer_accept=link.action == "resolve",
        )

    @r.post(
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
            accept = _form_flag(form, "accept")
        except service.BadRequest as error:
            return page(runtime, "Not done", error=str(error), status=422)
        # The store is synchronous: act in the threadpool, as the plain-def routes do, so a
        # busy store never stalls the event loop.
        return await run_in_threadpool(act_on_link, runtime, token, by, note, accept)

    return r


def act_on_link(
    runtime: Runtime, token: str, form_by: str | None, note: str, accept: bool = False
) -> HTMLResponse:
    """Act as the link's recipient; a form naming anyone else is refused (the audit trail
    records who was paged, never who a form claims to be). ``accept`` (a resolve link's
    box): the signals' new levels are normal, their detectors re-learn them."""

    try:
        link = runtime.links.verify(token)
    except InvalidLink as error:
        return page(runtime, "Link not usable", error=str(error), status=403)
    by = link.recipient
    name = owner_name(runtime.config, by)
    if form_by is not None and form_by != by:
        return page(runtime, "Not done", error=f"this link acts only as {name}", status=403)
    action: service.Action = "ack" if link.action == "ack" else "resolve"
    try:
        incident = service.act(
            runtime.store,
            runtime.config,
            runtime.links,
            action,
            link.incident_id,
            by,
            note,
            runtime.clock(),
            "link",
            accept=accept and action == "resolve",
        )
    except service.REFUSALS as error:
        refused = refusal(error)
        return page(runtime, "Not done", error=refused.located, status=refused.status)
    done = (
        f"Acknowledged by {name}. Escalation has stopped."
        if action == "ack"
        else f"Resolved by {name}. Everyone who was notified will hear of it."
        + (" The new level is accepted as normal: the detectors re-learn it." if accept else "")
    )
    return page(runtime, "Done", incident=incident, message=done)


def _form_flag(form: dict[str, list[str]], name: str) -> bool:
    """A checkbox: ticked (``on``, as browsers send it, or ``true``/``1``) or not (absent,
    empty, ``off``, ``false``, ``0``).

    Raises:
        service.BadRequest: any other value, or not UTF-8.
    """
    value = (_form_field(form, name) or "").strip().lower()
    if value in ("on", "true", "1"):
        return True
    if value in ("", "off", "false", "0"):
        return False
    raise service.BadRequest(name, f"{name}: expected on or off, got {value[:20]!r}")


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
