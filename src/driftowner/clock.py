"""Time at the edges: the real clock the shell passes to the core, and the one spelling of a
timestamp in every output (RFC 3339, UTC, ``Z``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


def utcnow() -> datetime:
    """Now, timezone-aware UTC: the clock the daemon and the CLI pass to the core."""
    return datetime.now(UTC)


@overload
def rfc3339(at: datetime) -> str: ...
@overload
def rfc3339(at: None) -> None: ...
def rfc3339(at: datetime | None) -> str | None:
    """``at`` as RFC 3339 in UTC with a ``Z`` (naive times are taken as UTC); None stays None."""
    if at is None:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
