"""The pure parts of the pages: which window an incident's chart shows, which limits a
detector's evidence draws, and each source's health from one evaluation to the next."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from driftowner.api.incident_page import MAX_CHART_POINTS, MAX_WINDOW, evidence_window, value_limits
from driftowner.api.runtime import SourceHealth, observe_sources
from driftowner.config import Config
from tests.unit.factories import T0, finding, incident, make_config, minutes, signal, signal_patch

MINUTE = timedelta(minutes=1)


def test_the_window_shows_as_long_before_the_change_as_since_it() -> None:
    """A change begun 30 minutes before now: the window runs from 30 minutes before it to now,
    a value per evaluation interval."""
    began = T0 - minutes(10)
    window = evidence_window(incident(condition_began_at=began), MINUTE, T0 + minutes(20))
    assert (window.start, window.end, window.step) == (
        began - minutes(30),
        T0 + minutes(20),
        MINUTE,
    )


def test_the_window_starts_at_the_earliest_of_opening_condition_and_evidence() -> None:
    """A chart detector's estimate of the change start, earlier than the incident's own, moves
    the window back with it."""
    earlier = T0 - minutes(40)
    evidence = (replace(finding("accuracy", "degraded"), began_at=earlier),)
    window = evidence_window(incident(evidence=evidence), MINUTE, T0)
    assert window.start == earlier - minutes(40)


def test_a_fresh_incident_still_shows_ten_intervals_either_side() -> None:
    """An incident opened this instant shows ten evaluation intervals before it."""
    window = evidence_window(incident(condition_began_at=None), MINUTE, T0)
    assert window.start == T0 - minutes(10)


def test_a_long_incident_is_capped_and_its_points_bounded() -> None:
    """A month-old incident shows the last week, with at most MAX_CHART_POINTS values."""
    now = T0 + timedelta(days=30)
    window = evidence_window(incident(), MINUTE, now)
    assert window.end - window.start == MAX_WINDOW
    assert (window.end - window.start) / window.step <= MAX_CHART_POINTS - 1


def test_a_resolved_incident_ends_a_little_after_its_resolution() -> None:
    """Resolved an hour after opening, a day ago: the window ends 15 minutes after the
    resolution (a quarter of how long it lasted), not now."""
    resolved = T0 + minutes(60)
    window = evidence_window(
        incident(state="resolved", resolved_at=resolved), MINUTE, T0 + timedelta(days=1)
    )
    assert window.end == resolved + minutes(15)


@pytest.mark.parametrize(
    ("detect", "bad", "evidence", "expected"),
    [
        ({"threshold": {"min": 0.9}}, "down", {"limit": 0.9}, (0.9, None)),
        ({"threshold": {"min": 0.1, "max": 0.9}}, "both", {"limit": 0.9}, (0.1, 0.9)),
        (
            {"baseline": {"reference": "1h", "max_change": 0.2}},
            "down",
            {"reference": 0.5, "limit": 0.2},
            (0.4, None),
        ),
        (
            {"baseline": {"reference": "1h", "max_change": 0.2}},
            "up",
            {"reference": -2.0, "limit": 0.5},
            (None, -1.0),
        ),
        (
            {"baseline": {"reference": "1h", "max_change": 0.2}},
            "both",
            {"reference": 1.0, "limit": 0.1},
            (0.9, 1.1),
        ),
        ({"cusum": {}}, "down", {"reference": 0.5, "limit": 5.0}, (None, None)),
    ],
)
def test_limits_are_drawn_on_the_values_scale_only(
    detect: dict[str, object],
    bad: str,
    evidence: dict[str, float],
    expected: tuple[float | None, float | None],
) -> None:
    """A threshold draws its min and max; a baseline its reference ± max_change on the bad
    side(s); a change-point chart's limit is on its statistic, so it draws none."""
    spec = signal(detect=detect, bad=bad)
    name = next(iter(detect))
    found = replace(finding("accuracy", "degraded"), detector=name, **evidence)  # type: ignore[arg-type]
    assert value_limits(found, spec) == pytest.approx(expected)


def test_a_threshold_without_its_config_draws_the_evidence_limit_on_the_bad_side() -> None:
    """A threshold signal no longer configured draws the limit its evidence recorded, below
    the values for ``bad: down`` (the default direction when unknown is both: above)."""
    found = replace(finding("accuracy", "degraded"), detector="threshold", limit=0.9)
    assert value_limits(found, None) == (None, 0.9)
    assert value_limits(
        found, signal(bad="down", detect={"baseline": {"reference": "1h", "max_change": 0.2}})
    ) == (0.9, None)


def config_two_sources() -> Config:
    """The base config with adoption read from a second source, ``files``."""
    return make_config(
        {
            "sources": {"prom": {"type": "demo"}, "files": {"type": "file", "path": "/x.csv"}},
            **signal_patch("adoption", source="files"),
        }
    )


def test_source_health_names_each_sources_error_and_keeps_the_last_one() -> None:
    """An evaluation where adoption's query on ``files`` failed marks that source failing with
    the error; the next, where it answered, keeps that error as its last, with its time; a
    source with no failure has none."""
    config = config_two_sources()
    first = observe_sources(
        {}, config, {"prom": True, "files": False}, {("fraud-scoring", "adoption"): "gone"}, T0
    )
    assert first["files"] == SourceHealth(False, T0, "gone", "gone", T0)
    assert first["prom"] == SourceHealth(True, T0)
    later = T0 + minutes(1)
    second = observe_sources(first, config, {"prom": True, "files": True}, {}, later)
    assert second["files"] == SourceHealth(True, later, None, "gone", T0)


def test_source_health_ignores_failures_of_signals_it_cannot_place() -> None:
    """A failure reported for a system or signal the config no longer has names no source."""
    config = config_two_sources()
    health = observe_sources(
        {}, config, {}, {("gone", "x"): "e", ("fraud-scoring", "nope"): "e"}, T0
    )
    assert all(h.last_error is None and h.up for h in health.values())
