"""Silences and maintenance windows: what holds pages. A silence is made by a person (CLI or
HTTP) and kept in the store; a maintenance window is a recurring silence the config declares.
The pure part (which windows hold at ``now``, what a valid silence is) takes ``now``; the
commands (add, list, expire) read and write the store, recording who acted and through what.
Which incidents a hold stops from paging is decided by :mod:`driftowner.escalation`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from driftowner.clock import rfc3339
from driftowner.config import Config, format_duration, parse_duration
from driftowner.escalation import maintenance_silences
from driftowner.model import Silence, Via
from driftowner.service import MAX_NAME_CHARS, MAX_TEXT_CHARS, BadRequest, NotFound, text_problem
from driftowner.store import Store

MAX_SILENCE = timedelta(days=30)
"""The longest a silence may hold pages: past a month, a system nobody should hear about is
a system to remove from the config, not to silence."""

# --- pure: what a valid silence is ---------------------------------------------------


def _text(field: str, value: str, limit: int) -> None:
    problem = text_problem(value, limit)
    if problem is not None:
        raise BadRequest(field, f"{field}: {problem}")


def make(
    config: Config,
    *,
    system: str | None,
    owner: str | None,
    labels: Mapping[str, str],
    duration: str,
    reason: str,
    by: str,
    via: Via,
    now: datetime,
    new_id: str,
) -> Silence:
    """A silence from what a person asked for, every field checked.

    Raises:
        BadRequest: naming the field at fault: not exactly one of system, owner, labels; an
            unknown system or owner; a matcher that covers no system; a duration that does
            not parse, is not positive or is longer than :data:`MAX_SILENCE`; an empty or
            invalid reason; an unknown ``by``.
    """
    _text("reason", reason, MAX_TEXT_CHARS)
    if not reason.strip():
        raise BadRequest("reason", "say why the pages are held")
    _text("by", by, MAX_NAME_CHARS)
    if by not in config.owners:
        raise BadRequest("by", f"unknown owner {by!r} (known: {', '.join(sorted(config.owners))})")
    given = [
        name for name, value in (("system", system), ("owner", owner), ("labels", labels)) if value
    ]
    if len(given) != 1:
        raise BadRequest(
            "system",
            "name exactly one of system, owner or labels"
            + (f" (got {', '.join(given)})" if given else ""),
        )
    if system is not None:
        _text("system", system, MAX_NAME_CHARS)
        if system not in config.systems:
            raise BadRequest("system", f"unknown system {system!r}")
    if owner is not None:
        _text("owner", owner, MAX_NAME_CHARS)
        if owner not in config.owners:
            raise BadRequest("owner", f"unknown owner {owner!r}")
    for key, value in labels.items():
        _text("labels", f"{key}={value}", MAX_NAME_CHARS)
    try:
        length = parse_duration(duration)
    except ValueError as error:
        raise BadRequest("for", f"{error}") from error
    if not timedelta(0) < length <= MAX_SILENCE:
        raise BadRequest(
            "for", f"must be longer than 0s and at most {format_duration(MAX_SILENCE)}"
        )
    silence = Silence(
        id=new_id,
        starts_at=now,
        ends_at=now + length,
        reason=reason,
        by=by,
        via=via,
        system=system,
        owner=owner,
        labels=tuple(sorted(labels.items())),
    )
    if not covered(config, silence):
        raise BadRequest("labels", f"{silence.matcher} covers no configured system")
    return silence


def covered(config: Config, silence: Silence) -> list[str]:
    """The configured systems a silence covers, in config order."""
    return [
        name
        for name, system in config.systems.items()
        if silence.covers(name, system.owner, system.labels)
    ]


def parse_labels(pairs: Iterable[str]) -> dict[str, str]:
    """``["team=risk", "tier=1"]`` → ``{"team": "risk", "tier": "1"}``.

    Raises:
        BadRequest: a pair without ``=`` or with an empty name.
    """
    labels: dict[str, str] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise BadRequest("labels", f"expected name=value, got {pair!r}")
        labels[key] = value
    return labels


def silence_json(silence: Silence, now: datetime, config: Config | None = None) -> dict[str, Any]:
    """The public JSON shape of a silence (CLI ``--json`` and the HTTP API)."""
    body: dict[str, Any] = {
        "id": silence.id,
        "system": silence.system,
        "owner": silence.owner,
        "labels": dict(silence.labels),
        "matcher": silence.matcher,
        "starts_at": rfc3339(silence.starts_at),
        "ends_at": rfc3339(silence.ends_at),
        "reason": silence.reason,
        "by": silence.by,
        "via": silence.via,
        "expired_at": rfc3339(silence.expired_at),
        "expired_by": silence.expired_by,
        "active": silence.active(now),
    }
    if config is not None:
        body["systems"] = covered(config, silence)
    return body


# --- commands: add, list, expire ---------------------------------------------------------------


def add(store: Store, silence: Silence) -> Silence:
    """Keep a silence made by :func:`make`; the next escalation tick holds what it covers."""
    store.add_silence(silence)
    return silence


def listed(store: Store, config: Config, now: datetime, *, every: bool = False) -> list[Silence]:
    """The silences holding at ``now`` (with ``every``, also those ended or expired), then
    the maintenance windows holding now."""
    kept = store.silences(None if every else now)
    return [*kept, *maintenance_silences(config, now)]


def expire(store: Store, silence_id: str, by: str, via: Via, now: datetime) -> Silence:
    """End a silence now: the next escalation tick pages the owners of its still-open
    incidents, from step one.

    Raises:
        NotFound: no silence has that id (a maintenance window is ended in the config).
        BadRequest: ``by`` is not valid text.
    """
    _text("by", by, MAX_NAME_CHARS)
    silence = store.expire_silence(silence_id, now, by)
    if silence is None:
        hint = (
            " (a maintenance window ends in the config)"
            if silence_id.startswith("maintenance-")
            else ""
        )
        raise NotFound(f"no silence {silence_id!r}{hint}")
    return silence
