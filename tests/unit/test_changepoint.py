"""Change-point detectors: the budget's limits against theory, detection and its evidence,
successive changes, the bad direction, warm starts, and properties over arbitrary input."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftowner.detect.changepoint import (
    ChartState,
    Cusum,
    Detection,
    Detector,
    Ewma,
    PageHinkley,
    budget_run_length,
    cusum_limit,
    cusum_run_length,
    default_detector,
    describe,
    ewma_limit,
    ewma_run_length,
    learn_reference,
    spoken_duration,
    state_from_json,
    state_to_json,
)

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
MAKERS: list[Callable[..., Detector]] = [default_detector, Cusum, Ewma, PageHinkley]


def run(detector: Detector, values: Sequence[float]) -> list[tuple[int, Detection]]:
    """Feed ``values`` one a minute; the index of each confirming sample with its detection."""
    state = detector.start()
    found = []
    for index, value in enumerate(values):
        state, detection = detector.update(state, value, T0 + index * MINUTE)
        if detection is not None:
            found.append((index, detection))
    return found


def noise(count: int, seed: int = 7, sd: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(0.0, sd) for _ in range(count)]


def test_budget_is_the_run_length_in_samples() -> None:
    """30 days at a 1-minute interval asks for an in-control run length of 43,200 samples;
    a duration that is not positive is refused with its name."""
    assert budget_run_length(timedelta(days=30), MINUTE) == 43_200
    with pytest.raises(ValueError, match="false_alarm_every"):
        budget_run_length(timedelta(0), MINUTE)
    with pytest.raises(ValueError, match="interval"):
        budget_run_length(timedelta(days=1), -MINUTE)


def test_cusum_run_length_matches_the_published_values() -> None:
    """Siegmund's approximation gives the two-sided k=0.5 ARLs within 2% of the Markov-chain
    values 465 (h=5) and 168 (h=4), and 10.4 at a 1-sigma shift."""
    assert cusum_run_length(0.5, 5.0) / 2 == pytest.approx(465, rel=0.02)
    assert cusum_run_length(0.5, 4.0) / 2 == pytest.approx(168, rel=0.02)
    two_sided = 1 / (1 / cusum_run_length(0.5, 5.0, 1.0) + 1 / cusum_run_length(0.5, 5.0, -1.0))
    assert two_sided == pytest.approx(10.4, rel=0.02)


def test_cusum_limit_from_the_budget() -> None:
    """For k=0.5 and a 30-day budget at 1 minute the two-sided h is about 9.5, one-sided
    smaller, and an uncertain centre asks for a higher limit."""
    assert cusum_limit(0.5, 43_200, 2) == pytest.approx(9.5, abs=0.05)
    assert cusum_limit(0.5, 43_200, 1) < cusum_limit(0.5, 43_200, 2)
    assert cusum_limit(0.5, 43_200, 2, 0.2) > cusum_limit(0.5, 43_200, 2)


def test_ewma_run_length_matches_lucas_and_saccucci() -> None:
    """The Markov chain gives lambda=0.2, L=2.962 an ARL near 500 in control and 10.5 at a
    1-sigma shift, and solving for ARL 500 gives back L near 2.962."""
    assert ewma_run_length(0.2, 2.962) == pytest.approx(500, rel=0.02)
    assert ewma_run_length(0.2, 2.962, 1.0) == pytest.approx(10.5, rel=0.02)
    assert ewma_limit(0.2, 500.0) == pytest.approx(2.962, abs=0.02)


def test_reference_is_robust_to_an_outlier() -> None:
    """One wild value in the warm-up moves neither the centre (a median) nor the spread (the
    deviation within 3 MADs)."""
    clean = [10.0 + x for x in noise(40, sd=0.1)]
    dirty = [*clean[:-1], 1e6]
    a, b = learn_reference(clean, 0, 1), learn_reference(dirty, 0, 1)
    assert b.centre == pytest.approx(a.centre, abs=0.02)
    assert b.spread == pytest.approx(a.spread, rel=0.1)


def test_reference_inflates_the_scale_by_autocorrelation() -> None:
    """On AR(1) input (phi=0.9) the standardising scale is several times the spread: the
    deviation of a sum of autocorrelated samples."""
    rng = random.Random(3)
    x, values = 0.0, []
    for _ in range(300):
        x = 0.9 * x + rng.gauss(0.0, 1.0)
        values.append(x)
    reference = learn_reference(values, 0, 1)
    assert reference.phi > 0.8
    assert reference.scale > 3 * reference.spread


@pytest.mark.parametrize("make", MAKERS)
def test_a_level_shift_is_found_with_when_it_began(make: Callable[..., Detector]) -> None:
    """A 3-sigma drop at sample 100 is confirmed soon after, in the down direction, with the
    estimated start within 5 samples of the true one, and nothing is confirmed before."""
    values = noise(100) + [x - 3.0 for x in noise(60, seed=8)]
    found = run(make(), values)
    assert found, "the shift was not found"
    index, detection = found[0]
    assert 100 <= index <= 130
    assert detection.direction == "down"
    assert detection.bad
    assert abs((detection.began_at - (T0 + 100 * MINUTE)) / MINUTE) <= 5
    assert detection.level == pytest.approx(-3.0, abs=1.0)
    assert detection.reference == pytest.approx(0.0, abs=0.5)
    assert detection.reference_span >= timedelta(minutes=29)
    assert detection.statistic > detection.limit


@pytest.mark.parametrize("make", MAKERS)
def test_recovery_is_its_own_change(make: Callable[..., Detector]) -> None:
    """After a confirmed drop the detector re-learns and keeps watching: the recovery is found
    as a second change, upward, and not in the bad direction of a ``bad: down`` signal."""
    values = noise(100) + [x - 4.0 for x in noise(120, seed=8)] + noise(120, seed=9)
    found = run(make(bad="down"), values)
    directions = [(d.direction, d.bad) for _, d in found]
    assert directions == [("down", True), ("up", False)]
    assert abs((found[1][1].began_at - (T0 + 220 * MINUTE)) / MINUTE) <= 5


@pytest.mark.parametrize("make", MAKERS)
def test_bad_direction_decides_what_pages(make: Callable[..., Detector]) -> None:
    """A rise is reported for every ``bad`` setting but marked bad only for ``up`` and
    ``both``."""
    values = noise(100) + [x + 4.0 for x in noise(60, seed=8)]
    for bad, expected in (("up", True), ("down", False), ("both", True)):
        _, detection = run(make(bad=bad), values)[0]
        assert detection.direction == "up"
        assert detection.bad is expected


@pytest.mark.parametrize("shift", [3.0, 10.0])
def test_page_hinkley_sees_a_shift_that_starts_at_its_first_judged_sample(shift: float) -> None:
    """Page-Hinkley compares each value with the running mean since its reference; that mean
    used to start at the first judged value, so a shift beginning there was absorbed into it
    and never confirmed (a recovery at the first sample after a re-learning left its incident
    open). The reference's centre now counts in the mean: the shift is confirmed, up, dated
    at the first judged sample."""
    values = [shift + x for x in noise(200, seed=11)]
    found = run(PageHinkley(centre=0.0, spread=1.0), values)
    assert found, "the shift from the first judged sample was not found"
    index, detection = found[0]
    assert index < 30
    assert detection.direction == "up"
    assert detection.began_at == T0


def test_textbook_limits_alarm_more_often_than_the_budget() -> None:
    """On the same healthy series an explicit h=4 pages where the 30-day budget does not."""
    values = noise(3000, seed=11)
    assert run(Cusum(h=4.0, centre=0.0, spread=1.0), values)
    assert not run(Cusum(centre=0.0, spread=1.0), values)


def _adoption_fell(span: timedelta) -> Detection:
    """Adoption confirmed down at 09:50 from its level 0.41 over ``span``, begun at 09:40."""
    return Detection(
        detector="page_hinkley",
        at=T0 + timedelta(minutes=50),
        began_at=T0 + timedelta(minutes=40),
        direction="down",
        bad=True,
        value=0.31,
        reference=0.41,
        reference_span=span,
        level=0.3,
        statistic=12.0,
        limit=9.5,
    )


def test_describe_reads_as_one_line() -> None:
    """The evidence line names the signal, value, change, reference level and span, when the
    change began, and the budget; or the statistic and limit when the limit was explicit."""
    detection = _adoption_fell(timedelta(days=7))
    assert describe(detection, "adoption", timedelta(days=30)) == (
        "adoption 0.31 fell 24.4% below its 7-day level 0.41 around 09:40 "
        "(1 false alarm expected per 30 days)"
    )
    assert describe(detection, "adoption", None).endswith("(statistic 12 > limit 9.5)")


@pytest.mark.parametrize(
    ("span", "spoken"),
    [
        (timedelta(days=7), "7-day"),
        (timedelta(minutes=3461), "2-day"),  # 2 days 9 h 41 min: a chart's span at any minute
        (timedelta(days=7, minutes=1), "7-day"),
        (timedelta(hours=36), "36-hour"),
        (timedelta(hours=5, minutes=7), "5-hour"),
        (timedelta(minutes=90), "90-minute"),
        (timedelta(minutes=29, seconds=50), "30-minute"),
    ],
)
def test_the_evidence_line_rounds_the_reference_span_as_a_person_would(
    span: timedelta, spoken: str
) -> None:
    """A reference learned over 2 days 9 hours 41 minutes reads "its 2-day level", not "its
    3461-minute level": a chart's span ends at its latest sample, so it is rarely a whole
    number of days or hours."""
    detection = _adoption_fell(span)
    assert f" below its {spoken} level 0.41 " in describe(detection, "adoption", timedelta(days=30))


@pytest.mark.parametrize(
    ("span", "noun", "adjective"),
    [
        (timedelta(days=30), "30 days", "30-day"),
        (timedelta(days=1), "1 day", "1-day"),
        (timedelta(hours=36), "36 hours", "36-hour"),
        (timedelta(minutes=90), "90 minutes", "90-minute"),
        (timedelta(seconds=45), "45 seconds", "45-second"),
    ],
)
def test_durations_read_as_a_person_says_them(span: timedelta, noun: str, adjective: str) -> None:
    """The evidence line says "30 days" and "7-day", never the config syntax "4w2d"."""
    assert spoken_duration(span) == noun
    assert spoken_duration(span, adjective=True) == adjective


def test_warm_start_from_json_continues_identically() -> None:
    """A state saved as JSON mid-series and restored gives the same detections as an
    uninterrupted run."""
    values = noise(150) + [x + 3.0 for x in noise(80, seed=8)]
    detector = default_detector()
    whole = run(detector, values)
    state = detector.start()
    for index, value in enumerate(values[:120]):
        state, _ = detector.update(state, value, T0 + index * MINUTE)
    restored = state_from_json(json.loads(json.dumps(state_to_json(state))))
    assert restored == state
    resumed = []
    for index, value in enumerate(values[120:], start=120):
        restored, detection = detector.update(restored, value, T0 + index * MINUTE)
        if detection is not None:
            resumed.append((index, detection))
    assert resumed == [(i, d) for i, d in whole if i >= 120]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected an object"),
        ({"nope": 1}, "unknown field 'nope'"),
        ({"upper": "x"}, "upper: expected a finite number"),
        ({"count": -1}, "count: expected a non-negative integer"),
        ({"warmup": 3}, "warmup: expected a list"),
        ({"reference": {"centre": 1}}, "reference: expected an object with"),
    ],
)
def test_a_bad_saved_state_is_refused_with_its_field(data: object, message: str) -> None:
    """A corrupt saved state is an error naming the field, never a silent default."""
    with pytest.raises(ValueError, match=message):
        state_from_json(data)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Cusum(k=0), "k: must be positive"),
        (lambda: Cusum(h=-1), "h: must be positive"),
        (lambda: Ewma(lam=1.5), "lambda: must be in"),
        (lambda: PageHinkley(delta=0), "delta: must be positive"),
        (lambda: Cusum(bad="sideways"), "bad: expected up, down or both"),  # type: ignore[arg-type]
        (lambda: Cusum(warmup=1), "warmup: at least 2"),
        (lambda: Cusum(centre=1.0), "give both or neither"),
        (lambda: Cusum(false_alarm_every=timedelta(0)), "false_alarm_every must be positive"),
    ],
)
def test_bad_parameters_are_refused_with_their_name(
    build: Callable[[], Detector], message: str
) -> None:
    """Every invalid parameter is an error that names it."""
    with pytest.raises(ValueError, match=message):
        build()


def test_nan_and_stale_samples_are_skipped() -> None:
    """NaN and infinite values, and samples not newer than the last, leave the state as it
    was."""
    detector = default_detector()
    state, _ = detector.update(detector.start(), 1.0, T0)
    for value, at in ((math.nan, T0 + MINUTE), (math.inf, T0 + MINUTE), (5.0, T0)):
        assert detector.update(state, value, at) == (state, None)


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    make=st.sampled_from(MAKERS),
    level=finite,
    bad=st.sampled_from(["up", "down", "both"]),
    count=st.integers(min_value=0, max_value=400),
)
def test_a_constant_series_never_alarms(
    make: Callable[..., Detector], level: float, bad: str, count: int
) -> None:
    """However long, at whatever level, a constant series confirms no change."""
    assert run(make(bad=bad), [level] * count) == []


@settings(max_examples=60, deadline=None)
@given(
    make=st.sampled_from(MAKERS),
    values=st.lists(
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), finite), max_size=200
    ),
)
def test_any_values_never_crash(make: Callable[..., Detector], values: list[float]) -> None:
    """NaN, infinities, huge and tiny values never raise; every state stays JSON-safe."""
    detector = make()
    state = detector.start()
    for index, value in enumerate(values):
        state, _ = detector.update(state, value, T0 + index * MINUTE)
    assert isinstance(state_from_json(json.loads(json.dumps(state_to_json(state)))), ChartState)


def first_alarm(detector: Detector, values: Sequence[float]) -> int | None:
    for index, detection in run(detector, values):
        if detection.bad:
            return index
    return None


@settings(max_examples=60, deadline=None)
@given(
    make=st.sampled_from(MAKERS),
    seed=st.integers(min_value=0, max_value=10_000),
    small=st.floats(min_value=0.0, max_value=5.0),
    extra=st.floats(min_value=0.0, max_value=5.0),
)
def test_a_larger_shift_is_never_found_later(
    make: Callable[..., Detector], seed: int, small: float, extra: float
) -> None:
    """On the same noise, an upward shift at sample 80 that is larger is confirmed no later
    than a smaller one (and is confirmed whenever the smaller one is)."""
    base = noise(200, seed=seed)
    shifted = [
        [x + (shift if i >= 80 else 0.0) for i, x in enumerate(base)]
        for shift in (small, small + extra)
    ]
    weaker = first_alarm(make(bad="up"), shifted[0])
    stronger = first_alarm(make(bad="up"), shifted[1])
    if weaker is not None:
        assert stronger is not None and stronger <= weaker
