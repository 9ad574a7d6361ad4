"""A signal template's answer judged as rows of arrays (the steady path: ``read_values_by_label``
then ``Bank.judge_rows``) against the same answers judged signal by signal: the same findings,
evidence and confirmed changes at every cycle, and the same watches."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from driftowner.config import Config
from driftowner.cycle import Findings, Recorded
from driftowner.detect.bank import Bank
from driftowner.model import Finding, Sample
from driftowner.poll import poll
from driftowner.sources import LabelledResult, LabelledValues, finite_samples

from .factories import T0, TemplateOnlySource, templated_document

MINUTE = timedelta(minutes=1)
HISTORY = 60
"""Minutes of history before the first cycle (the warm start reads them)."""

Table = dict[str, dict[datetime, float | None]]
"""Label value → minute → value (None: no series that minute)."""


class SeriesFake(TemplateOnlySource):
    """A Prometheus stand-in answering a template's reads from a table, series by series."""

    def __init__(self, table: Table) -> None:
        self.table = table

    async def read_by_label(
        self, query: str, start: datetime, end: datetime, step: timedelta, label: str
    ) -> LabelledResult:
        found: dict[str, tuple[Sample, ...]] = {}
        for name, points in self.table.items():
            samples = [
                Sample(at, value)
                for at, value in points.items()
                if start <= at <= end and value is not None
            ]
            if samples:
                found[name] = finite_samples(samples)
        return LabelledResult(series=found)


class ArraysFake(SeriesFake):
    """The same stand-in, also answering instant reads as arrays (as Prometheus does)."""

    async def read_values_by_label(
        self, query: str, at: datetime, label: str, index: dict[str, int]
    ) -> LabelledValues | LabelledResult:
        rows, values, others = [], [], []
        for name, points in self.table.items():
            value = points.get(at)
            if value is None:
                continue
            if name in index:
                rows.append(index[name])
                values.append(value)
            else:
                others.append(name)
        return LabelledValues(
            np.asarray(rows, dtype=np.int64),
            np.asarray(values, dtype=np.float64),
            np.full(len(rows), at.timestamp()),
            tuple(sorted(others)),
        )


def _config(systems: int, bad: str, detect: dict[str, Any] | None) -> Config:
    document, system = templated_document("http://127.0.0.1:9")
    template = document["signal_templates"]["accuracy"]
    template["bad"] = bad
    template.pop("detect", None)
    if detect is not None:
        template["detect"] = detect
    for index in range(systems):
        document["systems"][f"model-{index}"] = system
    return Config.model_validate(document)


def _built(findings: Findings) -> dict[tuple[str, str], Finding]:
    return {(system, name): held[name] for system, held in findings.items() for name in held}


def _table(
    systems: int, cycles: int, shifts: list[tuple[int, float]], odd: float, seed: int
) -> Table:
    """History and cycles per system: level shifts with noise, constant stretches, some
    values NaN or infinite, some minutes without a series, one series no system uses."""
    rng = random.Random(seed)
    table: Table = {}
    for index in range(systems + 1):
        name = f"model-{index}" if index < systems else "stray"
        levels = [level for count, level in shifts for _ in range(count)]
        points: dict[datetime, float | None] = {}
        for minute in range(-HISTORY, cycles):
            level = levels[min(max(minute, 0), len(levels) - 1)] if levels else 0.0
            roll = rng.random()
            if minute >= 0 and roll < odd:
                points[T0 + minute * MINUTE] = rng.choice([None, math.nan, math.inf])
            elif index % 3 == 2:
                points[T0 + minute * MINUTE] = round(level, 1)  # constant within a level
            else:
                points[T0 + minute * MINUTE] = level + 0.05 * rng.gauss(0, 1)
        table[name] = points
    return table


@settings(max_examples=25, deadline=None)
@given(
    shifts=st.lists(st.tuples(st.integers(1, 30), st.floats(-1, 1)), min_size=1, max_size=4),
    bad=st.sampled_from(["up", "down", "both"]),
    detect=st.sampled_from([None, {"cusum": {}}, {"page_hinkley": {"warmup": 5}}, {"ewma": {}}]),
    odd=st.sampled_from([0.0, 0.1]),
    accept_at=st.integers(0, 60),
    seed=st.integers(0, 10_000),
    arrays=st.booleans(),
)
async def test_a_template_judged_as_rows_gives_the_findings_of_one_by_one(
    shifts: list[tuple[int, float]],
    bad: str,
    detect: dict[str, Any] | None,
    odd: float,
    accept_at: int,
    seed: int,
    arrays: bool,
) -> None:
    """Property: over a warm start and 60 cycles of a template of five systems, judging its
    answers as rows of arrays gives, cycle after cycle, exactly the settled systems, the
    statuses that moved since the last cycle (recorded in a plain mapping, or in a
    ``Recorded`` that compares the rows as arrays), the findings (status, value, reference,
    statistic, limit, change start, evidence line, confirmed changes) and, at the end, the
    watches of judging every signal alone (and the unsettled systems are those ``settled``
    says no for): with shifts (alarms, recoveries), constant series, NaN and infinite
    values, missing series, an owner's accept midway, both ``bad`` directions and every
    chart (EWMA stays on the per-signal path)."""
    cycles, systems = 60, 5
    config = _config(systems, bad, detect)
    table = _table(systems, cycles, shifts, odd, seed)
    rows, alone = Bank(), Bank()
    most_held = 0
    recorded: tuple[dict[Any, Any], dict[Any, Any]] = (Recorded() if arrays else {}, {})
    for minute in range(cycles):
        now = T0 + minute * MINUTE
        if minute == accept_at:
            for bank in (rows, alone):
                bank.accept(("model-1", "accuracy"), now - MINUTE)
        got, _ = await poll(config, {"prom": ArraysFake(table)}, now, rows)
        expected, _ = await poll(config, {"prom": SeriesFake(table)}, now, alone)
        most_held = max(most_held, len(rows._held))
        # Read as the daemon reads a cycle: which systems are settled, the statuses that
        # moved (for /metrics), then the statuses, then every finding built.
        assert {s: got.settled(s) for s in got} == {s: expected.settled(s) for s in expected}
        assert got.unsettled() == expected.unsettled() == {s for s in got if not got.settled(s)}
        moved = sorted((f.system, f.signal, f.status) for f in got.moved(recorded[0]))
        assert moved == sorted((f.system, f.signal, f.status) for f in expected.moved(recorded[1]))
        assert recorded[0] == recorded[1]
        assert _statuses(got) == {k: f.status for k, f in _built(expected).items()}
        assert _built(got) == _built(expected), minute
    assert dict(rows.watches) == dict(alone.watches)
    assert (most_held > 0) == (detect is None or "ewma" not in detect)


def _statuses(findings: Findings) -> dict[tuple[str, str], str]:
    return {(s, name): status for s in findings for name, status in findings[s].statuses()}


async def test_asking_whether_a_signal_has_a_watch_builds_no_chart_state(
    monkeypatch: Any,
) -> None:
    """``key in bank.watches`` (and the bank's own presence checks in ``prepare``) build no
    chart state from the rows, while reading a watch brings its state up to date: the first
    form once copied every held state into its watch at each cycle."""
    from driftowner.detect import charts

    config = _config(4, "both", None)
    table = _table(4, 3, [(3, 0.0)], 0.0, seed=1)
    bank = Bank()
    for minute in range(3):
        await poll(config, {"prom": ArraysFake(table)}, T0 + minute * MINUTE, bank)
    assert bank._held
    built: list[int] = []
    real = charts.state_at
    monkeypatch.setattr(charts, "state_at", lambda rows, row: built.append(row) or real(rows, row))
    key = ("model-0", "accuracy")
    assert key in bank.watches and ("model-9", "accuracy") not in bank.watches
    await poll(config, {"prom": ArraysFake(table)}, T0 + 2 * MINUTE, bank)
    assert built == []
    assert bank.watches[key].state.reference is not None and built


async def test_a_system_s_findings_are_published_whole(monkeypatch: Any) -> None:
    """A system's findings, made when it is first read, are visible to other readers (the
    reconcile's worker thread, the API) only once every template's verdicts are in them:
    never half made."""
    from driftowner import cycle

    config = _config(3, "both", None)
    table = _table(3, 2, [(2, 0.0)], 0.0, seed=2)
    bank = Bank()
    findings = None
    for minute in range(2):
        findings, _ = await poll(config, {"prom": ArraysFake(table)}, T0 + minute * MINUTE, bank)
    assert findings is not None
    seen: list[bool] = []
    real = cycle._take

    def watching(held: Any, judged: Any, members: Any) -> None:
        seen.append("model-1" in findings._systems)
        real(held, judged, members)

    monkeypatch.setattr(cycle, "_take", watching)
    assert list(findings["model-1"]) == ["accuracy"]
    assert seen == [False]
