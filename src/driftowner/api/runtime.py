"""What the HTTP layer needs from the running daemon, and how each source fared lately (for the
status page)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from driftowner.config import Config
from driftowner.links import LinkSigner
from driftowner.metrics import Metrics
from driftowner.sources import Source
from driftowner.store import Store


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """How one source fared at the last evaluation, and its last error however old."""

    up: bool
    """What ``driftowner_source_up`` says."""
    checked_at: datetime
    error: str | None = None
    """An error of the last evaluation (a query failed), or None when every query answered."""
    last_error: str | None = None
    last_error_at: datetime | None = None


def observe_sources(
    previous: Mapping[str, SourceHealth],
    config: Config,
    up: Mapping[str, bool],
    failing: Mapping[tuple[str, str], str],
    now: datetime,
) -> dict[str, SourceHealth]:
    """Every configured source's health after one evaluation. Pure.

    Args:
        previous: The health before it (keeps each source's last error).
        config: Names each signal's source.
        up: Source name → whether it answered properly (``driftowner_source_up``).
        failing: (system, signal) → error, for every query that failed.
        now: When the evaluation ran.
    """
    errors: dict[str, str] = {}
    for (system, signal), error in sorted(failing.items()):
        spec = config.systems.get(system)
        source = spec.signals[signal].source if spec and signal in spec.signals else None
        if source is not None:
            errors.setdefault(source, error)
    health = {}
    for name in config.sources:
        before = previous.get(name)
        now_failing = errors.get(name)
        if now_failing is None and before is not None:
            last, last_at = before.last_error, before.last_error_at
        else:
            last, last_at = now_failing, (now if now_failing is not None else None)
        health[name] = SourceHealth(
            up=up.get(name, True),
            checked_at=now,
            error=now_failing,
            last_error=last,
            last_error_at=last_at,
        )
    return health


@dataclass
class Runtime:
    """What the HTTP layer needs from the running daemon. ``config`` and ``sources`` change on
    reload; ``findings`` and ``source_health`` at each evaluation."""

    config: Config
    store: Store
    metrics: Metrics
    clock: Callable[[], datetime]
    links: LinkSigner
    healthy: Callable[[], bool]
    reload: Callable[[], Any] | None = None
    findings: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    """system → signal → its last finding's status, value and reason."""
    sources: Mapping[str, Source] = field(default_factory=dict)
    """The sources the daemon reads: the incident page reads a signal's history through them."""
    source_health: dict[str, SourceHealth] = field(default_factory=dict)
    """Source name → how it fared at the last evaluation (empty until one ran)."""
