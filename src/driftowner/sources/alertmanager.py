"""The alertmanager source: alerts that Alertmanager sent to driftowner's webhook receiver
(``POST /api/v1/alertmanager``), kept in the store, read back as signals.

Any instance may receive a webhook; the leader evaluates. The store is the handover: the
webhook writes each alert's episode (fingerprint, labels, startsAt, endsAt), and a read
counts, at each instant asked, the episodes its selector matches that fire then. So alert
state survives a restart, and ``replay`` reads alerts as history like any other series.

Also here: the webhook's body (payload version 4), validated field by field.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, Protocol

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from driftowner.alerts import firing, parse_selector
from driftowner.model import ReceivedAlert, Sample, SourceResult
from driftowner.sources import as_utc, clamp_step
from driftowner.store import StoreError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_UNSET_YEAR = 1
"""Go's zero time (``0001-01-01T00:00:00Z``): Alertmanager's ``endsAt`` of a firing alert."""


class AlertLog(Protocol):
    """What the source reads: the store's received alerts."""

    def received_alerts(self, source: str, start: datetime, end: datetime) -> list[ReceivedAlert]:
        """The episodes of ``source``'s alerts that may fire within ``[start, end]``."""
        ...


class AlertmanagerSource:
    """Alerts received by the webhook, as one series per signal: at each instant, how many of
    the alerts its selector matches fire.

    Args:
        name: The source's name in the config (``sources.<name>``).
        log: Where the webhook keeps what it received (the store).
    """

    instant_reads_any_age = False
    """An instant read answers the alerts firing at that instant, stamped with it."""

    def __init__(self, name: str, log: AlertLog) -> None:
        self.name = name
        self.log = log

    def __repr__(self) -> str:
        return f"AlertmanagerSource(name={self.name!r})"

    async def read(
        self, query: str, start: datetime, end: datetime, step: timedelta
    ) -> SourceResult:
        """How many of the alerts ``query`` selects fire at ``end`` (an instant read) or at
        each multiple of ``step`` within ``[start, end]``."""
        try:
            matchers = parse_selector(query)
        except ValueError as error:
            return SourceResult(
                error=f"alertmanager source {self.name!r}: {error}", error_reason="query_error"
            )
        start, end = as_utc(start), as_utc(end)
        try:
            alerts = await asyncio.to_thread(self.log.received_alerts, self.name, start, end)
        except StoreError as error:
            return SourceResult(
                error=f"alertmanager source {self.name!r}: {error}",
                error_reason="unreachable",
                source_up=False,
            )
        return SourceResult(
            samples=tuple(
                Sample(at=at, value=float(len(firing(alerts, matchers, at))))
                for at in _instants(start, end, step)
            )
        )

    async def aclose(self) -> None:
        """Nothing to release: the store belongs to the daemon."""


def _instants(start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    """``end`` for an instant read, else the multiples of ``step`` (since the Unix epoch)
    within ``[start, end]``."""
    if start >= end:
        return [end]
    step_us = clamp_step(start, end, step) // _MICROSECOND
    first = -(-((start - _EPOCH) // _MICROSECOND) // step_us) * step_us
    last = (end - _EPOCH) // _MICROSECOND
    return [_EPOCH + timedelta(microseconds=us) for us in range(first, last + 1, step_us)]


# -- the webhook's body --------------------------------------------------------------------

_FINGERPRINT = re.compile(r"^[0-9a-fA-F]{1,64}$")
LabelName = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
LabelValue = Annotated[str, StringConstraints(max_length=16 * 1024)]
Labels = dict[LabelName, LabelValue]


def _set(moment: datetime) -> datetime:
    if as_utc(moment).year == _UNSET_YEAR:
        raise ValueError("is not set (Go's zero time): every alert has a start")
    return moment


class WebhookAlert(BaseModel):
    """One alert of a webhook notification (Alertmanager's ``webhook_config``, version 4)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    status: Literal["firing", "resolved"]
    labels: Labels = Field(min_length=1)
    annotations: Labels = Field(default_factory=dict)
    starts_at: Annotated[AwareDatetime, AfterValidator(_set)] = Field(alias="startsAt")
    ends_at: AwareDatetime = Field(alias="endsAt")
    """Go's zero time while the alert fires with no end known."""
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: Annotated[str, StringConstraints(pattern=_FINGERPRINT.pattern)]
    """Alertmanager 0.19 and later send it."""


class WebhookPayload(BaseModel):
    """The body Alertmanager POSTs to a webhook receiver, version 4. Fields Alertmanager may
    add later are ignored; those driftowner reads are checked, each error naming its field."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    version: Literal["4"]
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(default=0, ge=0, alias="truncatedAlerts")
    status: Literal["firing", "resolved"]
    receiver: str
    group_labels: Labels = Field(default_factory=dict, alias="groupLabels")
    common_labels: Labels = Field(default_factory=dict, alias="commonLabels")
    common_annotations: Labels = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    alerts: list[WebhookAlert]


def received(payload: WebhookPayload, now: datetime) -> list[ReceivedAlert]:
    """The episodes a webhook reports, as the store keeps them.

    A firing alert without an end (Go's zero time) fires until it is resolved; with one, until
    then. A resolved alert ends at its ``endsAt``, or ``now`` when it gives none.
    """
    found = []
    for alert in payload.alerts:
        ends_at: datetime | None = as_utc(alert.ends_at)
        if ends_at is not None and ends_at.year == _UNSET_YEAR:
            ends_at = now if alert.status == "resolved" else None
        found.append(
            ReceivedAlert(
                fingerprint=alert.fingerprint.lower(),
                labels=tuple(sorted(alert.labels.items())),
                starts_at=as_utc(alert.starts_at),
                ends_at=ends_at,
                resolved=alert.status == "resolved",
                received_at=now,
            )
        )
    return found
