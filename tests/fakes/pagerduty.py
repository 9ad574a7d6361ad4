"""A fake PagerDuty Events API v2 on loopback (``POST /v2/enqueue``), answering as PagerDuty
documents: ``202 {"status": "success", "message": "Event processed", "dedup_key": ...}`` for
a valid event; ``400 {"status": "invalid event", "message": "Event object is invalid",
"errors": [...]}`` for an invalid one (a routing key not 32 characters, an unknown
``event_action``, a trigger without ``payload.summary``, ``source`` or a known ``severity``,
a ``dedup_key`` over 255 characters, acknowledge/resolve without ``dedup_key``). Scripted
replies (``RATE_LIMITED``, ``SERVER_ERROR``) answer the next requests instead."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from tests.fakes.jsonapi import JsonService, Reply

RATE_LIMITED = Reply(
    429,
    {
        "status": "throttle event",
        "message": "Requests for this service are arriving too quickly.  Please retry later.",
    },
)
SERVER_ERROR = Reply(500, {"status": "error", "message": "internal server error"})
SEVERITIES = ("critical", "error", "warning", "info")
ACTIONS = ("trigger", "acknowledge", "resolve")


def _problems(event: Any) -> list[str]:
    if not isinstance(event, dict):
        return ["Event object is not a JSON object"]
    errors = []
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = event.get("event_action")
    if action not in ACTIONS:
        errors.append("'event_action' is invalid (must be one of trigger, acknowledge, resolve)")
    dedup_key = event.get("dedup_key")
    if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup_key:
        errors.append("'dedup_key' is required for acknowledge and resolve")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return [*errors, "'payload' is missing or not an object"]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not summary or len(summary) > 1024:
            errors.append("'payload.summary' must be 1 to 1024 characters")
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            errors.append("'payload.source' is missing or blank")
        if payload.get("severity") not in SEVERITIES:
            errors.append("'payload.severity' is invalid")
    return errors


def _answer(path: str, headers: Mapping[str, str], event: Any) -> Reply:
    if path != "/v2/enqueue":
        return Reply(404, {"status": "not found", "message": "Not Found"})
    errors = _problems(event)
    if errors:
        return Reply(
            400,
            {"status": "invalid event", "message": "Event object is invalid", "errors": errors},
        )
    dedup_key = event.get("dedup_key") or uuid.uuid4().hex
    return Reply(202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key})


def fake_pagerduty() -> JsonService:
    """The fake Events API, to use as a context manager; ``.url`` is its base URL."""
    return JsonService(_answer, "fake-pagerduty")
