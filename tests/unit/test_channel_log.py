"""The log channel: one structured event per notification, headed by its subject, always
delivered."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import structlog
from structlog.testing import capture_logs

from driftowner.channels import Channel, GroupChannel, build_channel
from driftowner.channels.log import LogChannel
from driftowner.config import LogChannelConfig
from driftowner.model import Delivery, Evidence, Notification

from . import factories


def notification(**changes: Any) -> Notification:
    """A console notification for Bob; ``changes`` replace fields of its message."""
    return factories.notification(
        "n-1",
        channel="console",
        recipient="bob",
        address="bob",
        created_at=datetime(2024, 5, 1, tzinfo=UTC),
        message=factories.full_message(**changes),
    )


async def test_log_channel_writes_one_event_with_every_field() -> None:
    """A notification becomes one ``notification`` event naming purpose, system, owner,
    recipient, step, layers, summary, age, incident id and the links."""
    sent = notification(
        purpose="escalated",
        incident_id="inc-7",
        system="fraud-scoring",
        owner_name="Alice Chen",
        kind="drift",
        rule="drift:accuracy",
        layers=("model",),
        summary="accuracy dropped\nbelow 0.90",
        evidence=(Evidence("accuracy", "model", "degraded", "0.71 < min 0.90"),),
        age_seconds=930,
        step=2,
        recipient_name="Bob Diaz",
        runbook="https://wiki/fraud",
        incident_url="http://127.0.0.1:9587/incidents/inc-7",
        ack_url="http://127.0.0.1:9587/a/ack",
    )
    channel = LogChannel("console")
    with capture_logs() as logs:
        delivery = await channel.send(sent)
    assert delivery == Delivery.delivered()
    assert len(logs) == 1
    event = logs[0]
    assert event["event"].startswith("[driftowner] ESCALATED fraud-scoring")
    assert event["event"].endswith("→ Bob Diaz")
    assert event["log_level"] == "info"
    assert event["purpose"] == "escalated"
    assert event["system"] == "fraud-scoring"
    assert event["owner"] == "Alice Chen"
    assert event["recipient"] == "bob"
    assert event["step"] == "step 2"
    assert event["layers"] == "model"
    assert event["summary"] == "accuracy dropped below 0.90"
    assert event["age"] == "15m 30s"
    assert event["incident_id"] == "inc-7"
    assert event["evidence"] == ["accuracy (model): degraded — 0.71 < min 0.90"]
    assert event["ack_url"] == "http://127.0.0.1:9587/a/ack"
    assert event["incident_url"] == "http://127.0.0.1:9587/incidents/inc-7"
    assert event["runbook"] == "https://wiki/fraud"


async def test_log_channel_leaves_out_what_is_not_set() -> None:
    """Step 0 and missing links are left out instead of logged as None."""
    with capture_logs() as logs:
        await LogChannel("console").send(notification(step=0, runbook=None, resolve_url=None))
    event = logs[0]
    assert "step" not in event
    assert "runbook" not in event
    assert "resolve_url" not in event
    assert None not in event.values()


async def test_log_channel_uses_the_notify_logger() -> None:
    """Events go through ``structlog.get_logger('driftowner.notify')``: the daemon's
    configuration decides where they land."""
    seen: list[tuple[object, ...]] = []

    class Recording:
        def __init__(self, *args: object) -> None:
            seen.append(args)

        def msg(self, *args: object, **kwargs: object) -> None:
            pass

        info = msg

    structlog.configure(logger_factory=Recording, cache_logger_on_first_use=False)
    try:
        await LogChannel("console").send(notification())
    finally:
        structlog.reset_defaults()
    assert ("driftowner.notify",) in seen


async def test_build_channel_makes_a_log_channel_that_satisfies_the_protocol() -> None:
    """``build_channel`` turns a ``log`` config section into a ready channel."""
    channel = build_channel("console", LogChannelConfig(type="log"))
    assert isinstance(channel, LogChannel)
    assert isinstance(channel, Channel)
    assert channel.name == "console"
    await channel.aclose()


async def test_a_group_is_one_log_event_listing_each_incident() -> None:
    """Three notifications to Bob sent as a group are one ``driftowner.notify`` event: the
    group's subject, the count, and each incident with its tag, system, rule, evidence, age
    and own links (absent links left out); the log channel is a group channel."""
    members = [
        dataclasses.replace(
            notification(
                incident_id=f"inc-{i}",
                system=f"model-{i}",
                upstreams=("features-v3",),
                evidence=(Evidence("accuracy", "model", "degraded", f"0.7{i} < min 0.90"),),
                ack_url=f"http://127.0.0.1:9587/a/ack-{i}",
                resolve_url=None,
            ),
            id=f"n-{i}",
        )
        for i in range(3)
    ]
    channel = LogChannel("console")
    assert isinstance(channel, GroupChannel)
    with capture_logs() as logs:
        delivery = await channel.send_group(members)
    assert delivery == Delivery.delivered()
    (event,) = logs
    assert event["event"].startswith("[driftowner] 3 systems fed by features-v3")
    assert event["event"].endswith(f"→ {members[0].message.recipient_name}")
    assert event["count"] == 3 and event["notification_ids"] == ["n-0", "n-1", "n-2"]
    assert [(i["system"], i["label"], i["evidence"]) for i in event["incidents"]] == [
        (f"model-{i}", "OPEN", f"accuracy (model): degraded — 0.7{i} < min 0.90") for i in range(3)
    ]
    assert [i["ack_url"] for i in event["incidents"]] == [
        f"http://127.0.0.1:9587/a/ack-{i}" for i in range(3)
    ]
    assert all("resolve_url" not in i for i in event["incidents"])
