"""Do incidents resolve when a signal comes back, and does a return from a harmless excursion
stay quiet? Judged through the detector bank (``bank.observe``, the daemon's and replay's own
path), with one fixed seed per run.

    .venv/bin/python -m benchmarks.bench_recovery [RUNS]      # default 200 runs per row

1. Recovery: a ``bad: down`` signal, 2,000 samples at 0.41, a dip to ``0.41 - shift * 0.01``
   for ``length`` samples, then 700 at 0.41 again; Gaussian noise of sd 0.01; one sample a
   minute. Counted: charts still degraded at the end (their incident would never
   auto-resolve) on main before issue 6 point 4 (``before``: neither the bank's re-learning
   rule ``bank._on_relearning`` nor Page-Hinkley's prior, ``changepoint.PRIOR_WEIGHT``),
   with the re-learning rule only (``rule``, main after d31ad3e), with both (``prior``) and
   with the bank's return window too (``now``: ``bank._returned``, the median of the latest
   warm-up's values back near the level left).
2. A good-direction excursion: the same series judged as ``bad: up`` (the dip is harmless)
   and as ``bad: up`` with the return overshooting to ``0.41 + shift * 0.01``. Counted: runs
   ever degraded (a return must not page: 0 is right) and runs degraded at the end (an
   overshoot must: ``RUNS`` is right), ``before`` (the bank without ``eased_from``: every
   bad-direction change judged against the chart's reference) and ``now``.
3. Still away: the ``bad: down`` dip of part 1 (120 samples), then the 700 samples stay at the
   dip level (``stays``), come half the way back (``half back``: the half-way tolerance's own
   boundary, which the chart's changes decide about half the time) or a quarter of the way
   (``a quarter back``). Counted: runs degraded at
   the end (their incident must stay open: ``RUNS`` is right), without the return window
   (``before``) and with it (``now``).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from driftowner.detect import bank, changepoint
from driftowner.detect.changepoint import Cusum, Detection, Detector, Ewma, PageHinkley
from driftowner.model import Sample

T0 = datetime(2026, 11, 20, tzinfo=UTC)
DIP_AT = 2000
MAKERS: tuple[Callable[..., Detector], ...] = (PageHinkley, Cusum, Ewma)


def series(seed: int, shift: float, length: int, back: float = 0.0) -> list[Sample]:
    """The dip of ``shift`` sd for ``length`` samples; the 700 after it ``back`` sd above."""
    rng = random.Random(seed)
    return [
        Sample(
            T0 + timedelta(minutes=i),
            (
                0.41 - shift * 0.01
                if DIP_AT <= i < DIP_AT + length
                else 0.41 + back * 0.01
                if i >= DIP_AT + length
                else 0.41
            )
            + rng.gauss(0, 0.01),
        )
        for i in range(DIP_AT + length + 700)
    ]


@contextmanager
def switched(
    rule: bool = True, prior: bool = True, eased: bool = True, returned: bool = True
) -> Iterator[None]:
    """The bank and chart with the named parts of the fix switched off, for this block."""
    saved = bank._on_relearning, changepoint.PRIOR_WEIGHT, bank._after, bank._returned
    if not returned:
        bank._returned = lambda watch, _: watch  # type: ignore[assignment]
    if not rule:
        bank._on_relearning = lambda *_: None  # type: ignore[assignment]
    if not prior:
        changepoint.PRIOR_WEIGHT = 0.0
    if not eased:
        after = bank._after

        def plain(watch: bank.Watch, detection: Detection) -> bank.Watch:
            return replace(after(watch, detection), eased_from=None, eased_to=None)

        bank._after = plain  # type: ignore[assignment]
    try:
        yield
    finally:
        bank._on_relearning, changepoint.PRIOR_WEIGHT, bank._after, bank._returned = saved


def stuck(
    make: Callable[..., Detector], shift: float, length: int, runs: int, back: float = 0.0
) -> int:
    """Runs whose watch is still degraded 700 samples after the recovery (or the dip's end)."""
    return sum(
        bank.observe(bank.start(make(bad="down")), series(seed, shift, length, back))[0].degraded
        for seed in range(runs)
    )


def paged(make: Callable[..., Detector], shift: float, back: float, runs: int) -> tuple[int, int]:
    """``bad: up`` runs ever degraded, and degraded at the end, over a dip then ``back``."""
    ever = end = 0
    for seed in range(runs):
        watch = bank.start(make(bad="up"))
        seen = False
        for sample in series(seed, shift, 120, back):
            watch, _ = bank.observe(watch, [sample])
            seen = seen or watch.degraded
        ever += seen
        end += watch.degraded
    return ever, end


def main(argv: list[str]) -> None:
    runs = int(argv[0]) if argv else 200
    print(f"1. Still degraded 700 samples after a full recovery, of {runs} runs:\n")
    print("| detector | dip (sd) | dip length | before | rule | prior | now |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for shift in (2.0, 4.0, 10.0):
        for length in (120, 320):
            for make in MAKERS:
                with switched(rule=False, prior=False, returned=False):
                    before = stuck(make, shift, length, runs)
                with switched(prior=False, returned=False):
                    rule = stuck(make, shift, length, runs)
                with switched(returned=False):
                    prior = stuck(make, shift, length, runs)
                now = stuck(make, shift, length, runs)
                print(
                    f"| {make.__name__} | {shift:g} | {length} | {before} | {rule} | {prior} "
                    f"| {now} |"
                )
    print(f"\n2. bad: up, a dip of 120 samples, then back or beyond; of {runs} runs:\n")
    print("| detector | dip (sd) | then | ever degraded before | now | at the end before | now |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for shift in (4.0, 10.0):
        for back, then in ((0.0, "back"), (shift, f"{shift:g} sd above")):
            for make in MAKERS:
                with switched(eased=False):
                    ever_before, end_before = paged(make, shift, back, runs)
                ever, end = paged(make, shift, back, runs)
                print(
                    f"| {make.__name__} | {shift:g} | {then} | {ever_before} | {ever} "
                    f"| {end_before} | {end} |"
                )

    print(
        f"\n3. bad: down, a dip of 120 samples, then still away; degraded at the end, of {runs}:\n"
    )
    print("| detector | dip (sd) | then | before | now |")
    print("|---|---:|---|---:|---:|")
    for shift in (2.0, 4.0, 10.0):
        for back, then in (
            (-shift, "stays"),
            (-shift / 2, "half back"),
            (-shift * 0.75, "a quarter back"),
        ):
            for make in MAKERS:
                with switched(returned=False):
                    before = stuck(make, shift, 120, runs, back)
                now = stuck(make, shift, 120, runs, back)
                print(f"| {make.__name__} | {shift:g} | {then} | {before} | {now} |")


if __name__ == "__main__":
    main(sys.argv[1:])
