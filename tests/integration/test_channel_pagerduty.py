"""The pagerduty channel against a fake Events API v2 on loopback: trigger, acknowledge and
resolve with the incident id as ``dedup_key``, routing per recipient, bodies valid against
the documented event schema, and PagerDuty's answers mapped to deliveries."""

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
from driftowner.channels.pagerduty import PagerDutyChannel
from driftowner.config import PagerDutyChannelConfig
from driftowner.model import Notification
from tests.fakes.jsonapi import JsonService
from tests.fakes.pagerduty import RATE_LIMITED, SERVER_ERROR, fake_pagerduty
from tests.unit import factories

pytestmark = pytest.mark.integration

SCHEMA = json.loads(
    (Path(__file__).parents[1] / "data" / "schemas" / "pagerduty_event_v2.json").read_text()
)
DEFAULT_KEY = "R0UT1NGKEYDEFAULT000000000000000"
ALICE_KEY = "R0UT1NGKEYALICE00000000000000000"


@pytest.fixture
def pagerduty() -> Iterator[JsonService]:
    with fake_pagerduty() as fake:
        yield fake


def channel_for(fake: JsonService, **options: Any) -> PagerDutyChannel:
    settings: dict[str, Any] = {
        "routing_key": SecretStr(DEFAULT_KEY),
        "routing_keys": {"alice": SecretStr(ALICE_KEY)},
    }
    settings.update(options)
    return PagerDutyChannel("pd", api_url=fake.url, timeout=timedelta(seconds=5), **settings)


def note(purpose: str = "opened", recipient: str = "alice", **changes: Any) -> Notification:
    return factories.notification(
        f"n-{purpose}",
        channel="pd",
        recipient=recipient,
        address=recipient,
        message=factories.full_message(incident_id="inc-42", purpose=purpose, **changes),
    )


def valid(event: Any) -> Any:
    jsonschema.Draft202012Validator(SCHEMA).validate(event)
    return event


async def test_an_incident_triggers_acknowledges_and_resolves_one_alert(
    pagerduty: JsonService,
) -> None:
    """Opening triggers, the acknowledgement acknowledges and the resolution resolves, all
    with ``dedup_key`` = the incident id and Alice's routing key; every body is a valid
    Events API v2 event; the trigger names system, owner, evidence and links."""
    channel = channel_for(pagerduty)
    try:
        opened = await channel.send(note("opened"))
        acked = await channel.send(note("acknowledged", state="acknowledged", actor="alice"))
        resolved = await channel.send(note("resolved", state="resolved"))
    finally:
        await channel.aclose()
    assert opened.ok and acked.ok and resolved.ok
    assert opened.ref == "inc-42" and "dedup_key inc-42" in opened.detail
    events = [valid(r.body) for r in pagerduty.requests]
    assert [e["event_action"] for e in events] == ["trigger", "acknowledge", "resolve"]
    assert {e["dedup_key"] for e in events} == {"inc-42"}
    assert {e["routing_key"] for e in events} == {ALICE_KEY}
    trigger = events[0]
    assert trigger["payload"]["source"] == "fraud-scoring"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["custom_details"]["accountable_owner"] == "Alice Chen"
    assert trigger["payload"]["custom_details"]["evidence"]
    assert next(link["text"] for link in trigger["links"]) == "Incident in driftowner"


async def test_a_recipient_without_its_own_key_uses_the_channels(pagerduty: JsonService) -> None:
    """Bob has no routing key of his own: his page goes to the channel's ``routing_key``;
    without that either, it gives up naming him."""
    channel = channel_for(pagerduty)
    lonely = channel_for(pagerduty, routing_key=None)
    try:
        assert (await channel.send(note("escalated", recipient="bob", step=2))).ok
        refused = await lonely.send(note("escalated", recipient="bob", step=2))
    finally:
        await channel.aclose()
        await lonely.aclose()
    assert valid(pagerduty.requests[0].body)["routing_key"] == DEFAULT_KEY
    assert (refused.ok, refused.recoverable) == (False, False)
    assert "'bob'" in refused.detail and len(pagerduty.requests) == 1


async def test_an_informed_team_sends_nothing(pagerduty: JsonService) -> None:
    """PagerDuty has no "for your information" event: nothing is sent, and it counts as
    delivered (nothing to retry)."""
    channel = channel_for(pagerduty)
    try:
        delivery = await channel.send(note("informed", recipient="ml-fraud"))
    finally:
        await channel.aclose()
    assert delivery.ok and "nothing to send" in delivery.detail
    assert pagerduty.requests == []


async def test_news_of_an_escalation_step_sends_no_second_trigger(pagerduty: JsonService) -> None:
    """An escalation step told to the conversation the incident started (``stepped_up``)
    pages nobody: PagerDuty has no note event, so nothing is sent (a trigger would page the
    alert's on-call again); it counts as delivered."""
    channel = channel_for(pagerduty)
    try:
        delivery = await channel.send(note("stepped_up", step=2, actor="auto"))
    finally:
        await channel.aclose()
    assert delivery.ok and "nothing to send" in delivery.detail
    assert pagerduty.requests == []


async def test_a_persons_note_sends_nothing(pagerduty: JsonService) -> None:
    """A person's note (``noted``) has no Events API event: nothing is sent (a trigger would
    page the on-call again); it counts as delivered."""
    channel = channel_for(pagerduty)
    try:
        delivery = await channel.send(note("noted", actor="bob", note="rolled back"))
    finally:
        await channel.aclose()
    assert delivery.ok and "nothing to send" in delivery.detail
    assert pagerduty.requests == []


async def test_long_text_is_cut_to_pagerdutys_limits(pagerduty: JsonService) -> None:
    """A 2,000-character system name and a 300-character incident id still make a valid event
    (summary ≤ 1024, dedup_key ≤ 255): accepted, not refused."""
    channel = channel_for(pagerduty)
    long = factories.full_message(incident_id="i" * 300, system="s" * 2000)
    try:
        delivery = await channel.send(
            factories.notification("n-1", channel="pd", address="alice", message=long)
        )
    finally:
        await channel.aclose()
    assert delivery.ok, delivery.detail
    event = valid(pagerduty.requests[0].body)
    assert len(event["payload"]["summary"]) == 1024 and len(event["dedup_key"]) == 255


async def test_an_invalid_event_gives_up_with_pagerdutys_errors(pagerduty: JsonService) -> None:
    """A 400 ``invalid event`` (here a routing key PagerDuty refuses) gives up with
    PagerDuty's error list in the detail, the key itself masked."""
    channel = channel_for(pagerduty, routing_keys={"alice": SecretStr("too-short")})
    try:
        delivery = await channel.send(note())
    finally:
        await channel.aclose()
    assert (delivery.ok, delivery.recoverable) == (False, False)
    assert "HTTP 400" in delivery.detail and "routing_key" in delivery.detail
    assert "too-short" not in delivery.detail


@pytest.mark.parametrize("reply", [RATE_LIMITED, SERVER_ERROR], ids=["429", "500"])
async def test_rate_limits_and_server_errors_are_retried(
    pagerduty: JsonService, reply: Any
) -> None:
    """429 (PagerDuty throttling) and 5xx are retried; the next attempt goes through."""
    pagerduty.answer_next(reply)
    channel = channel_for(pagerduty)
    try:
        first = await channel.send(note())
        second = await channel.send(note())
    finally:
        await channel.aclose()
    assert (first.ok, first.recoverable) == (False, True)
    assert f"HTTP {reply.status}" in first.detail
    assert second.ok


def test_build_channel_and_config() -> None:
    """The config needs a routing key somewhere, refuses a blank one and a base URL that is
    not http(s), and builds a PagerDutyChannel without I/O."""
    config = PagerDutyChannelConfig.model_validate(
        {"type": "pagerduty", "routing_keys": {"alice": ALICE_KEY}, "api_url": "http://127.0.0.1:9"}
    )
    assert isinstance(build_channel("pd", config), PagerDutyChannel)
    for bad, where in (
        ({}, ()),
        ({"routing_key": " "}, ("routing_key",)),
        ({"routing_key": DEFAULT_KEY, "api_url": "ftp://x"}, ("api_url",)),
    ):
        with pytest.raises(ValidationError) as caught:
            PagerDutyChannelConfig.model_validate({"type": "pagerduty", **bad})
        assert caught.value.errors()[0]["loc"] == where
