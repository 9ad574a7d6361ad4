"""Shared builders for the core's tests: a small valid config built in Python, findings,
incidents, notifications, deterministic ids and links. No I/O."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from driftowner.config import Config, SignalConfig, cross_check
from driftowner.incidents import snapshot_chain
from driftowner.model import (
    Evidence,
    Finding,
    Incident,
    Layer,
    Message,
    Notification,
    Sample,
    SourceResult,
    Status,
)

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
"""The instant most tests call "now" or "opened at"."""

SYSTEM = "fraud-scoring"
RULE = "drift:accuracy"
DISAGREEMENT = "accuracy-fine-adoption-falling"

LAYER_OF: dict[str, Layer] = {"accuracy": "model", "adoption": "business", "null_rate": "data"}


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def at(offset: timedelta | float) -> datetime:
    """``T0`` plus an offset (a timedelta, or minutes)."""
    if isinstance(offset, timedelta):
        return T0 + offset
    return T0 + minutes(offset)


def base_config() -> dict[str, Any]:
    """The config as the plain document a YAML file would hold (aliases: ``for``, ``from``)."""
    return {
        # Evaluations every 5 minutes: a pending condition survives gaps of up to 15m05s.
        "evaluation": {"interval": "5m"},
        "sources": {"prom": {"type": "demo"}},
        "owners": {
            "alice": {"name": "Alice Chen", "email": "alice@example.com", "slack": "U024BE7LH"},
            "bob": {"name": "Bob Diaz", "email": "bob@example.com"},
            "dana": {"name": "Dana Ito", "email": "dana@example.com"},
        },
        "teams": {
            "ml-fraud": {"email": "ml-fraud@example.com", "slack_channel": "#ml-fraud"},
            "risk-product": {"email": "risk@example.com"},
        },
        "channels": {
            "console": {"type": "log"},
            "email": {"type": "email", "host": "smtp.example.com", "from": "do@example.com"},
        },
        "escalation_chains": {
            "standard": {
                "steps": [
                    {"notify": "owner", "via": ["console", "email"]},
                    {"after": "15m", "notify": ["bob"], "via": ["email"]},
                    {"after": "45m", "notify": ["dana"], "via": ["email"]},
                ],
                "repeat": 1,
                "remind_every": "2h",
                "ack_timeout": "8h",
            }
        },
        "systems": {
            SYSTEM: {
                "owner": "alice",
                "escalation": "standard",
                "ack_within": "30m",
                "resolve_within": "3d",
                "runbook": "https://wiki.example.com/fraud-scoring",
                "contributors": {"model": "ml-fraud", "business": "risk-product"},
                "resolve_after": "5m",
                "stale_for": "10m",
                "signals": {
                    "accuracy": {
                        "layer": "model",
                        "source": "prom",
                        "query": "model_accuracy",
                        "bad": "down",
                        "detect": {"threshold": {"min": 0.9}},
                    },
                    "adoption": {
                        "layer": "business",
                        "source": "prom",
                        "query": "adoption_rate",
                        "bad": "down",
                        "detect": {"baseline": {"reference": "7d", "max_change": "20%"}},
                    },
                    "null_rate": {
                        "layer": "data",
                        "source": "prom",
                        "query": "null_rate",
                        "bad": "up",
                        "detect": {"threshold": {"max": 0.05}},
                    },
                },
                "disagreements": [
                    {
                        "name": DISAGREEMENT,
                        "healthy": ["accuracy"],
                        "degraded": ["adoption"],
                        "for": "30m",
                    }
                ],
            }
        },
    }


def _merge(into: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into


def make_config(patch: Mapping[str, Any] | None = None) -> Config:
    """The valid base config, with ``patch`` deep-merged into its document first.

    Raises:
        AssertionError: when the result breaks a cross-reference rule (a broken factory).
    """
    document = _merge(base_config(), patch or {})
    config = Config.model_validate(document)
    issues = cross_check(config)
    assert not issues, issues
    return config


def system_patch(**fields: Any) -> dict[str, Any]:
    """A patch of the fraud-scoring system's fields."""
    return {"systems": {SYSTEM: fields}}


def signal_patch(name: str, **fields: Any) -> dict[str, Any]:
    """A patch of one fraud-scoring signal's fields."""
    return system_patch(signals={name: fields})


def signal(**fields: Any) -> SignalConfig:
    """A standalone signal spec (model layer, prom source) for the detectors."""
    return SignalConfig.model_validate(
        {"layer": "model", "source": "prom", "query": "q", "bad": "down", **fields}
    )


def samples(*points: tuple[float, float]) -> tuple[Sample, ...]:
    """Samples from (minutes relative to ``T0``, value) pairs."""
    return tuple(Sample(at(offset), value) for offset, value in points)


def finding(
    signal_name: str,
    status: Status,
    when: datetime = T0,
    *,
    system: str = SYSTEM,
    **fields: Any,
) -> Finding:
    """One finding of a fraud-scoring signal (layer looked up by name). A ``no_data``
    finding is the staleness detector's unless ``detector`` says otherwise."""
    if status == "no_data":
        fields.setdefault("detector", "staleness")
    return Finding(
        system=system,
        signal=signal_name,
        layer=fields.pop("layer", LAYER_OF.get(signal_name, "model")),
        status=status,
        at=when,
        reason=fields.pop("reason", f"{signal_name} is {status}"),
        **fields,
    )


def findings(**statuses: Status) -> dict[str, Finding]:
    """signal → finding at ``T0``, e.g. ``findings(accuracy="ok", adoption="degraded")``. A
    status ``no_data`` is a source that answered without data (not a source error)."""
    return findings_at(T0, statuses)


def findings_at(when: datetime, statuses: Mapping[str, Status]) -> dict[str, Finding]:
    """signal → finding at ``when``."""
    return {name: finding(name, status, when) for name, status in statuses.items()}


def source_error(signal_name: str, when: datetime = T0) -> Finding:
    """A no-data finding caused by the source failing (the operator's problem)."""
    return finding(
        signal_name,
        "no_data",
        when,
        source_error=True,
        source_up=False,
        detector="",
        reason="connection refused",
    )


def incident(config: Config | None = None, **overrides: Any) -> Incident:
    """An open drift:accuracy incident of fraud-scoring, opened at ``T0``, with the chain
    snapshotted from ``config`` (the base config by default)."""
    config = config or make_config()
    system = config.systems[SYSTEM]
    base = Incident(
        id="inc-1",
        system=SYSTEM,
        owner="alice",
        kind="drift",
        rule=RULE,
        layers=("model",),
        signals=("accuracy",),
        state="open",
        opened_at=T0,
        summary="accuracy falling: 0.71 < min 0.9",
        chain=snapshot_chain(config, system),
        evidence=(finding("accuracy", "degraded", value=0.71, limit=0.9, reason="0.71 < min 0.9"),),
        condition_began_at=T0,
        resolve_after=system.resolve_after,
        escalation_epoch=T0,
        ack_within=system.ack_within,
        resolve_within=system.resolve_within,
        runbook=system.runbook,
    )
    return replace(base, **overrides)


def full_message(**changes: Any) -> Message:
    """A message with every field set, runbook and the incident, acknowledge and resolve links
    included: the "accuracy fine, adoption falling" disagreement of fraud-scoring as first sent
    to its owner Alice Chen (step 1, opened 4m 12s before). ``changes`` replace fields; a test
    whose assertions depend on a value passes that value here explicitly."""
    base = Message(
        purpose="opened",
        incident_id="inc-42",
        system=SYSTEM,
        owner="alice",
        owner_name="Alice Chen",
        kind="disagreement",
        rule=f"disagreement:{DISAGREEMENT}",
        state="open",
        layers=("model", "business"),
        summary="accuracy fine, adoption falling",
        evidence=(
            Evidence("accuracy", "model", "ok", "0.95 >= min 0.90", 0.95, None, 0.9),
            Evidence("adoption", "business", "degraded", "0.41 is 38% below baseline 0.66", 0.41),
        ),
        opened_at=datetime(2024, 5, 1, 9, 30, tzinfo=UTC),
        age_seconds=252,
        step=1,
        recipient_name="Alice Chen",
        runbook="https://wiki.example.com/fraud-scoring",
        incident_url="https://driftowner.example.com/incidents/inc-42",
        ack_url="https://driftowner.example.com/a/ack-token",
        resolve_url="https://driftowner.example.com/a/resolve-token",
    )
    return replace(base, **changes)


def message(incident_id: str = "inc-1", purpose: Any = "opened") -> Message:
    """The message of ``incident()``'s drift (drift:accuracy opened at ``T0``)."""
    return full_message(
        purpose=purpose,
        incident_id=incident_id,
        kind="drift",
        rule=RULE,
        layers=("model",),
        summary="accuracy falling",
        evidence=(Evidence("accuracy", "model", "degraded", "0.71 < min 0.9", 0.71, None, 0.9),),
        opened_at=T0,
        age_seconds=0.0,
        incident_url="http://driftowner.test/incidents/inc-1",
        ack_url="http://driftowner.test/a/ack",
        resolve_url="http://driftowner.test/a/resolve",
    )


_incident_message = message  # ``notification``'s parameter ``message`` hides the function


def notification(
    notification_id: str = "n-1",
    *,
    incident_id: str | None = None,
    channel: str = "console",
    recipient: str = "alice",
    address: str = "alice",
    created_at: datetime = T0,
    purpose: Any = "opened",
    message: Message | None = None,
    **fields: Any,
) -> Notification:
    """A notification of ``message`` (by default ``message(incident_id, purpose)``); its
    ``incident_id`` is the message's unless given. Not yet attempted: ``next_attempt_at`` is
    ``created_at`` unless given."""
    if message is None:
        message = _incident_message(incident_id or "inc-1", purpose)
    return Notification(
        id=notification_id,
        incident_id=incident_id or message.incident_id,
        channel=channel,
        recipient=recipient,
        address=address,
        message=message,
        created_at=created_at,
        next_attempt_at=fields.pop("next_attempt_at", created_at),
        **fields,
    )


def ids(prefix: str = "id") -> Callable[[], str]:
    """A deterministic id generator: ``prefix-1``, ``prefix-2``, ..."""
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter)}"


def links(incident_id: str, action: str, recipient: str | None = None) -> str | None:
    """Links as the HTTP API would make them, minus the signing: an ack / resolve link names
    its recipient, and there is none without one."""
    if action == "view":
        return f"http://driftowner.test/{action}/{incident_id}"
    return f"http://driftowner.test/{action}/{incident_id}/{recipient}" if recipient else None


def no_links(incident_id: str, action: str, recipient: str | None = None) -> str | None:
    return None


ACCURACY_TEMPLATE: dict[str, Any] = {
    "layer": "model",
    "source": "prom",
    "system_label": "model",
    "bad": "down",
    "query": "avg by (model) (model_accuracy)",
    "detect": {"threshold": {"min": 0.9}},
}
"""One accuracy query for every model, split by its ``model`` label."""


def templated_document(url: str, **source: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The base config document over one Prometheus at ``url`` with the ``accuracy``
    signal template and no systems, and the body of a system using that template (no
    disagreements): callers add as many systems as they need."""
    document: dict[str, Any] = base_config()
    document["sources"] = {"prom": {"type": "prometheus", "url": url, **source}}
    document["signal_templates"] = {"accuracy": dict(ACCURACY_TEMPLATE)}
    system = document["systems"].pop("fraud-scoring")
    system["disagreements"] = []
    system["signals"] = {"accuracy": {"template": "accuracy"}}
    return document, system


def slack_notification(address: str = "U024BE7LH", **changes: Any) -> Notification:
    """A Slack message about incident inc-42 to ``address`` (Alice's member id by default);
    ``changes`` replace fields of its message."""
    return notification(
        "notif-1",
        channel="slack",
        address=address,
        created_at=datetime(2024, 5, 1, 9, 46, tzinfo=UTC),
        message=full_message(incident_id="inc-42", **changes),
    )


class TemplateOnlySource:
    """Base of the Prometheus stand-ins for signal templates: a subclass answers
    ``read_by_label``; a plain read fails the test (a template's systems must never be read
    one by one)."""

    name = "prom"

    async def read(
        self, query: str, start: datetime, end: datetime, step: timedelta
    ) -> SourceResult:
        raise AssertionError("a templated signal was read per system")

    async def aclose(self) -> None:
        return None
