"""Silences over HTTP: ``POST`` holds the pages of a system, an owner's systems or the systems
with some labels for a while; ``GET`` lists them; ``DELETE`` expires one. Changing a silence
takes a bearer token, as every state-changing route: an owner's token acts only as that owner
and may silence only systems that owner is accountable for; the admin token must name ``by``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from driftowner import silences
from driftowner.api.actions import Name, Text
from driftowner.api.auth import caller_of, token_checked
from driftowner.api.errors import responses
from driftowner.api.runtime import Runtime
from driftowner.ids import new_silence_id
from driftowner.service import MAX_NAME_CHARS

SILENCE_ERRORS = responses(400, 401, 403, 404, 409, 413, 422)


class SilenceBody(BaseModel):
    """A silence: exactly one of ``system``, ``owner`` or ``labels``; for how long (``for``,
    e.g. ``2h``, at most 30d) and why; ``by`` as for the incident actions."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    system: Name | None = None
    owner: Name | None = None
    labels: Annotated[dict[Name, Name], Field(max_length=16)] = Field(default_factory=dict)
    for_: Annotated[str, Field(alias="for", min_length=1, max_length=32)]
    reason: Annotated[Text, Field(min_length=1)]
    by: Name | None = None


def router(runtime: Runtime) -> APIRouter:
    """``POST`` and ``DELETE /api/v1/silences``: the token is checked first."""
    r = APIRouter(route_class=token_checked(lambda: runtime.config))

    @r.post("/api/v1/silences", status_code=201, responses=SILENCE_ERRORS)
    def add_silence(body: SilenceBody, request: Request) -> dict[str, Any]:
        caller = caller_of(request)
        by = caller.acting_as(body.by)
        config = runtime.config
        now = runtime.clock()
        silence = silences.make(
            config,
            system=body.system,
            owner=body.owner,
            labels=body.labels,
            duration=body.for_,
            reason=body.reason,
            by=by,
            via="api",
            now=now,
            new_id=new_silence_id(),
        )
        if caller.owner is not None:
            foreign = [
                name
                for name in silences.covered(config, silence)
                if config.systems[name].owner != caller.owner
            ]
            if foreign:
                raise HTTPException(
                    403,
                    f"this token acts only as {caller.owner}, who is not accountable for "
                    f"{', '.join(foreign)}: use server.api_token",
                )
        return silences.silence_json(silences.add(runtime.store, silence), now, config)

    @r.delete("/api/v1/silences/{silence_id}", responses=SILENCE_ERRORS)
    def expire_silence(
        silence_id: str,
        request: Request,
        by: Annotated[str | None, Query(min_length=1, max_length=MAX_NAME_CHARS)] = None,
    ) -> dict[str, Any]:
        acting = caller_of(request).acting_as(by)
        now = runtime.clock()
        silence = silences.expire(runtime.store, silence_id, acting, "api", now)
        return silences.silence_json(silence, now, runtime.config)

    return r


def reads(runtime: Runtime) -> APIRouter:
    """``GET /api/v1/silences``: those holding now (``all=true``: every one kept), then the
    maintenance windows holding now."""
    r = APIRouter()

    @r.get("/api/v1/silences", responses=responses(422))
    def list_silences(every: Annotated[bool, Query(alias="all")] = False) -> dict[str, Any]:
        now = runtime.clock()
        found = silences.listed(runtime.store, runtime.config, now, every=every)
        return {"silences": [silences.silence_json(s, now, runtime.config) for s in found]}

    return r
