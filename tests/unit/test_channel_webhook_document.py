"""The webhook's JSON document, built without ``dataclasses.asdict``: the same bytes."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

import pytest

from driftowner import render
from driftowner.channels.webhook import message_document, signature
from driftowner.clock import rfc3339
from driftowner.model import Evidence, Message, SloBreach, Upstream
from tests.unit import factories


def asdict_document(message: Message) -> dict[str, Any]:
    """The document as the webhook built it with ``dataclasses.asdict`` (the oracle)."""

    def ready(value: Any) -> Any:
        if isinstance(value, datetime):
            return rfc3339(value)
        if isinstance(value, tuple):
            return [ready(item) for item in value]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        return value

    document = {f.name: ready(getattr(message, f.name)) for f in dataclasses.fields(message)}
    document["findings"] = document["evidence"]
    document["summary"] = render.summary(message)
    document["evidence"] = list(render.evidence_lines(message))
    document["note"] = render.note(message)
    return document


MESSAGES = {
    "a full page": factories.full_message(),
    "no evidence, no links": factories.full_message(
        evidence=(), runbook=None, incident_url=None, ack_url=None, resolve_url=None
    ),
    "a breach told to the next step": factories.full_message(
        purpose="escalated",
        breach=SloBreach("ack", 1800.0, 60.5),
        evidence=(
            Evidence("accuracy", "model", "degraded", "0.71 < min 0.90", 0.71, None, 0.9),
            Evidence("ünïcode-signal", "data", "ok", "fine \u2014 \u2603", None, 1.5, None),
        ),
    ),
    "held by an upstream": factories.full_message(
        held_by=Upstream("inc-up", "features-v3", "bob", "open"), upstreams=("features-v3",)
    ),
}


@pytest.mark.parametrize("message", MESSAGES.values(), ids=MESSAGES.keys())
def test_the_document_is_byte_for_byte_what_asdict_made(message: Message) -> None:
    """Every message field (facts nested as objects, datetimes RFC 3339, non-ASCII escaped as
    ``json.dumps`` does) serialises to the same compact JSON as the ``asdict`` build did."""
    compact = {"separators": (",", ":")}
    assert json.dumps(message_document(message), **compact) == json.dumps(
        asdict_document(message), **compact
    )


def test_a_note_is_a_noted_document_carrying_the_persons_words() -> None:
    """A person's note told to a webhook: ``purpose`` ``noted``, the note in ``note``, its
    writer in ``actor``, the step escalation stands at in ``step``."""
    noted = factories.full_message(
        purpose="noted", actor="bob", note="rolled back features-v3", step=2
    )
    document = message_document(noted)
    assert (document["purpose"], document["note"], document["actor"], document["step"]) == (
        "noted",
        "rolled back features-v3",
        "bob",
        2,
    )


def test_the_signature_is_the_hmac_of_timestamp_dot_body() -> None:
    """``v1=`` and the hex HMAC-SHA256 of ``timestamp.body``, the body signed without being
    copied into one string first."""
    body = b'{"version":1}' * 100
    expected = hmac.new(b"k3y", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature(b"k3y", "1700000000", body) == f"v1={expected}"
