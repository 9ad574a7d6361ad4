"""The config schema (pydantic), durations and percentages, and the cross-reference rules.

Loading from YAML with environment overrides and formatting errors as ``FILE: yaml.path:
message`` lives in :mod:`driftowner.configload`; this module only says what a valid config is.

Signal templates: a system's signal may be a template ref (``{template: accuracy}``, optionally
overriding ``detect``, ``for``, ``resolve_after`` and ``bad``). :class:`Config` expands every
ref while it validates, so a validated ``Config``'s systems hold only :class:`SignalConfig`:
the template's fields with the ref's overrides, ``template`` set to the template's name and
``label`` to ``(system_label, value)``, where ``value`` is the system's ``labels[system_label]``
or else the system's name. One query per template then serves every system: its series are
split by that label.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, Union
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    FiniteFloat,
    PlainSerializer,
    SecretStr,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema, SkipJsonSchema
from pydantic_core import PydanticCustomError

from driftowner.alerts import for_system, parse_selector, render, system_conflict
from driftowner.model import LAYERS, BadDirection, Layer

_DURATION_PART = re.compile(r"([0-9]+)(ms|y|w|d|h|m|s)")
_UNIT_MS = {
    "ms": 1,
    "s": 1000,
    "m": 60 * 1000,
    "h": 3600 * 1000,
    "d": 86400 * 1000,
    "w": 7 * 86400 * 1000,
    "y": 365 * 86400 * 1000,
}
MAX_DURATION = timedelta(days=3650)
"""The longest duration a config or a command accepts: ``10y`` (3650 days). Durations are
added to now, doubled, and multiplied by an escalation chain's rounds; ten years keeps every
such instant far from the end of the calendar (year 9999)."""
MAX_DURATION_TEXT = f"10y ({MAX_DURATION.days}d)"
_SYNTAX = "expected e.g. 30s, 15m, 2h, 7d, 1w"


def parse_duration(value: object) -> timedelta:
    """Parse a Prometheus-style duration (``30s``, ``15m``, ``1h30m``, ``7d``, ``1w``), at most
    :data:`MAX_DURATION`.

    Raises:
        ValueError: naming the accepted syntax, when ``value`` is not one, or the maximum,
            when it is longer (never OverflowError).
    """
    if isinstance(value, timedelta):
        return _within_maximum(value, value)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"invalid duration {value!r}: {_SYNTAX}")
    if isinstance(value, int):
        if value == 0:
            return timedelta(0)
        raise ValueError(f"invalid duration {value!r}: give a unit, e.g. {value}s or {value}m")
    text = value.strip()
    if text == "0":
        return timedelta(0)
    position = 0
    total_ms = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        digits = match.group(1).lstrip("0") or "0"
        # Whole-number arithmetic: no float rounding, and a number too long to be a sane
        # duration is refused before Python is asked to convert it.
        if len(digits) > 15:
            raise _too_long(value)
        total_ms += int(digits) * _UNIT_MS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise ValueError(f"invalid duration {value!r}: {_SYNTAX}")
    if total_ms > MAX_DURATION // timedelta(milliseconds=1):
        raise _too_long(value)
    return timedelta(milliseconds=total_ms)


def _within_maximum(duration: timedelta, value: object) -> timedelta:
    if duration < timedelta(0):
        raise ValueError(f"invalid duration {value!r}: must not be negative")
    if duration > MAX_DURATION:
        raise _too_long(value)
    return duration


def _too_long(value: object) -> ValueError:
    shown = format_duration(value) if isinstance(value, timedelta) else value
    return ValueError(f"duration {shown!r} is longer than the maximum {MAX_DURATION_TEXT}")


def format_duration(value: timedelta) -> str:
    """The shortest Prometheus-style spelling of ``value`` (``1h30m``, ``45s``, ``0s``), in
    weeks at most (a year is not a whole number of weeks)."""
    total_ms = (value // timedelta(microseconds=1) + 500) // 1000
    if total_ms == 0:
        return "0s"
    sign, total_ms = ("-", -total_ms) if total_ms < 0 else ("", total_ms)
    parts = []
    for unit in ("w", "d", "h", "m", "s", "ms"):
        count, total_ms = divmod(total_ms, _UNIT_MS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)


def round_length(afters: Sequence[timedelta]) -> timedelta:
    """How long one round of an escalation chain lasts before a repeat starts again: the last
    step's ``after`` plus the gap before the last step (the steps' ``after``, in order)."""
    if len(afters) < 2:
        return afters[-1]
    return afters[-1] + (afters[-1] - afters[-2])


def parse_percent(value: object) -> float:
    """Parse ``20%`` (or a bare fraction ``0.2``) into a fraction.

    A bare number above 1 (``20``) is refused rather than read as 2000%: write ``20%``.

    Raises:
        ValueError: when ``value`` is neither, or is not a finite number.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid percentage {value!r}: expected e.g. 20%")
    result: float | None = None
    bare = True
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        text = value.strip()
        bare = not text.endswith("%")
        try:
            result = float(text) if bare else float(text[:-1].strip()) / 100
        except ValueError:
            result = None
    if result is None or not math.isfinite(result):
        raise ValueError(f"invalid percentage {value!r}: expected e.g. 20%")
    if bare and abs(result) > 1:
        raise ValueError(
            f"ambiguous percentage {value!r}: write it with a percent sign, e.g. {value}%, "
            "or as a fraction, e.g. 0.2"
        )
    return result


_DURATION_JSON_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": r"^(0|([0-9]+(ms|y|w|d|h|m|s))+)$",
    "description": "Prometheus-style duration: 30s, 15m, 1h30m, 7d, 1w; at most 10y (3650d)",
    "examples": ["30s", "15m", "7d"],
}
_PERCENT_JSON_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?%$"},
        {"type": "number", "minimum": -1, "maximum": 1},
    ],
    "description": "A percentage (20%) or a fraction (0.2)",
}


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(_DURATION_JSON_SCHEMA, mode="validation"),
]
Percent = Annotated[
    float,
    BeforeValidator(parse_percent),
    WithJsonSchema(_PERCENT_JSON_SCHEMA, mode="validation"),
]


def _secret_not_blank(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise ValueError("must not be empty or blank: give the secret, or omit the key")
    return value


Secret = Annotated[SecretStr, AfterValidator(_secret_not_blank)]
"""A secret (never shown in logs or errors) that holds something: ``""`` or blanks are errors,
not a configured-but-empty token that every request would have to match."""


def http_url_problem(value: str) -> str | None:
    """Why ``value`` is not an absolute http(s) URL with a host, or ``None`` when it is one."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError when the port is not a number in range
    except ValueError as error:
        return f"is not a valid URL ({error})"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL with a host, e.g. https://host:port/path"
    return None


def _http_url(value: str) -> str:
    value = value.strip()
    problem = http_url_problem(value)
    if problem is not None:
        raise ValueError(f"{problem}, got {value!r}")
    return value


def _secret_http_url(value: SecretStr) -> SecretStr:
    """A URL that is a secret (a webhook): checked like any URL, never echoed."""
    url = value.get_secret_value().strip()
    problem = http_url_problem(url)
    if problem is not None:
        raise ValueError(f"{problem} (value not shown: it is a secret)")
    return SecretStr(url)


HttpUrl = Annotated[str, AfterValidator(_http_url)]
"""An absolute ``http://`` or ``https://`` URL with a host, kept as text."""
SecretHttpUrl = Annotated[SecretStr, AfterValidator(_secret_http_url)]


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ServerConfig(Strict):
    listen: str = "127.0.0.1:9587"
    external_url: HttpUrl | None = None
    """Base of the links in notifications; defaults to ``http://<listen>``."""
    api_token: Secret | None = None
    """Bearer token for state-changing HTTP requests."""

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"invalid listen address {value!r}: expected HOST:PORT")
        return value

    @property
    def base_url(self) -> str:
        return (self.external_url or f"http://{self.listen}").rstrip("/")


STORAGE_URLS = "sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE"
"""What an unsupported storage URL's error says is expected. ``postgresql+psycopg://`` works
too; a password goes in the URL (``USER:PASSWORD@``) or libpq's ``PGPASSWORD`` / ``~/.pgpass``."""

_POSTGRESQL_DRIVERS = ("postgresql", "postgresql+psycopg")
"""Schemes taken as PostgreSQL; both run on psycopg 3."""

_URL_PASSWORD = re.compile(r"(?P<head>://[^/@\s:]*:)[^@/\s]*@")


class UnsupportedStorageURL(ValueError):
    """A storage URL no store opens; the message shows no password."""


def parse_storage_url(url: str) -> SqlAlchemyURL:
    """The SQLAlchemy URL the store connects to (PostgreSQL always through psycopg 3).

    Raises:
        UnsupportedStorageURL: not a URL, or not SQLite or PostgreSQL; the message names what
            is supported and masks the URL's password.
    """
    # Imported here so loading a config does not import SQLAlchemy up front.
    import sqlalchemy as sa

    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise UnsupportedStorageURL(
            f"unsupported storage url {mask_url(url)!r}: expected {STORAGE_URLS}"
        ) from None
    if parsed.drivername in _POSTGRESQL_DRIVERS:
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername == "sqlite" and url.startswith("sqlite:///"):
        return parsed
    shown = parsed.render_as_string(hide_password=True)
    raise UnsupportedStorageURL(f"unsupported storage url {shown!r}: expected {STORAGE_URLS}")


def mask_url(url: str) -> str:
    """``url`` with any ``user:password@`` password replaced by ``***`` (it may not parse)."""
    return _URL_PASSWORD.sub(r"\g<head>***@", url)


class StorageConfig(Strict):
    url: str = "sqlite:///var/driftowner.db"
    """SQLAlchemy URL: ``sqlite:////abs/path``, ``sqlite:///relative/path``, or
    ``postgresql://USER:PASSWORD@HOST:PORT/DATABASE`` (also ``postgresql+psycopg://``; psycopg 3
    either way). Errors show the URL with its password masked."""

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        parse_storage_url(value)
        return value


class EvaluationConfig(Strict):
    interval: Duration = timedelta(minutes=1)
    escalation_interval: Duration = timedelta(seconds=5)
    """How often due escalation steps are derived (their pages wake the delivery loop, which
    otherwise runs on its own while notifications are due)."""

    @field_validator("interval", "escalation_interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return value


_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class PrometheusSourceConfig(Strict):
    type: Literal["prometheus"]
    url: HttpUrl
    timeout: Duration = timedelta(seconds=10)
    username: str | None = None
    password: Secret | None = None
    bearer_token: Secret | None = None
    max_concurrent_queries: int = Field(default=8, ge=1, le=256)
    """Queries in flight at once against this Prometheus: thousands of signals must not
    arrive as one burst."""

    @model_validator(mode="after")
    def _one_auth(self) -> PrometheusSourceConfig:
        if self.bearer_token is not None and self.username is not None:
            raise ValueError("give either username/password or bearer_token, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("basic auth needs both username and password")
        return self


class FileSourceConfig(Strict):
    type: Literal["file"]
    path: Path


class DemoSourceConfig(Strict):
    type: Literal["demo"]
    seed: int = 1
    drift_starts_after: Duration = timedelta(seconds=20)
    drift_lasts: Duration = timedelta(seconds=150)


class AlertmanagerSourceConfig(Strict):
    """driftowner as an Alertmanager webhook receiver (``POST /api/v1/alertmanager``): a signal
    on this source names an alert, degraded while it fires."""

    type: Literal["alertmanager"]
    system_label: str = "system"
    """The alert label whose value names the system an alert belongs to: the system's
    ``labels[system_label]``, else the system's name."""
    token: Secret | None = None
    """The bearer token Alertmanager sends (``http_config.authorization``); it may only post
    alerts. Without it, the webhook takes ``server.api_token``."""
    keep_resolved: Duration = timedelta(days=30)
    """How long a resolved alert is kept (``replay`` reads alerts as history)."""

    @field_validator("system_label")
    @classmethod
    def _label_name(cls, value: str) -> str:
        if not _LABEL_NAME.match(value):
            raise ValueError(
                f"invalid label name {value!r}: expected a Prometheus label name, e.g. system"
            )
        return value


SourceConfig = Annotated[
    PrometheusSourceConfig | FileSourceConfig | DemoSourceConfig | AlertmanagerSourceConfig,
    Field(discriminator="type"),
]


class OwnerConfig(Strict):
    name: str
    email: str | None = None
    slack: str | None = None
    """Slack member id (``U024BE7LH``)."""
    api_token: Secret | None = None
    """A bearer token that acts on incidents only as this owner (``server.api_token`` is the
    admin token, which names who acts)."""


class TeamConfig(Strict):
    email: str | None = None
    slack_channel: str | None = None


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*)\s*(ms|s|m|h)\s*$")


def parse_rate(value: object) -> float | None:
    """Parse a sending rate (``1/s``, ``20/m``, ``5/10s``) into sends per second; ``none``
    (or null) means no limit.

    Raises:
        ValueError: naming the accepted syntax, when ``value`` is not one, or is zero.
    """
    if value is None or (isinstance(value, str) and value.strip() == "none"):
        return None
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"invalid rate {value!r}: expected e.g. 1/s, 20/m, 5/10s or none")
    count, span, unit = float(match.group(1)), int(match.group(2) or 1), match.group(3)
    if count <= 0 or span <= 0:
        raise ValueError(f"invalid rate {value!r}: must be more than 0 (or none for no limit)")
    per_second = count / (span * _UNIT_MS[unit] / 1000)
    if not math.isfinite(per_second) or per_second * MAX_DURATION.total_seconds() < 1:
        raise ValueError(
            f"invalid rate {value!r}: must be between one per {MAX_DURATION_TEXT} and a finite "
            "number (or none for no limit)"
        )
    return per_second


def format_rate(value: float | None) -> str:
    """A rate in sends per second as a user writes it (``1/s``, ``0.5/s``, ``none``); it
    parses back to the same value (to 12 decimals)."""
    if value is None:
        return "none"
    return format(value, ".12f").rstrip("0").rstrip(".") + "/s"


Rate = Annotated[
    float | None,
    BeforeValidator(parse_rate),
    PlainSerializer(format_rate, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?/[0-9]*(ms|s|m|h)$"},
                {"const": "none"},
                {"type": "null"},
            ],
            "description": "Sends per destination: 1/s, 20/m, 5/10s; none for no limit",
            "examples": ["1/s", "30/m"],
        },
        mode="validation",
    ),
]


class Paced(Strict):
    """How fast the outbox may send through a channel, per destination (a Slack conversation
    for the Web API; the channel's one webhook, relay or URL otherwise)."""

    max_in_flight: int = Field(default=16, ge=1, le=1024)
    """Sends in flight at once to one destination."""
    rate: Rate = None
    """Sends started per second to one destination (``1/s``, ``20/m``); none: no limit."""
    group_wait: Duration | None = None
    """How long the first page to a recipient waits for others to go with it as one message
    (``0s`` turns grouping off for this channel); unset: the ``grouping`` section's."""
    group_interval: Duration | None = None
    """After a grouped message, how long later changes for the same recipient wait to go
    out together as the next update; unset: the ``grouping`` section's."""


class Grouping(Strict):
    """The defaults of every channel's ``group_wait`` and ``group_interval``: pages that
    reach the same recipient through the same channel within ``wait`` go out as one
    message. PagerDuty and Opsgenie always get one event per incident (they dedup by key)."""

    wait: Duration = timedelta(seconds=3)
    """``0s`` turns grouping off everywhere a channel does not set its own."""
    interval: Duration = timedelta(seconds=30)


class LogChannelConfig(Paced):
    type: Literal["log"]


class SlackChannelConfig(Paced):
    """A Slack channel: EITHER an incoming webhook (``webhook_url``; every message lands in
    the webhook's channel) OR the Web API with a bot token (``token``; each message goes to
    its address: a member id opens a DM, ``#name`` or a conversation id posts there)."""

    type: Literal["slack"]
    max_in_flight: int = Field(default=1, ge=1, le=1024)
    """Slack posts to one conversation in order, one at a time."""
    rate: Rate = Field(default=1.0, json_schema_extra={"default": "1/s"})
    """Slack allows about one message a second per conversation (``1/s``)."""
    webhook_url: SecretHttpUrl | None = None
    """The incoming webhook URL (a secret). Exclusive with ``token``."""
    token: SecretStr | None = None
    """A bot token (``xoxb-...``, scopes ``chat:write`` and ``im:write``) for the Web API's
    ``chat.postMessage``. Exclusive with ``webhook_url``."""
    api_url: str = "https://slack.com/api/"
    """The Web API's base URL (tests, proxies); used only with ``token``."""
    timeout: Duration = timedelta(seconds=10)
    signing_secret: SecretStr | None = None
    """The Slack app's signing secret. When set, the channel's Acknowledge / Resolve buttons
    act inside Slack (``POST /slack/interactions``, signature verified) instead of opening
    signed links."""

    @field_validator("signing_secret")
    @classmethod
    def _signing_secret_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty (omit it to keep URL buttons)")
        return value

    @field_validator("token")
    @classmethod
    def _token_is_a_slack_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        token = value.get_secret_value().strip()
        if not token:
            raise ValueError("must not be empty (a bot token, xoxb-...)")
        if not token.startswith("xox") or any(c.isspace() for c in token):
            raise ValueError("is not a Slack token (a bot token starts with xoxb-)")
        return SecretStr(token)

    @field_validator("api_url")
    @classmethod
    def _api_url_is_http(cls, value: str) -> str:
        return _http_base_url(value)

    @model_validator(mode="after")
    def _webhook_or_token(self) -> SlackChannelConfig:
        if self.webhook_url is not None and self.token is not None:
            raise ValueError(
                "set exactly one of webhook_url (an incoming webhook) or token (a bot token "
                "for the Web API), not both"
            )
        if self.webhook_url is None and self.token is None:
            raise ValueError(
                "set exactly one of webhook_url (an incoming webhook) or token (a bot token "
                "for the Web API); neither is set"
            )
        return self


class EmailChannelConfig(Paced):
    type: Literal["email"]
    max_in_flight: int = Field(default=4, ge=1, le=1024)
    """SMTP sessions open at once to the relay."""
    host: str
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    use_tls: bool = False
    """Implicit TLS (port 465); exclusive with ``starttls``."""
    username: str | None = None
    password: Secret | None = None
    from_: str = Field(alias="from")
    timeout: Duration = timedelta(seconds=10)
    ca_file: Path | None = None
    """Extra CA bundle to trust (a private relay's certificate)."""
    templates_dir: Path | None = None
    """A directory of Jinja2 templates overriding the packaged ones by name
    (``email_subject.txt``, ``message.txt``, ``message.html``; a group's mail:
    ``group_subject.txt``, ``group.txt``, ``group.html``); relative to the working
    directory. Checked at load by rendering a sample message and a sample group."""

    @field_validator("templates_dir")
    @classmethod
    def _templates_render(cls, value: Path | None) -> Path | None:
        if value is None:
            return value
        if not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        # Imported here: the channels package imports this module.
        from driftowner.channels.email import MailTemplates, TemplateProblem

        try:
            MailTemplates(value).check()
        except TemplateProblem as exc:
            raise ValueError(f"a template does not render: {exc}") from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _implicit_tls_defaults(cls, data: Any) -> Any:
        """``use_tls: true`` alone means port 465 without STARTTLS, not a conflict."""
        if isinstance(data, dict) and data.get("use_tls") is True:
            data = dict(data)
            data.setdefault("starttls", False)
            data.setdefault("port", 465)
        return data

    @model_validator(mode="after")
    def _tls_mode(self) -> EmailChannelConfig:
        if self.starttls and self.use_tls:
            raise ValueError("starttls and use_tls exclude each other")
        return self


class WebhookChannelConfig(Paced):
    type: Literal["webhook"]
    url: SecretHttpUrl
    timeout: Duration = timedelta(seconds=10)
    secret: Secret | None = None
    """Signs each body with HMAC-SHA256 (``X-Driftowner-Signature``, over the
    ``X-Driftowner-Timestamp`` and the body); receivers verify it."""


def _http_base_url(value: str) -> str:
    """An http(s) base URL with a host (checked like every URL), ending with ``/``."""
    value = _http_url(value)
    return value if value.endswith("/") else value + "/"


HttpBaseUrl = Annotated[str, AfterValidator(_http_base_url)]


class PagerDutyChannelConfig(Paced):
    """PagerDuty's Events API v2: trigger, acknowledge and resolve, ``dedup_key`` = the
    incident id. Each event goes to its recipient's integration key in ``routing_keys``
    (owner or team key), else to ``routing_key``; at least one must be set."""

    type: Literal["pagerduty"]
    routing_key: Secret | None = None
    """The Events API v2 integration key for recipients without their own (a secret)."""
    routing_keys: dict[str, Secret] = Field(default_factory=dict)
    """Integration keys by owner or team key (secrets)."""
    severity: Literal["critical", "error", "warning", "info"] = "critical"
    api_url: HttpBaseUrl = "https://events.pagerduty.com/"
    """The Events API's base URL (EU accounts: ``https://events.eu.pagerduty.com/``)."""
    timeout: Duration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _some_routing_key(self) -> PagerDutyChannelConfig:
        if self.routing_key is None and not self.routing_keys:
            raise ValueError("set routing_key, routing_keys (by owner or team), or both")
        return self


class OpsgenieChannelConfig(Paced):
    """Opsgenie's Alert API: create, acknowledge and close by ``alias`` = the incident id,
    authenticated by an API integration's key."""

    type: Literal["opsgenie"]
    api_key: Secret
    """The API integration's key, sent as ``Authorization: GenieKey ...`` (a secret)."""
    priority: Literal["P1", "P2", "P3", "P4", "P5"] = "P1"
    api_url: HttpBaseUrl = "https://api.opsgenie.com/"
    """The API's base URL (EU accounts: ``https://api.eu.opsgenie.com/``)."""
    timeout: Duration = timedelta(seconds=10)


ChannelConfig = Annotated[
    LogChannelConfig
    | SlackChannelConfig
    | EmailChannelConfig
    | WebhookChannelConfig
    | PagerDutyChannelConfig
    | OpsgenieChannelConfig,
    Field(discriminator="type"),
]

CONTACT_FIELD: dict[str, str | None] = {
    "slack": "slack",
    "email": "email",
    "webhook": None,
    "log": None,
    "pagerduty": None,
    "opsgenie": None,
}
"""Which owner field a channel type needs to reach a person (``None``: reaches anyone)."""


def _notify_targets(value: object) -> object:
    """``owner``, or a list of owner keys; a single owner key stands for a list of one."""
    if value == "owner":
        return value
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(item, str) and item for item in value):
        return value
    raise ValueError("must be 'owner' or a non-empty list of owner keys, e.g. [bob]")


class ViaConfig(Strict):
    """A channel of a step with a fallback: ``{channel: slack, fallback: email}``. When the
    outbox gives up on a page through ``channel`` (a permanent failure, or still failing at
    its maximum age), the same person is paged through ``fallback``."""

    channel: str
    fallback: str


VIA_TAGS: tuple[str, str] = ("channel name", "channel with fallback")
"""The two forms of a ``via`` entry (their tags never appear in an error's YAML path)."""


def via_kind(value: object) -> str:
    """Which form a ``via`` entry is written in, one of :data:`VIA_TAGS`."""
    return VIA_TAGS[0] if isinstance(value, str) else VIA_TAGS[1]


if TYPE_CHECKING:
    ViaEntry: TypeAlias = str | ViaConfig
else:
    ViaEntry = Annotated[
        Union[  # noqa: UP007 -- Tag needs each member annotated on its own
            Annotated[str, Tag(VIA_TAGS[0])],
            Annotated[ViaConfig, Tag(VIA_TAGS[1])],
        ],
        Discriminator(via_kind),
    ]


class StepConfig(Strict):
    after: Duration = timedelta(0)
    notify: Annotated[Literal["owner"] | list[str], BeforeValidator(_notify_targets)]
    """``owner`` (the system's accountable owner) or owner keys; ``owner`` may appear in a list."""
    via: list[ViaEntry] | None = None
    """Channel names, or ``{channel: NAME, fallback: NAME}`` for a channel with a fallback;
    default: every configured channel the recipient has a contact for. A fallback channel is
    used only when its channel gives up on a page."""

    @property
    def via_names(self) -> list[str] | None:
        """The channels this step sends through at once (fallbacks left out)."""
        if self.via is None:
            return None
        return [entry if isinstance(entry, str) else entry.channel for entry in self.via]

    @property
    def fallbacks(self) -> dict[str, str]:
        """Channel name → the channel that takes over a page it gives up on."""
        return {
            entry.channel: entry.fallback
            for entry in self.via or []
            if isinstance(entry, ViaConfig)
        }


class ChainConfig(Strict):
    steps: list[StepConfig] = Field(min_length=1)
    repeat: int = Field(default=0, ge=0)
    remind_every: Duration | None = None
    ack_timeout: Duration | None = None
    on_breach: list[str] | None = Field(default=None, min_length=1)
    """Owner keys told when an incident breaches ``ack_within`` or ``resolve_within``, besides
    its owner; default: the recipients of the chain's next step."""


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _clock_time(value: object) -> str:
    """``HH:MM`` on a 24-hour clock."""
    if not isinstance(value, str) or not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", value):
        raise ValueError(f"invalid time {value!r}: expected HH:MM on a 24-hour clock, e.g. 02:00")
    return value


def _time_zone(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected an IANA time zone name, e.g. UTC or Europe/Paris")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(
            f"unknown time zone {value!r}: expected an IANA name, e.g. UTC or Europe/Paris"
        ) from error
    return value


class MaintenanceConfig(Strict):
    """A recurring maintenance window (weekly retraining): while it lasts, the systems it
    names page nobody, as under a silence. ``day`` is for weekly windows (``on`` would be read
    as a YAML 1.1 boolean)."""

    systems: list[str] = Field(min_length=1)
    every: Literal["daily", "weekly"]
    day: Weekday | None = None
    at: Annotated[str, BeforeValidator(_clock_time)]
    for_: Duration = Field(alias="for")
    timezone: Annotated[str, BeforeValidator(_time_zone)] = "UTC"
    reason: str = "maintenance window"

    @model_validator(mode="after")
    def _shape(self) -> MaintenanceConfig:
        if self.every == "weekly" and self.day is None:
            raise ValueError("a weekly window needs day: mon, tue, wed, thu, fri, sat or sun")
        if self.every == "daily" and self.day is not None:
            raise ValueError("a daily window takes no day: remove it, or say every: weekly")
        period = timedelta(days=7 if self.every == "weekly" else 1)
        if not timedelta(0) < self.for_ < period:
            raise ValueError(
                f"for must be longer than 0s and shorter than the window's period "
                f"({format_duration(period)})"
            )
        return self


class ThresholdConfig(Strict):
    min: FiniteFloat | None = None
    max: FiniteFloat | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ThresholdConfig:
        if self.min is None and self.max is None:
            raise ValueError("threshold needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class BaselineConfig(Strict):
    reference: Duration
    """Length of the window, ending now, whose mean is the reference."""
    max_change: Percent
    min_samples: int = Field(default=3, ge=1)

    @field_validator("max_change")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("max_change must be above 0%")
        return value


class CusumConfig(Strict):
    """Tabular CUSUM on robustly standardised values (docs/detectors.md)."""

    k: FiniteFloat = Field(default=0.5, gt=0)
    """The allowance, in long-run deviations: half the shift it is fastest at."""
    h: FiniteFloat | None = Field(default=None, gt=0)
    """The decision limit; unset: derived from ``false_alarm_every``."""
    warmup: int = Field(default=30, ge=2)
    """Samples the reference is learned from."""


class EwmaConfig(Strict):
    """EWMA chart on robustly standardised values (docs/detectors.md)."""

    lambda_: FiniteFloat = Field(default=0.2, gt=0, le=1, alias="lambda")
    width: FiniteFloat | None = Field(default=None, gt=0, alias="L")
    """The limit's width ``L``; unset: derived from ``false_alarm_every``."""
    warmup: int = Field(default=30, ge=2)


class PageHinkleyConfig(Strict):
    """Page-Hinkley test against the running mean (the default detector's chart)."""

    delta: FiniteFloat = Field(default=0.5, gt=0)
    threshold: FiniteFloat | None = Field(default=None, gt=0)
    """The decision limit; unset: derived from ``false_alarm_every``."""
    warmup: int = Field(default=30, ge=2)


class HistogramConfig(Strict):
    """PSI or Jensen-Shannon between two windows of a Prometheus classic histogram: the
    signal's query is a ``*_bucket`` selector."""

    reference: Duration = timedelta(days=7)
    """The window before ``recent`` whose distribution is normal."""
    recent: Duration = timedelta(hours=1)
    """The window, ending now, judged against the reference."""
    limit: FiniteFloat | None = Field(default=None, gt=0)
    """Unset: the larger of the practical floor and the budget's sampling limit."""


DETECTOR_NAMES: tuple[str, ...] = (
    "threshold",
    "baseline",
    "cusum",
    "ewma",
    "page_hinkley",
    "psi",
    "js",
)
"""The detectors a ``detect`` section may name (exactly one)."""

HISTOGRAM_DETECTORS: tuple[str, ...] = ("psi", "js")


class DetectConfig(Strict):
    threshold: ThresholdConfig | None = None
    baseline: BaselineConfig | None = None
    cusum: CusumConfig | None = None
    ewma: EwmaConfig | None = None
    page_hinkley: PageHinkleyConfig | None = None
    psi: HistogramConfig | None = None
    js: HistogramConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> DetectConfig:
        if len(self.chosen()) != 1:
            raise ValueError(
                "detect needs exactly one detector: "
                f"{', '.join(DETECTOR_NAMES[:-1])} or {DETECTOR_NAMES[-1]} "
                "(leave detect out for the default detector)"
            )
        return self

    def chosen(self) -> list[str]:
        """The names of the detectors this section sets."""
        return [name for name in DETECTOR_NAMES if getattr(self, name) is not None]

    @property
    def name(self) -> str:
        """The one detector this section names."""
        return self.chosen()[0]


class _SignalBody(Strict):
    """What a plain signal and a signal template both say: where the value comes from and
    what is bad about it."""

    layer: Layer
    source: str
    query: str
    bad: BadDirection = "both"
    detect: DetectConfig | None = None
    """None: the default detector (Page-Hinkley, calibrated by ``false_alarm_every``)."""
    false_alarm_every: Duration = timedelta(days=30)
    """How often a healthy signal may page: change-point and histogram limits derive from it
    and the evaluation interval."""
    for_: Duration = Field(default=timedelta(0), alias="for")
    resolve_after: Duration | None = None
    stale_after: Duration | None = None
    """A newest sample older than this counts as no data (default: any sample counts)."""


class SignalConfig(_SignalBody):
    """One signal of one system, as the rest of driftowner reads it.

    In a loaded :class:`Config` every signal is one of these: a template ref is expanded into
    a ``SignalConfig`` with the template's fields, the ref's overrides, and ``template`` and
    ``label`` set. A plain signal has both ``None``; the YAML file never sets them.
    """

    template: SkipJsonSchema[str | None] = None
    """The name of the signal template this signal was expanded from."""
    label: SkipJsonSchema[tuple[str, str] | None] = None
    """``(system_label, value)``: the series of the template's query that belong to this
    system are those whose ``system_label`` equals ``value`` (the system's
    ``labels[system_label]``, else the system's name)."""
    alerts: SkipJsonSchema[bool] = Field(default=False, exclude=True)
    """Set by :class:`Config` for a signal on an alertmanager source: its value is the number
    of its alerts firing, degraded while one fires; its ``query`` then includes the system's
    own matcher. Never written by hand, never dumped."""


class SignalTemplateConfig(_SignalBody):
    """One query for many systems: the result is split into per-system series by the value of
    ``system_label``. Its source must be a Prometheus source."""

    system_label: str
    """The label whose value names the system a series belongs to (e.g. ``model``)."""

    @field_validator("system_label")
    @classmethod
    def _label_name(cls, value: str) -> str:
        if not _LABEL_NAME.match(value):
            raise ValueError(
                f"invalid label name {value!r}: expected a Prometheus label name, e.g. model"
            )
        return value


TEMPLATE_OVERRIDES: tuple[str, ...] = ("detect", "for", "resolve_after", "bad")
"""The fields a template ref may set (YAML spelling); everything else comes from the template."""


class TemplateRefConfig(Strict):
    """A system's signal that is an instance of a signal template, in the YAML file only:
    :class:`Config` expands it into a :class:`SignalConfig`."""

    template: str
    """The name of a key of ``signal_templates``."""
    detect: DetectConfig | None = None
    for_: Duration | None = Field(default=None, alias="for")
    resolve_after: Duration | None = None
    bad: BadDirection | None = None


SIGNAL_ENTRY_TAGS: tuple[str, str] = ("plain signal", "template ref")
"""The tags of the two forms a system's signal takes in YAML; pydantic puts them in error
locations, which :mod:`driftowner.configload` drops."""


_WRITTEN_IN_FULL = ("layer", "source", "query")


def signal_entry_kind(value: object) -> str:
    """Which form a system's signal is written in, one of :data:`SIGNAL_ENTRY_TAGS`: a
    template ref (a ``template``, not the fields a template supplies) or a plain signal (which
    includes an expanded signal written out again, e.g. by ``model_dump``)."""
    if isinstance(value, TemplateRefConfig):
        return SIGNAL_ENTRY_TAGS[1]
    if (
        isinstance(value, dict)
        and value.get("template") is not None
        and not all(key in value for key in _WRITTEN_IN_FULL)
    ):
        return SIGNAL_ENTRY_TAGS[1]
    return SIGNAL_ENTRY_TAGS[0]


def _derived_keys_together(value: Any) -> Any:
    """``template`` and ``label`` are set by expansion, together; alone they are mistakes."""
    if not isinstance(value, dict):
        return value
    if "alerts" in value:
        raise PydanticCustomError(
            "signal_key",
            "is not written by hand: a signal on an alertmanager source is an alert signal",
            {"key": "alerts"},
        )
    template, label = value.get("template"), value.get("label")
    if label is not None and template is None:
        raise PydanticCustomError(
            "signal_key",
            "is not written by hand: it comes from a signal template's system_label and the "
            "system's labels",
            {"key": "label"},
        )
    if template is not None and label is None:
        overridable = ", ".join(TEMPLATE_OVERRIDES[:-1]) + f" and {TEMPLATE_OVERRIDES[-1]}"
        raise PydanticCustomError(
            "signal_key",
            "a template ref may override only {overridable}: drop layer, source and query "
            "(they come from the template), or drop template for a plain signal",
            {"key": "template", "overridable": overridable},
        )
    return value


if TYPE_CHECKING:
    from sqlalchemy.engine import URL as SqlAlchemyURL

    # Once a Config is validated every signal is a SignalConfig (template refs are expanded),
    # and that is what code reading the config sees.
    SignalEntry: TypeAlias = SignalConfig
else:
    SignalEntry = Annotated[
        Union[  # noqa: UP007 -- Tag needs each member annotated on its own
            Annotated[
                SignalConfig, BeforeValidator(_derived_keys_together), Tag(SIGNAL_ENTRY_TAGS[0])
            ],
            Annotated[TemplateRefConfig, Tag(SIGNAL_ENTRY_TAGS[1])],
        ],
        Discriminator(signal_entry_kind),
    ]
"""A system's signal in YAML: a plain signal or a template ref."""


class DisagreementConfig(Strict):
    name: str
    healthy: list[str] = Field(min_length=1)
    degraded: list[str] = Field(min_length=1)
    for_: Duration = Field(default=timedelta(0), alias="for")
    resolve_after: Duration | None = None


def _one_owner(value: object) -> object:
    if isinstance(value, list | tuple | dict):
        raise ValueError(
            "a system has exactly one accountable owner: give one owner key; "
            "list other people as later escalation steps"
        )
    return value


class SystemConfig(Strict):
    owner: Annotated[str, BeforeValidator(_one_owner)]
    """The one accountable owner's key in ``owners``."""
    escalation: str
    ack_within: Duration | None = None
    resolve_within: Duration | None = None
    runbook: str | None = None
    contributors: dict[Layer, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    """This system's value of a signal template's ``system_label`` (``{model: fraud}``); a
    template whose label is not listed here matches the system's name."""
    signals: dict[str, SignalEntry] = Field(min_length=1)
    """Plain signals and template refs; in a validated :class:`Config`, all ``SignalConfig``
    (a ``SystemConfig`` validated on its own keeps its template refs)."""
    disagreements: list[DisagreementConfig] = Field(default_factory=list)
    resolve_after: Duration = timedelta(minutes=5)
    """How long a condition must stay clear before its incident resolves itself."""
    stale_for: Duration = timedelta(minutes=10)
    """How long a signal must have no data (its source up) before a stale incident opens."""
    reopen_within: Duration = timedelta(0)
    """A fingerprint that fires again this soon after its incident resolved reopens that
    incident (history kept, escalation from step one) instead of opening a new one; 0s never
    reopens."""
    depends_on: list[str] = Field(default_factory=list)
    """Upstream systems (a shared feature pipeline): an incident that opens here while one of
    theirs is open is linked to it as probably caused by it, and its owner is informed, not
    paged, until the upstream incident resolves."""
    on_breach: list[str] | None = Field(default=None, min_length=1)
    """Owner keys told of an SLO breach besides the owner (overrides the chain's)."""


class AuditConfig(Strict):
    """What ``driftowner audit`` holds the ownership registry to (see :mod:`driftowner.audit`)."""

    max_systems_per_owner: int = Field(default=5, ge=1)
    """More systems than this on one accountable owner is a gap: nobody answers for that
    many well (and their absence stops all of them)."""
    layers: list[Layer] = Field(default_factory=lambda: list(LAYERS), min_length=1)
    """The layers every system should watch with at least one signal."""


class BackstageConfig(Strict):
    """Owners read from a Backstage catalog (see :mod:`driftowner.backstage`)."""

    catalog: Path
    """A ``catalog-info.yaml`` (one or more ``---``-separated entities) or a directory of
    them (every ``*.yaml``/``*.yml`` below it); relative to the config file's directory."""
    owners: dict[str, str] = Field(min_length=1)
    """A Backstage owner reference (``user:default/alice``, ``group:ml-fraud``) → an owner
    key of ``owners``."""


class Config(Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    sources: dict[str, SourceConfig] = Field(min_length=1)
    owners: dict[str, OwnerConfig] = Field(min_length=1)
    teams: dict[str, TeamConfig] = Field(default_factory=dict)
    channels: dict[str, ChannelConfig] = Field(min_length=1)
    grouping: Grouping = Field(default_factory=Grouping)
    escalation_chains: dict[str, ChainConfig] = Field(min_length=1)
    signal_templates: dict[str, SignalTemplateConfig] = Field(default_factory=dict)
    """One query per template per cycle, split into systems by the template's
    ``system_label``."""
    systems_dir: Path | None = None
    """A directory of YAML files, each a mapping of system name to system, merged into
    ``systems`` by the loader (:mod:`driftowner.configload`), which resolves a relative path
    against the config file's directory. Validating a Config directly reads nothing."""
    systems: dict[str, SystemConfig] = Field(min_length=1)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    backstage: BackstageConfig | None = None
    """Where systems without an ``owner`` take theirs from; the loader fills them in."""
    maintenance: list[MaintenanceConfig] = Field(default_factory=list)
    """Recurring windows in which the systems named page nobody."""

    @model_validator(mode="after")
    def _expand_template_refs(self) -> Config:
        """Replace every template ref by the :class:`SignalConfig` it stands for.

        Raises:
            PydanticCustomError: ``config_issues``, when a ref names no template; its context
                holds ``issues``, every such ref as a :data:`ConfigIssue`.
        """
        issues: list[ConfigIssue] = []
        systems: dict[str, SystemConfig] = {}
        changed = False
        for system_name, system in self.systems.items():
            entries: dict[str, SignalConfig | TemplateRefConfig] = dict(system.signals)
            if not any(isinstance(entry, TemplateRefConfig) for entry in entries.values()):
                systems[system_name] = system
                continue
            changed = True
            signals: dict[str, SignalConfig] = {}
            for signal_name, entry in entries.items():
                if not isinstance(entry, TemplateRefConfig):
                    signals[signal_name] = entry
                    continue
                template = self.signal_templates.get(entry.template)
                if template is None:
                    issues.append(
                        (
                            ("systems", system_name, "signals", signal_name, "template"),
                            _unknown("signal template", entry.template, self.signal_templates),
                        )
                    )
                    continue
                signals[signal_name] = expand_template_ref(
                    entry, template, system_name, system.labels
                )
            systems[system_name] = system.model_copy(update={"signals": signals})
        if issues:
            raise PydanticCustomError(
                "config_issues",
                "{summary}",
                {
                    "summary": "; ".join(f"{_dotted(path)}: {text}" for path, text in issues),
                    "issues": issues,
                },
            )
        if changed:
            # Frozen to callers; this is still validation, building the value they receive.
            self.__dict__["systems"] = systems
        return self

    @model_validator(mode="after")
    def _mark_alert_signals(self) -> Config:
        """Mark every signal on an alertmanager source as an alert signal and add the
        system's own matcher to its query (a query that does not parse is left as written;
        :func:`cross_check` reports it)."""
        systems: dict[str, SystemConfig] = {}
        changed = False
        for system_name, system in self.systems.items():
            signals: dict[str, SignalConfig] = {}
            for signal_name, signal in system.signals.items():
                source = self.sources.get(signal.source)
                if isinstance(signal, SignalConfig) and isinstance(
                    source, AlertmanagerSourceConfig
                ):
                    signals[signal_name] = alert_signal(signal, source, system_name, system.labels)
                    changed = True
            systems[system_name] = (
                system.model_copy(update={"signals": {**system.signals, **signals}})
                if signals
                else system
            )
        if changed:
            # Frozen to callers; this is still validation, building the value they receive.
            self.__dict__["systems"] = systems
        return self


def alert_signal(
    signal: SignalConfig,
    source: AlertmanagerSourceConfig,
    system_name: str,
    labels: Mapping[str, str],
) -> SignalConfig:
    """A signal on an alertmanager source as the rest of driftowner reads it: marked
    ``alerts``, its query the canonical selector with the system's own matcher."""
    value = labels.get(source.system_label, system_name)
    try:
        matchers = parse_selector(signal.query)
    except ValueError:
        return signal.model_copy(update={"alerts": True})
    if system_conflict(matchers, source.system_label, value) is not None:
        return signal.model_copy(update={"alerts": True})
    query = render(for_system(matchers, source.system_label, value))
    return signal.model_copy(update={"alerts": True, "query": query})


def expand_template_ref(
    ref: TemplateRefConfig,
    template: SignalTemplateConfig,
    system_name: str,
    labels: Mapping[str, str],
) -> SignalConfig:
    """The signal a template ref stands for: the template's fields, the ref's overrides, the
    template's name and ``(system_label, the system's value)``."""
    return SignalConfig(
        layer=template.layer,
        source=template.source,
        query=template.query,
        bad=template.bad if ref.bad is None else ref.bad,
        detect=template.detect if ref.detect is None else ref.detect,
        for_=template.for_ if ref.for_ is None else ref.for_,
        resolve_after=template.resolve_after if ref.resolve_after is None else ref.resolve_after,
        stale_after=template.stale_after,
        template=ref.template,
        label=(template.system_label, labels.get(template.system_label, system_name)),
    )


def _dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in path)


ConfigIssue = tuple[tuple[str | int, ...], str]
"""A YAML path and what is wrong there."""


def cross_check(config: Config) -> list[ConfigIssue]:
    """Every reference the schema alone cannot check: names that must exist, owners reachable
    through every channel their steps use, the shape of escalation chains.

    Returns:
        All violations, in config order; empty when the config is consistent.
    """
    issues: list[ConfigIssue] = []
    for chain_name, chain in config.escalation_chains.items():
        issues.extend(_check_chain(config, chain_name, chain))
    for template_name, template in config.signal_templates.items():
        issues.extend(_check_template(config, template_name, template))
    for system_name, system in config.systems.items():
        issues.extend(_check_system(config, system_name, system))
    issues.extend(_check_label_claims(config))
    issues.extend(_check_api_tokens(config))
    issues.extend(_check_dependencies(config))
    issues.extend(_check_paging_names(config))
    return issues


def _check_paging_names(config: Config) -> list[ConfigIssue]:
    """Owners named by ``on_breach`` and systems named by maintenance windows exist."""
    issues: list[ConfigIssue] = []
    for base, on_breach in [
        *((("escalation_chains", n), c.on_breach) for n, c in config.escalation_chains.items()),
        *((("systems", n), s.on_breach) for n, s in config.systems.items()),
    ]:
        for position, who in enumerate(on_breach or []):
            if who not in config.owners:
                issues.append(
                    ((*base, "on_breach", position), _unknown("owner", who, config.owners))
                )
    for index, window in enumerate(config.maintenance):
        for position, name in enumerate(window.systems):
            if name not in config.systems:
                issues.append(
                    (
                        ("maintenance", index, "systems", position),
                        _unknown("system", name, config.systems),
                    )
                )
    return issues


def _check_dependencies(config: Config) -> list[ConfigIssue]:
    """``depends_on`` names other systems that exist, and no system depends on itself
    through any path (a cycle would make each incident the cause of the other)."""
    issues: list[ConfigIssue] = []
    for name, system in config.systems.items():
        for position, upstream in enumerate(system.depends_on):
            where = ("systems", name, "depends_on", position)
            if upstream == name:
                issues.append((where, "a system cannot depend on itself"))
            elif upstream not in config.systems:
                issues.append((where, _unknown("system", upstream, config.systems)))
    reported: set[str] = set()
    for name in config.systems:
        loop = _dependency_cycle(config, name)
        if loop is not None and not reported & set(loop):
            reported.update(loop)
            issues.append(
                (
                    ("systems", name, "depends_on"),
                    "dependency cycle: " + " → ".join([*loop, loop[0]]),
                )
            )
    return issues


def _dependency_cycle(config: Config, start: str) -> list[str] | None:
    """The systems of a ``depends_on`` cycle through ``start``, in order, or None."""
    path: list[str] = [start]
    seen: set[str] = set()

    def walk(name: str) -> list[str] | None:
        for upstream in config.systems[name].depends_on:
            if upstream == start and upstream != name:
                return list(path)
            if upstream in config.systems and upstream not in seen and upstream != name:
                seen.add(upstream)
                path.append(upstream)
                found = walk(upstream)
                if found is not None:
                    return found
                path.pop()
        return None

    return walk(start)


def upstream_first(config: Config, names: Iterable[str]) -> list[str]:
    """``names`` ordered so that every system comes after the systems it depends on (config
    order otherwise): the order the cycle evaluates systems in, so a dependent's incident
    sees an upstream incident opened in the same cycle."""
    ordered: list[str] = []
    placed: set[str] = set()
    wanted = list(names)
    wanted_set = set(wanted)

    def place(name: str, visiting: frozenset[str]) -> None:
        if name in placed or name in visiting:
            return
        system = config.systems.get(name)
        for upstream in system.depends_on if system is not None else ():
            if upstream in wanted_set:
                place(upstream, visiting | {name})
        placed.add(name)
        ordered.append(name)

    for name in wanted:
        place(name, frozenset())
    return ordered


def _check_api_tokens(config: Config) -> list[ConfigIssue]:
    """Each API token names one actor: no owner's token is another's or the admin token
    (the message never shows the token)."""
    issues: list[ConfigIssue] = []
    admin = config.server.api_token
    holders: dict[str, str] = {} if admin is None else {admin.get_secret_value(): "server"}
    for key, owner in config.owners.items():
        if owner.api_token is None:
            continue
        token = owner.api_token.get_secret_value()
        holder = holders.setdefault(token, f"owners.{key}")
        if holder != f"owners.{key}":
            issues.append(
                (
                    ("owners", key, "api_token"),
                    f"the same token as {holder}.api_token: each token must act as one actor only",
                )
            )
    return issues


def unknown_name(kind: str, name: str, known: Iterable[str]) -> str:
    """``unknown owner 'alicia', did you mean 'alice'?`` (or the names there are)."""
    return _unknown(kind, name, known)


def _unknown(kind: str, name: str, known: Iterable[str]) -> str:
    """``unknown owner 'alicia', did you mean 'alice'?`` (or the names there are)."""
    names = [str(each) for each in known]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if close:
        return f"unknown {kind} {name!r}, did you mean {close[0]!r}?"
    if names:
        return f"unknown {kind} {name!r}: expected one of {', '.join(names)}"
    return f"unknown {kind} {name!r}: none is configured"


def _check_chain(config: Config, chain_name: str, chain: ChainConfig) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    base = ("escalation_chains", chain_name, "steps")
    first = chain.steps[0]
    if first.notify != "owner":
        issues.append(((*base, 0, "notify"), "the first step must notify the owner"))
    if first.after != timedelta(0):
        issues.append(((*base, 0, "after"), "the first step fires at once: remove 'after'"))
    if chain.repeat and len(chain.steps) < 2:
        issues.append(
            (
                ("escalation_chains", chain_name, "repeat"),
                "repeat needs at least two steps: a round lasts until the last step plus the "
                "gap before it",
            )
        )
    issues.extend(_check_chain_span(chain_name, chain))
    previous = timedelta(0)
    for index, step in enumerate(chain.steps):
        if index > 0 and step.after <= previous:
            issues.append(
                (
                    (*base, index, "after"),
                    f"must be later than the previous step's {format_duration(previous)}",
                )
            )
        previous = max(previous, step.after)
        if isinstance(step.notify, list):
            for position, who in enumerate(step.notify):
                if who != "owner" and who not in config.owners:
                    issues.append(
                        ((*base, index, "notify", position), _unknown("owner", who, config.owners))
                    )
        issues.extend(_check_via(config, (*base, index, "via"), step))
    return issues


def _check_via(config: Config, where: tuple[str | int, ...], step: StepConfig) -> list[ConfigIssue]:
    """Every channel and fallback a step names exists; a fallback is another channel, and
    following fallbacks never comes back to where it started."""
    issues: list[ConfigIssue] = []
    for position, entry in enumerate(step.via or []):
        if isinstance(entry, str):
            if entry not in config.channels:
                issues.append(((*where, position), _unknown("channel", entry, config.channels)))
            continue
        for key in ("channel", "fallback"):
            name = getattr(entry, key)
            if name not in config.channels:
                issues.append(((*where, position, key), _unknown("channel", name, config.channels)))
        if entry.fallback == entry.channel:
            issues.append(((*where, position, "fallback"), "must be another channel"))
    fallbacks = step.fallbacks
    for position, entry in enumerate(step.via or []):
        if isinstance(entry, ViaConfig) and entry.fallback != entry.channel:
            seen, name = {entry.channel}, entry.fallback
            while name in fallbacks and name not in seen:
                seen.add(name)
                name = fallbacks[name]
            if name in seen:
                issues.append(((*where, position, "fallback"), f"fallbacks loop back to {name!r}"))
    return issues


def _check_chain_span(chain_name: str, chain: ChainConfig) -> list[ConfigIssue]:
    """A chain's repeats must end within :data:`MAX_DURATION` of the incident opening: the
    last step falls due ``repeat`` rounds after the first round."""
    if not chain.repeat or len(chain.steps) < 2:
        return []
    one_round = round_length([step.after for step in chain.steps])
    # In whole microseconds: a huge repeat must not overflow timedelta arithmetic here either.
    span_us = chain.repeat * (one_round // timedelta(microseconds=1))
    span_us += chain.steps[-1].after // timedelta(microseconds=1)
    if span_us <= MAX_DURATION // timedelta(microseconds=1):
        return []
    return [
        (
            ("escalation_chains", chain_name, "repeat"),
            f"{chain.repeat} repeats of a {format_duration(one_round)} round would escalate for "
            f"longer than the maximum {MAX_DURATION_TEXT}: lower repeat",
        )
    ]


def step_channels(config: Config, step: StepConfig) -> list[str]:
    """The channel names a step sends through (explicit ``via``, else every channel)."""
    names = step.via_names
    if names is not None:
        return [name for name in names if name in config.channels]
    return list(config.channels)


def step_owner_keys(step: StepConfig, accountable: str) -> list[str]:
    """The owner keys a step notifies, with ``owner`` resolved to the accountable owner."""
    targets = ["owner"] if step.notify == "owner" else step.notify
    return [accountable if who == "owner" else who for who in targets]


def owner_contact(config: Config, owner_key: str, channel_name: str) -> str | None:
    """The address of an owner on a channel, or ``None`` when the owner has none there.

    Channels that need no contact (log, webhook) answer the owner key itself.
    """
    owner = config.owners.get(owner_key)
    channel = config.channels.get(channel_name)
    if owner is None or channel is None:
        return None
    contact_field = CONTACT_FIELD[channel.type]
    if contact_field is None:
        return owner_key
    value = getattr(owner, contact_field)
    return value if isinstance(value, str) and value else None


def team_contact(config: Config, team_key: str, channel_name: str) -> str | None:
    """The address of a team on a channel, or ``None`` when the team has none there."""
    team = config.teams.get(team_key)
    channel = config.channels.get(channel_name)
    if team is None or channel is None:
        return None
    if channel.type == "email":
        return team.email
    if channel.type == "slack":
        return team.slack_channel
    return team_key


def _check_system(config: Config, name: str, system: SystemConfig) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    base: tuple[str | int, ...] = ("systems", name)
    if system.owner not in config.owners:
        issues.append(((*base, "owner"), _unknown("owner", system.owner, config.owners)))
    chain = config.escalation_chains.get(system.escalation)
    if chain is None:
        issues.append(
            (
                (*base, "escalation"),
                _unknown("escalation chain", system.escalation, config.escalation_chains),
            )
        )
    for layer, team in system.contributors.items():
        if team not in config.teams:
            issues.append(((*base, "contributors", layer), _unknown("team", team, config.teams)))
    used_labels: list[str] = []
    for signal_name, signal in system.signals.items():
        where = (*base, "signals", signal_name)
        template = config.signal_templates.get(signal.template or "")
        if signal.template is not None and template is None:
            # Only a signal written out in full can name a template that is not there.
            issues.append(
                (
                    (*where, "template"),
                    _unknown("signal template", signal.template, config.signal_templates),
                )
            )
        if template is not None:
            # Source and stale_after come from the template and are checked there, once;
            # bad and detect only when the ref overrides them.
            used_labels.append(template.system_label)
            if (signal.bad, signal.detect) != (template.bad, template.detect):
                issues.extend(_check_direction(where, signal.bad, signal.detect))
                issues.extend(_check_histogram(config, where, signal, templated=True))
            continue
        source = config.sources.get(signal.source)
        if isinstance(source, AlertmanagerSourceConfig):
            used_labels.append(source.system_label)
            value = system.labels.get(source.system_label, name)
            issues.extend(_check_alert_signal(where, signal, source, value))
            continue
        issues.extend(_check_source(config, where, signal))
        issues.extend(_check_direction(where, signal.bad, signal.detect))
        issues.extend(_check_histogram(config, where, signal))
        issues.extend(_check_budget(config, where, signal))
    for label_name in system.labels:
        if label_name not in used_labels:
            typo = _unknown_label(label_name, used_labels)
            if typo is not None:
                issues.append(((*base, "labels", label_name), typo))
    seen_disagreements: set[str] = set()
    for index, disagreement in enumerate(system.disagreements):
        where = (*base, "disagreements", index)
        if disagreement.name in seen_disagreements:
            issues.append(((*where, "name"), f"duplicate disagreement {disagreement.name!r}"))
        seen_disagreements.add(disagreement.name)
        for side in ("healthy", "degraded"):
            for position, signal_name in enumerate(getattr(disagreement, side)):
                if signal_name not in system.signals:
                    issues.append(
                        (
                            (*where, side, position),
                            _unknown("signal", signal_name, system.signals),
                        )
                    )
        both = set(disagreement.healthy) & set(disagreement.degraded)
        if both:
            issues.append(
                ((*where, "degraded"), f"signal {sorted(both)[0]!r} is both healthy and degraded")
            )
    if chain is not None and system.owner in config.owners:
        issues.extend(_check_reachable(config, name, system, chain))
    return issues


def _check_source(
    config: Config, where: tuple[str | int, ...], signal: SignalConfig | SignalTemplateConfig
) -> list[ConfigIssue]:
    source = config.sources.get(signal.source)
    if source is None:
        return [((*where, "source"), _unknown("source", signal.source, config.sources))]
    if signal.stale_after is not None and source.type != "file":
        # Prometheus stamps instant results with the query time, so the newest sample is
        # never old: the field would be parsed and silently ignored.
        return [
            (
                (*where, "stale_after"),
                f"has no effect on a {source.type} source, whose samples are stamped at "
                "query time; a Prometheus series that stops being scraped vanishes after "
                "5m, which already counts as no data (for data age, query "
                "time() - timestamp(metric) with a threshold)",
            )
        ]
    return []


_NOT_FOR_ALERTS = {
    "bad": "an alert signal is bad while its alert fires",
    "detect": "an alert signal is degraded while its alert fires, healthy once it resolves",
    "false_alarm_every": "Alertmanager decides when an alert fires",
    "stale_after": "an alert that stops being sent is resolved when its endsAt passes",
}
"""The signal fields that do not apply on an alertmanager source, and why."""


def _check_alert_signal(
    where: tuple[str | int, ...],
    signal: SignalConfig,
    source: AlertmanagerSourceConfig,
    value: str,
) -> list[ConfigIssue]:
    """A signal on an alertmanager source names alerts by a selector, and sets none of the
    fields that judge values."""
    issues: list[ConfigIssue] = []
    for field_name, why in _NOT_FOR_ALERTS.items():
        if field_name in signal.model_fields_set:
            issues.append(
                (
                    (*where, field_name),
                    f"does not apply on alertmanager source {signal.source!r}: {why}",
                )
            )
    try:
        matchers = parse_selector(signal.query)
    except ValueError as error:
        return [*issues, ((*where, "query"), f"not an alert selector: {error}")]
    conflict = system_conflict(matchers, source.system_label, value)
    if conflict is not None:
        issues.append(((*where, "query"), conflict))
    return issues


_BUCKET_SELECTOR = re.compile(r"^\s*[a-zA-Z_:][a-zA-Z0-9_:]*_bucket\s*(\{.*\})?\s*$", re.DOTALL)
"""A series selector naming a classic histogram's buckets: ``name_bucket{job="x"}``."""


def _check_histogram(
    config: Config,
    where: tuple[str | int, ...],
    signal: SignalConfig | SignalTemplateConfig,
    *,
    templated: bool = False,
) -> list[ConfigIssue]:
    """PSI and JS read a classic histogram's buckets from Prometheus, one signal at a time."""
    if signal.detect is None or signal.detect.name not in HISTOGRAM_DETECTORS:
        return []
    at = (*where, "detect", signal.detect.name)
    if templated:
        return [(at, "psi and js read one histogram per signal: not available on a template")]
    source = config.sources.get(signal.source)
    if source is not None and source.type != "prometheus":
        return [
            (
                at,
                f"needs a prometheus source that holds the histogram's buckets "
                f"({signal.source!r} is a {source.type} source)",
            )
        ]
    if not _BUCKET_SELECTOR.match(signal.query):
        return [
            (
                (*where, "query"),
                f"{signal.detect.name} needs a classic histogram's bucket series as the query, "
                'e.g. latency_seconds_bucket{job="api"}',
            )
        ]
    return []


def _check_budget(
    config: Config, where: tuple[str | int, ...], signal: SignalConfig | SignalTemplateConfig
) -> list[ConfigIssue]:
    """A false-alarm budget is a number of evaluations: at least one must fit in it."""
    interval = config.evaluation.interval
    if signal.false_alarm_every <= interval:
        return [
            (
                (*where, "false_alarm_every"),
                f"must be longer than evaluation.interval ({format_duration(interval)})",
            )
        ]
    return []


def _check_direction(
    where: tuple[str | int, ...], bad: BadDirection, detect: DetectConfig | None
) -> list[ConfigIssue]:
    """Threshold bounds that ``bad`` would make pointless."""
    issues: list[ConfigIssue] = []
    threshold = None if detect is None else detect.threshold
    if threshold is not None:
        if bad == "down" and threshold.max is not None:
            issues.append(
                (
                    (*where, "detect", "threshold", "max"),
                    "bad is down, so a value above max is not bad: remove max or set bad",
                )
            )
        if bad == "up" and threshold.min is not None:
            issues.append(
                (
                    (*where, "detect", "threshold", "min"),
                    "bad is up, so a value below min is not bad: remove min or set bad",
                )
            )
    return issues


def _check_template(config: Config, name: str, template: SignalTemplateConfig) -> list[ConfigIssue]:
    where: tuple[str | int, ...] = ("signal_templates", name)
    source = config.sources.get(template.source)
    if source is not None and source.type != "prometheus":
        issues: list[ConfigIssue] = [
            (
                (*where, "source"),
                "signal templates need a prometheus source: one query returns every "
                f"system's series ({template.source!r} is a {source.type} source)",
            )
        ]
    else:
        issues = _check_source(config, where, template)
    issues.extend(_check_direction(where, template.bad, template.detect))
    issues.extend(_check_histogram(config, where, template, templated=True))
    issues.extend(_check_budget(config, where, template))
    return issues


def _unknown_label(name: str, used: list[str]) -> str | None:
    """A ``labels`` key spelt like a label a template the system uses splits by, but not
    it: likely a typo. Any other label is a label of its own, which silences match."""
    known = list(dict.fromkeys(used))
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"unknown label {name!r}, did you mean {close[0]!r}?"
    return None


def _check_label_claims(config: Config) -> list[ConfigIssue]:
    """Two systems of one template must not claim the same label value: which one a series
    belongs to would be ambiguous."""
    issues: list[ConfigIssue] = []
    claims: dict[tuple[str, str], str] = {}
    for system_name, system in config.systems.items():
        claimed: set[tuple[str, str]] = set()
        for signal_name, signal in system.signals.items():
            if signal.template is None or signal.label is None:
                continue
            key = (signal.template, signal.label[1])
            if key in claimed:
                continue  # one system may use a template twice (two thresholds on one series)
            claimed.add(key)
            first = claims.setdefault(key, system_name)
            if first == system_name:
                continue
            label_name, value = signal.label
            if label_name in system.labels:
                where: tuple[str | int, ...] = ("systems", system_name, "labels", label_name)
            else:
                where = ("systems", system_name, "signals", signal_name, "template")
            issues.append(
                (
                    where,
                    f"systems {first} and {system_name} both claim {label_name}="
                    f"{_promql_string(value)} of template {signal.template}: the split would be "
                    f"ambiguous; give one of them another labels.{label_name}",
                )
            )
    return issues


def _promql_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _check_reachable(
    config: Config, name: str, system: SystemConfig, chain: ChainConfig
) -> list[ConfigIssue]:
    """Every person a step notifies must have a contact on every channel the step uses."""
    issues: list[ConfigIssue] = []
    for index, step in enumerate(chain.steps):
        for owner_key in step_owner_keys(step, system.owner):
            if owner_key not in config.owners:
                continue
            channels = step_channels(config, step)
            reachable = [c for c in channels if owner_contact(config, owner_key, c) is not None]
            if step.via is not None:
                for channel_name in channels:
                    if owner_contact(config, owner_key, channel_name) is None:
                        field_name = CONTACT_FIELD[config.channels[channel_name].type]
                        issues.append(
                            (
                                ("systems", name, "escalation"),
                                f"chain {system.escalation!r} step {index + 1} sends "
                                f"{owner_key!r} through {channel_name!r}, but owner "
                                f"{owner_key!r} has no {field_name}",
                            )
                        )
            elif not reachable:
                issues.append(
                    (
                        ("systems", name, "escalation"),
                        f"chain {system.escalation!r} step {index + 1}: owner {owner_key!r} "
                        "has no contact on any channel",
                    )
                )
            for channel_name, fallback in step.fallbacks.items():
                if fallback not in config.channels:
                    continue
                if owner_contact(config, owner_key, fallback) is None:
                    field_name = CONTACT_FIELD[config.channels[fallback].type]
                    issues.append(
                        (
                            ("systems", name, "escalation"),
                            f"chain {system.escalation!r} step {index + 1} falls back from "
                            f"{channel_name!r} to {fallback!r} for {owner_key!r}, but owner "
                            f"{owner_key!r} has no {field_name}",
                        )
                    )
    return issues


def listen_host(listen: str) -> str:
    """The host part of a ``HOST:PORT`` listen address, without IPv6 brackets."""
    return listen.rpartition(":")[0].strip("[]")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any interface


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def config_warnings(config: Config) -> list[ConfigIssue]:
    """What a valid config probably gets wrong: a listen address other machines reach without
    an ``api_token``, and links in messages that would point at ``0.0.0.0``.

    Not errors: behind an authenticating proxy, or on a host that only the operators reach,
    both may be intended. ``check-config`` prints them and the daemon logs them at start.

    Returns:
        ``(yaml path, message)`` for each, empty when there is nothing to warn about.
    """
    server = config.server
    host = listen_host(server.listen)
    warnings: list[ConfigIssue] = []
    if server.external_url is None and _is_wildcard(host):
        warnings.append(
            (
                ("server", "external_url"),
                f"not set while server.listen is {server.listen}: the ack/resolve links in "
                f"every message would point to http://{server.listen}, which no one can open; "
                "set it to the URL people reach driftowner at",
            )
        )
    if server.api_token is None and not _is_loopback(host):
        warnings.append(
            (
                ("server", "api_token"),
                f"not set while server.listen {server.listen} is reachable from other "
                "machines: nothing authenticates the HTTP API, so anyone who can connect "
                "reads every incident, owner and report; set server.api_token, or listen on "
                "127.0.0.1 behind an authenticating proxy",
            )
        )
    return warnings


class _ConfigJsonSchema(GenerateJsonSchema):
    """Defaults written the way a user writes them: durations as ``1m``, not ``PT1M``."""

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file (``driftowner schema``), in YAML spelling."""
    return Config.model_json_schema(
        by_alias=True, mode="validation", schema_generator=_ConfigJsonSchema
    )
