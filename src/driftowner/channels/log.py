"""The ``log`` channel: one readable structlog line per notification (its subject, then the
fields), through the logger
``driftowner.notify``. Used by the demo and as a last-resort record; always delivered."""

from __future__ import annotations

import structlog

from driftowner import render
from driftowner.model import Delivery, Notification

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
            summary=render.one_line(message.summary),
            evidence=list(message.evidence),
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
        headline = f"{render.subject(message)} → {message.recipient_name}"
        structlog.get_logger(LOGGER_NAME).info(headline, **present)
        return Delivery.delivered()

    async def aclose(self) -> None:
        """Nothing to release."""
