"""The opsgenie channel against a fake Alert API on loopback: create, acknowledge and close by
alias = the incident id with GenieKey auth, bodies valid against the documented request
schemas, and Opsgenie's answers mapped to deliveries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import SecretStr, ValidationError

from driftowner.channels import build_channel
from driftowner.channels.opsgenie import OpsgenieChannel
from driftowner.config import OpsgenieChannelConfig
from driftowner.model import Evidence, Notification
from tests.fakes.jsonapi import Reply
from tests.fakes.opsgenie import API_KEY, RATE_LIMITED, FakeOpsgenie
from tests.unit import factories

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).parents[1] / "data" / "schemas"
CREATE = json.loads((SCHEMAS / "opsgenie_create_alert.json").read_text())
ACTION = json.loads((SCHEMAS / "opsgenie_alert_action.json").read_text())


@pytest.fixture
def opsgenie() -> Iterator[FakeOpsgenie]:
    with FakeOpsgenie() as fake:
        yield fake


def channel_for(fake: FakeOpsgenie, api_key: str = API_KEY) -> OpsgenieChannel:
    return OpsgenieChannel(
        "og", api_url=fake.url, api_key=SecretStr(api_key), timeout=timedelta(seconds=5)
    )


def note(purpose: str = "opened", **changes: Any) -> Notification:
    return factories.notification(
        f"n-{purpose}",
        channel="og",
        address="alice",
        message=factories.full_message(incident_id="inc-42", purpose=purpose, **changes),
    )


async def test_an_incident_creates_acknowledges_and_closes_one_alert(
    opsgenie: FakeOpsgenie,
) -> None:
    """Opening creates the alert with alias inc-42 (an escalation folds into it), the
    acknowledgement acknowledges it with Alice's note, the resolution closes it; each request
    carries the GenieKey and a body valid against the documented schema."""
    channel = channel_for(opsgenie)
    try:
        for sent in (
            note("opened"),
            note("escalated", step=2),
            note("acknowledged", state="acknowledged", actor="alice", note="on it"),
            note("resolved", state="resolved", actor="alice"),
        ):
            delivery = await channel.send(sent)
            assert delivery.ok and "requestId" in delivery.detail, delivery.detail
    finally:
        await channel.aclose()
    requests = opsgenie.requests
    assert [r.path.split("?")[0] for r in requests] == [
        "/v2/alerts",
        "/v2/alerts",
        "/v2/alerts/inc-42/acknowledge",
        "/v2/alerts/inc-42/close",
    ]
    assert all(r.headers["Authorization"] == f"GenieKey {API_KEY}" for r in requests)
    for request in requests[:2]:
        jsonschema.Draft202012Validator(CREATE).validate(request.body)
    for request in requests[2:]:
        assert request.path.endswith("?identifierType=alias")
        jsonschema.Draft202012Validator(ACTION).validate(request.body)
    alert = opsgenie.alerts["inc-42"]
    assert (alert.status, alert.count, alert.notes) == ("closed", 2, ["on it"])
    assert alert.body["details"]["accountable_owner"] == "Alice Chen"


async def test_a_reassignment_adds_a_note_and_a_team_informed_sends_nothing(
    opsgenie: FakeOpsgenie,
) -> None:
    """A reassignment is a note on the alert naming the new owner; an informed team sends
    nothing (delivered, nothing to retry)."""
    channel = channel_for(opsgenie)
    try:
        await channel.send(note("opened"))
        moved = await channel.send(
            note("reassigned", owner_name="Bob Diaz", actor="dana", note="Bob owns the model")
        )
        fyi = await channel.send(note("informed"))
    finally:
        await channel.aclose()
    assert moved.ok and fyi.ok and "nothing to send" in fyi.detail
    (added,) = opsgenie.alerts["inc-42"].notes
    assert "Bob Diaz" in added and "Bob owns the model" in added
    assert len(opsgenie.requests) == 2


async def _opened_then_noted(opsgenie: FakeOpsgenie, follow_up: Notification) -> Any:
    """Open inc-42's alert, then send ``follow_up``: it must be delivered as one note on
    the alert, by alias (an action body as Opsgenie documents it), never a second create.
    Returns the note's request body."""
    channel = channel_for(opsgenie)
    try:
        await channel.send(note("opened"))
        told = await channel.send(follow_up)
    finally:
        await channel.aclose()
    assert told.ok, told.detail
    assert [r.path.split("?")[0] for r in opsgenie.requests] == [
        "/v2/alerts",
        "/v2/alerts/inc-42/notes",
    ]
    body = opsgenie.requests[1].body
    jsonschema.Draft202012Validator(ACTION).validate(body)
    return body


async def test_news_of_an_escalation_step_is_a_note_not_a_second_alert(
    opsgenie: FakeOpsgenie,
) -> None:
    """An escalation step told to the alert's conversation (``stepped_up``) adds a note
    naming the step, by alias, as driftowner itself; no second create."""
    await _opened_then_noted(opsgenie, note("stepped_up", step=2, actor="auto"))
    alert = opsgenie.alerts["inc-42"]
    (added,) = alert.notes
    assert "Escalated to step 2" in added and alert.count == 1


async def test_a_persons_note_is_a_note_on_the_alert_by_them(opsgenie: FakeOpsgenie) -> None:
    """A person's note told to the alert's conversation (``noted``) adds their words as a
    note on the alert, by alias, with the person as its ``user``; no second create."""
    body = await _opened_then_noted(
        opsgenie, note("noted", actor="bob", note="rolled back features-v3")
    )
    assert (body["user"], body["note"]) == ("bob", "rolled back features-v3")
    assert opsgenie.alerts["inc-42"].notes == ["rolled back features-v3"]


async def test_long_text_is_cut_to_opsgenies_limits(opsgenie: FakeOpsgenie) -> None:
    """A 500-character summary and 20,000 characters of evidence still make a valid create
    request (message ≤ 130, description ≤ 15,000): accepted."""
    channel = channel_for(opsgenie)
    try:
        long = (Evidence("accuracy", "model", "degraded", "e" * 20_000),)
        delivery = await channel.send(note(summary="s" * 500, evidence=long))
    finally:
        await channel.aclose()
    assert delivery.ok, delivery.detail
    body = opsgenie.requests[0].body
    jsonschema.Draft202012Validator(CREATE).validate(body)
    assert len(body["message"]) == 130 and len(body["description"]) == 15_000


async def test_a_wrong_key_gives_up_with_401_and_the_key_never_shows(
    opsgenie: FakeOpsgenie,
) -> None:
    """401 (a key Opsgenie does not know) gives up; the key is not in the detail."""
    channel = channel_for(opsgenie, api_key="wrong-key-123")
    try:
        delivery = await channel.send(note())
    finally:
        await channel.aclose()
    assert (delivery.ok, delivery.recoverable) == (False, False)
    assert "HTTP 401" in delivery.detail and "wrong-key-123" not in delivery.detail


async def test_an_unprocessable_request_gives_up_with_422(opsgenie: FakeOpsgenie) -> None:
    """422 (an acknowledgement's alias Opsgenie refuses) gives up with its message."""
    channel = channel_for(opsgenie)
    try:
        await channel.send(note("opened"))
        opsgenie.answer_next(
            Reply(422, {"message": "Request body is not processable.", "requestId": "x"})
        )
        delivery = await channel.send(note("acknowledged", state="acknowledged"))
    finally:
        await channel.aclose()
    assert (delivery.ok, delivery.recoverable) == (False, False)
    assert "HTTP 422" in delivery.detail and "not processable" in delivery.detail


async def test_a_rate_limit_is_retried(opsgenie: FakeOpsgenie) -> None:
    """429 is retried; the next attempt creates the alert."""
    opsgenie.answer_next(RATE_LIMITED)
    channel = channel_for(opsgenie)
    try:
        first = await channel.send(note())
        second = await channel.send(note())
    finally:
        await channel.aclose()
    assert (first.ok, first.recoverable) == (False, True)
    assert second.ok and "inc-42" in opsgenie.alerts


def test_build_channel_and_config() -> None:
    """The config needs a non-blank api_key and an http(s) api_url, and builds an
    OpsgenieChannel without I/O."""
    config = OpsgenieChannelConfig.model_validate({"type": "opsgenie", "api_key": API_KEY})
    assert config.api_url == "https://api.opsgenie.com/"
    assert isinstance(build_channel("og", config), OpsgenieChannel)
    for bad, where in (
        ({"api_key": ""}, ("api_key",)),
        ({"api_key": "k", "api_url": "x"}, ("api_url",)),
    ):
        with pytest.raises(ValidationError) as caught:
            OpsgenieChannelConfig.model_validate({"type": "opsgenie", **bad})
        assert caught.value.errors()[0]["loc"] == where
