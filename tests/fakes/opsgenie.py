"""A fake Opsgenie Alert API on loopback, answering as Opsgenie documents: every request needs
``Authorization: GenieKey <API_KEY>`` (else ``401``); ``POST /v2/alerts`` needs a ``message``
of at most 130 characters and an ``alias`` of at most 512 (else ``422``); ``POST
/v2/alerts/{alias}/acknowledge|close|notes?identifierType=alias`` needs a known alias (an
alert created before; else ``404``) and ``notes`` a ``note``. Accepted requests get ``202
{"result": "Request will be processed", "took": ..., "requestId": ...}``; ``.alerts`` holds
each alert's status (``open``, ``acked``, ``closed``) and notes. Scripted replies
(``RATE_LIMITED``) answer the next requests instead."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fakes.jsonapi import JsonService, Reply

API_KEY = "eb243592-faa2-4ba2-a551q-1afdf565c889"
RATE_LIMITED = Reply(429, {"message": "Too many requests", "took": 0.0, "requestId": "rl"})


def _error(status: int, message: str, **extra: Any) -> Reply:
    return Reply(
        status, {"message": message, "took": 0.001, "requestId": str(uuid.uuid4()), **extra}
    )


@dataclass
class Alert:
    status: str = "open"
    count: int = 1
    notes: list[str] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)


class FakeOpsgenie(JsonService):
    """The fake Alert API, to use as a context manager; ``.url`` is its base URL."""

    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__(self._respond, "fake-opsgenie")
        self.api_key = api_key
        self.alerts: dict[str, Alert] = {}

    def _respond(self, path: str, headers: Mapping[str, str], body: Any) -> Reply:
        if headers.get("Authorization") != f"GenieKey {self.api_key}":
            return _error(401, "Could not authenticate")
        if not isinstance(body, dict):
            return _error(400, "Request body is not a JSON object")
        parts = urlsplit(path)
        segments = parts.path.strip("/").split("/")
        if segments == ["v2", "alerts"]:
            return self._create(body)
        if len(segments) == 4 and segments[:2] == ["v2", "alerts"]:
            query = parse_qs(parts.query)
            if query.get("identifierType") != ["alias"]:
                return _error(422, "identifierType must be alias for this fake")
            return self._act(unquote(segments[2]), segments[3], body)
        return _error(404, "Not found")

    def _create(self, body: dict[str, Any]) -> Reply:
        message, alias = body.get("message"), body.get("alias")
        errors = {}
        if not isinstance(message, str) or not message.strip() or len(message) > 130:
            errors["message"] = "Message can not be empty and can have at most 130 characters"
        if alias is not None and (not isinstance(alias, str) or len(alias) > 512):
            errors["alias"] = "Alias can have at most 512 characters"
        if errors:
            return _error(
                422, "Request body is not processable. Please check the errors.", errors=errors
            )
        alert = self.alerts.get(alias or "")
        if alert is not None and alert.status != "closed":
            alert.count += 1  # de-duplicated into the open alert
        else:
            self.alerts[alias or str(uuid.uuid4())] = Alert(body=body)
        return Reply(
            202,
            {"result": "Request will be processed", "took": 0.302, "requestId": str(uuid.uuid4())},
        )

    def _act(self, alias: str, action: str, body: dict[str, Any]) -> Reply:
        alert = self.alerts.get(alias)
        if alert is None:
            return _error(404, "Alert does not exist")
        if action == "acknowledge":
            alert.status = "acked"
        elif action == "close":
            alert.status = "closed"
        elif action == "notes":
            if not body.get("note"):
                return _error(
                    422,
                    "Request body is not processable. Please check the errors.",
                    errors={"note": "Note can not be empty"},
                )
        else:
            return _error(404, "Not found")
        if body.get("note"):
            alert.notes.append(body["note"])
        return Reply(
            202,
            {"result": "Request will be processed", "took": 0.01, "requestId": str(uuid.uuid4())},
        )
