"""Reading incidents over HTTP: the list, and one incident with its event log."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from driftowner import service
from driftowner.api.errors import responses
from driftowner.api.runtime import Runtime


def router(runtime: Runtime) -> APIRouter:
    """``GET /api/v1/incidents`` and ``GET /api/v1/incidents/{id}``."""
    r = APIRouter()

    @r.get("/api/v1/incidents", responses=responses(422))
    def list_incidents(
        state: Annotated[Literal["open", "acknowledged", "resolved"] | None, Query()] = None,
        owner: str | None = None,
        system: str | None = None,
    ) -> dict[str, Any]:
        now = runtime.clock()
        found = runtime.store.incidents(state=state, owner=owner, system=system)
        return {"incidents": [service.incident_json(i, now) for i in found]}

    @r.get("/api/v1/incidents/{incident_id}", responses=responses(404, 422))
    def show_incident(incident_id: str) -> dict[str, Any]:
        incident = service.get(runtime.store, incident_id)
        body = service.incident_json(incident, runtime.clock())
        body["events"] = [service.event_json(e) for e in runtime.store.events(incident_id)]
        return body

    return r
