"""``GET /``: the status page. Unresolved incidents under their accountable owner (age, state,
escalation step, links); each owner's record from the accountability report (median and p90
time to acknowledge and to resolve, SLO breaches); how each source fared; the ownership
registry's gaps (as ``driftowner audit`` names them); every system's signals. It reloads
itself every few seconds and reads on a phone."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from driftowner import report as reports
from driftowner.api.operations import registry
from driftowner.api.pages import owner_name, templates
from driftowner.api.runtime import Runtime, SourceHealth
from driftowner.audit import audit
from driftowner.config import parse_duration
from driftowner.model import Incident
from driftowner.render import format_age

REPORT_SINCE = "30d"
"""The window of the owners' record on the page: ``/api/v1/report``'s default."""
REFRESH_S = 10


def router(runtime: Runtime) -> APIRouter:
    """The status page."""
    r = APIRouter()

    @r.get("/", response_class=HTMLResponse, include_in_schema=False)
    def status_page() -> HTMLResponse:
        """Open incidents by accountable owner, their record, and the sources' health."""
        return HTMLResponse(render_status_page(runtime))

    return r


def render_status_page(runtime: Runtime) -> str:
    """The status page's HTML at ``runtime.clock()``."""
    now = runtime.clock()
    unresolved = sorted(runtime.store.incidents(unresolved=True), key=lambda i: i.opened_at)
    record = reports.report(runtime.store, parse_duration(REPORT_SINCE), now)
    owners = sorted({i.owner for i in unresolved} | {row.owner for row in record})
    return (
        templates()
        .get_template("status.html")
        .render(
            now=now.strftime("%Y-%m-%d %H:%M:%S UTC"),
            refresh_s=REFRESH_S,
            unresolved=unresolved,
            since=REPORT_SINCE,
            owners=[
                {
                    "key": key,
                    "name": owner_name(runtime.config, key),
                    "incidents": [incident_row(i, now) for i in unresolved if i.owner == key],
                    "record": [record_row(row) for row in record if row.owner == key],
                }
                for key in owners
            ],
            sources=source_rows(runtime, now),
            systems=registry(runtime),
            gaps=audit(runtime.config).gaps,
        )
    )


def incident_row(incident: Incident, now: datetime) -> dict[str, Any]:
    """One unresolved incident as the status page lists it."""
    steps = len(incident.chain.steps)
    return {
        "id": incident.id,
        "system": incident.system,
        "summary": incident.summary,
        "layers": ", ".join(incident.layers),
        "state": incident.state,
        "age": format_age(incident.age(now).total_seconds()),
        "breach": reports.breached_ack(incident, now) or reports.breached_resolve(incident, now),
        "level": (
            f"step {min(incident.escalation_steps_done, steps)} of {steps}"
            if incident.state == "open"
            else f"acknowledged by {incident.acknowledged_by}"
        ),
        "runbook": incident.runbook,
    }


def record_row(row: reports.ReportRow) -> dict[str, Any]:
    """One owner's record on one system, as the report computes it, in words."""
    return {
        "system": row.system,
        "open": row.open,
        "acknowledged": row.acknowledged,
        "resolved": row.resolved,
        "ack_median": _seconds(row.ack_median_s),
        "ack_p90": _seconds(row.ack_p90_s),
        "resolve_median": _seconds(row.resolve_median_s),
        "resolve_p90": _seconds(row.resolve_p90_s),
        "ack_breaches": row.ack_slo_breaches,
        "resolve_breaches": row.resolve_slo_breaches,
    }


def source_rows(runtime: Runtime, now: datetime) -> list[dict[str, Any]]:
    """Every configured source with ``driftowner_source_up`` and its last error."""
    rows = []
    for name, spec in runtime.config.sources.items():
        health: SourceHealth | None = runtime.source_health.get(name)
        rows.append(
            {
                "name": name,
                "type": spec.type,
                "up": None if health is None else health.up,
                "failing": health is not None and health.error is not None,
                "last_error": health.last_error if health else None,
                "last_error_ago": (
                    format_age((now - health.last_error_at).total_seconds())
                    if health and health.last_error_at
                    else None
                ),
            }
        )
    return rows


def _seconds(value: float | None) -> str:
    return "—" if value is None else format_age(value)
