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

from driftowner.detect.changepoint import (
    Cusum,
    Detector,
    Ewma,
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


def main(argv: list[str]) -> None:
    runs = int(argv[0]) if argv else 4000
    textbook(runs)
    budget(max(runs // 80, 20))
    delays(max(runs // 8, 100))
    cost()


if __name__ == "__main__":
    main(sys.argv[1:])
