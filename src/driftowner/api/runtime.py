"""What the HTTP layer needs from the running daemon."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from driftowner.config import Config
from driftowner.links import LinkSigner
from driftowner.metrics import Metrics
from driftowner.store import Store


@dataclass
class Runtime:
    """What the HTTP layer needs from the running daemon. ``config`` changes on reload."""

    config: Config
    store: Store
    metrics: Metrics
    clock: Callable[[], datetime]
    links: LinkSigner
    healthy: Callable[[], bool]
    reload: Callable[[], Any] | None = None
    findings: dict[str, dict[str, Any]] = field(default_factory=dict)
