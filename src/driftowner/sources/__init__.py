"""The source protocol every metric source implements, the factory that builds one from config,
and the small helpers the sources share (UTC handling, step clamping, dropping NaN/Inf).

A source answers one question: the samples of one series between two instants. It never raises
for its own trouble; every failure comes back as a :class:`~driftowner.model.SourceResult` with
``error``, a bounded ``error_reason`` and ``source_up``.

Some sources can also answer a second, optional question (:class:`LabelledSource`): the series
of one query split by the value of one label, so a signal template with a ``system_label`` costs
one query per cycle rather than one per system. :func:`supports_labels` tells which can.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from driftowner.config import (
    AlertmanagerSourceConfig,
    FileSourceConfig,
    PrometheusSourceConfig,
    SourceConfig,
)
from driftowner.model import Sample, SourceResult

if TYPE_CHECKING:
    from driftowner.sources.alertmanager import AlertLog

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
    """Where samples come from. Implementations: prometheus, file, demo, alertmanager."""

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


@dataclass(frozen=True, slots=True)
class LabelledResult:
    """One query's series split by the value of one label: value -> samples (oldest first).

    ``error``, ``error_reason`` and ``source_up`` mean what they mean on
    :class:`~driftowner.model.SourceResult`; with ``error`` set, ``series`` is empty.

    A value whose samples were all NaN/Inf keeps its key with an empty tuple (a missing key means
    the query returned no series for that value). A value that several series share (the query
    did not aggregate by the label) is left out of ``series`` and named in ``ambiguous``; when
    every value is ambiguous the whole result is the ``multiple_series`` error. Series without the
    label are ignored and counted in ``unlabelled``; when no series has it, the whole result is a
    ``query_error``.
    """

    series: Mapping[str, tuple[Sample, ...]]
    error: str | None = None
    error_reason: str | None = None
    """A short, bounded label for ``driftowner_source_errors_total{reason}``."""
    source_up: bool = True
    unlabelled: int = 0
    """Series without the label (ignored, counted)."""
    ambiguous: tuple[str, ...] = ()
    """Label values shared by several series, sorted; none of them is in ``series``."""

    @classmethod
    def failed(
        cls, result: SourceResult, *, unlabelled: int = 0, ambiguous: tuple[str, ...] = ()
    ) -> LabelledResult:
        """The failed result carrying ``result``'s error, reason and ``source_up``."""
        return cls(
            series={},
            error=result.error,
            error_reason=result.error_reason,
            source_up=result.source_up,
            unlabelled=unlabelled,
            ambiguous=ambiguous,
        )

    def share(self, label: str, value: str) -> SourceResult:
        """One system's share of a template query: its own series (none: no data), an
        ambiguity error, or the query's failure."""
        if self.error is not None:
            return SourceResult(
                error=self.error, error_reason=self.error_reason, source_up=self.source_up
            )
        if value in self.ambiguous:
            return SourceResult(
                error=(
                    f"several series have {label}={value!r}: aggregate the template's query "
                    f"by {label}"
                ),
                error_reason="multiple_series",
            )
        if value in self.series and not self.series[value]:
            # The system's series exists but held only NaN/Inf: a query problem, exactly as
            # for a plain signal; never a silence that pages as stale.
            return SourceResult(
                error=f"the series with {label}={value!r} has only NaN/Inf values",
                error_reason="non_finite",
            )
        return SourceResult(samples=self.series.get(value, ()))


@runtime_checkable
class LabelledSource(Protocol):
    """A source that can split one query's series by a label (optional; see
    :func:`supports_labels`). Implementations: prometheus."""

    name: str

    async def read_by_label(
        self, query: str, start: datetime, end: datetime, step: timedelta, label: str
    ) -> LabelledResult:
        """The series of ``query`` within ``[start, end]``, keyed by their value of ``label``.

        ``start == end`` is an instant read: at most one sample per series, the value at
        ``end``. Never raises for source trouble: failures come back with ``error`` set, exactly
        as :meth:`Source.read` reports them.
        """
        ...


@dataclass(frozen=True, slots=True)
class LabelledValues:
    """An instant read split by one label, as arrays (the steady path of a signal template):
    per series whose label value the reader's index knows, its row in that index, its value
    (NaN/Inf kept) and its time (Unix seconds, as the source sent it). Every series has the
    label and no value is shared by two series: otherwise the source answers a
    :class:`LabelledResult`, which says what is wrong."""

    rows: NDArray[np.int64]
    values: NDArray[np.float64]
    stamps: NDArray[np.float64]
    others: tuple[str, ...] = ()
    """The label values of the series the index does not know, sorted."""


@runtime_checkable
class ValuesSource(Protocol):
    """A source that can answer an instant read split by a label as arrays (optional; see
    :func:`supports_values`). Implementations: prometheus."""

    name: str

    async def read_values_by_label(
        self, query: str, at: datetime, label: str, index: Mapping[str, int]
    ) -> LabelledValues | LabelledResult:
        """``query`` evaluated at ``at``, its series keyed by their ``label`` value's row in
        ``index``; a :class:`LabelledResult` (as :meth:`LabelledSource.read_by_label` gives
        it, errors included) when the answer is anything but such a clean vector."""
        ...


def supports_values(source: object) -> bool:
    """Whether ``source`` can answer :meth:`ValuesSource.read_values_by_label`."""
    return isinstance(source, ValuesSource)


def supports_labels(source: object) -> bool:
    """Whether ``source`` can answer :meth:`LabelledSource.read_by_label`."""
    return isinstance(source, LabelledSource)


def reads_any_age(source: object) -> bool:
    """Whether an instant read of ``source`` answers its newest sample however old, with the
    sample's own time (a file: ``stale_after`` judges the age), rather than only a recent one
    stamped at the query time (Prometheus's lookback delta). Sources say so with a true
    ``instant_reads_any_age`` attribute."""
    return getattr(source, "instant_reads_any_age", False) is True


def build_source(
    name: str,
    config: SourceConfig,
    *,
    clock: Callable[[], datetime],
    alerts: AlertLog | None = None,
) -> Source:
    """Build the source a config entry describes. Does no I/O.

    Args:
        name: The source's name in the config (``sources.<name>``), used in error messages.
        config: Its validated config.
        clock: Now, in UTC; the demo source's simulation starts at ``clock()``.
        alerts: Where the webhook keeps received alerts (the store); an alertmanager source
            reads them there.

    Returns:
        A source ready to read; HTTP clients and files are opened on the first read.

    Raises:
        ValueError: an alertmanager source without ``alerts`` to read.
    """
    # Imported here: the implementations import the helpers of this module.
    if isinstance(config, AlertmanagerSourceConfig):
        from driftowner.sources.alertmanager import AlertmanagerSource

        if alerts is None:
            raise ValueError(f"alertmanager source {name!r} needs the store to read alerts from")
        return AlertmanagerSource(name, alerts)
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
    finite = finite_samples(given)
    if given and not finite:
        return SourceResult(
            error=f"{source}: the query returned only NaN/Inf values",
            error_reason="non_finite",
            source_up=True,
        )
    return SourceResult(samples=finite)


def finite_samples(samples: Iterable[Sample]) -> tuple[Sample, ...]:
    """``samples`` without NaN and ±Inf, in their order."""
    return tuple(sample for sample in samples if math.isfinite(sample.value))


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line, whitespace collapsed, cut to about ``limit`` characters."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        return flat[: limit - 1].rstrip() + "…"
    return flat
