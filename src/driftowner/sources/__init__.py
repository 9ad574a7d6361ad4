"""The source protocol every metric source implements, the factory that builds one from config,
and the small helpers the sources share (UTC handling, step clamping, dropping NaN/Inf).

A source answers one question: the samples of one series between two instants. It never raises
for its own trouble; every failure comes back as a :class:`~driftowner.model.SourceResult` with
``error``, a bounded ``error_reason`` and ``source_up``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from driftowner.config import (
    FileSourceConfig,
    PrometheusSourceConfig,
    SourceConfig,
)
from driftowner.model import Sample, SourceResult

MAX_POINTS = 11_000
"""Most samples a range read asks for (Prometheus refuses more points per series)."""

ERROR_REASONS = (
    "unreachable",
    "timeout",
    "http_status",
    "bad_response",
    "query_error",
    "multiple_series",
    "non_finite",
    "file_missing",
    "file_invalid",
)
"""Every ``error_reason`` a source may return (the label values of
``driftowner_source_errors_total{reason}``)."""


class Source(Protocol):
    """Where samples come from. Implementations: prometheus, file, demo."""

    name: str

    async def read(
        self, query: str, start: datetime, end: datetime, step: timedelta
    ) -> SourceResult:
        """The samples of one series within ``[start, end]``, oldest first, in UTC.

        ``start == end`` is an instant read: at most one sample, the value at ``end``.
        Never raises for source trouble: failures come back as a result with ``error`` set.
        """
        ...

    async def aclose(self) -> None:
        """Release what the source holds (HTTP connections); it may be read again afterwards."""
        ...


def build_source(
    name: str,
    config: SourceConfig,
    *,
    clock: Callable[[], datetime],
) -> Source:
    """Build the source a config entry describes. Does no I/O.

    Args:
        name: The source's name in the config (``sources.<name>``), used in error messages.
        config: Its validated config.
        clock: Now, in UTC; the demo source's simulation starts at ``clock()``.

    Returns:
        A source ready to read; HTTP clients and files are opened on the first read.
    """
    # Imported here: the implementations import the helpers of this module.
    if isinstance(config, PrometheusSourceConfig):
        from driftowner.sources.prometheus import PrometheusSource

        return PrometheusSource(
            name,
            config.url,
            timeout=config.timeout,
            username=config.username,
            password=config.password,
            bearer_token=config.bearer_token,
        )
    if isinstance(config, FileSourceConfig):
        from driftowner.sources.file import FileSource

        return FileSource(name, config.path)
    from driftowner.sources.demo import DemoSource

    return DemoSource(
        name,
        seed=config.seed,
        started_at=as_utc(clock()),
        drift_starts_after=config.drift_starts_after,
        drift_lasts=config.drift_lasts,
    )


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def clamp_step(start: datetime, end: datetime, step: timedelta) -> timedelta:
    """The step to use for a range read: ``step``, widened so the read asks for at most
    :data:`MAX_POINTS` points, and never shorter than one millisecond."""
    step = max(step, timedelta(milliseconds=1))
    span = end - start
    if span <= timedelta(0):
        return step
    # ``span / step`` intervals give ``span / step + 1`` points.
    smallest = span / (MAX_POINTS - 1)
    if step < smallest:
        step = timedelta(seconds=math.ceil(smallest.total_seconds() * 1000) / 1000)
    return step


def finite_result(source: str, samples: Iterable[Sample]) -> SourceResult:
    """A successful result of ``samples`` with NaN and ±Inf dropped.

    Args:
        source: How errors name the source (``prometheus source 'prom'``).
        samples: What the source read, oldest first.

    Returns:
        The finite samples; when there were samples and none of them is finite, the
        ``non_finite`` error instead (the source answered, so it stays up).
    """
    given = list(samples)
    finite = tuple(sample for sample in given if math.isfinite(sample.value))
    if given and not finite:
        return SourceResult(
            error=f"{source}: the query returned only NaN/Inf values",
            error_reason="non_finite",
            source_up=True,
        )
    return SourceResult(samples=finite)


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line, whitespace collapsed, cut to about ``limit`` characters."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        return flat[: limit - 1].rstrip() + "…"
    return flat
