"""Replay (backtest): the incidents the rules would have opened and resolved over history, and the
changes the detectors confirmed, from one read per signal. (That replay finds what the daemon's
own cycle finds at each instant is proved against SQLite in
``tests/integration/test_replay_daemon.py``.)"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest

from driftowner.model import Sample, SourceResult
from driftowner.replay import ReplayedChange, ReplayedIncident, replay, replay_json
from driftowner.sources import build_source, reads_any_age

from .factories import DISAGREEMENT, SYSTEM, at, make_config, minutes

DISAGREEMENT_RULE = f"disagreement:{DISAGREEMENT}"
QUERIES = ("model_accuracy", "adoption_rate", "null_rate")
Script = Callable[[datetime], float | None]
"""The value of a series at a whole minute, or None when it has no sample then."""


def steady(value: float) -> Script:
    return lambda _: value


def dropping(normal: float, low: float, begins: float, ends: float | None = None) -> Script:
    """``normal``, except ``low`` from ``begins`` until ``ends`` (minutes after T0)."""

    def value(moment: datetime) -> float:
        inside = moment >= at(begins) and (ends is None or moment < at(ends))
        return low if inside else normal

    return value


def until(script: Script, last: float) -> Script:
    """``script`` up to ``last`` minutes after T0, then no samples."""
    return lambda moment: script(moment) if moment <= at(last) else None


HEALTHY: dict[str, Script] = {
    "model_accuracy": steady(0.95),
    "adoption_rate": steady(0.62),
    "null_rate": steady(0.01),
}


class ScriptedSource:
    """An in-memory source over scripted series, one sample a minute at whole minutes from
    three hours before T0 to a day after (or the samples given outright).

    A range read returns the samples within ``[start, end]``; an instant read (``start ==
    end``) answers as Prometheus does: the newest sample at most five minutes old, stamped at
    the query time (with ``any_age``, as a file does: the newest sample however old, with its
    own time). Every read is recorded.
    """

    name = "prom"

    def __init__(
        self,
        scripts: Mapping[str, Script] | None = None,
        *,
        samples: Mapping[str, tuple[Sample, ...]] | None = None,
        error: str | None = None,
        any_age: bool = False,
    ) -> None:
        self.series: dict[str, tuple[Sample, ...]] = dict(samples or {})
        for query, script in {**HEALTHY, **(scripts or {})}.items():
            if query in self.series:
                continue
            points = (at(minutes(m)) for m in range(-180, 24 * 60 + 1))
            self.series[query] = tuple(
                Sample(moment, value) for moment in points if (value := script(moment)) is not None
            )
        self.error = error
        self.instant_reads_any_age = any_age
        self.reads: list[tuple[str, datetime, datetime, timedelta]] = []

    async def read(
        self, query: str, start: datetime, end: datetime, step: timedelta
    ) -> SourceResult:
        self.reads.append((query, start, end, step))
        if self.error is not None:
            return SourceResult(error=self.error, error_reason="unreachable", source_up=False)
        series = self.series.get(query, ())
        if start == end:
            newest = [s for s in series if end - minutes(5) <= s.at <= end][-1:]
            return SourceResult(samples=tuple(Sample(end, s.value) for s in newest))
        return SourceResult(samples=tuple(s for s in series if start <= s.at <= end))

    async def aclose(self) -> None:
        """Nothing to release."""


def config(**more: Any) -> Any:
    """The factory config evaluated every minute: a 30-minute adoption baseline (read at 1m),
    the disagreement held for 5m, conditions resolving after 3m clear."""
    patch: dict[str, Any] = {
        "evaluation": {"interval": "1m"},
        "systems": {
            SYSTEM: {
                "resolve_after": "3m",
                "signals": {
                    "adoption": {
                        "detect": {"baseline": {"reference": "30m", "max_change": "20%"}},
                    },
                    "accuracy": {"for": "5m"},
                },
                "disagreements": [
                    {
                        "name": DISAGREEMENT,
                        "healthy": ["accuracy"],
                        "degraded": ["adoption"],
                        "for": "5m",
                    }
                ],
            }
        },
    }
    for key, value in more.items():
        patch[key] = value
    return make_config(patch)


async def run(source: ScriptedSource, begin: float, end: float, **kwargs: Any) -> Any:
    return await replay(config(), {"prom": source}, at(begin), at(end), **kwargs)


def only(incidents: tuple[ReplayedIncident, ...]) -> ReplayedIncident:
    assert len(incidents) == 1, incidents
    return incidents[0]


async def test_a_ten_minute_disagreement_opens_after_for_and_resolves_after_resolve_after() -> None:
    """Adoption falls for 10 minutes while accuracy holds: one disagreement incident that
    began at the first degraded instant, opened once it held ``for`` (5m), and resolved once
    clear for ``resolve_after`` (3m) after the recovery."""
    source = ScriptedSource({"adoption_rate": dropping(0.62, 0.30, begins=10, ends=20)})
    result = await run(source, 0, 40)
    incident = only(result.incidents)
    assert (incident.system, incident.rule, incident.kind) == (
        SYSTEM,
        DISAGREEMENT_RULE,
        "disagreement",
    )
    assert incident.layers == ("model", "business")
    assert incident.owner == "alice"
    assert incident.summary == "accuracy fine, adoption falling"
    assert incident.condition_began_at == at(10)
    assert incident.opened_at == at(15)
    assert incident.resolved_at == at(23)
    assert incident.state == "resolved"
    assert (result.evaluations, result.failed_queries) == (41, 0)


@pytest.mark.parametrize(("lasting", "opened"), [(3, None), (4, None), (5, 15), (10, 15)])
async def test_a_drift_opens_only_when_it_outlasts_its_for(
    lasting: int, opened: int | None
) -> None:
    """Accuracy below its minimum for less than its ``for`` (5m) opens nothing; for 5 minutes
    or longer it opens one drift incident, ``for`` after the first degraded instant."""
    source = ScriptedSource(
        {"model_accuracy": dropping(0.95, 0.85, begins=10, ends=10 + lasting + 1)}
    )
    result = await run(source, 0, 40)
    if opened is None:
        assert result.incidents == ()
        return
    incident = only(result.incidents)
    assert (incident.rule, incident.kind, incident.layers) == (
        "drift:accuracy",
        "drift",
        ("model",),
    )
    assert (incident.condition_began_at, incident.opened_at) == (at(10), at(opened))


async def test_an_incident_still_holding_at_the_end_is_open() -> None:
    """A disagreement that still holds at ``--to`` is reported open, with no resolution time."""
    source = ScriptedSource({"adoption_rate": dropping(0.62, 0.30, begins=10)})
    result = await run(source, 0, 25)
    incident = only(result.incidents)
    assert incident.opened_at == at(15)
    assert incident.resolved_at is None
    assert incident.state == "open"
    document = replay_json(result)
    assert document["incidents"][0]["state"] == "open"
    assert document["incidents"][0]["resolved_at"] is None


async def test_a_failing_source_opens_nothing_and_counts_failed_queries() -> None:
    """A source that fails the history read leaves its signals no data at every instant: no
    drift and no stale incident (a down source pages nobody), and each failed signal is counted
    with its error."""
    source = ScriptedSource(error="prometheus source 'prom': connection refused")
    result = await run(source, 0, 60)
    assert result.incidents == ()
    assert result.failed_queries == 3
    assert [(f.signal, f.error) for f in result.failures] == [
        (name, "prometheus source 'prom': connection refused")
        for name in ("accuracy", "adoption", "null_rate")
    ]
    assert result.evaluations == 61


@pytest.mark.parametrize("hours", [1, 24])
async def test_each_signal_is_read_once_for_the_whole_range(hours: int) -> None:
    """However many instants, each signal is read once: from the start minus its lookback to
    the end, at the detector's read step (threshold: the interval; baseline: coarser when its
    reference is long)."""
    source = ScriptedSource()
    start, end = at(0), at(hours * 60)
    result = await replay(config(), {"prom": source}, start, end)
    assert result.evaluations == hours * 60 + 1
    assert sorted(source.reads) == sorted(
        [
            ("model_accuracy", start, end, minutes(1)),
            ("adoption_rate", start - minutes(30), end, minutes(1)),
            ("null_rate", start, end, minutes(1)),
        ]
    )
    week = config(
        systems={
            SYSTEM: {
                "signals": {
                    "adoption": {"detect": {"baseline": {"reference": "7d", "max_change": "20%"}}}
                }
            }
        }
    )
    source.reads.clear()
    await replay(week, {"prom": source}, start, end)
    assert (
        "adoption_rate",
        start - timedelta(days=7),
        end,
        timedelta(days=7) / 500,
    ) in source.reads
    assert len(source.reads) == 3


async def test_a_coarser_replay_interval_still_sees_a_condition_hold() -> None:
    """Replayed every 5 minutes under a config evaluated every minute, a disagreement held for
    10 minutes still opens: the replay's own steps are not mistaken for downtime."""
    source = ScriptedSource({"adoption_rate": dropping(0.62, 0.30, begins=10, ends=30)})
    patch = {
        "systems": {
            SYSTEM: {
                "disagreements": [
                    {
                        "name": DISAGREEMENT,
                        "healthy": ["accuracy"],
                        "degraded": ["adoption"],
                        "for": "10m",
                    }
                ]
            }
        }
    }
    result = await replay(config(**patch), {"prom": source}, at(0), at(60), interval=minutes(5))
    incident = only(result.incidents)
    assert (incident.condition_began_at, incident.opened_at) == (at(10), at(20))
    assert result.evaluations == 13


async def test_a_series_silent_for_over_five_minutes_is_stale() -> None:
    """As a Prometheus instant query would, a threshold series answers with its last sample
    for five minutes, then not at all: the stale rule opens after ``stale_for`` (10m)."""
    source = ScriptedSource({"null_rate": until(steady(0.01), last=10)})
    result = await run(source, 0, 40)
    incident = only(result.incidents)
    assert (incident.rule, incident.kind) == ("stale:null_rate", "stale")
    assert (incident.condition_began_at, incident.opened_at) == (at(16), at(26))
    assert incident.state == "open"


async def test_a_sparse_file_series_keeps_its_newest_sample_at_any_age() -> None:
    """A file source's instant read answers its newest sample however old, including one from
    before the replay starts: an hourly accuracy below its minimum since before the start is a
    drift from the first instant, not a silence, until the next hourly sample recovers it."""
    hourly = (
        Sample(at(-50), 0.85),
        Sample(at(20), 0.95),
        Sample(at(80), 0.95),
    )
    source = ScriptedSource(samples={"model_accuracy": hourly}, any_age=True)
    file_config = config(sources={"prom": {"type": "file", "path": "/nonexistent/metrics.csv"}})
    result = await replay(file_config, {"prom": source}, at(0), at(120))
    incident = only(result.incidents)
    assert incident.rule == "drift:accuracy"
    assert (incident.condition_began_at, incident.opened_at) == (at(0), at(5))
    assert incident.resolved_at == at(23)
    accuracy_read = next(read for read in source.reads if read[0] == "model_accuracy")
    assert accuracy_read[1] < at(-50)


async def test_replay_json_names_each_incident_with_its_times_in_utc() -> None:
    """The JSON document has the range, the interval, the counts, each incident with its
    system, owner, kind, rule, layers, state and RFC 3339 UTC times (nobody acknowledged it),
    and each change a detector confirmed: the fall of adoption against its 30-minute mean,
    then its recovery against the mean the fall pulled down (a baseline's verdict flips: when
    they began is not known beyond their confirmation, ``began_at`` null)."""
    source = ScriptedSource({"adoption_rate": dropping(0.62, 0.30, begins=10, ends=20)})
    document = replay_json(await run(source, 0, 40))
    assert document == {
        "from": "2025-03-03T09:00:00Z",
        "to": "2025-03-03T09:40:00Z",
        "interval": "1m",
        "evaluations": 41,
        "failed_queries": 0,
        "failures": [],
        "incidents": [
            {
                "id": "replay-1",
                "system": SYSTEM,
                "owner": "alice",
                "kind": "disagreement",
                "rule": DISAGREEMENT_RULE,
                "layers": ["model", "business"],
                "state": "resolved",
                "summary": "accuracy fine, adoption falling",
                "condition_began_at": "2025-03-03T09:10:00Z",
                "opened_at": "2025-03-03T09:15:00Z",
                "acknowledged_at": None,
                "resolved_at": "2025-03-03T09:23:00Z",
                "time_to_resolve_seconds": 480.0,
            }
        ],
        "changes": [
            {
                "system": SYSTEM,
                "signal": "adoption",
                "at": "2025-03-03T09:10:00Z",
                "direction": "down",
                "before": pytest.approx(0.62),
                "after": 0.30,
                "began_at": None,
            },
            {
                "system": SYSTEM,
                "signal": "adoption",
                "at": "2025-03-03T09:20:00Z",
                "direction": "up",
                "before": pytest.approx((20 * 0.62 + 10 * 0.30) / 30),
                "after": 0.62,
                "began_at": None,
            },
        ],
    }


def test_only_a_file_source_says_its_instant_read_answers_at_any_age() -> None:
    """Replay asks the source, not the config's type, how an instant read ages: the file
    source says it answers at any age; Prometheus and the demo do not."""
    built = {
        kind: build_source("s", spec, clock=lambda: at(0))
        for kind, spec in make_config(
            {
                "sources": {
                    "file": {"type": "file", "path": "/nonexistent/metrics.csv"},
                    "prometheus": {"type": "prometheus", "url": "http://127.0.0.1:9"},
                    "demo": {"type": "demo"},
                }
            }
        ).sources.items()
    }
    assert {kind: reads_any_age(source) for kind, source in built.items()} == {
        "prom": False,
        "file": True,
        "prometheus": False,
        "demo": False,
    }


@pytest.mark.parametrize(
    ("begin", "end", "interval", "message"),
    [
        (10, 0, None, "starts (2025-03-03T09:10:00Z) after it ends"),
        (0, 10, timedelta(0), "interval must be longer than 0s"),
    ],
)
async def test_an_impossible_range_or_interval_is_refused_before_any_read(
    begin: float, end: float, interval: timedelta | None, message: str
) -> None:
    """A range that ends before it starts, or a zero interval, is a clear error, and nothing is
    read."""
    source = ScriptedSource()
    with pytest.raises(ValueError, match=re.escape(message)):
        await run(source, begin, end, interval=interval)
    assert source.reads == []


async def test_a_reopened_incident_is_replayed_as_two_lives() -> None:
    """Accuracy drifts at 10 and again at 40 with ``reopen_within: 1h``: the second drift
    reopens the incident; replay reports both lives, each with its own start, opening and
    resolution, under the same incident id."""
    source = ScriptedSource(
        {
            "model_accuracy": lambda moment: (
                0.85 if at(10) <= moment < at(20) or at(40) <= moment < at(50) else 0.95
            )
        }
    )
    reopening = config(
        systems={
            SYSTEM: {
                "reopen_within": "1h",
                "resolve_after": "3m",
                "signals": {"accuracy": {"for": "5m"}},
            }
        }
    )
    result = await replay(reopening, {"prom": source}, at(0), at(70))
    first, second = result.incidents
    assert first.id == second.id
    assert (first.condition_began_at, first.opened_at, first.resolved_at) == (
        at(10),
        at(15),
        at(23),
    )
    assert (second.condition_began_at, second.opened_at, second.resolved_at) == (
        at(40),
        at(45),
        at(53),
    )


async def test_every_change_is_reported_with_recoveries_and_dips_too_short_to_page() -> None:
    """Accuracy dips twice below its minimum: for 2 minutes (shorter than its ``for``: no
    incident) and for 10 (an incident). Each dip and each recovery is a change, from the value
    before to the value that confirmed it, whether or not an incident opened."""
    source = ScriptedSource(
        {
            "model_accuracy": lambda moment: (
                0.85 if at(10) <= moment < at(12) or at(30) <= moment < at(40) else 0.95
            )
        }
    )
    result = await run(source, 0, 60)
    assert [i.rule for i in result.incidents] == ["drift:accuracy"]
    assert result.changes == (
        ReplayedChange(SYSTEM, "accuracy", at(10), "down", 0.95, 0.85),
        ReplayedChange(SYSTEM, "accuracy", at(12), "up", 0.85, 0.95),
        ReplayedChange(SYSTEM, "accuracy", at(30), "down", 0.95, 0.85),
        ReplayedChange(SYSTEM, "accuracy", at(40), "up", 0.85, 0.95),
    )


async def test_a_silence_between_two_verdicts_is_no_change() -> None:
    """Accuracy healthy, then silent for 10 minutes (no data: no verdict), then healthy again:
    no change. Healthy, silent, then low: one change, against the last value judged."""
    gap = {"model_accuracy": lambda m: None if at(10) <= m < at(20) else 0.95}
    assert (await run(ScriptedSource(gap), 0, 30)).changes == ()
    low_after = {
        "model_accuracy": lambda m: None if at(10) <= m < at(20) else (0.95 if m < at(10) else 0.8)
    }
    result = await run(ScriptedSource(low_after), 0, 30)
    assert result.changes == (ReplayedChange(SYSTEM, "accuracy", at(20), "down", 0.95, 0.8),)


async def test_a_chart_reports_a_further_shift_and_the_recovery_inside_one_incident() -> None:
    """Accuracy under the default change-point chart falls (80 minutes in), falls further (160)
    and comes back (240), each level held long enough to re-learn: one drift incident, and
    three changes, the second and third while it is open, each from the level the chart had
    learned to the new one, each dated (``began_at``) within a minute of when it began."""

    def accuracy(moment: datetime) -> float:
        minute = (moment - at(0)).total_seconds() / 60
        level = 0.8 if 80 <= minute < 160 else 0.65 if 160 <= minute < 240 else 0.95
        return level + 0.004 * ((int(minute) * 7) % 5 - 2)

    charted = config(systems={SYSTEM: {"signals": {"accuracy": {"detect": None}}}})
    source = ScriptedSource({"model_accuracy": accuracy})
    result = await replay(charted, {"prom": source}, at(0), at(250))
    incident = only(result.incidents)
    assert (incident.rule, incident.opened_at, incident.resolved_at) == (
        "drift:accuracy",
        at(80),
        None,
    )
    assert [(c.at, c.direction) for c in result.changes] == [
        (at(80), "down"),
        (at(160), "down"),
        (at(240), "up"),
    ]
    for change, shift in zip(result.changes, (80, 160, 240), strict=True):
        assert change.began_at is not None
        assert at(shift - 1) <= change.began_at <= min(change.at, at(shift))
    fall, further, back = result.changes
    assert fall.before == pytest.approx(0.95, abs=0.01) and fall.after < 0.81
    assert further.before == pytest.approx(0.8, abs=0.01) and further.after < 0.66
    assert back.before < further.before < back.after
