"""Calibration of the change-point detectors against theory, the false-alarm budget, detection
delays and per-sample cost.

    .venv/bin/python -m benchmarks.bench_calibration [RUNS]

1. Textbook charts with a known reference (N(0,1) input, zero-state): average run length in
   control and at a 1-sigma shift, measured over RUNS runs (default 4000) with a 95% confidence
   interval, against the published values (Montgomery; Lucas and Saccucci 1990).
2. The budget: ``false_alarm_every: 30d`` at 1-minute steps asks for an in-control run length
   of 43,200 samples. The default detector (reference learned from its warm-up) runs on white
   N(0,1) and on AR(1) (phi=0.9) input; runs are cut at 4 x 43,200 samples, so the mean is a
   lower bound. Also the share of runs with a false alarm within the first 43,200 samples.
3. Delay to detect 1- and 2-sigma shifts (from the shift to the confirming sample) with the
   budget's limit, over runs with no false alarm before the shift.
4. Cost: per-sample update time of each detector over the ratio to a bare Python loop that
   adds the same samples, measured in the same run.
5. Early in a chart's life (``early``): many charts, each learning its reference from a warm-up
   of m samples (m = 30, the default warm-up; 60; 120), then judged in control on white and
   AR(1) (phi=0.3, 0.5, 0.9) input: the share of charts confirming a change within their first
   30 and 1,000 judged samples and within 43,200, against what the budget allows (a chart with
   ARL 43,200 alarms within its first K samples with probability ``1 - (1 - 1/43,200)^K``);
   then the delay to confirm a 1- and 2-sigma shift that begins at a given sample of a chart's
   life (60, 100, 200: early, possibly inside the warm-up; 3,000: at steady state). The judged
   samples go through :func:`driftowner.detect.charts.advance` (the scalar update's arithmetic
   on numpy rows, bit for bit), so tens of thousands of charts take seconds.

    .venv/bin/python -m benchmarks.bench_calibration early [CHARTS]   # section 5 alone
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np

from driftowner.detect import charts
from driftowner.detect.changepoint import (
    MAX_PHI,
    MAX_WARMUP_FACTOR,
    WARMUP_PHI_MARGIN,
    ChartState,
    Cusum,
    Detector,
    Ewma,
    PageHinkley,
    budget_run_length,
    cusum_limit,
    default_detector,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=1)
BUDGET = timedelta(days=30)


def white(rng: random.Random, shift: float = 0.0) -> Iterator[float]:
    while True:
        yield rng.gauss(shift, 1.0)


def ar1(rng: random.Random, phi: float, shift: float = 0.0) -> Iterator[float]:
    """AR(1) with unit marginal variance, mean ``shift``."""
    noise = math.sqrt(1 - phi * phi)
    x = rng.gauss(0.0, 1.0)
    while True:
        x = phi * x + rng.gauss(0.0, noise)
        yield x + shift


def run_length(
    detector: Detector,
    source: Iterator[float],
    cap: int,
    shift_at: int = 0,
    shift: float = 0.0,
    settled: bool = False,
) -> tuple[int, bool]:
    """Samples until the first alarm in a bad direction (counted from ``shift_at``), and
    whether it came before the shift (a false alarm), or ``cap`` when none came. ``settled``
    starts the chart as if long running (EWMA: its asymptotic limits)."""
    state = detector.start()
    if settled:
        state = replace(state, count=10**9)
    at = T0
    for index in range(cap):
        value = next(source) + (shift if index >= shift_at else 0.0)
        at += STEP
        state, detection = detector.update(state, value, at)
        if detection is not None and detection.bad:
            return index - shift_at + 1, index < shift_at
    return cap - shift_at, False


def interval(values: list[int]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values))
    return mean, half


def textbook(runs: int) -> None:
    rng = random.Random(1)
    print("| chart | shift | theory ARL | measured ARL (95% CI) | measured / theory |")
    print("|---|---:|---:|---:|---:|")
    charts: list[tuple[str, Callable[[], Detector], float, float, bool]] = [
        ("CUSUM k=0.5 h=5", lambda: Cusum(k=0.5, h=5.0, centre=0.0, spread=1.0), 465, 10.4, False),
        ("CUSUM k=0.5 h=4", lambda: Cusum(k=0.5, h=4.0, centre=0.0, spread=1.0), 168, 8.38, False),
        (
            "EWMA lambda=0.2 L=2.962",
            lambda: Ewma(lam=0.2, width=2.962, centre=0.0, spread=1.0),
            500,
            10.5,
            False,
        ),
        (
            "EWMA lambda=0.2 L=2.962, asymptotic limits",
            lambda: Ewma(lam=0.2, width=2.962, centre=0.0, spread=1.0),
            500,
            10.5,
            True,
        ),
    ]
    for label, make, arl0, arl1, settled in charts:
        for shift, theory in ((0.0, arl0), (1.0, arl1)):
            lengths = [
                run_length(make(), white(rng, shift), 100_000, settled=settled)[0]
                for _ in range(runs)
            ]
            mean, half = interval(lengths)
            print(
                f"| {label} | {shift:g} sigma | {theory:g} | {mean:.1f} +- {half:.1f} "
                f"| {mean / theory:.3f} |"
            )


def budget(runs: int) -> None:
    target = budget_run_length(BUDGET, STEP)
    cap = int(4 * target)
    rng = random.Random(2)
    print(f"\nBudget 30d at 1m: target in-control ARL {target:,.0f} samples, two-sided ")
    print(f"h = {cusum_limit(0.5, target, 2):.2f} (k=0.5); runs cut at {cap:,} samples.\n")
    print(
        "| detector | input | runs | mean run length (lower bound, 95% CI) | "
        "false alarm within 43,200 |"
    )
    print("|---|---|---:|---:|---:|")
    cases: list[tuple[str, Callable[[], Detector]]] = [
        ("default: Page-Hinkley, learned reference", default_detector),
        ("CUSUM, known reference", lambda: Cusum(centre=0.0, spread=1.0)),
        ("CUSUM, learned reference", Cusum),
        ("EWMA, learned reference", Ewma),
    ]
    for label, make in cases:
        for name, source in (
            ("white", lambda: white(rng)),
            ("AR(1) phi=0.9", lambda: ar1(rng, 0.9)),
        ):
            if "known" in label and name != "white":
                continue
            lengths = [run_length(make(), source(), cap)[0] for _ in range(runs)]
            early = sum(1 for n in lengths if n <= target) / runs
            mean, half = interval(lengths)
            print(f"| {label} | {name} | {runs} | {mean:,.0f} +- {half:,.0f} | {early:.0%} |")


def delays(runs: int) -> None:
    rng = random.Random(3)
    print("\n| detector | input | shift | mean delay (samples, 95% CI) | false alarms before |")
    print("|---|---|---:|---:|---:|")
    for label, make in (
        ("default (Page-Hinkley)", default_detector),
        ("CUSUM", Cusum),
        ("EWMA", Ewma),
    ):
        for name, source in (
            ("white", lambda: white(rng)),
            ("AR(1) phi=0.9", lambda: ar1(rng, 0.9)),
        ):
            for shift in (1.0, 2.0):
                found, false = [], 0
                for _ in range(runs):
                    length, early = run_length(make(), source(), 6000, 1000, shift)
                    if early:
                        false += 1
                    else:
                        found.append(length)
                mean, half = interval(found)
                print(
                    f"| {label} | {name} | {shift:g} sigma | {mean:.1f} +- {half:.1f} | {false} |"
                )


def cost(samples: int = 200_000) -> None:
    rng = random.Random(4)
    values = [rng.gauss(0.0, 1.0) for _ in range(samples)]
    times = [T0 + i * STEP for i in range(samples)]
    start = time.perf_counter()
    total = 0.0
    for value, _ in zip(values, times, strict=True):
        total += value
    base = time.perf_counter() - start
    print(
        f"\nBaseline: a bare loop adding {samples:,} samples, {base / samples * 1e9:.0f} ns each.\n"
    )
    print("| detector | per sample (us) | / baseline |")
    print("|---|---:|---:|")
    for label, make in (
        ("default (page_hinkley)", default_detector),
        ("cusum", Cusum),
        ("ewma", Ewma),
    ):
        detector = make()
        state = detector.start()
        start = time.perf_counter()
        for value, at in zip(values, times, strict=True):
            state, _ = detector.update(state, value, at)
        spent = time.perf_counter() - start
        print(f"| {label} | {spent / samples * 1e6:.2f} | {spent / base:.0f} |")


# --- 5. early in a chart's life ---------------------------------------------------------

REFERENCE_SIZES = (30, 60, 120)
"""Warm-ups studied: 30 is the default; 60 and 120 what a signal may set instead."""
EARLY = (30, 1000)
"""The first judged samples whose alarms are counted against the budget."""


def series(rng: np.random.Generator, phi: float, rows: int, length: int) -> np.ndarray:
    """``rows`` independent in-control series of unit marginal variance: AR(1) with ``phi``
    (0: white noise)."""
    noise = rng.standard_normal((rows, length))
    if phi == 0.0:
        return noise
    out = np.empty_like(noise)
    x = rng.standard_normal(rows)
    for t in range(length):
        x = phi * x + math.sqrt(1 - phi * phi) * noise[:, t]
        out[:, t] = x
    return out


def warmup_length(values: np.ndarray, warmup: int) -> int:
    """The samples a chart's warm-up takes on ``values``: the first count, at least
    ``warmup``, that reaches ``MAX_WARMUP_FACTOR * warmup`` or holds ``warmup`` effectively
    independent samples counted with phi widened by ``WARMUP_PHI_MARGIN`` standard errors (the
    rule of ``_Chart._learned``, computed for every prefix at once;
    the chart itself then learns the reference, so a rounding difference only moves where the
    search starts)."""
    n = np.arange(1, len(values) + 1, dtype=np.float64)
    sums = np.cumsum(values)
    mean = sums / n
    total = np.cumsum(values * values) - n * mean * mean
    products = np.concatenate(([0.0], np.cumsum(values[:-1] * values[1:])))
    before = np.concatenate(([0.0], sums[:-1]))  # sum of the first k-1 values
    lagged = products - mean * (before + sums - values[0]) + (n - 1) * mean * mean
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = np.where(total > 0, lagged / total, 0.0)
    point = np.clip(np.where(total > 0, raw + (1 + 3 * raw) / n, 0.0), 0.0, MAX_PHI)
    phi = np.minimum(point + WARMUP_PHI_MARGIN * np.sqrt((1 - point * point) / n), MAX_PHI)
    enough = (n >= MAX_WARMUP_FACTOR * warmup) | (n * (1 - phi) / (1 + phi) >= warmup)
    enough[: warmup - 1] = False
    return int(np.argmax(enough)) + 1


def learned(detector: Detector, values: np.ndarray) -> tuple[ChartState, int]:
    """The chart's state once it has learned its reference from the start of ``values`` (one
    sample a minute from 0), and the samples its warm-up took."""
    count = warmup_length(values, detector.warmup)
    window = tuple(values[: count - 1].tolist())
    state = ChartState(warmup=window, warmup_since=0.0, last_at=60.0 * (count - 2))
    while state.reference is None:
        at = datetime.fromtimestamp(60.0 * (count - 1), UTC)
        state, _ = detector.update(state, float(values[count - 1]), at)
        count += 1
    return state, count - 1


def first_alarms(
    detector: Detector,
    rng: np.random.Generator,
    phi: float,
    rows: int,
    horizon: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` charts learn their reference, then judge ``horizon`` in-control samples: per
    chart, the judged sample that confirmed a change (1-based; 0 when none did), and the
    samples its warm-up took."""
    first, _, taken = judged_fleet(detector, rng, phi, rows, horizon)
    return first, taken


def judged_fleet(
    detector: Detector,
    rng: np.random.Generator,
    phi: float,
    rows: int,
    horizon: int,
    shift: float = 0.0,
    shift_at: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`first_alarms`, with each chart's limit as the middle array, and the input's mean
    moved by ``shift`` from the chart's sample ``shift_at`` on (0-based, counted from its
    first warm-up sample; a shift inside the warm-up is learned with it)."""
    clean = series(rng, phi, rows, MAX_WARMUP_FACTOR * detector.warmup)
    warmup = clean.copy()
    warmup[:, shift_at:] += shift
    states, lengths = zip(*(learned(detector, warmup[r]) for r in range(rows)), strict=True)
    taken = np.asarray(lengths)
    state = charts.hold(charts.empty(rows, detector.warmup), list(range(rows)), states)
    x = clean[np.arange(rows), taken - 1]  # an AR(1) series goes on from its last value
    last = 60.0 * (taken - 1)
    first = np.zeros(rows, dtype=np.int64)
    active = np.arange(rows)
    for judged in range(1, horizon + 1):
        noise = rng.standard_normal(len(active))
        x[active] = phi * x[active] + math.sqrt(1 - phi * phi) * noise
        moved_by = np.where(taken[active] - 1 + judged >= shift_at, shift, 0.0)
        step = charts.advance(
            detector, state, active, x[active] + moved_by, last[active] + 60.0 * judged
        )
        state = step.rows
        if step.moved.any():
            first[active[step.moved]] = judged
            active = active[~step.moved]
            if not active.size:
                break
    return first, state.limit.copy(), taken


def allowed(samples: int, target: float) -> float:
    """The share of charts the budget lets alarm within their first ``samples``: that of a
    chart whose in-control run length is geometric with mean ``target``."""
    return 1 - (1 - 1 / target) ** samples


INPUTS = (("white", 0.0), ("AR(1) phi=0.3", 0.3), ("AR(1) phi=0.5", 0.5), ("AR(1) phi=0.9", 0.9))


def early(count: int) -> None:
    """Section 5: early false alarms per input and reference size, then the delay to confirm a
    shift that starts at the first judged sample."""
    target = budget_run_length(BUDGET, STEP)
    rng = np.random.default_rng(5)
    long_run = max(count // 40, 50)
    print(
        f"\nEarly life: up to {count:,} charts per row (fewer for long warm-ups) judged for "
        f"{EARLY[-1]:,} samples; {long_run:,} more for {target:,.0f}."
    )
    print(
        "| detector | input | m | charts | reference (mean samples) | mean limit | first 30 | "
        "first 1,000 | within 43,200 | ARL (censored MLE, 95% CI) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    cases = [("default", PageHinkley, m) for m in REFERENCE_SIZES] + [("CUSUM", Cusum, 30)]
    for label, make, m in cases:
        for name, phi in INPUTS:
            detector = make(warmup=m)
            rows = count if m <= 60 else count * 60 // m
            first, limits, taken = judged_fleet(detector, rng, phi, rows, EARLY[-1])
            runs, _ = first_alarms(detector, rng, phi, long_run, int(target))
            alarms = int(np.count_nonzero(runs))
            exposure = float(np.where(runs > 0, runs, target).sum())
            print(
                f"| {label} | {name} | {m} | {rows:,} | {taken.mean():.0f} | {limits.mean():.1f} "
                f"| {' | '.join(_share(first, k) for k in EARLY)} | {alarms} of {long_run} "
                f"| {_arl(exposure, alarms)} |"
            )
    allowances = " / ".join(f"{allowed(k, target):.3%}" for k in (*EARLY, int(target)))
    print(f"\nThe budget allows (first 30 / first 1,000 / within 43,200): {allowances}.")
    print(
        "\nDelay to confirm a shift that begins at sample `at` of a chart's life (its warm-up "
        "included; 3,000: long after any warm-up), over the charts with no alarm before it:"
    )
    print(
        "| detector | input | shift | at | charts | mean delay | median | false alarm before "
        "| unconfirmed in 3,000 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, phi in INPUTS:
        for shift in (1.0, 2.0):
            for at in SHIFT_AT:
                rows = max(count // 10, 200)
                found, before, missed = shift_delays(PageHinkley(), rng, phi, rows, shift, at)
                mean, median = (
                    (f"{found.mean():.1f}", f"{np.median(found):.0f}") if found.size else ("-", "-")
                )
                print(
                    f"| default | {name} | {shift:g} sigma | {at} | {rows:,} "
                    f"| {mean} | {median} | {before} | {missed} |"
                )


SHIFT_AT = (60, 100, 200, 3000)
"""Samples of a chart's life at which the delay table's shifts begin."""


def shift_delays(
    detector: Detector, rng: np.random.Generator, phi: float, rows: int, shift: float, at: int
) -> tuple[np.ndarray, int, int]:
    """Charts whose input moves by ``shift`` from their sample ``at``: the delays (samples from
    the shift to the confirming one, within 3,000) of those with no alarm before it, how many
    alarmed before it, and how many confirmed nothing within 3,000 samples of it (a shift
    inside the warm-up is mostly learned as normal)."""
    first, _, taken = judged_fleet(detector, rng, phi, rows, at + 3000, shift, at)
    alarmed = first > 0
    delay = taken + first - at  # the confirming sample is number taken - 1 + first
    before = int(np.count_nonzero(alarmed & (delay <= 0)))
    found = delay[alarmed & (delay > 0) & (delay <= 3000)]
    return found, before, rows - before - len(found)


def _share(first: np.ndarray, samples: int) -> str:
    hits = int(np.count_nonzero((first > 0) & (first <= samples)))
    return f"{hits} ({hits / len(first):.3%})"


def _arl(exposure: float, alarms: int) -> str:
    """The in-control ARL as total judged samples over alarms (exponential run lengths,
    censored at the horizon), with an approximate 95% interval from the Poisson count."""
    if alarms == 0:
        return f"> {exposure / 3:,.0f} (no alarm)"
    low = exposure / (alarms + 1.96 * math.sqrt(alarms) + 1)
    high = exposure / max(alarms - 1.96 * math.sqrt(alarms), 0.5)
    return f"{exposure / alarms:,.0f} ({low:,.0f}-{high:,.0f})"


def main(argv: list[str]) -> None:
    if argv[:1] == ["early"]:
        early(int(argv[1]) if len(argv) > 1 else 20_000)
        return
    runs = int(argv[0]) if argv else 4000
    textbook(runs)
    budget(max(runs // 80, 20))
    delays(max(runs // 8, 100))
    cost()


if __name__ == "__main__":
    main(sys.argv[1:])
