"""The SVG chart builder: a series, its reference, limits and change start in, SVG with the
expected elements out; gaps, a flat series, thinning and escaping."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from driftowner.chart import (
    HEIGHT,
    Chart,
    Marker,
    svg,
    thin,
    time_ticks,
    value_range,
    value_ticks,
)
from driftowner.model import Sample

NS = {"s": "http://www.w3.org/2000/svg"}
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def minutes(values: list[float], start: datetime = T0) -> tuple[Sample, ...]:
    return tuple(Sample(start + timedelta(minutes=i), v) for i, v in enumerate(values))


def chart(**changes: object) -> Chart:
    fields: dict[str, object] = {
        "key": "c1",
        "title": "adoption",
        "description": "adoption over the evidence window",
        "samples": minutes([0.62, 0.61, 0.63, 0.45, 0.31, 0.30]),
        "start": T0,
        "end": T0 + timedelta(minutes=5),
    }
    fields.update(changes)
    return Chart(**fields)  # type: ignore[arg-type]


def parsed(chart_: Chart) -> ET.Element:
    return ET.fromstring(svg(chart_))


def strokes(root: ET.Element) -> list[str]:
    """The series path's strokes (one per ``M``)."""
    paths = root.findall("s:path[@class='series']", NS)
    if not paths:
        return []
    return [part for part in paths[0].attrib["d"].split("M") if part.strip()]


def test_a_series_with_reference_limits_and_change_start_draws_each() -> None:
    """A series, a reference, two limits, a change start and an opening mark give: an
    accessible title and description, a limit band, a reference line, two limit lines, one
    stroke through six points, the change-start mark with the time after it shaded, and the
    opening marker."""
    root = parsed(
        chart(
            reference=0.62,
            lower_limit=0.496,
            upper_limit=0.744,
            began_at=T0 + timedelta(minutes=3),
            markers=(Marker(T0 + timedelta(minutes=4), "opened"),),
        )
    )
    assert root.attrib["role"] == "img"
    assert root.attrib["aria-labelledby"] == "c1-title c1-desc"
    assert root.find("s:title", NS).text == "adoption"  # type: ignore[union-attr]
    assert root.find("s:desc", NS).text == "adoption over the evidence window"  # type: ignore[union-attr]
    assert len(root.findall("s:rect[@class='band']", NS)) == 1
    assert len(root.findall("s:rect[@class='changed']", NS)) == 1
    reference = root.findall("s:line[@class='reference']", NS)
    assert [r.find("s:title", NS).text for r in reference] == ["reference 0.62"]  # type: ignore[union-attr]
    assert len(root.findall("s:line[@class='limit']", NS)) == 2
    assert len(strokes(root)) == 1
    assert len(strokes(root)[0].split("L")) == 6
    change = root.find("s:g[@class='change-start']", NS)
    assert change is not None
    assert change.find("s:text", NS).text == "change began"  # type: ignore[union-attr]
    assert "2026-03-01 12:03:00 UTC" in change.find("s:title", NS).text  # type: ignore[arg-type, union-attr]
    opened = root.find("s:g[@class='marker']", NS)
    assert opened is not None and opened.find("s:text", NS).text == "opened"  # type: ignore[union-attr]


def test_the_change_start_is_left_of_the_drop_and_the_band_between_the_limits() -> None:
    """Coordinates mean what they show: the change-start line sits at its time between the
    first and last points, and the band's top and bottom are the limits' lines."""
    root = parsed(chart(lower_limit=0.5, upper_limit=0.7, began_at=T0 + timedelta(minutes=3)))
    line = root.find("s:g[@class='change-start']/s:line", NS)
    assert line is not None
    first, *_, last = strokes(root)[0].split("L")
    x_first, x_last = float(first.split(",")[0]), float(last.split(",")[0])
    x_change = float(line.attrib["x1"])
    assert x_first + 0.55 * (x_last - x_first) < x_change < x_first + 0.65 * (x_last - x_first)
    band = root.find("s:rect[@class='band']", NS)
    assert band is not None
    ys = sorted(float(limit.attrib["y1"]) for limit in root.findall("s:line[@class='limit']", NS))
    assert float(band.attrib["y"]) == pytest.approx(ys[0], abs=0.1)
    assert float(band.attrib["y"]) + float(band.attrib["height"]) == pytest.approx(ys[1], abs=0.1)


def test_a_single_limit_gives_an_open_ended_band() -> None:
    """A threshold with only a minimum shades from the minimum up to the top of the plot."""
    root = parsed(chart(lower_limit=0.5))
    band = root.find("s:rect[@class='band']", NS)
    assert band is not None and float(band.attrib["y"]) == 14
    assert len(root.findall("s:line[@class='limit']", NS)) == 1


def test_nan_values_break_the_line() -> None:
    """NaN is a gap: the values either side of it are two strokes, and a value alone between
    two gaps is a dot."""
    values = [0.6, 0.61, math.nan, 0.5, math.nan, 0.4, 0.41]
    root = parsed(chart(samples=minutes(values), end=T0 + timedelta(minutes=6)))
    assert [len(s.split("L")) for s in strokes(root)] == [2, 2]
    assert len(root.findall("s:circle[@class='point']", NS)) == 1


def test_a_pause_longer_than_gap_after_breaks_the_line() -> None:
    """Samples 30 minutes apart, when a gap is anything over 3 minutes, are not joined."""
    samples = (*minutes([1.0, 1.1]), *minutes([1.2, 1.3], T0 + timedelta(minutes=31)))
    root = parsed(
        chart(samples=samples, end=T0 + timedelta(minutes=32), gap_after=timedelta(minutes=3))
    )
    assert len(strokes(root)) == 2
    joined = parsed(chart(samples=samples, end=T0 + timedelta(minutes=32)))
    assert len(strokes(joined)) == 1


def test_a_flat_series_is_drawn_mid_height_with_a_span_around_it() -> None:
    """Every value the same: the value axis spans 5% either side, and the line is level in the
    middle of the plot (no division by a zero range)."""
    assert value_range([2.0, 2.0], None, None, None) == pytest.approx((1.9, 2.1))
    assert value_range([0.0, 0.0], None, None, None) == (-0.5, 0.5)
    root = parsed(chart(samples=minutes([2.0] * 6)))
    ys = {point.split(",")[1].strip() for point in strokes(root)[0].split("L")}
    assert len(ys) == 1
    assert float(ys.pop()) == pytest.approx((14 + HEIGHT - 34) / 2, abs=0.1)


def test_no_samples_still_draws_axes_reference_and_limits() -> None:
    """An empty window (nothing read) keeps the frame and the levels, and draws no series."""
    root = parsed(chart(samples=(), reference=0.9, lower_limit=0.85))
    assert root.find("s:path[@class='series']", NS) is None
    assert root.find("s:g[@class='axes']", NS) is not None
    assert len(root.findall("s:line[@class='reference']", NS)) == 1


def test_text_is_escaped() -> None:
    """A title, description or marker label holding markup comes out as text, never as
    elements: the SVG parses and holds no script."""
    hostile = '</title><script>alert("x")</script>&'
    text = svg(chart(title=hostile, description=hostile, markers=(Marker(T0, hostile),), key="k"))
    assert "<script>" not in text
    root = ET.fromstring(text)
    assert root.find(".//s:script", NS) is None
    assert root.find("s:title", NS).text == hostile  # type: ignore[union-attr]
    assert root.find("s:desc", NS).text == hostile  # type: ignore[union-attr]


def test_samples_outside_the_window_are_left_out() -> None:
    """Only samples within [start, end] are drawn."""
    root = parsed(chart(end=T0 + timedelta(minutes=2)))
    assert len(strokes(root)[0].split("L")) == 3


def test_an_empty_window_is_refused() -> None:
    """A chart whose end is not after its start is a located error, not a division by zero."""
    with pytest.raises(ValueError, match="must be after its start"):
        svg(chart(end=T0))


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (0.27, 0.66, [0.3, 0.4, 0.5, 0.6]),
        (-3.0, 7.0, [-2.0, 0.0, 2.0, 4.0, 6.0]),
        (1.9, 2.1, [1.9, 1.95, 2.0, 2.05, 2.1]),
    ],
)
def test_value_ticks_are_round_numbers_within_the_range(
    low: float, high: float, expected: list[float]
) -> None:
    """Value ticks step by 1, 2 or 5 times a power of ten and stay within the axis."""
    assert value_ticks(low, high) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("span", "step"),
    [
        (timedelta(minutes=5), timedelta(minutes=1)),
        (timedelta(minutes=45), timedelta(minutes=10)),
        (timedelta(hours=4), timedelta(hours=1)),
        (timedelta(days=3), timedelta(hours=12)),
        (timedelta(days=90), timedelta(days=21)),
    ],
)
def test_time_ticks_fall_on_round_moments(span: timedelta, step: timedelta) -> None:
    """Time ticks are multiples of a round spacing, at most six, within the window."""
    start = T0 + timedelta(seconds=17)
    ticks, got = time_ticks(start, start + span)
    assert got == step
    assert 0 < len(ticks) <= 6
    assert all(start <= t <= start + span for t in ticks)
    assert all(t.timestamp() % step.total_seconds() == 0 for t in ticks)


def test_thin_keeps_at_most_the_asked_number_and_the_spike() -> None:
    """Thinning 10,000 samples to 400 keeps at most 400, in time order, and keeps a one-sample
    spike and the lowest value."""
    values = [1.0] * 10_000
    values[4_321] = 9.0
    values[7_000] = -3.0
    thinned = thin(minutes(values), 400)
    assert len(thinned) <= 400
    assert [s.at for s in thinned] == sorted(s.at for s in thinned)
    assert max(s.value for s in thinned) == 9.0
    assert min(s.value for s in thinned) == -3.0
    assert thin(minutes([1.0, 2.0]), 400) == minutes([1.0, 2.0])
