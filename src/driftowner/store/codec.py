"""JSON encoding of the value types the store keeps whole (incidents, messages). Pure."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from driftowner.model import (
    ChainSnapshot,
    ChainStep,
    Evidence,
    Finding,
    GroupThread,
    Incident,
    Message,
    SloBreach,
    Upstream,
)


def ts(value: datetime | None) -> float | None:
    """A UTC datetime as Unix seconds (the store's time column type)."""
    return None if value is None else value.timestamp()


def from_ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _secs(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _delta(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


def _finding(f: Finding) -> dict[str, Any]:
    return {
        "system": f.system,
        "signal": f.signal,
        "layer": f.layer,
        "status": f.status,
        "at": ts(f.at),
        "value": f.value,
        "reference": f.reference,
        "statistic": f.statistic,
        "limit": f.limit,
        "detector": f.detector,
        "reason": f.reason,
        "source_up": f.source_up,
        "source_error": f.source_error,
        "error_reason": f.error_reason,
    }


def _finding_from(d: dict[str, Any]) -> Finding:
    at = from_ts(d["at"])
    assert at is not None
    return Finding(**{**d, "at": at})


def _chain(c: ChainSnapshot) -> dict[str, Any]:
    return {
        "name": c.name,
        "steps": [
            {"after": s.after.total_seconds(), "recipients": list(s.recipients), "via": list(s.via)}
            for s in c.steps
        ],
        "repeat": c.repeat,
        "remind_every": _secs(c.remind_every),
        "ack_timeout": _secs(c.ack_timeout),
    }


def _chain_from(d: dict[str, Any]) -> ChainSnapshot:
    return ChainSnapshot(
        name=d["name"],
        steps=tuple(
            ChainStep(timedelta(seconds=s["after"]), tuple(s["recipients"]), tuple(s["via"]))
            for s in d["steps"]
        ),
        repeat=d["repeat"],
        remind_every=_delta(d["remind_every"]),
        ack_timeout=_delta(d["ack_timeout"]),
    )


_INCIDENT_TIMES = (
    "opened_at",
    "condition_began_at",
    "acknowledged_at",
    "first_acknowledged_at",
    "resolved_at",
    "cleared_at",
    "escalation_epoch",
    "last_reminded_at",
    "reopened_at",
)
_INCIDENT_DURATIONS = ("resolve_after", "ack_within", "resolve_within")


def incident_to_json(incident: Incident) -> str:
    d: dict[str, Any] = {
        "id": incident.id,
        "system": incident.system,
        "owner": incident.owner,
        "kind": incident.kind,
        "rule": incident.rule,
        "layers": list(incident.layers),
        "signals": list(incident.signals),
        "state": incident.state,
        "summary": incident.summary,
        "chain": _chain(incident.chain),
        "evidence": [_finding(f) for f in incident.evidence],
        "acknowledged_by": incident.acknowledged_by,
        "resolved_by": incident.resolved_by,
        "escalation_steps_done": incident.escalation_steps_done,
        "runbook": incident.runbook,
        "caused_by": incident.caused_by,
        "held_by": incident.held_by,
        "slo_breached": list(incident.slo_breached),
    }
    for name in _INCIDENT_TIMES:
        d[name] = ts(getattr(incident, name))
    for name in _INCIDENT_DURATIONS:
        d[name] = _secs(getattr(incident, name))
    return json.dumps(d, sort_keys=True)


def incident_from_json(text: str, version: int) -> Incident:
    d = json.loads(text)
    for name in _INCIDENT_TIMES:
        d[name] = from_ts(d.get(name))  # fields added later are absent from older bodies
    for name in _INCIDENT_DURATIONS:
        d[name] = _delta(d[name])
    d["resolve_after"] = d["resolve_after"] or timedelta(0)
    d["layers"] = tuple(d["layers"])
    d["signals"] = tuple(d["signals"])
    d["chain"] = _chain_from(d["chain"])
    d["evidence"] = tuple(_finding_from(f) for f in d["evidence"])
    d["slo_breached"] = tuple(d.get("slo_breached", ()))  # absent from older bodies
    return Incident(**d, version=version)


_STRUCTURED = ("opened_at", "layers", "evidence", "upstreams", "breach", "held_by")


def message_to_json(message: Message) -> str:
    return json.dumps(_message_fields(message), sort_keys=True)


def _message_fields(message: Message) -> dict[str, Any]:
    """``message`` as the JSON-ready object the store keeps (alone, or in a thread's list)."""
    d = {
        name: getattr(message, name)
        for name in Message.__dataclass_fields__
        if name not in _STRUCTURED
    }
    d["opened_at"] = ts(message.opened_at)
    d["layers"] = list(message.layers)
    d["evidence"] = [_fields(e) for e in message.evidence]
    if message.upstreams:
        d["upstreams"] = list(message.upstreams)
    if message.breach is not None:
        d["breach"] = _fields(message.breach)
    if message.held_by is not None:
        d["held_by"] = _fields(message.held_by)
    return d


def _fields(value: Evidence | SloBreach | Upstream) -> dict[str, Any]:
    return {name: getattr(value, name) for name in type(value).__dataclass_fields__}


def message_from_json(text: str) -> Message:
    return _message_from(json.loads(text))


def _message_from(d: dict[str, Any]) -> Message:
    """The message a kept object (see :func:`_message_fields`) stands for."""
    d["opened_at"] = from_ts(d["opened_at"])
    d["layers"] = tuple(d["layers"])
    d["evidence"] = tuple(_evidence_from(e) for e in d["evidence"])
    d["upstreams"] = tuple(d.get("upstreams", ()))  # absent from older bodies, as are these:
    d["breach"] = SloBreach(**d["breach"]) if d.get("breach") else None
    d["held_by"] = Upstream(**d["held_by"]) if d.get("held_by") else None
    return Message(**d)


_EVIDENCE_LINE = re.compile(
    r"^(?P<signal>.+?) \((?P<layer>data|model|engineering|business)\): "
    r"(?P<status>ok|degraded|no_data)(?: — (?P<reason>.*))?$",
    re.DOTALL,
)


def _evidence_from(value: dict[str, Any] | str) -> Evidence:
    """One evidence item of a stored message. A body written before messages carried facts
    holds the line escalation worded (``accuracy (model): degraded — 0.71 < min 0.9``): its
    facts are read back from it; a line of any other shape keeps only its words, as the
    reason of an unnamed signal."""
    if isinstance(value, dict):
        return Evidence(**value)
    line = _EVIDENCE_LINE.match(value)
    if line is None:
        return Evidence(signal="", layer="data", status="degraded", reason=value)
    return Evidence(
        signal=line["signal"],
        layer=line["layer"],  # type: ignore[arg-type]  # the pattern allows layers only
        status=line["status"],  # type: ignore[arg-type]  # and statuses only
        reason=line["reason"] or "",
    )


def thread_to_json(thread: GroupThread, members: Iterable[str] = ()) -> str:
    """What a group's thread lists (its messages), how many of them its root listed when
    first sent, and the group's ``members`` (incident ids), as JSON text; the thread's
    ``ref`` is kept apart."""
    listed = [_message_fields(m) for m in thread.listed]
    kept = {"listed": listed, "root_size": thread.root_size, "members": sorted(members)}
    return json.dumps(kept, sort_keys=True)


def thread_from_json(ref: str | None, text: str) -> GroupThread:
    """The inverse of :func:`thread_to_json`, with the thread's ``ref``. Text kept before
    the root's size was (a bare list of messages) reads as a root of unknown size (0)."""
    kept = _kept_thread(text)
    listed = tuple(_message_from(d) for d in kept["listed"])
    return GroupThread(ref, listed, int(kept["root_size"]))


def members_from_json(text: str, thread: GroupThread) -> frozenset[str]:
    """The group's members kept by :func:`thread_to_json` with ``thread`` (as read from the
    same text). Text kept before members were reads as the incidents ``thread`` lists
    unresolved: those a thread of the time went on for."""
    kept = _kept_thread(text)
    if "members" not in kept:
        return frozenset(m.incident_id for m in thread.listed if m.state != "resolved")
    return frozenset(str(incident) for incident in kept["members"])


def _kept_thread(text: str) -> dict[str, Any]:
    kept = json.loads(text)
    if isinstance(kept, list):
        return {"listed": kept, "root_size": 0}
    return dict(kept)
