"""Delivery channels: the ``Channel`` protocol, ``build_channel`` from config, and the small
helpers every channel shares (one-line, secret-free details; ``Retry-After`` parsing).

A channel turns one ``Notification`` into one ``Delivery`` and never raises for delivery
trouble; the outbox owns retries and backoff.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from driftowner.config import (
    ChannelConfig,
    EmailChannelConfig,
    LogChannelConfig,
    OpsgenieChannelConfig,
    PagerDutyChannelConfig,
    SlackChannelConfig,
    WebhookChannelConfig,
)
from driftowner.model import Delivery, GroupThread, Notification

if TYPE_CHECKING:
    from datetime import timedelta

__all__ = [
    "Channel",
    "GroupChannel",
    "build_channel",
    "parse_retry_after",
    "safe_detail",
    "timeout_seconds",
]

_DETAIL_LIMIT = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@runtime_checkable
class Channel(Protocol):
    """A delivery mechanism. ``send`` reports trouble as a ``Delivery``, never by raising."""

    name: str

    async def send(self, notification: Notification) -> Delivery:
        """Deliver one notification once.

        Returns:
            ``Delivery.delivered()``, ``Delivery.retry(detail, retry_after)`` when trying again
            may help, or ``Delivery.give_up(detail)`` when it cannot.
        """
        ...

    async def aclose(self) -> None:
        """Release connections; the channel may be used again afterwards."""
        ...


@runtime_checkable
class GroupChannel(Protocol):
    """A channel that can deliver several notifications to one recipient as one message
    (see :mod:`driftowner.grouping`); the others send each notification on its own."""

    async def send_group(
        self, notifications: Sequence[Notification], thread: GroupThread | None = None
    ) -> Delivery:
        """Deliver ``notifications`` (one recipient and address) as one message; the one
        ``Delivery`` is every member's outcome.

        Args:
            notifications: What goes out now.
            thread: The group's thread: with a ``ref``, this message replies under that
                root (and a channel that can updates the root to list ``thread.listed``);
                without one (None, or no ``ref``), it starts the thread, and its ``ref`` in
                the ``Delivery`` is the root later messages reply under.
        """
        ...


def build_channel(name: str, config: ChannelConfig) -> Channel:
    """The channel a config section describes. Opens nothing: connections are made on send.

    Args:
        name: The channel's name in the config (``slack``, ``email``, ...).
        config: Its validated config section.

    Returns:
        A ``LogChannel``, ``SlackWebhookChannel``, ``SlackWebApiChannel``, ``EmailChannel``,
        ``WebhookChannel``, ``PagerDutyChannel`` or ``OpsgenieChannel``.
    """
    # Imported here so that importing the protocol does not import every client library.
    if isinstance(config, LogChannelConfig):
        from driftowner.channels.log import LogChannel

        return LogChannel(name)
    if isinstance(config, SlackChannelConfig):
        from driftowner.channels.slack import SlackWebApiChannel, SlackWebhookChannel

        interactive = config.signing_secret is not None
        if config.token is not None:
            return SlackWebApiChannel(
                name,
                config.token,
                api_url=config.api_url,
                timeout=config.timeout,
                interactive=interactive,
            )
        if config.webhook_url is None:  # pragma: no cover - the config validator forbids it
            raise ValueError(f"slack channel {name!r} has neither webhook_url nor token")
        return SlackWebhookChannel(
            name, config.webhook_url, timeout=config.timeout, interactive=interactive
        )
    if isinstance(config, EmailChannelConfig):
        from driftowner.channels.email import EmailChannel

        return EmailChannel(
            name,
            host=config.host,
            port=config.port,
            starttls=config.starttls,
            use_tls=config.use_tls,
            username=config.username,
            password=config.password,
            sender=config.from_,
            timeout=config.timeout,
            ca_file=config.ca_file,
            templates_dir=config.templates_dir,
        )
    if isinstance(config, WebhookChannelConfig):
        from driftowner.channels.webhook import WebhookChannel

        return WebhookChannel(name, config.url, timeout=config.timeout, secret=config.secret)
    if isinstance(config, PagerDutyChannelConfig):
        from driftowner.channels.pagerduty import PagerDutyChannel

        return PagerDutyChannel(
            name,
            api_url=config.api_url,
            routing_key=config.routing_key,
            routing_keys=config.routing_keys,
            severity=config.severity,
            timeout=config.timeout,
        )
    if isinstance(config, OpsgenieChannelConfig):
        from driftowner.channels.opsgenie import OpsgenieChannel

        return OpsgenieChannel(
            name,
            api_url=config.api_url,
            api_key=config.api_key,
            priority=config.priority,
            timeout=config.timeout,
        )
    raise TypeError(f"unknown channel config {type(config).__name__}")  # pragma: no cover


def safe_detail(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` as one short line with every secret replaced by ``***``.

    Args:
        text: A message built from a server's answer or an exception.
        secrets: Values that must never appear (webhook URLs, passwords); empty ones are
            ignored.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _CONTROL.sub(" ", text).strip()
    if len(text) > _DETAIL_LIMIT:
        text = text[: _DETAIL_LIMIT - 1] + "…"
    return text


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait according to an HTTP ``Retry-After`` header, or ``None``.

    Accepts delay-seconds (``30``) and an HTTP date; a date in the past, or a negative
    number, reads as ``0``. The result is what the server said, however large (``1e12``, an
    HTTP date in year 9999, ``inf`` for a number too big for a float): the outbox caps every
    server-given delay (``outbox.LONGEST_SERVER_DELAY``), so channels need not.

    Args:
        value: The header's value, if present.
        now: The current time, for the HTTP-date form (default: the system clock).

    Returns:
        Non-negative seconds, or ``None`` when the header says nothing usable (absent,
        empty, NaN, neither a number nor a date).
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        # Imported by name: ``import email`` here would be shadowed by the submodule
        # driftowner.channels.email, which becomes this package's attribute ``email``.
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def timeout_seconds(timeout: timedelta) -> float:
    """A positive timeout in seconds for client libraries."""
    return max(0.001, timeout.total_seconds())
