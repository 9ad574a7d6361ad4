"""``POST /api/v1/alertmanager``: driftowner as an Alertmanager webhook receiver. Alertmanager
sends its bearer token (``http_config.authorization``); the alerts of the body (payload
version 4) are kept in the store, where the leader's alertmanager source reads them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from driftowner.alerts import parse_selector
from driftowner.api.auth import bearer_matches
from driftowner.api.errors import responses
from driftowner.api.runtime import Runtime
from driftowner.config import AlertmanagerSourceConfig, Config
from driftowner.model import ReceivedAlert
from driftowner.sources.alertmanager import WebhookPayload, received

log = structlog.get_logger("driftowner.api.alertmanager")

BODY_LIMIT = 4 * 1024 * 1024
"""Largest webhook body: a group of some thousand alerts. Set ``max_alerts`` in Alertmanager's
webhook_config to keep bigger groups under it (413 above)."""


class Received(BaseModel):
    """What one webhook delivered."""

    source: str
    firing: int
    resolved: int
    unmatched: int
    """Alerts no signal of the source selects (a missing or unknown system label)."""


def alert_source(config: Config, name: str | None, authorization: str | None) -> str:
    """The alertmanager source a webhook request is for, once its token is checked.

    Raises:
        HTTPException: 404 without such a source; 422 naming ``source`` when several are
            configured and the request names none; 403 when no token is configured for it,
            or an owner's token was sent; 401 when the token is missing or wrong.
    """
    sources = {
        key: spec
        for key, spec in config.sources.items()
        if isinstance(spec, AlertmanagerSourceConfig)
    }
    if not sources:
        raise HTTPException(404, "no alertmanager source is configured")
    if name is None:
        if len(sources) > 1:
            raise HTTPException(
                422,
                [
                    {
                        "loc": ["query", "source"],
                        "msg": f"several alertmanager sources: name one of {', '.join(sources)}",
                    }
                ],
            )
        name = next(iter(sources))
    spec = sources.get(name)
    if spec is None:
        raise HTTPException(404, f"no alertmanager source {name!r}")
    tokens = [t.get_secret_value() for t in (spec.token, config.server.api_token) if t is not None]
    if not tokens:
        raise HTTPException(
            403, f"the webhook is disabled: set sources.{name}.token or server.api_token"
        )
    # Every token is compared, so the time taken says nothing of which one was close.
    if not any([bearer_matches(authorization, token) for token in tokens]):
        owners = [
            key
            for key, owner in config.owners.items()
            if owner.api_token is not None
            and bearer_matches(authorization, owner.api_token.get_secret_value())
        ]
        if owners:
            raise HTTPException(
                403,
                f"this token acts only as {owners[0]}: Alertmanager sends "
                f"sources.{name}.token or server.api_token",
            )
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    return name


def _checked(config: Callable[[], Config]) -> type[APIRoute]:
    """A route class that picks the source and checks the token before the body is read (a
    request without a token is a 401 whatever its body holds)."""

    class SourceChecked(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Any]:
            handler = super().get_route_handler()

            async def checked(request: Request) -> Response:
                request.state.alert_source = alert_source(
                    config(),
                    request.query_params.get("source"),
                    request.headers.get("authorization"),
                )
                response: Response = await handler(request)
                return response

            return checked

    return SourceChecked


def unmatched(config: Config, source: str, alerts: list[ReceivedAlert]) -> list[ReceivedAlert]:
    """The alerts no signal on ``source`` selects."""
    selectors = [
        parse_selector(signal.query)
        for system in config.systems.values()
        for signal in system.signals.values()
        if signal.source == source and signal.alerts
    ]
    return [
        alert
        for alert in alerts
        if not any(all(m.matches(dict(alert.labels)) for m in chosen) for chosen in selectors)
    ]


def router(runtime: Runtime) -> APIRouter:
    """The Alertmanager webhook receiver."""
    r = APIRouter(route_class=_checked(lambda: runtime.config))

    @r.post(
        "/api/v1/alertmanager",
        max_body_size=BODY_LIMIT,
        responses=responses(400, 401, 403, 404, 413, 422),
    )
    def alertmanager(
        payload: WebhookPayload, request: Request, source: str | None = None
    ) -> Received:
        """A webhook notification from Alertmanager (``webhook_config``, payload version 4).

        ``source`` names the alertmanager source when several are configured. Each alert's
        episode (fingerprint, labels, startsAt, endsAt) is kept in the store; a resolve is
        final for its episode. The alerts of a source resolved longer ago than its
        ``keep_resolved`` are forgotten.
        """
        name: str = request.state.alert_source
        config = runtime.config
        spec = config.sources[name]
        assert isinstance(spec, AlertmanagerSourceConfig)
        now = runtime.clock()
        alerts = received(payload, now)
        runtime.store.record_alerts(name, alerts, forget_before=now - spec.keep_resolved)
        strays = unmatched(config, name, alerts)
        resolved = sum(alert.resolved for alert in alerts)
        log.info(
            "alerts received",
            source=name,
            receiver=payload.receiver,
            firing=len(alerts) - resolved,
            resolved=resolved,
        )
        if strays:
            names = sorted({dict(a.labels).get("alertname", "") for a in strays})
            log.warning(
                "alerts no signal selects",
                source=name,
                alerts=len(strays),
                alertnames=names[:10],
                hint="a signal's query names the alert; the system label names its system",
            )
        if payload.truncated_alerts:
            log.warning(
                "Alertmanager left alerts out of a webhook",
                source=name,
                truncated=payload.truncated_alerts,
                hint="raise webhook_config.max_alerts, or group alerts more finely",
            )
        return Received(
            source=name, firing=len(alerts) - resolved, resolved=resolved, unmatched=len(strays)
        )

    return r
