"""The demo source: deterministic simulated metrics, the adoption drop and recovery, history
before the start, step-aligned range reads and the unknown-series error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from statistics import mean

import pytest

from driftowner.config import DemoSourceConfig
from driftowner.sources import Source, build_source
from driftowner.sources.demo import DEMO_SERIES, DemoSource

START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
DRIFT_AFTER = timedelta(seconds=20)
DRIFT_LASTS = timedelta(seconds=150)
DRIFT_AT = START + DRIFT_AFTER
RECOVERY_AT = DRIFT_AT + DRIFT_LASTS


def demo(seed: int = 1) -> DemoSource:
    return DemoSource(
        "demo",
        seed=seed,
        started_at=START,
        drift_starts_after=DRIFT_AFTER,
        drift_lasts=DRIFT_LASTS,
    )


async def values(source: DemoSource, series: str, start: datetime, end: datetime) -> list[float]:
    result = await source.read(series, start, end, SECOND)
    assert result.error is None
    return [sample.value for sample in result.samples]


async def test_same_seed_gives_the_same_values_in_another_instance() -> None:
    """Values depend only on (seed, series, time): a second instance reads the same numbers."""
    end = START + timedelta(minutes=5)
    for series in DEMO_SERIES:
        assert await values(demo(7), series, START, end) == await values(
            demo(7), series, START, end
        )


async def test_different_seeds_give_different_noise() -> None:
    """Another seed is another realisation of the same simulation."""
    end = START + timedelta(minutes=1)
    assert await values(demo(1), "accuracy", START, end) != await values(
        demo(2), "accuracy", START, end
    )


async def test_instant_read_agrees_with_the_range_read_at_the_same_instant() -> None:
    """The value at an instant is the same whichever kind of read asks for it."""
    source = demo()
    at = START + timedelta(seconds=42)
    instant = await source.read("adoption", at, at, SECOND)
    ranged = await source.read("adoption", at - 2 * SECOND, at, SECOND)
    assert len(instant.samples) == 1
    assert instant.samples[0].at == at
    assert instant.samples[0] == ranged.samples[-1]


async def test_accuracy_and_null_rate_stay_in_their_normal_bands_throughout() -> None:
    """Model and data layers look healthy before, during and after the drift."""
    source = demo()
    start, end = START - timedelta(minutes=5), RECOVERY_AT + timedelta(minutes=5)
    accuracy = await values(source, "accuracy", start, end)
    null_rate = await values(source, "null_rate", start, end)
    assert all(0.935 <= v <= 0.945 for v in accuracy)
    assert all(0.008 <= v <= 0.012 for v in null_rate)
    assert mean(accuracy) == pytest.approx(0.94, abs=0.001)


async def test_adoption_is_normal_until_the_drift_starts() -> None:
    """From long before the start up to the drift, adoption sits around 0.62."""
    adoption = await values(demo(), "adoption", START - timedelta(hours=1), DRIFT_AT)
    assert all(0.61 <= v <= 0.63 for v in adoption)


async def test_adoption_falls_over_about_ten_seconds_to_about_030() -> None:
    """Halfway down after 5 s, fully drifted after 10 s, and it stays there."""
    source = demo()
    halfway = await values(source, "adoption", DRIFT_AT + 5 * SECOND, DRIFT_AT + 5 * SECOND)
    assert halfway[0] == pytest.approx((0.62 + 0.30) / 2, abs=0.011)
    drifted = await values(source, "adoption", DRIFT_AT + 10 * SECOND, RECOVERY_AT)
    assert all(0.29 <= v <= 0.31 for v in drifted)


async def test_adoption_recovers_over_about_ten_seconds_after_the_drift_lasts() -> None:
    """Recovery starts at drift start + drift_lasts and is complete 10 s later."""
    source = demo()
    still_low = await values(source, "adoption", DRIFT_AT + 10 * SECOND, RECOVERY_AT)
    assert all(v <= 0.31 for v in still_low)
    halfway = await values(source, "adoption", RECOVERY_AT + 5 * SECOND, RECOVERY_AT + 5 * SECOND)
    assert halfway[0] == pytest.approx((0.62 + 0.30) / 2, abs=0.011)
    recovered = await values(
        source, "adoption", RECOVERY_AT + 10 * SECOND, RECOVERY_AT + timedelta(minutes=10)
    )
    assert all(0.61 <= v <= 0.63 for v in recovered)


async def test_history_before_the_start_is_defined_and_normal() -> None:
    """A baseline detector reading a week back at the first evaluation gets normal values."""
    source = demo()
    week_ago = START - timedelta(days=7)
    result = await source.read("adoption", week_ago, START, timedelta(hours=1))
    assert len(result.samples) == 7 * 24 + 1
    assert all(0.61 <= s.value <= 0.63 for s in result.samples)


async def test_range_read_gives_one_sample_per_step_aligned_to_the_step() -> None:
    """Samples fall on multiples of ``step`` since the epoch, within [start, end], in order."""
    source = demo()
    start = START + timedelta(seconds=7)
    end = START + timedelta(minutes=3, seconds=1)
    result = await source.read("accuracy", start, end, timedelta(minutes=1))
    assert [s.at for s in result.samples] == [
        START + timedelta(minutes=1),
        START + timedelta(minutes=2),
        START + timedelta(minutes=3),
    ]
    assert all(s.at.tzinfo is UTC for s in result.samples)


async def test_range_read_is_capped_at_11000_points() -> None:
    """A tiny step over a long range is widened, like Prometheus, to keep reads bounded."""
    source = demo()
    result = await source.read("accuracy", START - timedelta(days=7), START, SECOND)
    assert 0 < len(result.samples) <= 11_000


async def test_unknown_series_is_a_query_error_listing_the_series() -> None:
    """A query naming no demo series is a mistake in the config: said clearly, source still up."""
    result = await demo().read("latency", START, START, SECOND)
    assert result.samples == ()
    assert result.error_reason == "query_error"
    assert result.source_up
    assert result.error is not None
    assert "has no series 'latency' (has accuracy, adoption, null_rate)" in result.error
    assert "'demo'" in result.error


async def test_build_source_starts_the_simulation_at_the_clock() -> None:
    """The factory wires the config and takes ``started_at`` from the clock it is given."""
    config = DemoSourceConfig(
        type="demo",
        seed=3,
        drift_starts_after=timedelta(seconds=20),
        drift_lasts=timedelta(minutes=1),
    )
    source: Source = build_source("demo", config, clock=lambda: START)
    assert source.name == "demo"
    assert isinstance(source, DemoSource)
    assert source.drift_starts_at == START + timedelta(seconds=20)
    drifted = await source.read(
        "adoption", START + timedelta(seconds=40), START + timedelta(seconds=40), SECOND
    )
    assert drifted.samples[0].value < 0.4
    await source.aclose()
