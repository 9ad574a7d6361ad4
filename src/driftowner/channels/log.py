"""The ``log`` channel: one readable structlog line per notification (its subject, then the
fields), or per group of notifications (the group's subject, then each incident), through the
logger ``driftowner.notify``. Used by the demo and as a last-resort record; always delivered."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from driftowner import render
from driftowner.model import Delivery, GroupThread, Notification

LOGGER_NAME = "driftowner.notify"


class LogChannel:
    """Writes each notification as one structured log event whose text is the subject.

    Args:
        name: The channel's name in the config.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    async def send(self, notification: Notification) -> Delivery:
        """Log the notification with every field a reader needs; never fails."""
        message = notification.message
        fields = dict(
            channel=self.name,
            notification_id=notification.id,
            purpose=message.purpose,
            system=message.system,
            owner=message.owner_name,
            owner_key=message.owner,
            recipient=notification.recipient,
            recipient_name=message.recipient_name,
            address=notification.address,
            state=message.state,
            step=render.step_label(message) or None,
            kind=message.kind,
            rule=message.rule,
            layers=",".join(message.layers),
            summary=render.summary(message),
            evidence=list(render.evidence_lines(message)),
            note=render.note(message) or None,
            age=render.format_age(message.age_seconds),
            incident_id=message.incident_id,
            runbook=message.runbook,
            ack_url=message.ack_url,
            resolve_url=message.resolve_url,
            incident_url=message.incident_url,
        )
        # Absent links and a step of 0 are left out rather than logged as ``None``.
        present = {key: value for key, value in fields.items() if value is not None}
        # The event text is the message's subject, so a console reader sees at a glance what
        # happened, to which system, whose it is and who is being told.
        structlog.get_logger(LOGGER_NAME).info(render.log_line(message), **present)
        return Delivery.delivered()

    async def send_group(
        self, notifications: Sequence[Notification], thread: GroupThread | None = None
    ) -> Delivery:
        """Log a group as one event: the group's subject, then each incident listed with its
        tag, evidence, age and links (a log has no thread: ``thread`` is not used)."""
        messages = [n.message for n in notifications]
        first = notifications[0]
        incidents = [_listed(render.group_entry(m)) for m in messages]
        structlog.get_logger(LOGGER_NAME).info(
            render.group_log_line(messages),
            channel=self.name,
            notification_ids=[n.id for n in notifications],
            recipient=first.recipient,
            recipient_name=first.message.recipient_name,
            address=first.address,
            count=len(messages),
            summary=render.group_summary(messages),
            incidents=incidents,
        )
        return Delivery.delivered()

    async def aclose(self) -> None:
        """Nothing to release."""


def _listed(entry: dict[str, Any]) -> dict[str, Any]:
    """One incident of a group's log event, its absent links left out."""
    message = entry["m"]
    fields = {
        "incident_id": message.incident_id,
        "label": entry["label"],
        "system": message.system,
        "owner": message.owner_name,
        "rule": message.rule,
        "state": message.state,
        "age": entry["age_phrase"],
        "evidence": entry["evidence"],
        "ack_url": message.ack_url,
        "resolve_url": message.resolve_url,
        "incident_url": message.incident_url,
    }
    return {key: value for key, value in fields.items() if value is not None}
