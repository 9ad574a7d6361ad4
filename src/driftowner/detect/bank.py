"""The detector bank: which change-point chart watches each signal, what each chart remembers
between evaluations, the level an unrecovered change left, and the re-learning an owner asked
for. Pure: samples, readings and times come in; the bank's values go out.

A chart confirms *changes*; a finding needs a *status*. The bank turns one into the other:

- the first confirmed change in the signal's ``bad`` direction records the level it **left**
  (the reference before it), the level it went to and when it began;
- later changes (recoveries, further shifts) move the signal's current level; the signal stays
  ``degraded`` while its current level is still away from the level it left, in the bad
  direction, by more than half of that first change; it is ``ok`` once it comes back, or once
  the median of its latest ``warmup`` values has been back within :data:`RETURN_BAND` of the
  level it left for :data:`RETURN_RUNS` warm-ups in a row;
- for ``bad: up|down``, a change in the good direction records the level it left, and a move
  back towards that level is not drift (only one beyond it degrades);
- an owner who resolves with ``--accept`` says the new level is normal: the chart starts over
  and learns its reference from the samples after the accept (:meth:`Bank.accept`);
- a warm start replays history through the same updates (:func:`observe`), so the state after
  a restart equals the state reached online.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import (
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from driftowner.config import HISTOGRAM_DETECTORS, SignalConfig
from driftowner.detect import charts, detectors
from driftowner.detect.changepoint import (
    ChartState,
    Cusum,
    Detection,
    Detector,
    Ewma,
    PageHinkley,
    default_detector,
    describe,
)
from driftowner.detect.histogram import HistogramDrift, HistogramVerdict, verdict_line
from driftowner.model import (
    Accepted,
    BadDirection,
    Change,
    Finding,
    Incident,
    Sample,
    SourceResult,
    Status,
)

SignalKey = tuple[str, str]
"""(system, signal)."""

_Derived = TypeVar("_Derived")

WARM_START_RUNS = 10
"""A warm start reads this many warm-ups' worth of history (at most the chart's longest
warm-up on autocorrelated input) before now, and as much before an open incident's
condition began, so the chart learns the level the change left and sees it begin."""


def chart_for(signal: SignalConfig, interval: timedelta) -> Detector | None:
    """The change-point chart a signal's ``detect`` section names, the default one when it
    names none, or None for a detector without memory (threshold, baseline, psi, js) and for
    an alert signal (it fires or not).

    Charts are immutable and shared: every signal with the same parameters gets the same
    instance (10,000 signals on the default detector hold one, not one each per cycle)."""
    detect = signal.detect
    bad, budget = signal.bad, signal.false_alarm_every
    if signal.alerts:
        return None  # fires or not: judged at each instant (detectors.alerting)
    if detect is None:
        return _chart("default", bad, budget, interval)
    if detect.cusum is not None:
        spec = detect.cusum
        return _chart("cusum", bad, budget, interval, spec.warmup, spec.k, spec.h)
    if detect.ewma is not None:
        ewma = detect.ewma
        return _chart("ewma", bad, budget, interval, ewma.warmup, ewma.lambda_, ewma.width)
    if detect.page_hinkley is not None:
        ph = detect.page_hinkley
        return _chart("page_hinkley", bad, budget, interval, ph.warmup, ph.delta, ph.threshold)
    return None


@lru_cache(maxsize=4096)
def _chart(
    kind: str,
    bad: BadDirection,
    budget: timedelta,
    interval: timedelta,
    warmup: int = 0,
    first: float = 0.0,
    limit: float | None = None,
) -> Detector:
    """The one shared chart for these parameters (``first``: k, lambda or delta)."""
    if kind == "cusum":
        return Cusum(bad, budget, interval, warmup, k=first, h=limit)
    if kind == "ewma":
        return Ewma(bad, budget, interval, warmup, lam=first, width=limit)
    if kind == "page_hinkley":
        return PageHinkley(bad, budget, interval, warmup, delta=first, threshold=limit)
    return default_detector(bad, budget, interval)


def _same(watch: Watch | None, detector: Detector) -> bool:
    """Whether a watch runs ``detector`` (the shared instance, or an equal one)."""
    return watch is not None and (watch.detector is detector or watch.detector == detector)


def histogram_for(signal: SignalConfig, interval: timedelta) -> HistogramDrift | None:
    """The PSI or JS verdict a signal's ``detect`` section names, or None."""
    detect = signal.detect
    if detect is None or detect.name not in HISTOGRAM_DETECTORS:
        return None
    spec = detect.psi if detect.psi is not None else detect.js
    assert spec is not None
    return HistogramDrift(
        metric="psi" if detect.psi is not None else "js",
        limit=spec.limit,
        bad=signal.bad,
        false_alarm_every=signal.false_alarm_every,
        interval=interval,
    )


@dataclass(slots=True)
class Watch:
    """What the bank remembers of one signal between evaluations. Only the bank changes it,
    and only its ``state``, in place, on a quiet sample (no change confirmed: the steady
    cycle); a confirmed change or an accept gives the signal a new watch."""

    detector: Detector
    state: ChartState
    left: float | None = None
    """The level before the first unrecovered change in the bad direction; None when the
    signal is where it should be."""
    went_to: float | None = None
    """The level that first change went to: half the way back from it counts as recovered."""
    began_at: datetime | None = None
    """When that first change began."""
    level: float | None = None
    """The level of the latest confirmed change (the signal's current level)."""
    latest: Detection | None = None
    """The latest confirmed change, the evidence for the finding."""
    relearn_from: datetime | None = None
    """Samples at or before this time are ignored: an owner accepted the level then."""
    eased_from: float | None = None
    """For ``bad: up|down``, the level before a change in the good direction that the signal
    has not yet come back from (None otherwise): a later move back towards it is a return,
    not drift, unless it goes beyond it (:func:`_after`)."""
    eased_to: float | None = None
    """The level that good-direction change went to."""
    left_scale: float | None = None
    """The scale of the reference judged against when the watch became degraded (that of the
    level it left): the unit of :data:`RETURN_BAND`."""
    eased_scale: float | None = None
    """The scale of the reference judged against when ``eased_from`` was recorded."""
    recent: tuple[float, ...] = ()
    """While degraded, the latest values (at most the chart's ``warmup``) since it became so."""
    back_for: int = 0
    """While degraded, how many samples in a row the median of ``recent`` has been back
    within :data:`RETURN_BAND` of the level left."""

    @property
    def degraded(self) -> bool:
        return self.left is not None


def away(level: float, left: float, went_to: float, bad: BadDirection) -> bool:
    """Whether ``level`` is still away from the level a change ``left``, in the ``bad``
    direction, by more than half of the first change (``left`` to ``went_to``)."""
    tolerance = abs(went_to - left) / 2
    moved = level - left
    if bad == "down":
        return moved < -tolerance
    if bad == "up":
        return moved > tolerance
    return abs(moved) > tolerance


RETURN_BAND = 0.5
"""A degraded signal whose latest ``warmup`` values have a median within this many deviations
of the reference it left (in its bad direction), for :data:`RETURN_RUNS` warm-ups' worth of
samples in a row, is back (:func:`_returned`): the allowance inside which the default charts
(CUSUM's ``k``, Page-Hinkley's ``delta``) accumulate no evidence of a change."""
RETURN_RUNS = 3
"""How many warm-ups' worth of samples in a row that median must be back: with 1, a return
only half the way from a 2-sigma dip (1 sigma away) cleared in 14 to 22 more of 200 runs per
chart than without the window (``bench_recovery``, 2 sd, half back); with 3, in none by the
window itself."""


def start(detector: Detector, relearn_from: datetime | None = None) -> Watch:
    """A watch that has seen nothing yet (a new signal, or one whose level was accepted)."""
    return Watch(detector=detector, state=detector.start(), relearn_from=relearn_from)


def observe(watch: Watch, samples: Iterable[Sample]) -> tuple[Watch, list[Detection]]:
    """Feed samples (oldest first) to a watch: the same step online and in a warm start.

    Returns:
        The watch after them, and the changes they confirmed, in order.
    """
    confirmed: list[Detection] = []
    state = watch.state
    for sample in samples:
        if watch.relearn_from is not None and sample.at <= watch.relearn_from:
            continue
        before, was = state, watch
        state, detection = watch.detector.update(state, sample.value, sample.at)
        if state is before:
            continue  # skipped: not finite, or not newer than the last
        if detection is not None:
            watch = _after(replace(watch, state=state), detection)
            confirmed.append(detection)
        else:
            watch = _on_relearning(watch, before, state) or watch
        if watch is not was:
            watch = _scaled(was, watch, before)
        if watch.degraded:
            watch = _returned(watch, sample.value)
    return replace(watch, state=state), confirmed


def _scaled(was: Watch, watch: Watch, before: ChartState) -> Watch:
    """``watch`` (just moved on from ``was``) with the scale of the level it left, or of the
    level a good-direction change left, recorded when that level is; the return window reset
    whenever the watch becomes degraded or stops being so."""
    scale = before.reference.scale if before.reference is not None else None
    eased_scale = None if watch.eased_from is None else (was.eased_scale or scale)
    if watch.left is None:
        return replace(watch, eased_scale=eased_scale, left_scale=None, recent=(), back_for=0)
    if was.left is not None:
        return replace(watch, eased_scale=eased_scale)
    left_scale = was.eased_scale if was.eased_from is not None and was.eased_scale else scale
    return replace(watch, eased_scale=eased_scale, left_scale=left_scale, recent=(), back_for=0)


def _returned(watch: Watch, value: float) -> Watch:
    """A degraded watch after one more judged ``value``: back (no longer degraded) once the
    median of its latest ``warmup`` values has been within :data:`RETURN_BAND` of the level it
    left, in its bad direction, for :data:`RETURN_RUNS` warm-ups' worth of samples in a row.

    The chart's own changes can miss a full return: when a change's start is dated well
    before the change, its re-learning window spans the dip and the recovery, the new
    reference's scale is too wide to confirm anything more, and the first change's level, which
    sets the half-way tolerance, is wrong (``bench_recovery``). The median of the latest
    values against the reference the signal left, in that reference's own scale, does not
    depend on either."""
    left, scale = watch.left, watch.left_scale
    if left is None or scale is None:
        return watch
    size = watch.detector.warmup
    recent = (*watch.recent, value)[-size:]
    back_for = 0
    if len(recent) == size:
        band = RETURN_BAND * scale
        if not away(statistics.median(recent), left, left + 2 * band, watch.detector.bad):
            back_for = watch.back_for + 1
    if back_for >= RETURN_RUNS * size:
        return replace(
            watch, left=None, went_to=None, began_at=None, left_scale=None, recent=(), back_for=0
        )
    return replace(watch, recent=recent, back_for=back_for)


def _on_relearning(watch: Watch, before: ChartState, after: ChartState) -> Watch | None:
    """The watch once its chart has just learned its new reference (after a confirmed change),
    when that settles what the change's own level could not; None when nothing changes.

    A confirmed change's level is the mean since its estimated start, and a large shift is
    confirmed within a few samples, so one sample from before it (or an estimated start some
    samples early) moves that level a third of the way back or more. The re-learned reference
    (the median of a whole warm-up at the new level) settles it:

    - a degraded watch whose new reference is no longer away from the level it left is back
      (a full recovery could still read as "away", and its incident never resolved);
    - a watch after a good-direction change (``eased_from``) is degraded if its new
      reference is beyond the level held before that change, in the bad direction (an
      overshoot the change's level understated, or one inside a re-learning window that
      spans both moves), and is done with that change once a move back in the bad direction
      has re-learned near that level."""
    if before.reference is not None or after.reference is None:
        return None
    centre, bad = after.reference.centre, watch.detector.bad
    if watch.left is not None and watch.went_to is not None:
        if away(centre, watch.left, watch.went_to, bad):
            return None
        return replace(watch, left=None, went_to=None, began_at=None)
    latest = watch.latest
    if watch.eased_from is None or watch.eased_to is None or latest is None:
        return None
    if away(centre, watch.eased_from, watch.eased_to, bad):
        return replace(
            watch,
            left=watch.eased_from,
            went_to=centre,
            began_at=latest.began_at,
            eased_from=None,
            eased_to=None,
        )
    if latest.direction != bad or away(centre, watch.eased_from, watch.eased_to, _GOOD[bad]):
        return None  # still on the good side of the level held before
    return replace(watch, eased_from=None, eased_to=None)


_GOOD: dict[BadDirection, BadDirection] = {"up": "down", "down": "up", "both": "both"}


def _quiet(watch: Watch, samples: tuple[Sample, ...]) -> ChartState | None:
    """The steady path: one new sample that confirms no change moves the watch's state in
    place, and the state after it is returned; None (nothing moved) for anything else (several
    samples, a change confirmed, a degraded chart back at its level once it re-learned, a
    degraded watch (its return window moves with each sample: :func:`_returned`), samples
    before an accept), which :func:`observe` takes."""
    if len(samples) != 1 or watch.relearn_from is not None or watch.degraded:
        return None
    sample = samples[0]
    state, detection = watch.detector.update(watch.state, sample.value, sample.at)
    if detection is not None or _on_relearning(watch, watch.state, state) is not None:
        return None  # the watch itself changes: a new one, as observe gives it
    watch.state = state
    return state


def _after(watch: Watch, detection: Detection) -> Watch:
    """The watch after a confirmed change: a first bad one records the level it left; any
    later one moves the current level, and a return to the level left clears it.

    For ``bad: up|down`` a change in the good direction records the level it left
    (``eased_from``), and a later change in the bad direction is judged against that level,
    not against the chart's reference (re-learned at the good-direction level): coming back
    is not drift; going beyond it by more than half of the good change is, and that level is
    the one it left."""
    bad = watch.detector.bad
    moved = replace(watch, level=detection.level, latest=detection)
    if watch.left is None or watch.went_to is None:
        eased, eased_to = watch.eased_from, watch.eased_to
        if not detection.bad:
            if bad == "both" or eased is not None:
                return moved
            return replace(moved, eased_from=detection.reference, eased_to=detection.level)
        if eased is not None and eased_to is not None:
            if not away(detection.level, eased, eased_to, bad):
                return moved  # a return: its re-learned reference settles it (_on_relearning)
            return replace(
                moved,
                left=eased,
                went_to=detection.level,
                began_at=detection.began_at,
                eased_from=None,
                eased_to=None,
            )
        return replace(
            moved, left=detection.reference, went_to=detection.level, began_at=detection.began_at
        )
    if away(detection.level, watch.left, watch.went_to, bad):
        return moved
    return replace(moved, left=None, went_to=None, began_at=None)


def warm_start(
    detector: Detector, history: Iterable[Sample], relearn_from: datetime | None
) -> Watch:
    """A watch rebuilt from history, exactly as if it had seen every sample online."""
    watch, _ = observe(start(detector, relearn_from), history)
    return watch


def chart_status(watch: Watch) -> Status:
    """The status :func:`chart_finding` gives a watch, without building the finding."""
    if watch.latest is not None:
        return "degraded" if watch.degraded else "ok"
    return "no_data" if watch.state.reference is None else "ok"


@dataclass(frozen=True, slots=True)
class Later:
    """A chart's verdict whose finding is built only when someone reads it: a quiet signal (no
    change confirmed) needs its status every cycle, its evidence line rarely. ``finding()``
    gives exactly what :func:`chart_finding` gives at the time of judging."""

    status: Status
    base: Finding
    watch: Watch
    state: ChartState
    """The chart's state after this sample (the watch's own moves on with later samples)."""
    signal: SignalConfig

    def finding(self) -> Finding:
        return chart_finding(self.base, self.watch, self.signal, self.state)


@dataclass(frozen=True, slots=True)
class Judged:
    """A signal template's charts as judged together at one instant (:meth:`Bank.judge_rows`):
    what their quiet verdicts' findings are built from, when read."""

    keys: Sequence[SignalKey]
    signals: Sequence[SignalConfig]
    at: datetime
    rows: charts.Rows
    """The charts' rows after this instant's samples."""
    values: list[float]
    """Per row, this instant's value (meaningless for a row not judged quietly)."""
    watches: list[Watch | None]
    """Per row, the watch of a held signal at this instant (None for the others)."""
    quiet: NDArray[np.bool_]
    """Per row, judged quietly (no change confirmed): its verdict is a :class:`Held`."""
    degraded: NDArray[np.bool_]
    """Per row, its watch is away from the level a change left (the quiet verdict's status)."""
    moved: NDArray[np.intp]
    """The places in the judged values of the samples the scalar :meth:`Bank.verdict` must
    judge (a change confirmed, a chart still learning or just accepted)."""

    def status(self, row: int) -> Status:
        """The status of a quiet row's verdict."""
        return "degraded" if self.degraded[row] else "ok"

    def finding(self, row: int) -> Finding:
        """The finding :func:`chart_finding` gives the chart of ``row`` as judged."""
        (system, name), signal, watch = self.keys[row], self.signals[row], self.watches[row]
        assert watch is not None  # a quiet verdict's signal has a watch
        base = Finding(system, name, signal.layer, "ok", self.at, self.values[row])
        return chart_finding(base, watch, signal, charts.state_at(self.rows, row))


class Held:
    """A quiet verdict of a chart judged as a row of arrays: what :class:`Later` is for a
    chart judged alone (its status now, its finding built when read)."""

    __slots__ = ("judged", "row", "status")

    def __init__(self, status: Status, judged: Judged, row: int) -> None:
        self.status = status
        self.judged = judged
        self.row = row

    def finding(self) -> Finding:
        return self.judged.finding(self.row)


Verdict = Finding | Later | Held
"""A signal's verdict: its finding, or a quiet chart's, built when read."""


def chart_finding(
    base: Finding, watch: Watch, signal: SignalConfig, state: ChartState | None = None
) -> Finding:
    """The finding a watch gives: degraded while away from the level it left, ok otherwise,
    no data while its first reference is still being learned. ``state`` stands in for the
    watch's own (the state it had when judged)."""
    state = watch.state if state is None else state
    budget = None if _explicit_limit(watch.detector) else signal.false_alarm_every
    name = watch.detector.name or "default"
    if watch.latest is not None:
        detection = watch.latest
        line = describe(detection, base.signal, budget)
        found = replace(
            base,
            detector=name,
            reference=watch.left if watch.left is not None else detection.reference,
            statistic=detection.statistic,
            limit=detection.limit,
            began_at=watch.began_at if watch.degraded else detection.began_at,
        )
        if not watch.degraded:
            return replace(found, status="ok", reason=f"back near its level: last change {line}")
        return replace(found, status="degraded", reason=line)
    if state.reference is None:
        return replace(
            base,
            detector=name,
            status="no_data",
            reason=f"learning its reference ({len(state.warmup)} samples so far)",
        )
    reference = state.reference
    statistic = max(state.upper, state.lower)
    return replace(
        base,
        detector=name,
        status="ok",
        reference=reference.centre,
        statistic=statistic,
        limit=state.limit,
        reason=(
            f"{detectors._fmt(base.value or 0.0)} in control around "
            f"{detectors._fmt(reference.centre)} (statistic {detectors._fmt(statistic)}, "
            f"limit {detectors._fmt(state.limit)})"
        ),
    )


def _explicit_limit(detector: Detector) -> bool:
    return any(getattr(detector, name, None) is not None for name in ("h", "width", "threshold"))


def histogram_finding(base: Finding, verdict: HistogramVerdict, at: datetime) -> Finding:
    """The finding a PSI or JS verdict gives."""
    return replace(
        base,
        detector=verdict.metric,
        status="degraded" if verdict.drifted else "ok",
        value=verdict.recent_centre,
        reference=verdict.reference_centre,
        statistic=verdict.statistic,
        limit=verdict.limit,
        reason=verdict_line(verdict, base.signal, at),
    )


def reference_window(
    signal: SignalConfig, now: datetime, accepted: datetime | None
) -> timedelta | None:
    """How far back a PSI or JS signal's reference window reaches before its recent window at
    ``now``: its ``reference``, cut to start after the owner last accepted the level (the
    distribution since the accept is normal), or None while no time since the accept lies
    before the recent window (then there is no reference to judge against yet)."""
    detect = signal.detect
    spec = None if detect is None else detect.psi if detect.psi is not None else detect.js
    if spec is None:
        return None
    if accepted is None:
        return spec.reference
    since = now - spec.recent - accepted
    return min(spec.reference, since) if since > timedelta(0) else None


@dataclass(frozen=True, slots=True)
class HistogramReading:
    """A histogram's cumulative bucket counts over the reference and the recent windows, or
    why they could not be read."""

    reference: Mapping[float, float]
    recent: Mapping[float, float]
    error: str | None = None


class Bank:
    """Every signal's watch, held by the shell between evaluations (the daemon keeps one;
    ``replay`` starts one at the beginning of its range)."""

    def __init__(self) -> None:
        self._watches: dict[SignalKey, Watch] = {}
        """Every signal's watch; a held signal's state is its row's (see :attr:`watches`)."""
        self._rows: dict[Hashable, _Block] = {}
        """Per signal template judged as arrays (:meth:`judge_rows`), its charts' rows."""
        self._held: dict[SignalKey, tuple[Hashable, int]] = {}
        """The signals whose chart state is held in a row, not in their watch: (block, row)."""
        self.accepted: dict[SignalKey, datetime] = {}
        """Per signal, the latest time an owner accepted its level."""
        self.accept_cursor = 0
        """The position of the last ``accepted`` event applied (see :meth:`apply_accepts`)."""
        self.histograms: dict[SignalKey, HistogramReading] = {}
        """This evaluation's histogram readings (set by the shell before judging)."""
        self.decided: dict[SignalKey, Finding] = {}
        """Per signal without a chart (threshold, baseline, psi, js), its last ``ok`` or
        ``degraded`` finding: a flip from it is a confirmed change (:func:`detectors.flip`)."""
        self._derived: dict[str, tuple[object, object]] = {}
        self.open_since: dict[SignalKey, datetime] = {}
        """Per signal of an unresolved incident, when its condition began (set by the shell
        from the store before judging: see :meth:`note_open`)."""

    @property
    def watches(self) -> MutableMapping[SignalKey, Watch]:
        """Every signal's watch, its state current when read (a signal whose chart is judged
        as a row of arrays has its state copied into its watch then)."""
        return _Watches(self)

    def _current(self, key: SignalKey) -> Watch:
        watch = self._watches[key]
        held = self._held.get(key)
        if held is not None:
            watch.state = charts.state_at(self._rows[held[0]].rows, held[1])
        return watch

    def _put(self, key: SignalKey, watch: Watch) -> Watch:
        self._let_go(key)
        self._watches[key] = watch
        return watch

    def _drop(self, key: SignalKey) -> None:
        self._let_go(key)
        del self._watches[key]

    def _let_go(self, key: SignalKey) -> None:
        """A held signal's state back into its watch, its row no longer held: the scalar
        update takes the chart from here."""
        held = self._held.pop(key, None)
        if held is None:
            return
        block, row = held
        rows = self._rows[block]
        watch = self._watches.get(key)
        if watch is not None:
            watch.state = charts.state_at(rows.rows, row)
        rows.rows = charts.release(rows.rows, [row])
        rows.watches[row] = None

    def _let_go_all(self) -> None:
        """Every held state back into its watch, and every block of rows dropped (a new
        config plans its own blocks)."""
        for key, (block, row) in self._held.items():
            watch = self._watches.get(key)
            if watch is not None:
                watch.state = charts.state_at(self._rows[block].rows, row)
        self._held = {}
        self._rows = {}

    def derived(self, config: object, name: str, derive: Callable[[], _Derived]) -> _Derived:
        """What ``derive`` makes of ``config`` (a read plan, say), made once per config object:
        a reload brings a new config, and with it a new value."""
        held = self._derived.get(name)
        if held is None or held[0] is not config:
            held = self._derived[name] = (config, derive())
        return cast(_Derived, held[1])

    def note_open(self, unresolved: Iterable[Incident]) -> None:
        """Remember when the conditions of the unresolved incidents began, per signal (the
        earliest when several involve one), so a warm start reaches back before them."""
        self.open_since = {}
        for incident in unresolved:
            began = incident.condition_began_at
            if began is None:
                continue
            for name in incident.signals:
                key = (incident.system, name)
                known = self.open_since.get(key)
                self.open_since[key] = began if known is None else min(known, began)

    def unwatched(self, keys: Iterable[SignalKey]) -> list[SignalKey]:
        """The signals among ``keys`` that have no watch."""
        watches = self._watches
        return [key for key in keys if key not in watches]

    def needs_history(self, key: SignalKey, signal: SignalConfig, interval: timedelta) -> bool:
        """Whether the signal's chart has no state yet (start, new signal, changed detector)."""
        detector = chart_for(signal, interval)
        return detector is not None and not _same(self._watches.get(key), detector)

    def history_start(
        self, key: SignalKey, signal: SignalConfig, interval: timedelta, now: datetime
    ) -> datetime:
        """Where a warm start's history read begins: :data:`WARM_START_RUNS` warm-ups before
        ``now``, or before the open incident's condition began if that is earlier (a drift
        older than the window would otherwise be learned as the signal's normal level).
        Samples up to an accept are skipped by the watch itself."""
        detector = chart_for(signal, interval)
        window = interval * (detector.warmup if detector is not None else 0) * WARM_START_RUNS
        began = self.open_since.get(key)
        return now - window if began is None else min(now, began) - window

    def warm(
        self, key: SignalKey, signal: SignalConfig, interval: timedelta, history: Iterable[Sample]
    ) -> None:
        """Rebuild a signal's watch from its history (oldest first)."""
        detector = chart_for(signal, interval)
        if detector is None:
            return
        self._put(key, warm_start(detector, history, self.accepted.get(key)))

    def accept(self, key: SignalKey, at: datetime) -> None:
        """The owner accepted the signal's current level at ``at``: forget the level it left
        and learn a new reference from the samples after ``at``."""
        if key in self.accepted and self.accepted[key] >= at:
            return
        self.accepted[key] = at
        watch = self._watches.get(key)
        if watch is not None:
            self._put(key, start(watch.detector, at))

    def apply_accepts(self, accepts: Iterable[Accepted]) -> None:
        """Apply the ``accepted`` events logged since the last call (any process may log
        them: the CLI, the API), and remember how far the log was read."""
        for accepted in accepts:
            for name in accepted.signals:
                self.accept((accepted.system, name), accepted.at)
            self.accept_cursor = max(self.accept_cursor, accepted.seq)

    def forget_except(
        self, keys: Iterable[SignalKey], charted: Mapping[SignalKey, Detector] | None = None
    ) -> None:
        """Drop the watches of signals no longer configured, and (with ``charted``, each
        charted signal's chart now) those running another chart: the config changed it, and
        the signal starts over from its history. Every state held in rows goes back to its
        watch (a new config plans its own rows)."""
        kept = set(keys)
        self._let_go_all()
        for key, watch in list(self._watches.items()):
            chart = None if charted is None else charted.get(key)
            if key not in kept or (
                charted is not None and (chart is None or not _same(watch, chart))
            ):
                del self._watches[key]
        for key in list(self.decided):
            if key not in kept:
                del self.decided[key]

    def judge(
        self,
        system: str,
        name: str,
        signal: SignalConfig,
        result: SourceResult,
        now: datetime,
        interval: timedelta,
    ) -> Finding:
        """The verdict on one signal at ``now``: its chart updated with the new samples (the
        stateless detectors as :func:`~driftowner.detect.detectors.judge` gives them), with
        the changes confirmed on the way (``Finding.changes``)."""
        found = self.verdict(system, name, signal, result, now, interval)
        return found.finding() if isinstance(found, Later) else found

    def verdict(
        self,
        system: str,
        name: str,
        signal: SignalConfig,
        result: SourceResult,
        now: datetime,
        interval: timedelta,
    ) -> Finding | Later:
        """What :meth:`judge` gives, with a chart's quiet verdict (one new sample, no change
        confirmed: nearly every signal at nearly every cycle) left :class:`Later`: its status
        now, its finding and evidence line built if and when someone reads them."""
        key = (system, name)
        detector = chart_for(signal, interval)
        if detector is None:
            drift = histogram_for(signal, interval)
            if drift is not None:
                found = self._judge_histogram(key, drift, signal, now)
            else:
                found = detectors.judge(system, name, signal, result, now)
            return self._flipped(key, found)
        unusable = detectors.unusable(system, name, signal, result, now)
        if unusable is not None:
            return unusable
        if key in self._held:
            self._let_go(key)
        watch = self._watches.get(key)
        if watch is None or not _same(watch, detector):
            watch = self._put(key, start(detector, self.accepted.get(key)))
        quiet = _quiet(watch, result.samples)
        if quiet is not None:
            latest = result.samples[-1]
            base = Finding(system, name, signal.layer, "ok", now, latest.value)
            return Later(chart_status(watch), base, watch, quiet, signal)
        watch, confirmed = observe(watch, result.samples)
        self._watches[key] = watch
        base = Finding(
            system=system,
            signal=name,
            layer=signal.layer,
            status="ok",
            at=now,
            value=result.samples[-1].value,
            changes=tuple(
                Change(d.at, d.direction, d.reference, d.level, d.began_at) for d in confirmed
            ),
        )
        return chart_finding(base, watch, signal)

    def judge_rows(
        self,
        block: Hashable,
        keys: Sequence[SignalKey],
        signals: Sequence[SignalConfig],
        detector: Detector,
        values: RowValues,
        now: datetime,
    ) -> Judged:
        """The steady verdicts of one signal template's charts, judged together as rows of
        arrays (:mod:`driftowner.detect.charts`): the same verdicts :meth:`verdict` gives
        each, with its scalar update, for one new sample per signal.

        Args:
            block: Names the template's rows (one per read plan: a new config, new rows).
            keys: The template's signals, in row order.
            signals: Their configs, in row order; all run ``detector``.
            detector: Their chart (:func:`charts.vectorised`).
            values: This cycle's finite sample of some of them.
            now: The evaluation instant.

        Returns:
            The verdicts: the quiet rows with their statuses (each one's finding built when
            read, :class:`Held`), and the samples the scalar :meth:`verdict` must judge,
            whose charts' states are back in their watches.
        """
        held = self._rows.get(block)
        if held is None:
            held = self._rows[block] = _Block(
                charts.empty(len(keys), detector.warmup),
                [None] * len(keys),
                np.zeros(len(keys), dtype=np.bool_),
            )
        self._hold(block, held, keys, detector, values.rows)
        step = charts.advance(detector, held.rows, values.rows, values.values, values.stamps)
        held.rows = step.rows
        quiet = np.zeros(len(keys), dtype=np.bool_)
        quiet[values.rows[~step.moved]] = True
        by_row = np.zeros(len(keys))
        by_row[values.rows] = values.values
        moved = np.flatnonzero(step.moved)
        judged = Judged(
            keys,
            signals,
            now,
            step.rows,
            by_row.tolist(),
            held.watches.copy(),
            quiet,
            held.degraded.copy(),
            moved,
        )
        for row in values.rows[moved].tolist():
            self._let_go(keys[row])
        return judged

    def _hold(
        self,
        block: Hashable,
        held: _Block,
        keys: Sequence[SignalKey],
        detector: Detector,
        sampled: NDArray[np.int64],
    ) -> None:
        """``held`` holding, besides those it holds, each sampled signal whose watch runs
        ``detector`` against a learned reference (no accept to skip samples up to), and not
        degraded (a degraded watch's return window moves with each sample). A held
        signal's watch is not replaced while it is held (replacing lets it go first)."""
        index: list[int] = []
        states: list[ChartState] = []
        for row in sampled[~held.rows.held[sampled]].tolist():
            key = keys[row]
            watch = self._watches.get(key)
            if (
                watch is not None
                and watch.relearn_from is None
                and not watch.degraded
                and _same(watch, detector)
                and charts.judging(watch.state)
            ):
                index.append(row)
                states.append(watch.state)
                self._held[key] = (block, row)
                held.watches[row] = watch
                held.degraded[row] = watch.latest is not None and watch.left is not None
        held.rows = charts.hold(held.rows, index, states)

    def _flipped(self, key: SignalKey, found: Finding) -> Finding:
        """``found`` with the change its flip from the last verdict confirms, if any; a
        verdict (ok or degraded, not no data) becomes the last one."""
        if found.status not in detectors.FLIP:
            return found
        change = detectors.flip(self.decided.get(key), found)
        self.decided[key] = found
        return found if change is None else replace(found, changes=(change,))

    def _judge_histogram(
        self, key: SignalKey, drift: HistogramDrift, signal: SignalConfig, now: datetime
    ) -> Finding:
        base = Finding(system=key[0], signal=key[1], layer=signal.layer, status="no_data", at=now)
        accepted = self.accepted.get(key)
        if accepted is not None and reference_window(signal, now, accepted) is None:
            return replace(
                base,
                detector=drift.metric,
                reason=f"learning its reference since the level was accepted at {accepted:%H:%M}",
            )
        reading = self.histograms.get(key)
        if reading is None:
            return replace(base, detector=drift.metric, reason="histogram not read")
        if reading.error is not None:
            return replace(base, detector=drift.metric, reason=reading.error, source_error=True)
        if not reading.reference or not reading.recent:
            return replace(base, detector=drift.metric, reason="the histogram has no buckets")
        if reading.reference.get(math.inf, 0.0) <= 0 or reading.recent.get(math.inf, 0.0) <= 0:
            return replace(base, detector=drift.metric, reason="no observations in a window")
        try:
            verdict = drift.judge(reading.reference, reading.recent)
        except ValueError as error:
            return replace(base, detector=drift.metric, reason=str(error), source_error=True)
        return histogram_finding(base, verdict, now)


@dataclass(slots=True)
class _Block:
    """A signal template's charts held in the bank: their rows, and per held row its watch
    and whether it is degraded (both fixed while the row is held)."""

    rows: charts.Rows
    watches: list[Watch | None]
    degraded: NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class RowValues:
    """One new sample for some rows of a signal template's charts: each row's finite value and
    its time as the scalar update reads it (``Sample.at.timestamp()``)."""

    rows: NDArray[np.int64]
    values: NDArray[np.float64]
    stamps: NDArray[np.float64]


class _Watches(MutableMapping[SignalKey, Watch]):
    """:attr:`Bank.watches`: reading a watch brings its state up to date with its row."""

    __slots__ = ("_bank",)

    def __init__(self, bank: Bank) -> None:
        self._bank = bank

    def __getitem__(self, key: SignalKey) -> Watch:
        return self._bank._current(key)

    def __contains__(self, key: object) -> bool:
        return key in self._bank._watches

    def __setitem__(self, key: SignalKey, watch: Watch) -> None:
        self._bank._put(key, watch)

    def __delitem__(self, key: SignalKey) -> None:
        self._bank._drop(key)

    def __iter__(self) -> Iterator[SignalKey]:
        return iter(self._bank._watches)

    def __len__(self) -> int:
        return len(self._bank._watches)
