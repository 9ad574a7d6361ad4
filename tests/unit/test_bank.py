"""The detector bank: a signal's status from its chart's confirmed changes (successive changes,
recovery, further shifts), accepting a new level, warm start equal to the online state, and
each ``detect`` section building its chart. Pure: samples and times are passed in."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftowner.config import Config
from driftowner.detect.bank import (
    Bank,
    Later,
    away,
    chart_finding,
    chart_for,
    observe,
    reference_window,
    start,
    warm_start,
)
from driftowner.detect.changepoint import Cusum, Ewma, PageHinkley
from driftowner.model import Change, Finding, Sample, SourceResult
from driftowner.sources import LabelledResult, history
from tests.unit.factories import T0, TemplateOnlySource, incident, signal, templated_document

MINUTE = timedelta(minutes=1)
KEY = ("fraud-scoring", "adoption")


def series(*segments: tuple[int, float], seed: int = 3, sd: float = 0.01) -> list[Sample]:
    """Samples one a minute from T0: ``(count, level)`` segments plus Gaussian noise."""
    rng = random.Random(seed)
    values = [level + rng.gauss(0, sd) for count, level in segments for _ in range(count)]
    return [Sample(T0 + index * MINUTE, value) for index, value in enumerate(values)]


def run(bank: Bank, samples: Sequence[Sample], bad: str = "down") -> list[Finding]:
    """Judge one sample per evaluation, as the daemon does with instant reads."""
    spec = signal(bad=bad)
    return [
        bank.judge(*KEY, spec, SourceResult(samples=(sample,)), sample.at, MINUTE)
        for sample in samples
    ]


def statuses(findings: Sequence[Finding]) -> list[str]:
    """The status sequence with repeats collapsed: the story of the signal."""
    story: list[str] = []
    for finding in findings:
        if not story or story[-1] != finding.status:
            story.append(finding.status)
    return story


@pytest.mark.parametrize(
    ("level", "left", "went_to", "bad", "expected"),
    [
        (0.30, 0.40, 0.30, "down", True),  # still at the new level
        (0.36, 0.40, 0.30, "down", False),  # more than half way back
        (0.34, 0.40, 0.30, "down", True),  # less than half way back
        (0.50, 0.40, 0.30, "down", False),  # overshot upwards: not bad for a down signal
        (0.50, 0.40, 0.50, "up", True),
        (0.30, 0.40, 0.50, "both", True),  # a further shift the other way is still away
        (0.41, 0.40, 0.50, "both", False),
    ],
)
def test_away_from_the_level_left(
    level: float, left: float, went_to: float, bad: str, expected: bool
) -> None:
    """A signal counts as away while it sits beyond half of its first change from the level
    it left, in the bad direction."""
    assert away(level, left, went_to, bad) is expected  # type: ignore[arg-type]


def test_a_drop_degrades_and_a_recovery_clears() -> None:
    """Learning, then ok; a fall in the bad direction is degraded, dated where it began;
    the return to the old level is found as its own change and clears the finding."""
    bank = Bank()
    found = run(bank, series((200, 0.40), (200, 0.30), (200, 0.40)))
    assert statuses(found) == ["no_data", "ok", "degraded", "ok"]
    first_bad = next(f for f in found if f.status == "degraded")
    assert first_bad.began_at is not None
    assert T0 + 195 * MINUTE <= first_bad.began_at <= T0 + 205 * MINUTE
    assert first_bad.reference == pytest.approx(0.40, abs=0.01)
    assert "fell" in first_bad.reason and "below" in first_bad.reason
    assert found[-1].status == "ok"


@pytest.mark.parametrize("seed", [18, 50])
def test_a_recovery_dated_too_early_still_clears_once_the_chart_relearns(seed: int) -> None:
    """A recovery's confirmed level is the mean since its estimated start; a large shift is
    confirmed within 2 samples, so one sample from before it (seed 18: began 1 sample early,
    level 0.371 for a true 0.41), or ten (seed 50: 0.331), keeps it "away" from the level the
    drop left, and the incident never resolved. Once the chart has re-learned its reference
    at the level the drop left, the finding is ok."""
    bank = Bank()
    found = run(bank, series((300, 0.41), (320, 0.31), (300, 0.41), seed=seed))
    assert statuses(found) == ["no_data", "ok", "degraded", "ok"]
    recovery = [c for f in found for c in f.changes if c.direction == "up"]
    assert len(recovery) == 1 and recovery[0].after < 0.38  # the contaminated level
    assert found[-1].reason.startswith("back near its level")


def test_a_recovery_at_the_first_sample_after_the_relearning_resolves() -> None:
    """Issue 6, point 4. After the drop, the chart re-learns its reference; here (seed 2) the
    re-learning stops exactly at the recovery's first sample (one far-off value hides the
    window's autocorrelation, which is what lets it stop), and Page-Hinkley's running mean
    absorbed a shift from its first judged sample: the recovery was never confirmed and the
    signal stayed degraded for the 700 samples back at 0.41. Now the recovery is confirmed
    and the finding is ok."""
    samples = series((2000, 0.41), (120, 0.31), (700, 0.41), seed=2)
    detector = PageHinkley(bad="down")
    watch, _ = observe(start(detector), samples[:2000])
    judged_from = None
    for sample in samples[2000:]:
        learning = watch.state.reference is None
        watch, _ = observe(watch, [sample])
        if learning and watch.state.reference is not None and judged_from is None:
            judged_from = sample.at
    assert judged_from == samples[2120].at  # the re-learning ends on the recovery's first
    assert not watch.degraded
    bank = Bank()
    found = run(bank, samples)
    assert statuses(found) == ["no_data", "ok", "degraded", "ok"]


@pytest.mark.parametrize(
    ("make", "seed"),
    [(PageHinkley, 90), (PageHinkley, 119), (Cusum, 119), (Cusum, 142), (Cusum, 174)],
)
def test_a_full_recovery_clears_even_when_the_first_change_was_dated_early(
    make: Any, seed: int
) -> None:
    """Issue 6, point 4 (``bench_recovery``): a 10-sigma dip of 120 samples, then 700 samples
    back at 0.41. Here the change start is dated well before the change, the re-learning
    window spans the dip and the recovery (a very wide scale: nothing more is confirmed), and
    the first change's level, which sets the half-way tolerance, is wrong: the signal stayed
    degraded to the end. The median of the latest warm-up's values, back within half a
    deviation of the level left (in that reference's scale) for a warm-up's worth of samples,
    clears it, through the daemon's per-sample path and through ``observe`` alike."""
    samples = series((2000, 0.41), (120, 0.41 - 10 * 0.01), (700, 0.41), seed=seed)
    watch, _ = observe(start(make(bad="down")), samples)
    assert not watch.degraded
    found = [
        Bank().judge(*KEY, signal(bad="down"), SourceResult(samples=tuple(samples)), T0, MINUTE)
    ]
    assert found[-1].status == "ok"
    assert found[-1].reason.startswith("back near its level")


@pytest.mark.parametrize("make", [PageHinkley, Cusum, Ewma])
@pytest.mark.parametrize(
    ("dip", "then"), [(0.02, 0.39), (0.02, 0.395), (0.10, 0.31), (0.10, 0.335)]
)
@pytest.mark.parametrize("seed", [90, 119])
def test_a_signal_still_away_or_a_quarter_of_the_way_back_stays_degraded(
    make: Any, dip: float, then: float, seed: int, request: pytest.FixtureRequest
) -> None:
    """A dip that stays, or comes only a quarter of the way back, keeps its incident open: the
    return window counts only a median within half a deviation of the level left. (Half the
    way back is the half-way tolerance's own boundary, which the chart's changes decide.)"""
    if (make, dip, then, seed) == (Ewma, 0.02, 0.395, 90):
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="the half-way tolerance, not the return window: the first change's "
                "level 0.386 puts a confirmed rise to 0.399 within half of it of 0.409",
            )
        )
    samples = series((2000, 0.41), (120, 0.41 - dip), (1500, then), seed=seed)
    watch, _ = observe(start(make(bad="down")), samples)
    assert watch.degraded


GOOD_AND_BAD = [
    (kind, bad) for kind in ("default", "cusum", "ewma", "page_hinkley") for bad in ("up", "down")
]


def _signal(kind: str, bad: str) -> Any:
    """A signal on a chart kind ("default": with no ``detect`` section)."""
    return signal(bad=bad) if kind == "default" else signal(bad=bad, detect={kind: {}})


def _excursion(bad: str, *levels: float) -> list[Sample]:
    """2,000 samples at 0.41, then 120 samples at each of ``levels`` but the last (700), in
    units of 10 sd on the good side (negative) or the bad side (positive) of 0.41."""
    sign = 1.0 if bad == "up" else -1.0
    counts = [120] * (len(levels) - 1) + [700]
    segments = [(2000, 0.41)] + [
        (count, 0.41 + sign * 0.1 * level) for count, level in zip(counts, levels, strict=True)
    ]
    return series(*segments, seed=5)


@pytest.mark.parametrize(("kind", "bad"), GOOD_AND_BAD)
@pytest.mark.parametrize(
    ("story", "levels", "expected"),
    [
        ("a good-direction excursion and its return", (-1.0, 0.0), ["no_data", "ok"]),
        ("a good-direction excursion, then beyond", (-1.0, 1.0), ["no_data", "ok", "degraded"]),
        ("a plain shift in the bad direction", (1.0,), ["no_data", "ok", "degraded"]),
    ],
)
def test_a_return_from_a_good_direction_excursion_is_not_drift(
    kind: str, bad: str, story: str, levels: tuple[float, ...], expected: list[str]
) -> None:
    """Issue 6, point 4, for ``bad: up|down`` and every chart: a 10-sd move in the good
    direction, then back, opens nothing (the chart had re-learned the good level, so the
    return used to read as a bad shift against it, paging a healthy model for good); going
    10 sd beyond the level held before it still degrades, on that level; so does a plain
    shift in the bad direction."""
    spec = _signal(kind, bad)
    samples = _excursion(bad, *levels)
    bank = Bank()
    found = [bank.judge(*KEY, spec, SourceResult(samples=(s,)), s.at, MINUTE) for s in samples]
    assert statuses(found) == expected, story
    if expected[-1] == "degraded":
        assert found[-1].reference == pytest.approx(0.41, abs=0.01)


def test_a_further_shift_keeps_the_incident_on_the_level_it_left() -> None:
    """After a first fall, a further fall is its own change; the signal stays degraded and
    keeps the start and the level of the first change."""
    bank = Bank()
    found = run(bank, series((200, 0.40), (200, 0.30), (200, 0.20)))
    assert statuses(found) == ["no_data", "ok", "degraded"]
    first = next(f for f in found if f.status == "degraded")
    assert found[-1].began_at == first.began_at
    assert found[-1].reference == pytest.approx(0.40, abs=0.01)
    latest = bank.watches[KEY].latest
    assert latest is not None and latest.level == pytest.approx(0.20, abs=0.03)


def test_a_rise_on_a_down_signal_never_degrades() -> None:
    """A confirmed change in the good direction is reported as evidence but is not bad."""
    bank = Bank()
    found = run(bank, series((200, 0.40), (200, 0.50)))
    assert "degraded" not in statuses(found)
    latest = bank.watches[KEY].latest
    assert latest is not None and latest.direction == "up" and not latest.bad


def test_accept_relearns_the_new_level_as_normal() -> None:
    """Accepting a shifted level clears the finding, learns a new reference from samples after
    the accept, and later judges against the new level: a return to the old one is a rise, not
    a recovery, and a further fall from the new level is bad again."""
    bank = Bank()
    run(bank, series((200, 0.40), (200, 0.30)))
    accepted_at = T0 + 399 * MINUTE
    bank.accept(KEY, accepted_at)
    later = [
        Sample(accepted_at + (index + 1) * MINUTE, s.value)
        for index, s in enumerate(series((200, 0.30), (200, 0.20), seed=9))
    ]
    found = run(bank, later)
    assert statuses(found) == ["no_data", "ok", "degraded"]
    degraded = next(f for f in found if f.status == "degraded")
    assert degraded.reference == pytest.approx(0.30, abs=0.01)


def test_an_older_accept_is_not_applied_twice() -> None:
    """The bank reads accepts every cycle; one it already applied does not reset it again."""
    bank = Bank()
    run(bank, series((100, 0.40)))
    bank.accept(KEY, T0)
    run(bank, [Sample(T0 + (100 + i) * MINUTE, 0.40 + 0.001 * (i % 3)) for i in range(60)])
    before = bank.watches[KEY]
    bank.accept(KEY, T0)
    assert bank.watches[KEY] is before


@pytest.mark.parametrize(
    "segments",
    [
        ((300, 0.40),),
        ((200, 0.40), (150, 0.30)),
        ((200, 0.40), (150, 0.30), (150, 0.40)),
    ],
)
def test_warm_start_from_history_equals_the_state_reached_online(
    segments: tuple[tuple[int, float], ...],
) -> None:
    """A watch rebuilt from history holds exactly the state, level left and evidence that
    judging the same samples one evaluation at a time reached."""
    samples = series(*segments)
    online = Bank()
    run(online, samples)
    detector = chart_for(signal(bad="down"), MINUTE)
    assert detector is not None
    assert warm_start(detector, samples, None) == online.watches[KEY]


def test_warm_start_ignores_samples_before_an_accept() -> None:
    """History from before an accept does not come back after a restart."""
    samples = series((200, 0.40), (200, 0.30))
    detector = chart_for(signal(bad="down"), MINUTE)
    assert detector is not None
    watch = warm_start(detector, samples, T0 + 300 * MINUTE)
    assert watch.left is None
    fresh, _ = observe(start(detector, T0 + 300 * MINUTE), samples[301:])
    assert watch == fresh


@pytest.mark.parametrize(
    ("detect", "kind", "fields"),
    [
        (None, PageHinkley, {"delta": 0.5, "threshold": None}),
        ({"cusum": {"k": 0.25, "h": 7}}, Cusum, {"k": 0.25, "h": 7}),
        ({"ewma": {"lambda": 0.1}}, Ewma, {"lam": 0.1, "width": None}),
        ({"ewma": {"lambda": 0.1, "L": 3}}, Ewma, {"lam": 0.1, "width": 3}),
        ({"page_hinkley": {"delta": 1, "warmup": 50}}, PageHinkley, {"delta": 1, "warmup": 50}),
    ],
)
def test_each_detect_section_builds_its_chart(
    detect: dict[str, object] | None, kind: type, fields: dict[str, object]
) -> None:
    """Every chart a config names is built with its parameters, the signal's bad direction
    and its false-alarm budget at the evaluation interval."""
    spec = signal(bad="up", false_alarm_every="7d", **({"detect": detect} if detect else {}))
    chart = chart_for(spec, 5 * MINUTE)
    assert isinstance(chart, kind)
    assert (chart.bad, chart.false_alarm_every, chart.interval) == (
        "up",
        timedelta(days=7),
        5 * MINUTE,
    )
    for name, value in fields.items():
        assert getattr(chart, name) == value


def test_stateless_detectors_keep_their_verdicts() -> None:
    """A threshold signal is judged as before: the bank keeps no watch for it."""
    bank = Bank()
    spec = signal(detect={"threshold": {"min": 0.9}})
    sample = Sample(T0, 0.5)
    found = bank.judge(*KEY, spec, SourceResult(samples=(sample,)), T0, MINUTE)
    assert (found.status, found.detector) == ("degraded", "threshold")
    assert KEY not in bank.watches


def test_a_source_error_leaves_the_chart_untouched() -> None:
    """A failed read is no data and no evidence: the chart's state does not move."""
    bank = Bank()
    run(bank, series((100, 0.40)))
    before = bank.watches[KEY]
    found = bank.judge(*KEY, signal(bad="down"), SourceResult(error="down"), T0, MINUTE)
    assert (found.status, found.source_error) == ("no_data", True)
    assert bank.watches[KEY] is before


@pytest.mark.parametrize(
    ("accepted_minutes_before", "expected"),
    [
        (None, timedelta(hours=2)),
        (24 * 60, timedelta(hours=2)),
        (50, timedelta(minutes=30)),
        (20, None),
        (5, None),
    ],
)
def test_an_accept_cuts_the_histogram_reference_window_to_start_after_it(
    accepted_minutes_before: int | None, expected: timedelta | None
) -> None:
    """A PSI signal (reference 2h, recent 20m) reads its whole reference window until an owner
    accepts; then the window starts at the accept, and while the accept lies inside the recent
    window there is none."""
    spec = signal(detect={"psi": {"reference": "2h", "recent": "20m"}})
    now = T0 + timedelta(days=2)
    accepted = None if accepted_minutes_before is None else now - accepted_minutes_before * MINUTE
    assert reference_window(spec, now, accepted) == expected


def test_a_warm_start_reaches_back_before_an_open_incidents_condition_began() -> None:
    """A chart's warm start reads 10 warm-ups (300 intervals for the default detector) before
    now; for a signal of an unresolved incident whose condition began earlier, it reads as
    far before that start, so the level the drift left is learned first. Resolved incidents
    and other signals keep the plain window, and the earliest start among incidents wins."""
    bank = Bank()
    spec = signal(bad="down")
    now = T0 + timedelta(days=3)
    window = 300 * MINUTE
    accuracy = ("fraud-scoring", "accuracy")
    assert bank.history_start(accuracy, spec, MINUTE, now) == now - window
    began = now - timedelta(days=1)
    bank.note_open(
        [
            incident(condition_began_at=began),
            incident(id="inc-2", rule="drift:x", condition_began_at=began + timedelta(hours=2)),
            incident(id="inc-3", system="other", condition_began_at=None),
        ]
    )
    assert bank.history_start(accuracy, spec, MINUTE, now) == began - window
    assert bank.history_start(("fraud-scoring", "adoption"), spec, MINUTE, now) == now - window
    bank.note_open([])
    assert bank.history_start(accuracy, spec, MINUTE, now) == now - window


def test_a_warm_start_from_before_the_drift_keeps_it_degraded_with_its_start() -> None:
    """History read from before a drift that began long ago rebuilds a degraded watch whose
    start is the drift's, where the plain window (all after the drift) learns the low level
    as normal: the defect the reach-back fixes."""
    samples = series((400, 0.62), (400, 0.30), sd=0.01)
    began = samples[400].at
    detector = chart_for(signal(bad="down"), MINUTE)
    assert detector is not None
    whole = warm_start(detector, samples, None)
    assert whole.degraded
    assert whole.began_at is not None and abs(whole.began_at - began) <= 5 * MINUTE
    recent = warm_start(detector, samples[-300:], None)
    assert not recent.degraded


def _default_template_document(systems: int) -> dict[str, Any]:
    """A config document: ``systems`` systems ``model-0``... on one accuracy template with
    the default chart."""
    document, system = templated_document("http://127.0.0.1:9")
    document["signal_templates"]["accuracy"].pop("detect")
    for index in range(systems):
        document["systems"][f"model-{index}"] = system
    return document


class _RangeFake(TemplateOnlySource):
    """A Prometheus stand-in answering a template's range read from a table, counting reads;
    refuses plain reads (a template's systems must never be read one by one)."""

    def __init__(self, series: dict[str, tuple[Sample, ...]]) -> None:
        self.series = series
        self.calls: list[tuple[str, datetime, datetime]] = []

    async def read_by_label(
        self, query: str, start: datetime, end: datetime, step: timedelta, label: str
    ) -> LabelledResult:
        self.calls.append((query, start, end))
        kept = {
            value: tuple(s for s in samples if start <= s.at <= end)
            for value, samples in self.series.items()
        }
        return LabelledResult(series=kept)


async def test_a_warm_start_reads_a_template_once_for_all_its_systems() -> None:
    """Forty systems on one template (the default detector) warm-start from one range read of
    the template's query, from the earliest start any of them needs (one reaches back before
    its open incident), and each chart equals a warm start from its own window alone."""
    config = Config.model_validate(_default_template_document(40))
    now = T0 + timedelta(days=1)
    fake = _RangeFake(
        {
            f"model-{i}": tuple(
                Sample(now - (3000 - m) * MINUTE, 0.9 + 0.01 * random.Random(i * 9999 + m).random())
                for m in range(3001)
            )
            for i in range(40)
        }
    )
    bank = Bank()
    reach = now - timedelta(hours=12)
    bank.note_open([incident(system="model-7", signals=("accuracy",), condition_began_at=reach)])
    await history.prepare(bank, config, {"prom": fake}, now)
    interval = config.evaluation.interval
    window = 300 * interval
    assert fake.calls == [("avg by (model) (model_accuracy)", reach - window, now)]
    spec = config.systems["model-3"].signals["accuracy"]
    detector = chart_for(spec, interval)
    assert detector is not None
    for name, begins in (("model-3", now - window), ("model-7", reach - window)):
        own = [s for s in fake.series[name] if s.at >= begins]
        assert bank.watches[(name, "accuracy")] == warm_start(detector, own, None)


def _full_path(watch: Any, sample: Sample, spec: Any, now: datetime) -> tuple[Any, Finding]:
    """The verdict as the bank gave it before the steady path: every sample through
    :func:`observe`, every finding built at once by :func:`chart_finding`."""
    watch, confirmed = observe(watch, (sample,))
    base = Finding(
        system=KEY[0],
        signal=KEY[1],
        layer=spec.layer,
        status="ok",
        at=now,
        value=sample.value,
        changes=tuple(
            Change(d.at, d.direction, d.reference, d.level, d.began_at) for d in confirmed
        ),
    )
    return watch, chart_finding(base, watch, spec)


@settings(max_examples=60, deadline=None)
@given(
    shifts=st.lists(
        st.tuples(st.integers(1, 60), st.floats(-3, 3), st.sampled_from([0.0, 0.3, 1.0])),
        min_size=1,
        max_size=6,
    ),
    bad=st.sampled_from(["up", "down", "both"]),
    detect=st.sampled_from([None, {"cusum": {}}, {"ewma": {}}, {"page_hinkley": {}}]),
    seed=st.integers(0, 1000),
)
def test_the_steady_path_gives_the_findings_of_the_full_path(
    shifts: list[tuple[int, float, float]], bad: str, detect: Any, seed: int
) -> None:
    """Property: judging one sample a cycle through the bank's steady path (the state moved
    in place, a quiet verdict's finding built only when read, and read only after the chart
    has moved on) gives, sample after sample, exactly the findings and watches of the full
    path, whatever the shifts (level, noise, repeated or NaN values), direction and chart."""
    rng = random.Random(seed)
    values: list[float] = []
    for count, level, noise in shifts:
        values.extend(level + noise * rng.gauss(0, 1) for _ in range(count))
    if len(values) > 3:
        values[len(values) // 2] = math.nan
    spec = signal(bad=bad, **({} if detect is None else {"detect": detect}))
    bank = Bank()
    watch = None
    verdicts: list[Finding | Later] = []
    expected: list[Finding] = []
    for index, value in enumerate(values):
        # A repeated time now and then: a sample not newer than the last is skipped.
        at = T0 + (index - (index % 17 == 16)) * MINUTE
        sample = Sample(at, value)
        verdicts.append(bank.verdict(*KEY, spec, SourceResult(samples=(sample,)), at, MINUTE))
        if watch is None:
            detector = chart_for(spec, MINUTE)
            assert detector is not None
            watch = start(detector)
        watch, found = _full_path(watch, sample, spec, at)
        expected.append(found)
        assert bank.watches[KEY] == watch
        assert verdicts[-1].status == found.status
    built = [v.finding() if isinstance(v, Later) else v for v in verdicts]
    assert built == expected


def test_a_value_derived_from_the_config_is_made_once_per_config() -> None:
    """``Bank.derived`` makes a value (the read plan) once for one config object and again
    for another (a reload)."""
    bank = Bank()
    made: list[object] = []
    first, second = object(), object()
    for config in (first, first, second, second, first):
        bank.derived(config, "reads", lambda config=config: made.append(config) or len(made))
    assert made == [first, second, first]


async def test_a_config_s_signals_are_walked_once_not_at_every_cycle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Readying the bank looks up each signal's chart at the first cycle of a config only:
    later cycles of the same config look no chart up (at 10,000 signals the walk cost ~20 ms
    a cycle), and nothing is read again for charts that have state."""
    from driftowner.detect import bank as bank_module

    config = Config.model_validate(_default_template_document(5))
    now = T0 + timedelta(days=1)
    fake = _RangeFake(
        {
            f"model-{i}": tuple(Sample(now - m * MINUTE, 0.9 + 0.001 * m) for m in range(400))
            for i in range(5)
        }
    )
    looked: list[object] = []
    real = bank_module.chart_for

    def counted(spec: Any, interval: timedelta) -> Any:
        looked.append(spec)
        return real(spec, interval)

    monkeypatch.setattr(bank_module, "chart_for", counted)
    monkeypatch.setattr(history, "chart_for", counted, raising=False)
    bank = Bank()
    await history.prepare(bank, config, {"prom": fake}, now)
    assert looked and len(fake.calls) == 1
    looked.clear()
    await history.prepare(bank, config, {"prom": fake}, now + MINUTE)
    assert looked == [] and len(fake.calls) == 1


async def test_a_reload_that_changes_a_chart_warm_starts_it_again() -> None:
    """A new config giving a signal another chart drops its watch at the new config's first
    cycle and warm-starts the new chart from history; a signal removed from the config is
    forgotten."""
    document = _default_template_document(3)
    config = Config.model_validate(document)
    now = T0 + timedelta(days=1)
    fake = _RangeFake(
        {
            f"model-{i}": tuple(Sample(now - m * MINUTE, 0.9 + 0.001 * (m % 7)) for m in range(400))
            for i in range(3)
        }
    )
    bank = Bank()
    await history.prepare(bank, config, {"prom": fake}, now)
    key = ("model-0", "accuracy")
    assert isinstance(bank.watches[key].detector, PageHinkley)
    document["signal_templates"]["accuracy"]["detect"] = {"cusum": {}}
    del document["systems"]["model-2"]
    changed = Config.model_validate(document)
    await history.prepare(bank, changed, {"prom": fake}, now + MINUTE)
    assert len(fake.calls) == 2
    assert isinstance(bank.watches[key].detector, Cusum)
    assert ("model-2", "accuracy") not in bank.watches
