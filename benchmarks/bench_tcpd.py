"""Detector quality on labelled change-point series: each detector runs over each series online,
sample by sample as the daemon would, and its confirmed change points (the estimated change
starts) are scored with the TCPD metric (F1 with a margin of 5, and cover) against the human
annotations, then averaged over the series.

    .venv/bin/python -m benchmarks.bench_tcpd [DATA_DIR]            # the detectors directly
    .venv/bin/python -m benchmarks.bench_tcpd --replay [DATA_DIR]   # through driftowner replay

DATA_DIR defaults to /work/shared/data/tcpd (TCPD's format: ``series/NAME.json`` and
``annotations.json``). Every detector runs with its defaults and no per-series setting: one
sample per 1-minute evaluation, the 30-day false-alarm budget, direction ``both``. A series
with several dimensions runs one detector per dimension; their change points are pooled.

``--replay`` runs the product instead: each series is written as a file source's CSV
(``timestamp,series,value``) in a temporary directory, at its own timestamps when it has them
(else one sample a minute), and ``driftowner replay`` runs over it with a config whose
evaluation interval is the series' smallest sampling step (so no sample is skipped) and whose
budget is the same 43,200 samples (``false_alarm_every`` = 43,200 steps: 30 days at 1
minute). The change points are the ``began_at`` of replay's ``changes``, mapped back to the
index of the first sample at or after them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import sys
import tempfile
from bisect import bisect_left
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from driftowner.config import Config
from driftowner.detect.changepoint import Cusum, Detector, Ewma, PageHinkley, default_detector
from driftowner.detect.tcpd_metric import cover, f1_score
from driftowner.replay import replay
from driftowner.sources import build_source

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


DETECT_SECTIONS: dict[str, dict[str, Any] | None] = {
    "default (page_hinkley, budget 30d)": None,
    "cusum k=0.5 (budget 30d)": {"cusum": {}},
    "cusum k=0.5 h=5 (textbook)": {"cusum": {"k": 0.5, "h": 5.0}},
    "ewma lambda=0.2 (budget 30d)": {"ewma": {}},
    "page_hinkley delta=0.5 (budget 30d)": {"page_hinkley": {}},
}
"""The same detectors as :data:`DETECTORS`, as a signal's ``detect`` section."""

BUDGET_SAMPLES = 43_200
"""30 days at one sample a minute: the budget every series gets, in samples ..."""
MAX_BUDGET_SECONDS = 3650 * 86400
"""... unless that is longer than the longest ``false_alarm_every`` the config accepts (10
years): then 10 years (260 samples of brent_spot's 14 days, 10 of co2_canada's year)."""


def times_of(path: Path, length: int) -> list[datetime]:
    """A series' sample times: its own timestamps when it has them, else one a minute."""
    time = json.loads(path.read_text()).get("time", {})
    raw, form = time.get("raw"), time.get("format")
    if not raw or not form:
        return [T0 + index * STEP for index in range(length)]
    return [datetime.strptime(text, form).replace(tzinfo=UTC) for text in raw]


def replay_config(csv: Path, step: timedelta, dims: int, detect: dict[str, Any] | None) -> Config:
    """One system whose signals (one per dimension) read the file source, judged by ``detect``
    (the default detector when None), evaluated every ``step`` with the 43,200-sample budget."""
    seconds = round(step.total_seconds())
    signal: dict[str, Any] = {
        "layer": "model",
        "source": "file",
        "bad": "both",
        "false_alarm_every": f"{min(seconds * BUDGET_SAMPLES, MAX_BUDGET_SECONDS)}s",
    }
    if detect is not None:
        signal["detect"] = detect
    document = {
        "evaluation": {"interval": f"{seconds}s"},
        "sources": {"file": {"type": "file", "path": str(csv)}},
        "owners": {"alice": {"name": "Alice", "email": "alice@example.com"}},
        "channels": {"console": {"type": "log"}},
        "escalation_chains": {"std": {"steps": [{"notify": "owner", "via": ["console"]}]}},
        "systems": {
            "series": {
                "owner": "alice",
                "escalation": "std",
                "signals": {f"d{d}": {**signal, "query": f"d{d}"} for d in range(dims)},
            }
        },
    }
    return Config.model_validate(document)


def replayed_change_points(
    directory: Path, name: str, dims: list[list[float]], detect: dict[str, Any] | None, tmp: Path
) -> set[int]:
    """The change points ``driftowner replay`` reports for one series, as sample indices."""
    times = times_of(directory / "series" / f"{name}.json", len(dims[0]))
    step = min(b - a for a, b in itertools.pairwise(times))
    csv = tmp / f"{name}.csv"
    with csv.open("w") as out:
        out.write("timestamp,series,value\n")
        for d, values in enumerate(dims):
            for at, value in zip(times, values, strict=True):
                if not math.isnan(value):
                    out.write(f"{at.isoformat()},d{d},{value!r}\n")
    config = replay_config(csv, step, len(dims), detect)

    async def run() -> list[datetime]:
        sources = {
            n: build_source(n, spec, clock=lambda: times[-1]) for n, spec in config.sources.items()
        }
        try:
            result = await replay(config, sources, times[0], times[-1])
        finally:
            for source in sources.values():
                await source.aclose()
        assert result.failed_queries == 0, result.failures
        return [change.began_at or change.at for change in result.changes]

    return {bisect_left(times, began) for began in asyncio.run(run())}


def score_replay(
    directory: Path,
    detect: dict[str, Any] | None,
    data: list[tuple[str, list[list[float]], dict[str, list[int]]]],
) -> dict[str, tuple[float, float, int]]:
    """Per series, through replay: F1, cover and the number of change points found."""
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, dims, marked in data:
            found = replayed_change_points(directory, name, dims, detect, Path(tmp))
            length = len(dims[0])
            result[name] = (f1_score(marked, found), cover(marked, found, length), len(found))
    return result


def main(argv: list[str]) -> None:
    through_replay = "--replay" in argv
    argv = [arg for arg in argv if arg != "--replay"]
    directory = Path(argv[0]) if argv else DATA
    data = load(directory)
    if through_replay:
        replay_main(directory, data)
        return
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


def replay_main(
    directory: Path, data: list[tuple[str, list[list[float]], dict[str, list[int]]]]
) -> None:
    names = [name for name, _, _ in data]
    print("| detector (through replay) | mean F1 | mean cover | " + " | ".join(names) + " |")
    print("|---|---:|---:|" + "---:|" * len(names))
    for label, detect in DETECT_SECTIONS.items():
        scores = score_replay(directory, detect, data)
        f1 = sum(s[0] for s in scores.values()) / len(scores)
        cov = sum(s[1] for s in scores.values()) / len(scores)
        cells = " | ".join(f"{scores[n][0]:.2f} ({scores[n][2]})" for n in names)
        print(f"| {label} | {f1:.3f} | {cov:.3f} | {cells} |")


class _Never(Cusum):
    """Predicts no change at all: the floor every detector must beat."""

    def update(self, state, value, at):  # type: ignore[no-untyped-def]
        return state, None


if __name__ == "__main__":
    main(sys.argv[1:])
