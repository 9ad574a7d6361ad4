"""``POST /slack/interactions``: a click on an interactive Acknowledge / Resolve button in a
Slack message, acted on as the owner whose Slack member id clicked. Reading and verifying
what Slack sent lives beside the channel (:mod:`driftowner.channels.slack_inbound`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from driftowner import service
from driftowner.api.errors import refusal, responses
from driftowner.api.runtime import Runtime
from driftowner.channels.slack import ACK_ACTION
from driftowner.channels.slack_inbound import (
    SlackClick,
    click_in,
    ephemeral,
    post_reply,
    signed,
    signing_secrets,
)

BODY_LIMIT = 1024 * 1024
"""Largest ``/slack/interactions`` body. A ``block_actions`` payload carries the clicked
message: at most 50 blocks of at most 3,000 characters each, form-encoded, well under this."""


def router(runtime: Runtime) -> APIRouter:
    """The Slack interactivity endpoint."""
    r = APIRouter()

    @r.post(
        "/slack/interactions", max_body_size=BODY_LIMIT, responses=responses(400, 401, 404, 413)
    )
    async def slack_interactions(request: Request, background: BackgroundTasks) -> JSONResponse:
        """A click on an interactive Acknowledge / Resolve button in a Slack message.

        Slack signs every request with the app's signing secret; one that no configured
        secret verifies (missing, older than five minutes, or wrong) changes nothing. Slack
        shows nothing of this response's body for ``block_actions``: the reply to the person
        who clicked goes to the payload's ``response_url`` as an ephemeral message, after
        the response. The body carries the same reply (for logs and tests).
        """
        secrets = signing_secrets(runtime.config)
        if not secrets:
            return JSONResponse(
                {
                    "detail": "Slack interactivity is not configured: set signing_secret on a "
                    "slack channel"
                },
                status_code=404,
            )
        body = await request.body()
        headers = request.headers
        if not signed(
            secrets,
            body,
            headers.get("x-slack-request-timestamp"),
            headers.get("x-slack-signature"),
        ):
            return JSONResponse(
                {"detail": "missing, expired or wrong Slack signature"}, status_code=401
            )
        try:
            click = click_in(body)
        except ValueError as error:
            return JSONResponse(
                {"detail": [{"loc": ["body", "payload"], "msg": str(error)}]}, status_code=400
            )
        if click is None:
            # Another kind of interaction, or a URL button (Slack reports those clicks too):
            # acknowledged, nothing to do.
            return JSONResponse({})
        reply = await run_in_threadpool(act_on_click, runtime, click)
        if click.response_url:
            background.add_task(post_reply, click.response_url, reply)
        return JSONResponse(reply)

    return r


def act_on_click(runtime: Runtime, click: SlackClick) -> dict[str, Any]:
    """Act as the owner whose Slack member id clicked; the ephemeral reply says what
    happened."""
    config = runtime.config
    by = next((key for key, owner in config.owners.items() if owner.slack == click.user_id), None)
    if by is None:
        # Name nobody: whoever clicked is not an owner and learns no one's name.
        return ephemeral(
            "Nothing changed: your Slack account is not one of driftowner's owners. "
            "Only an owner whose Slack member id is configured can act here; to be one, "
            f"ask an operator to set `slack: {click.user_id}` on your entry under `owners`."
        )
    name = config.owners[by].name
    action: service.Action = "ack" if click.action == ACK_ACTION else "resolve"
    try:
        service.act(
            runtime.store,
            config,
            runtime.links,
            action,
            click.incident_id,
            by,
            "via Slack",
            runtime.clock(),
            "slack",
        )
    except service.REFUSALS as error:
        return ephemeral(_refused_text(click, error))
    if action == "ack":
        text = (
            f"Acknowledged by {name} via Slack: incident {click.incident_id}. "
            "Escalation has stopped."
        )
    else:
        text = (
            f"Resolved by {name} via Slack: incident {click.incident_id}. "
            "Everyone who was notified will hear of it."
        )
    return ephemeral(text)


def _refused_text(click: SlackClick, error: Exception) -> str:
    """The refusal as a sentence to the person who clicked."""
    answer = refusal(error)
    if answer.status == 404:
        return f"Nothing changed: there is no incident {click.incident_id}."
    if answer.retry:
        return (
            f"Nothing changed: incident {click.incident_id} changed at the same moment. "
            "Look at it again and retry."
        )
    if answer.status == 409:
        return f"Nothing to do: {answer.message}."
    return f"Nothing changed: {answer.message}."
