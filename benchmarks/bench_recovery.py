"""Do incidents resolve when a signal comes back? A dip in the ``bad: down`` direction, then a
full recovery to the level it left, judged through the detector bank (``bank.observe``, the
daemon's and replay's own path): the share of charts still degraded at the end (their incident
would never auto-resolve), with the bank's re-learning rule (``bank._back_on_relearning``) and
without it (the same code with the rule switched off).

    .venv/bin/python -m benchmarks.bench_recovery [RUNS]      # default 200 runs per row

Each run: 2,000 samples at 0.41, a dip to ``0.41 - shift * 0.01`` for ``length`` samples, then
700 at 0.41 again; Gaussian noise of sd 0.01; one sample a minute; fixed seeds 0..RUNS-1.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from driftowner.detect import bank
from driftowner.detect.changepoint import Cusum, Detector, Ewma, PageHinkley
from driftowner.model import Sample

T0 = datetime(2026, 11, 20, tzinfo=UTC)
DIP_AT = 2000


def series(seed: int, shift: float, length: int) -> list[Sample]:
    rng = random.Random(seed)
    return [
        Sample(
            T0 + timedelta(minutes=i),
            (0.41 - shift * 0.01 if DIP_AT <= i < DIP_AT + length else 0.41) + rng.gauss(0, 0.01),
        )
        for i in range(DIP_AT + length + 700)
    ]


def stuck(make: Callable[..., Detector], shift: float, length: int, runs: int) -> int:
    """Runs whose watch is still degraded 700 samples after the recovery."""
    return sum(
        bank.observe(bank.start(make(bad="down")), series(seed, shift, length))[0].degraded
        for seed in range(runs)
    )


def main(argv: list[str]) -> None:
    runs = int(argv[0]) if argv else 200
    rule = bank._back_on_relearning
    print(f"Still degraded 700 samples after a full recovery, of {runs} runs:\n")
    print("| detector | dip (sd) | dip length | without the rule | with it |")
    print("|---|---:|---:|---:|---:|")
    for shift in (2.0, 4.0, 10.0):
        for length in (120, 320):
            for make in (PageHinkley, Cusum, Ewma):
                bank._back_on_relearning = lambda *_: False  # type: ignore[assignment]
                try:
                    before = stuck(make, shift, length, runs)
                finally:
                    bank._back_on_relearning = rule
                after = stuck(make, shift, length, runs)
                print(f"| {make.__name__} | {shift:g} | {length} | {before} | {after} |")


if __name__ == "__main__":
    main(sys.argv[1:])
