"""Charts of one signal's values as SVG, drawn on the server so a page needs no script: axes,
the values as a line (broken at gaps), the reference level, the limits as a band, and a mark
where the change began. Pure: a :class:`Chart` in, SVG text out.

Every piece of text goes through :mod:`xml.etree.ElementTree`, which escapes it.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from driftowner.model import Sample

WIDTH = 640
HEIGHT = 280
_LEFT, _RIGHT, _TOP, _BOTTOM = 60, 16, 14, 34
"""Margins around the plot area, in SVG units: room for the axes' labels."""

_TIME_STEPS = tuple(
    timedelta(seconds=s)
    for s in (
        10,
        30,
        60,
        2 * 60,
        5 * 60,
        10 * 60,
        15 * 60,
        30 * 60,
        3600,
        2 * 3600,
        3 * 3600,
        6 * 3600,
        12 * 3600,
        86400,
        2 * 86400,
        7 * 86400,
    )
)
"""The spacings a time axis may tick at; the first that gives at most ``_MOST_TICKS`` wins."""
_MOST_TICKS = 6


@dataclass(frozen=True, slots=True)
class Marker:
    """A moment marked on the time axis (the incident opening, say)."""

    at: datetime
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    """What one chart shows. Values that are NaN are gaps; so is a pause between two samples
    longer than ``gap_after``."""

    key: str
    """Distinguishes this chart's ids from the other charts of a page."""
    title: str
    description: str
    """What the chart shows, in words (read out by screen readers)."""
    samples: tuple[Sample, ...]
    """Oldest first."""
    start: datetime
    end: datetime
    reference: float | None = None
    lower_limit: float | None = None
    upper_limit: float | None = None
    began_at: datetime | None = None
    """When the change began: marked, and the time after it shaded."""
    markers: tuple[Marker, ...] = ()
    gap_after: timedelta | None = None


@dataclass(frozen=True, slots=True)
class _Scale:
    """Maps times and values to SVG coordinates within the plot area."""

    start: float
    end: float
    low: float
    high: float

    def x(self, at: datetime) -> float:
        span = self.end - self.start
        return _LEFT + (at.timestamp() - self.start) / span * (WIDTH - _LEFT - _RIGHT)

    def y(self, value: float) -> float:
        span = self.high - self.low
        return HEIGHT - _BOTTOM - (value - self.low) / span * (HEIGHT - _TOP - _BOTTOM)


def svg(chart: Chart) -> str:
    """The chart as an ``<svg>`` element, sized by its ``viewBox`` so it scales to its box.

    Raises:
        ValueError: ``end`` is not after ``start``.
    """
    if chart.end <= chart.start:
        raise ValueError(f"a chart's end ({chart.end}) must be after its start ({chart.start})")
    shown = [s for s in chart.samples if chart.start <= s.at <= chart.end]
    low, high = value_range(
        [s.value for s in shown], chart.reference, chart.lower_limit, chart.upper_limit
    )
    scale = _Scale(chart.start.timestamp(), chart.end.timestamp(), low, high)
    root = ET.Element(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "viewBox": f"0 0 {WIDTH} {HEIGHT}",
            "role": "img",
            "aria-labelledby": f"{chart.key}-title {chart.key}-desc",
            "class": "chart",
        },
    )
    ET.SubElement(root, "title", {"id": f"{chart.key}-title"}).text = chart.title
    ET.SubElement(root, "desc", {"id": f"{chart.key}-desc"}).text = chart.description
    _band(root, chart, scale)
    _changed(root, chart, scale)
    _axes(root, chart, scale)
    if chart.reference is not None:
        _level(root, scale, chart.reference, "reference", "reference")
    for limit in (chart.lower_limit, chart.upper_limit):
        if limit is not None:
            _level(root, scale, limit, "limit", "limit")
    for marker in chart.markers:
        _marker(root, scale, marker, "marker")
    if chart.began_at is not None and chart.start <= chart.began_at <= chart.end:
        _marker(root, scale, Marker(chart.began_at, "change began"), "change-start")
    _series(root, scale, shown, chart.gap_after)
    return ET.tostring(root, encoding="unicode")


def value_range(
    values: Sequence[float],
    reference: float | None,
    lower_limit: float | None,
    upper_limit: float | None,
) -> tuple[float, float]:
    """The value axis's bounds: every finite value, the reference and the limits, with a
    margin; a flat series gets a span around its one level."""
    levels = [
        v
        for v in (*values, reference, lower_limit, upper_limit)
        if v is not None and math.isfinite(v)
    ]
    if not levels:
        return 0.0, 1.0
    low, high = min(levels), max(levels)
    if high - low <= 1e-12 * max(1.0, abs(high)):
        half = abs(high) * 0.05 or 0.5
        return low - half, high + half
    margin = (high - low) * 0.08
    return low - margin, high + margin


def value_ticks(low: float, high: float, most: int = 6) -> list[float]:
    """Round values within ``[low, high]`` to label the value axis: the finest steps of 1, 2
    or 5 times a power of ten that give at most ``most`` of them."""
    power = 10 ** math.floor(math.log10((high - low) / most))
    for step in (m * power for m in (1, 2, 5, 10, 20, 50)):
        # A hair of slack so 1.9 / 0.05 counts as 38, not 37.99999.
        first = math.ceil(low / step - 1e-9)
        last = math.floor(high / step + 1e-9)
        if last - first + 1 <= most:
            return [round(i * step, 12) for i in range(first, last + 1)]
    raise AssertionError("a step of 50 powers always fits")  # pragma: no cover


def time_ticks(start: datetime, end: datetime) -> tuple[list[datetime], timedelta]:
    """Round moments within ``[start, end]`` to label the time axis, and their spacing."""
    span = end - start
    step = next((s for s in _TIME_STEPS if span / s <= _MOST_TICKS), None)
    if step is None:
        step = _TIME_STEPS[-1] * math.ceil(span / (_TIME_STEPS[-1] * _MOST_TICKS))
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    first = epoch + step * math.ceil((start - epoch) / step)
    ticks = []
    at = first
    while at <= end:
        ticks.append(at)
        at += step
    return ticks, step


def thin(samples: Sequence[Sample], most: int) -> tuple[Sample, ...]:
    """At most ``most`` samples that keep the series' shape: in each of ``most // 2`` runs of
    consecutive samples, the lowest and the highest, in time order (a spike survives)."""
    if len(samples) <= most:
        return tuple(samples)
    runs = max(1, most // 2)
    kept: list[Sample] = []
    for i in range(runs):
        run = samples[i * len(samples) // runs : (i + 1) * len(samples) // runs]
        finite = [s for s in run if _finite(s.value)]
        if not finite:
            kept.append(run[0])
            continue
        lowest = min(finite, key=lambda s: s.value)
        highest = max(finite, key=lambda s: s.value)
        kept.extend(sorted({lowest, highest}, key=lambda s: s.at))
    return tuple(kept)


def number(value: float) -> str:
    """A value as a chart labels it: four significant digits."""
    return f"{value:.4g}"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _band(root: ET.Element, chart: Chart, scale: _Scale) -> None:
    """The range within the limits, shaded (open-ended on a side without a limit)."""
    if chart.lower_limit is None and chart.upper_limit is None:
        return
    top = _TOP if chart.upper_limit is None else scale.y(chart.upper_limit)
    bottom = HEIGHT - _BOTTOM if chart.lower_limit is None else scale.y(chart.lower_limit)
    ET.SubElement(
        root,
        "rect",
        {
            "class": "band",
            "x": _n(_LEFT),
            "y": _n(top),
            "width": _n(WIDTH - _LEFT - _RIGHT),
            "height": _n(max(0.0, bottom - top)),
        },
    ).append(_title("within the limits"))


def _changed(root: ET.Element, chart: Chart, scale: _Scale) -> None:
    """The time since the change began, shaded."""
    if chart.began_at is None or not chart.start <= chart.began_at <= chart.end:
        return
    x = scale.x(chart.began_at)
    ET.SubElement(
        root,
        "rect",
        {
            "class": "changed",
            "x": _n(x),
            "y": _n(_TOP),
            "width": _n(WIDTH - _RIGHT - x),
            "height": _n(HEIGHT - _TOP - _BOTTOM),
        },
    )


def _axes(root: ET.Element, chart: Chart, scale: _Scale) -> None:
    """The frame, value ticks with grid lines, and time ticks (UTC)."""
    axes = ET.SubElement(root, "g", {"class": "axes"})
    bottom, right = HEIGHT - _BOTTOM, WIDTH - _RIGHT
    ET.SubElement(axes, "path", {"d": f"M{_LEFT},{_TOP} V{bottom} H{right}", "class": "frame"})
    for value in value_ticks(scale.low, scale.high):
        y = _n(scale.y(value))
        ET.SubElement(axes, "line", {"x1": _n(_LEFT), "x2": _n(right), "y1": y, "y2": y})
        label = ET.SubElement(axes, "text", {"x": _n(_LEFT - 6), "y": y, "class": "y-tick"})
        label.text = number(value)
    ticks, step = time_ticks(chart.start, chart.end)
    daily = step >= timedelta(days=1)
    for at in ticks:
        x = _n(scale.x(at))
        ET.SubElement(axes, "line", {"x1": x, "x2": x, "y1": _n(bottom), "y2": _n(bottom + 4)})
        label = ET.SubElement(axes, "text", {"x": x, "y": _n(bottom + 22), "class": "x-tick"})
        label.text = at.strftime("%b %d" if daily else "%H:%M")


def _level(root: ET.Element, scale: _Scale, value: float, kind: str, name: str) -> None:
    y = _n(scale.y(value))
    line = ET.SubElement(
        root, "line", {"class": kind, "x1": _n(_LEFT), "x2": _n(WIDTH - _RIGHT), "y1": y, "y2": y}
    )
    line.append(_title(f"{name} {number(value)}"))


def _marker(root: ET.Element, scale: _Scale, marker: Marker, kind: str) -> None:
    x = _n(scale.x(marker.at))
    group = ET.SubElement(root, "g", {"class": kind})
    group.append(_title(f"{marker.label} {marker.at.strftime('%Y-%m-%d %H:%M:%S UTC')}"))
    ET.SubElement(group, "line", {"x1": x, "x2": x, "y1": _n(_TOP), "y2": _n(HEIGHT - _BOTTOM)})
    text = ET.SubElement(group, "text", {"x": _n(scale.x(marker.at) + 3), "y": _n(_TOP + 10)})
    text.text = marker.label


def _series(
    root: ET.Element, scale: _Scale, samples: Sequence[Sample], gap_after: timedelta | None
) -> None:
    """The values as one path, a new stroke after each gap; a value alone between gaps is a
    dot (a line needs two)."""
    runs: list[list[Sample]] = [[]]
    previous: Sample | None = None
    for sample in samples:
        paused = (
            previous is not None and gap_after is not None and sample.at - previous.at > gap_after
        )
        if not _finite(sample.value) or paused:
            runs.append([])
        if _finite(sample.value):
            runs[-1].append(sample)
        previous = sample
    strokes = [run for run in runs if len(run) > 1]
    if strokes:
        d = " ".join(
            "M" + " L".join(f"{_n(scale.x(s.at))},{_n(scale.y(s.value))}" for s in run)
            for run in strokes
        )
        ET.SubElement(root, "path", {"class": "series", "d": d})
    for run in runs:
        if len(run) == 1:
            ET.SubElement(
                root,
                "circle",
                {
                    "class": "point",
                    "cx": _n(scale.x(run[0].at)),
                    "cy": _n(scale.y(run[0].value)),
                    "r": "2.5",
                },
            )


def _title(text: str) -> ET.Element:
    element = ET.Element("title")
    element.text = text
    return element


def _n(value: float) -> str:
    """A coordinate with one decimal, no trailing zeros."""
    return f"{value:.1f}".rstrip("0").rstrip(".")
