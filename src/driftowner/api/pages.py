"""The HTML the HTTP layer renders: the confirm and outcome pages of signed links, and the
template environment the status page shares."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta

import jinja2
from fastapi.responses import HTMLResponse

from driftowner.api.runtime import Runtime
from driftowner.config import Config, format_duration
from driftowner.model import Incident


@functools.cache
def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("driftowner", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def owner_name(config: Config, key: str) -> str:
    """An owner's display name, or the key itself when the config no longer has them."""
    owner = config.owners.get(key)
    return owner.name if owner else key


def whole_age(incident: Incident, now: datetime) -> str:
    """An incident's age in whole seconds, as a duration (``1h5m``)."""
    return format_duration(timedelta(seconds=round(incident.age(now).total_seconds())))


def page(
    runtime: Runtime,
    title: str,
    *,
    incident: Incident | None = None,
    error: str = "",
    message: str = "",
    confirm: str = "",
    acting_as: str = "",
    offer_accept: bool = False,
    status: int = 200,
) -> HTMLResponse:
    """A signed link's page: the incident, who acts, and the outcome or the question (a
    resolve link's with the box that accepts the new level, ``offer_accept``)."""
    html = (
        templates()
        .get_template("action.html")
        .render(
            title=title,
            incident=incident,
            owner_name=owner_name(runtime.config, incident.owner) if incident else "",
            age=whole_age(incident, runtime.clock()) if incident else "",
            error=error,
            message=message,
            confirm=confirm,
            acting_as=acting_as,
            offer_accept=offer_accept,
        )
    )
    return HTMLResponse(html, status_code=status)
