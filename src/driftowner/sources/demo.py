"""The demo source: simulated metrics of a fraud-scoring system whose users stop acting on its
alerts while the model itself stays accurate ("accuracy fine, adoption falling").

Every value is a pure function of (seed, series, time): the noise of each series comes from a
hash of the seed, the series and the whole second, so two reads of the same instant agree, two
processes with the same seed agree, and the past is defined too (a baseline has history on the
first evaluation).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from driftowner.model import Sample, SourceResult
from driftowner.sources import as_utc, clamp_step

DEMO_SERIES = ("accuracy", "adoption", "null_rate")
"""The series the demo source has: model, business and data layer."""

RAMP = timedelta(seconds=10)
"""How long adoption takes to fall when the drift starts, and to recover when it ends."""

ADOPTION_NORMAL = 0.62
ADOPTION_DRIFTED = 0.30

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class _Shape:
    centre: float
    spread: float
    """Noise is uniform within ``centre ± spread``."""


_SHAPES = {
    "accuracy": _Shape(centre=0.94, spread=0.005),
    "adoption": _Shape(centre=ADOPTION_NORMAL, spread=0.01),
    "null_rate": _Shape(centre=0.01, spread=0.002),
}


class DemoSource:
    """Simulated fraud-scoring metrics.

    ``accuracy`` (model layer) stays near 0.94 and ``null_rate`` (data layer) near 0.01
    throughout. ``adoption`` (business layer) sits near 0.62, falls over :data:`RAMP` to about
    0.30 at ``started_at + drift_starts_after``, stays there for ``drift_lasts``, then recovers
    over :data:`RAMP`.

    Args:
        name: The source's name in the config, used in error messages.
        seed: Chooses the noise; the same seed gives the same values.
        started_at: When the simulation began (the daemon's start); values before it are normal.
        drift_starts_after: From ``started_at`` to the start of the adoption drop.
        drift_lasts: From the start of the drop to the start of the recovery.
    """

    def __init__(
        self,
        name: str,
        *,
        seed: int,
        started_at: datetime,
        drift_starts_after: timedelta,
        drift_lasts: timedelta,
    ) -> None:
        self.name = name
        self.seed = seed
        self.started_at = as_utc(started_at)
        self.drift_starts_at = self.started_at + drift_starts_after
        self.drift_ends_at = self.drift_starts_at + drift_lasts

    def __repr__(self) -> str:
        return f"DemoSource(name={self.name!r}, seed={self.seed})"

    def value(self, series: str, at: datetime) -> float:
        """The value of ``series`` at ``at``.

        Raises:
            KeyError: ``series`` is not one of :data:`DEMO_SERIES`.
        """
        shape = _SHAPES[series]
        at = as_utc(at)
        centre = shape.centre
        if series == "adoption":
            centre -= (ADOPTION_NORMAL - ADOPTION_DRIFTED) * self._drifted(at)
        second = (at - _EPOCH) // timedelta(seconds=1)
        return centre + shape.spread * _noise(self.seed, series, second)

    async def read(
        self, query: str, start: datetime, end: datetime, step: timedelta
    ) -> SourceResult:
        """The series ``query``: its value at ``end`` for an instant read, else one sample per
        ``step`` at the multiples of ``step`` (since the Unix epoch) within ``[start, end]``."""
        series = query.strip()
        if series not in _SHAPES:
            return SourceResult(
                error=(
                    f"demo source {self.name!r} has no series {series!r} "
                    f"(has {', '.join(DEMO_SERIES)})"
                ),
                error_reason="query_error",
                source_up=True,
            )
        start, end = as_utc(start), as_utc(end)
        if start == end:
            return SourceResult(samples=(Sample(at=end, value=self.value(series, end)),))
        step_us = clamp_step(start, end, step) // _MICROSECOND
        first = -(-((start - _EPOCH) // _MICROSECOND) // step_us) * step_us
        last = (end - _EPOCH) // _MICROSECOND
        samples = []
        for offset in range(first, last + 1, step_us):
            at = _EPOCH + timedelta(microseconds=offset)
            samples.append(Sample(at=at, value=self.value(series, at)))
        return SourceResult(samples=tuple(samples))

    async def aclose(self) -> None:
        """Nothing to release."""

    def _drifted(self, at: datetime) -> float:
        """How far adoption has fallen at ``at``: 0 normal, 1 fully drifted."""
        falling = _fraction(at - self.drift_starts_at)
        recovering = _fraction(at - self.drift_ends_at)
        return min(1.0, max(0.0, falling - recovering))


def _fraction(elapsed: timedelta) -> float:
    """How much of :data:`RAMP` has passed after ``elapsed`` (0 to 1)."""
    return min(1.0, max(0.0, elapsed / RAMP))


def _noise(seed: int, series: str, second: int) -> float:
    """Uniform noise in ``[-1, 1)`` for one series at one whole second, the same everywhere."""
    digest = hashlib.blake2b(f"{seed}:{series}:{second}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**63 - 1.0
