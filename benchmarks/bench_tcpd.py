"""Detector quality on labelled change-point series: each detector runs over each series online,
sample by sample as the daemon would, and its confirmed change points (the estimated change
starts) are scored with the TCPD metric (F1 with a margin of 5, and cover) against the human
annotations, then averaged over the series.

    .venv/bin/python -m benchmarks.bench_tcpd [DATA_DIR]

DATA_DIR defaults to /work/shared/data/tcpd (TCPD's format: ``series/NAME.json`` and
``annotations.json``). Every detector runs with its defaults and no per-series setting: one
sample per 1-minute evaluation, the 30-day false-alarm budget, direction ``both``. A series
with several dimensions runs one detector per dimension; their change points are pooled.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from driftowner.detect.changepoint import Cusum, Detector, Ewma, PageHinkley, default_detector
from driftowner.detect.tcpd_metric import cover, f1_score

DATA = Path("/work/shared/data/tcpd")
T0 = datetime(2025, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=1)

DETECTORS: dict[str, Callable[[], Detector]] = {
    "default (page_hinkley, budget 30d)": default_detector,
    "cusum k=0.5 (budget 30d)": Cusum,
    "cusum k=0.5 h=5 (textbook)": lambda: Cusum(k=0.5, h=5.0),
    "ewma lambda=0.2 (budget 30d)": Ewma,
    "page_hinkley delta=0.5 (budget 30d)": PageHinkley,
}

PUBLISHED = {
    # TCPDBench analysis/output/scores/default_f1_scores.json (default settings), mean F1 over
    # these ten series; binseg failed on run_log (multivariate), so its mean is over nine.
    "binseg (published, default settings; 9 series)": 0.776,
    "bocpd (published, default settings)": 0.744,
    "zero / no change (published)": 0.622,
}


def change_points(detector: Detector, values: Sequence[float]) -> set[int]:
    """The indices where the detector, run online over ``values``, says changes began."""
    state = detector.start()
    found: set[int] = set()
    for index, value in enumerate(values):
        state, detection = detector.update(state, value, T0 + index * STEP)
        if detection is not None:
            found.add(round((detection.began_at - T0) / STEP))
    return found


def load(directory: Path) -> list[tuple[str, list[list[float]], dict[str, list[int]]]]:
    """Each series' name, its dimensions (missing values as NaN) and its annotations."""
    annotations = json.loads((directory / "annotations.json").read_text())
    loaded = []
    for path in sorted((directory / "series").glob("*.json")):
        doc = json.loads(path.read_text())
        dims = [
            [math.nan if v is None else float(v) for v in column["raw"]] for column in doc["series"]
        ]
        loaded.append((path.stem, dims, annotations[path.stem]))
    return loaded


def score(
    make: Callable[[], Detector], data: list[tuple[str, list[list[float]], dict[str, list[int]]]]
) -> dict[str, tuple[float, float, int]]:
    """Per series: F1, cover and the number of change points found."""
    result = {}
    for name, dims, marked in data:
        found: set[int] = set()
        for values in dims:
            found |= change_points(make(), values)
        length = len(dims[0])
        result[name] = (f1_score(marked, found), cover(marked, found, length), len(found))
    return result


def main(argv: list[str]) -> None:
    data = load(Path(argv[0]) if argv else DATA)
    names = [name for name, _, _ in data]
    print("| detector | mean F1 | mean cover | " + " | ".join(names) + " |")
    print("|---|---:|---:|" + "---:|" * len(names))
    nothing = score(lambda: _Never(), data)
    for label, make in [*DETECTORS.items(), ("no change (measured here)", lambda: _Never())]:
        scores = nothing if label.startswith("no change") else score(make, data)
        f1 = sum(s[0] for s in scores.values()) / len(scores)
        cov = sum(s[1] for s in scores.values()) / len(scores)
        cells = " | ".join(f"{scores[n][0]:.2f} ({scores[n][2]})" for n in names)
        print(f"| {label} | {f1:.3f} | {cov:.3f} | {cells} |")
    for label, f1 in PUBLISHED.items():
        print(f"| {label} | {f1:.2f} | | " + " | ".join("" for _ in names) + " |")


class _Never(Cusum):
    """Predicts no change at all: the floor every detector must beat."""

    def update(self, state, value, at):  # type: ignore[no-untyped-def]
        return state, None


if __name__ == "__main__":
    main(sys.argv[1:])
