"""Change-point detectors (CUSUM, EWMA, Page-Hinkley) and the false-alarm budget. Pure: a
detector is a frozen spec built from plain parameters; its state is a frozen value; the sample
time comes in with the sample.

Use::

    detector = default_detector(bad="down", false_alarm_every=timedelta(days=30), interval=minute)
    state = detector.start()
    for sample in samples:                      # oldest first, one per evaluation
        state, detection = detector.update(state, sample.value, sample.at)
        if detection is not None and detection.bad:
            ...                                 # page: describe(detection, "adoption", budget)
    saved = state_to_json(state)                # warm start: state_from_json(saved)

:func:`default_detector` (a Page-Hinkley chart with its defaults) needs no limits. Every
detector:

- learns its reference from the signal's own first ``warmup`` samples, robustly: the centre is
  the median, the spread the standard deviation of the values within 3 MADs of it (as efficient
  as the plain standard deviation on clean data, unmoved by outliers), and the lag-1
  autocorrelation ``phi``; values are standardised by the *long-run* deviation
  ``spread * sqrt((1 + phi) / (1 - phi))``, the deviation of a sum of autocorrelated samples, so
  a chart on a polled (autocorrelated) series keeps its in-control run length;
- counts the warm-up's effective samples with ``phi`` widened by two standard errors of its
  estimate and standardises with ``phi`` widened by 1.5, and solves its limit allowing for the
  centre's standard error (a reference learned from 30 samples is uncertain, and an error in
  it is what makes a chart page a healthy model);
- derives its limit from the false-alarm budget: ``false_alarm_every / interval`` samples is the
  in-control average run length (ARL) the limit must give (see :func:`cusum_limit`,
  :func:`ewma_limit`); an explicit limit overrides it;
- watches both directions and reports every confirmed change, marking those in the signal's
  ``bad`` direction; the limit is one-sided for ``bad: up|down`` (only those page) and two-sided
  for ``both``;
- estimates when the change began (CUSUM: the first sample after the statistic last sat at
  zero) and, after a confirmed change, re-learns its reference from the samples since then, so a
  recovery or a further shift is found as its own change;
- skips NaN and infinite values and samples not newer than the last one (no evidence).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal, Protocol

from driftowner.detect.detectors import _fmt, _percent, _relative_change
from driftowner.model import BadDirection

Direction = Literal["up", "down"]

DEFAULT_BUDGET = timedelta(days=30)
"""``false_alarm_every`` when a signal states none: one false page a month per signal."""
DEFAULT_INTERVAL = timedelta(minutes=1)
"""The evaluation interval the budget is spent at when none is given."""
DEFAULT_WARMUP = 30
"""Samples to learn a reference from: enough for a median and a spread within ~15%, few enough
to re-learn within half an hour at a 1-minute interval after a change."""
MAX_PHI = 0.95
"""Autocorrelation is capped: above it the long-run deviation (x6.2) is all estimate."""
MAX_LIMIT = 200.0
"""The largest CUSUM or Page-Hinkley limit: beyond it a reference is too uncertain to judge by."""
MAX_EWMA_WIDTH = 12.0
"""The largest EWMA width L, for the same reason."""
MAX_WARMUP_FACTOR = 10
"""A warm-up on autocorrelated samples goes on until it holds ``warmup`` effectively
independent samples, but never beyond this many times ``warmup``."""
REFERENCE_PHI_MARGIN = 1.5
"""Standard errors (``sqrt((1 - phi^2) / n)``) of phi's estimate added before it standardises:
the long-run scale errs on the wide side, since an underestimated one makes a chart page a
healthy model early (measured with the warm-up's margin below: benchmarks/README.md,
calibration, section 5)."""
WARMUP_PHI_MARGIN = 2.0
"""Standard errors of phi's estimate added before a warm-up counts its effective samples: a
warm-up that stops as soon as its point estimate allows stops on the windows whose
autocorrelation happens to look low, and underestimates the long-run scale."""
PRIOR_WEIGHT = 10.0
"""Samples the reference's centre counts for in Page-Hinkley's running mean. With none, the
mean starts at the first judged value, and a shift that begins there is absorbed into it and
never confirmed: a recovery whose first far-off value is what let the re-learning after a
change stop (one far-off value hides a window's autocorrelation) left its incident open
(benchmarks/README.md, recovery). With weight ``w`` a shift of ``z`` long-run deviations from
the first judged sample builds a statistic of about ``w (z ln(z / delta) - z + delta)``: 10
confirms 2 or more against the budget's limit, yet keeps the running mean's following of a
level the warm-up got slightly wrong (the reference's whole effective count, ~30, cost the
default chart a false alarm on the TCPD dev set: F1 0.733 -> 0.683)."""
_SIEGMUND_OFFSET = 1.166
"""Siegmund's correction for the overshoot of a normal CUSUM over its limit."""


# --- the false-alarm budget ---------------------------------------------------------------


def budget_run_length(false_alarm_every: timedelta, interval: timedelta) -> float:
    """The in-control average run length, in samples, that a budget asks for.

    Args:
        false_alarm_every: how often a healthy signal may page (``30d``).
        interval: the evaluation interval: one sample per evaluation.

    Returns:
        ``false_alarm_every / interval`` (43,200 for 30 days at one minute).

    Raises:
        ValueError: either duration is not positive.
    """
    if false_alarm_every <= timedelta(0):
        raise ValueError(f"false_alarm_every must be positive, got {false_alarm_every}")
    if interval <= timedelta(0):
        raise ValueError(f"interval must be positive, got {interval}")
    return false_alarm_every / interval


def cusum_run_length(k: float, h: float, shift: float = 0.0) -> float:
    """Siegmund's approximation of a one-sided CUSUM's average run length on N(shift, 1).

    ``ARL = (exp(-2 d b) + 2 d b - 1) / (2 d^2)`` with ``d = shift - k`` and ``b = h + 1.166``
    (``b^2`` when ``d = 0``). A two-sided chart's ARL is ``1 / (1/ARL+ + 1/ARL-)``: half the
    one-sided value in control. For k=0.5, h=5 the two-sided ARL is 469 (465 by Markov chain).

    Args:
        k: the reference value (allowance), in standard deviations.
        h: the decision limit, in standard deviations.
        shift: the mean of the standardised input.

    Returns:
        The expected number of samples until the statistic exceeds ``h``.
    """
    d = shift - k
    b = h + _SIEGMUND_OFFSET
    if abs(d) < 1e-12:
        return b * b
    return (math.exp(-2 * d * b) + 2 * d * b - 1) / (2 * d * d)


@lru_cache(maxsize=1024)
def cusum_limit(k: float, run_length: float, sides: int = 2, bias: float = 0.0) -> float:
    """The CUSUM limit ``h`` whose in-control ARL is ``run_length`` (Siegmund, solved for h).

    For k=0.5 and 43,200 samples (30 days at 1 minute) two-sided, h = 9.5; one-sided, 8.8.
    ``bias`` is how far the learned centre may be off (in standard deviations): the limit
    then holds the run length with the input's mean at ``+bias`` (towards the alarming side;
    two-sided: ``1/ARL = 1/ARL(k - bias) + 1/ARL(k + bias)``).

    Args:
        k: the reference value, in standard deviations (positive).
        run_length: the in-control ARL wanted, in samples.
        sides: 2 when both directions alarm, 1 when one does.
        bias: the allowance for an uncertain centre, in standard deviations.

    Returns:
        ``h`` in standard deviations, at most 200 (a reference too uncertain to judge by).
    """

    def in_control(h: float) -> float:
        towards = cusum_run_length(k, h, bias)
        if sides == 1:
            return towards
        return 1 / (1 / towards + 1 / cusum_run_length(k, h, -bias))

    return _solve_increasing(in_control, run_length, 0.0, MAX_LIMIT)


def ewma_run_length(lam: float, width: float, shift: float = 0.0, states: int = 61) -> float:
    """A two-sided EWMA chart's average run length by Brook and Evans' Markov chain.

    The in-control band ``+-width * sqrt(lam / (2 - lam))`` is cut into ``states`` cells; the
    chart's value moves between cells as ``(1 - lam) * z + lam * x``, x ~ N(shift, 1). For
    lam=0.2, width=2.962 this gives 500 in control and 10.5 at a 1-sigma shift (Lucas and
    Saccucci, 1990).

    Args:
        lam: the smoothing weight, in (0, 1].
        width: the limit ``L`` in standard deviations of the chart's asymptotic spread.
        shift: the mean of the standardised input.
        states: cells of the chain (odd; more is more exact and slower).

    Returns:
        The expected number of samples until the chart leaves the band, starting at 0.
    """
    limit = width * math.sqrt(lam / (2 - lam))
    cell = 2 * limit / states
    centres = [-limit + (i + 0.5) * cell for i in range(states)]
    # (I - P) ARL = 1, solved by Gaussian elimination (the matrix is diagonally dominant).
    rows = []
    for i, ci in enumerate(centres):
        row = []
        for j, cj in enumerate(centres):
            hi = (cj + cell / 2 - (1 - lam) * ci) / lam - shift
            lo = (cj - cell / 2 - (1 - lam) * ci) / lam - shift
            row.append((1.0 if i == j else 0.0) - (_phi(hi) - _phi(lo)))
        row.append(1.0)
        rows.append(row)
    return _solve_linear(rows)[states // 2]


@lru_cache(maxsize=1024)
def ewma_limit(lam: float, run_length: float, sides: int = 2, bias: float = 0.0) -> float:
    """The EWMA width ``L`` whose in-control ARL is ``run_length``.

    One-sided budgets are met by a two-sided chart with twice the run length (alarms on either
    side are rare and nearly independent, so each side takes half).

    Args:
        lam: the smoothing weight, in (0, 1].
        run_length: the in-control ARL wanted, in samples.
        sides: 2 when both directions alarm, 1 when one does.
        bias: the allowance for an uncertain centre: the input's mean, in standard deviations.

    Returns:
        ``L`` in standard deviations of the chart's asymptotic spread.
    """
    two_sided = run_length * (2 / sides)
    return _solve_increasing(
        lambda width: ewma_run_length(lam, width, bias), two_sided, 0.5, MAX_EWMA_WIDTH
    )


def _solve_increasing(func: Any, target: float, low: float, high: float, rounds: int = 60) -> float:
    """The x in [low, high] where an increasing ``func`` reaches ``target`` (bisection on
    the logarithm, since run lengths grow exponentially)."""
    if func(low) >= target:
        return low
    goal = math.log(target)
    for _ in range(rounds):
        middle = (low + high) / 2
        if math.log(func(middle)) < goal:
            low = middle
        else:
            high = middle
        if high - low < 1e-6:
            break
    return (low + high) / 2


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def _solve_linear(rows: list[list[float]]) -> list[float]:
    size = len(rows)
    for col in range(size):
        pivot = max(range(col, size), key=lambda r: abs(rows[r][col]))
        rows[col], rows[pivot] = rows[pivot], rows[col]
        lead = rows[col]
        for r in range(col + 1, size):
            factor = rows[r][col] / lead[col]
            if factor:
                target = rows[r]
                for c in range(col, size + 1):
                    target[c] -= factor * lead[c]
    result = [0.0] * size
    for r in range(size - 1, -1, -1):
        tail = sum(rows[r][c] * result[c] for c in range(r + 1, size))
        result[r] = (rows[r][size] - tail) / rows[r][r]
    return result


# --- the reference --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reference:
    """What "normal" is for a signal, learned from a window of its own samples."""

    centre: float
    """The median of the window."""
    spread: float
    """The standard deviation of the window's values within 3 MADs of the median."""
    phi: float
    """The lag-1 autocorrelation, bias-corrected and widened by REFERENCE_PHI_MARGIN standard
    errors, in [0, MAX_PHI]: the one used to standardise."""
    scale: float
    """The long-run deviation that standardises a value: ``spread * sqrt((1+phi)/(1-phi))``."""
    since: float
    """POSIX seconds of the window's first sample."""
    until: float
    """POSIX seconds of the window's last sample."""
    effective: float
    """The window's effective number of independent samples: ``n (1 - phi) / (1 + phi)``
    with the point estimate of phi. The centre is uncertain by ``1/sqrt(effective)`` long-run
    deviations, which the budget's limit allows for."""

    @property
    def bias(self) -> float:
        """How far off the centre may be (one standard error), in long-run deviations."""
        return 1 / math.sqrt(self.effective) if math.isfinite(self.effective) else 0.0


def learn_reference(values: Sequence[float], since: float, until: float) -> Reference:
    """A reference from a window of finite values, oldest first.

    Args:
        values: at least two finite values.
        since: POSIX seconds of the first.
        until: POSIX seconds of the last.

    Returns:
        The robust reference; its scale is never zero (a constant window gets a scale of 1e-9
        of its level, so only a real move departs from it).

    Raises:
        ValueError: fewer than two values.
    """
    count = len(values)
    if count < 2:
        raise ValueError(f"a reference needs at least 2 values, got {count}")
    centre = statistics.median(values)
    mad = statistics.median(abs(v - centre) for v in values) * 1.4826
    kept = [v for v in values if abs(v - centre) <= 3 * mad] if mad > 0 else list(values)
    spread = statistics.pstdev(kept) if len(kept) >= 2 else 0.0
    point = effective_phi(values)
    widened = point + REFERENCE_PHI_MARGIN * math.sqrt(max(1 - point * point, 0.0) / count)
    phi = min(widened, MAX_PHI)
    floor = 1e-9 * max(abs(centre), 1e-12)
    scale = max(spread * math.sqrt((1 + phi) / (1 - phi)), floor)
    effective = count * (1 - point) / (1 + point)
    return Reference(centre, spread, phi, scale, since, until, effective)


def warmup_effective_count(values: Sequence[float]) -> float:
    """The effective number of independent samples a warm-up holds, counted pessimistically:
    ``n (1 - phi) / (1 + phi)`` with ``phi`` widened by ``WARMUP_PHI_MARGIN`` standard errors
    (``sqrt((1 - phi^2) / n)``), at most MAX_PHI.

    The warm-up is sequential: it stops at the first sample where this reaches ``warmup``. With
    the point estimate it stopped on the windows whose phi happened to look low (on AR(1)
    phi=0.5, 30 samples wanted, the stopping windows' phi averaged 0.29), so the long-run scale
    was underestimated and those charts alarmed early; the margin makes a low-looking phi
    need more samples before it is believed.
    """
    count = len(values)
    if _autocorrelation(values) is None:
        return float(count)  # a constant window: no autocorrelation to be wrong about
    point = effective_phi(values)
    upper = point + WARMUP_PHI_MARGIN * math.sqrt(max(1 - point * point, 0.0) / count)
    phi = min(upper, MAX_PHI)
    return count * (1 - phi) / (1 + phi)


def effective_phi(values: Sequence[float]) -> float:
    """The lag-1 autocorrelation of a window, corrected for its small-sample bias
    (``+ (1 + 3 phi) / n``, Kendall), in [0, MAX_PHI]; 0 for a constant window."""
    phi = _autocorrelation(values)
    if phi is None:
        return 0.0
    return min(max(phi + (1 + 3 * phi) / len(values), 0.0), MAX_PHI)


def _autocorrelation(values: Sequence[float]) -> float | None:
    mean = statistics.fmean(values)
    deviations = [v - mean for v in values]
    total = sum(d * d for d in deviations)
    if total == 0:
        return None
    lagged = sum(a * b for a, b in itertools.pairwise(deviations))
    return lagged / total


# --- detections -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Detection:
    """A confirmed change, with the evidence a person needs to judge it."""

    detector: str
    at: datetime
    """When the change was confirmed (the sample that crossed the limit)."""
    began_at: datetime
    """When the change is estimated to have begun."""
    direction: Direction
    bad: bool
    """The change is in the signal's ``bad`` direction: it should page."""
    value: float
    """The newest value."""
    reference: float
    """The reference level (the centre of the reference window)."""
    reference_span: timedelta
    """How much history the reference was learned from."""
    level: float
    """The mean of the values since the change began: the new level."""
    statistic: float
    limit: float


def describe(detection: Detection, signal: str, false_alarm_every: timedelta | None) -> str:
    """One line a person understands, e.g. ``adoption 0.31 fell 24% below its 7-day level 0.41
    around 09:40 (1 false alarm expected per 30 days)``.

    Args:
        detection: the confirmed change.
        signal: the signal's name.
        false_alarm_every: the budget the limit came from; None for an explicit limit.

    Returns:
        The sentence, without a trailing period.
    """
    change = _relative_change(detection.value, detection.reference)
    verb = "rose" if detection.direction == "up" else "fell"
    side = "above" if detection.direction == "up" else "below"
    span = spoken_duration(_rounded_span(detection.reference_span), adjective=True)
    amount = _percent(abs(change), signed=False)
    line = (
        f"{signal} {_fmt(detection.value)} {verb} {amount} {side} its {span} level "
        f"{_fmt(detection.reference)} around {detection.began_at:%H:%M}"
    )
    if false_alarm_every is None:
        return f"{line} (statistic {_fmt(detection.statistic)} > limit {_fmt(detection.limit)})"
    return f"{line} (1 false alarm expected per {spoken_duration(false_alarm_every)})"


def spoken_duration(span: timedelta, *, adjective: bool = False) -> str:
    """A duration as a person says it, in its largest whole unit (days, hours, minutes, else
    seconds): ``30 days``, or as an adjective ``7-day`` (``adjective=True``)."""
    seconds = round(span.total_seconds())
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1)):
        if seconds % size == 0 or unit == "second":
            count = seconds // size
            if adjective:
                return f"{count}-{unit}"
            return f"{count} {unit}{'' if count == 1 else 's'}"
    raise AssertionError("unreachable")


def _rounded_span(span: timedelta) -> timedelta:
    """A reference's span as a person rounds it: whole days from 2 days on, whole hours from
    2 hours on, else whole minutes (at least one). A chart's span ends at its latest sample,
    so it is rarely a whole number of days: 2 days 9 hours 41 minutes reads "2-day", not
    "3461-minute"."""
    minutes = max(1, round(span.total_seconds() / 60))
    for size in (1440, 60):
        if minutes >= 2 * size:
            return timedelta(minutes=round(minutes / size) * size)
    return timedelta(minutes=minutes)


# --- the state every chart keeps --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChartState:
    """A chart's memory between samples: plain numbers and tuples, JSON-serialisable."""

    warmup: tuple[float, ...] = ()
    """Values collected to learn the next reference (empty once learned)."""
    warmup_since: float | None = None
    reference: Reference | None = None
    limit: float = 0.0
    """The limit for the current reference (from the budget, allowing for its uncertainty)."""
    upper: float = 0.0
    """Evidence of an upward change (CUSUM S+, the EWMA above the centre, PH's distance)."""
    lower: float = 0.0
    """Evidence of a downward change."""
    upper_since: float | None = None
    """POSIX seconds of the first sample of the current upward excursion."""
    lower_since: float | None = None
    upper_values: tuple[float, ...] = ()
    """The latest values (at most ``warmup``) of the upward excursion: they seed the new
    reference if the change is confirmed."""
    lower_values: tuple[float, ...] = ()
    count: int = 0
    """Samples judged against the current reference."""
    mean: float = 0.0
    """Page-Hinkley's running mean of the standardised values."""
    last_at: float | None = None


def state_to_json(state: ChartState) -> dict[str, Any]:
    """The state as a JSON-ready dict (for a warm start after a restart)."""
    return asdict(state)


def state_from_json(data: object) -> ChartState:
    """Rebuild a state from :func:`state_to_json`'s output.

    Raises:
        ValueError: a field is missing, unknown, or of the wrong type (the message names it).
    """
    if not isinstance(data, dict):
        raise ValueError(f"detector state: expected an object, got {type(data).__name__}")
    unknown = set(data) - {f.name for f in fields(ChartState)}
    if unknown:
        raise ValueError(f"detector state: unknown field {sorted(unknown)[0]!r}")
    values: dict[str, Any] = {}
    for name, raw in data.items():
        where = f"detector state: {name}"
        if name == "reference":
            values[name] = None if raw is None else _reference_from_json(raw, where)
        elif name in {"warmup", "upper_values", "lower_values"}:
            if not isinstance(raw, list | tuple):
                raise ValueError(f"{where}: expected a list of numbers")
            values[name] = tuple(_number(v, where) for v in raw)
        elif name == "count":
            if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
                raise ValueError(f"{where}: expected a non-negative integer")
            values[name] = raw
        elif name in {"warmup_since", "upper_since", "lower_since", "last_at"}:
            values[name] = None if raw is None else _number(raw, where)
        else:
            values[name] = _number(raw, where)
    return ChartState(**values)


def _reference_from_json(raw: object, where: str) -> Reference:
    names = [f.name for f in fields(Reference)]
    if not isinstance(raw, dict) or set(raw) != set(names):
        raise ValueError(f"{where}: expected an object with {', '.join(names)}")
    return Reference(**{n: _number(raw[n], f"{where}.{n}") for n in names})


def _number(raw: object, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ValueError(f"{where}: expected a finite number, got {raw!r}")
    return float(raw)


# --- the charts -------------------------------------------------------------------------------


class Detector(Protocol):
    """What the evaluation cycle needs from any change-point detector."""

    @property
    def name(self) -> str: ...

    @property
    def bad(self) -> BadDirection: ...

    @property
    def warmup(self) -> int: ...

    def start(self) -> ChartState: ...

    def update(
        self, state: ChartState, value: float, at: datetime
    ) -> tuple[ChartState, Detection | None]: ...


@dataclass(frozen=True, slots=True)
class _Chart:
    """What every chart shares: direction, budget, warm-up, reference, re-learning."""

    bad: BadDirection = "both"
    false_alarm_every: timedelta = DEFAULT_BUDGET
    interval: timedelta = DEFAULT_INTERVAL
    warmup: int = DEFAULT_WARMUP
    centre: float | None = None
    """A known in-control level; with ``spread`` it replaces the learned reference."""
    spread: float | None = None
    """A known in-control standard deviation (no autocorrelation inflation)."""
    name: str = field(default="", init=False)

    def __post_init__(self) -> None:
        if self.bad not in ("up", "down", "both"):
            raise ValueError(f"bad: expected up, down or both, got {self.bad!r}")
        if self.warmup < 2:
            raise ValueError(f"warmup: at least 2 samples are needed, got {self.warmup}")
        if (self.centre is None) != (self.spread is None):
            raise ValueError("centre and spread: give both or neither")
        if self.spread is not None and not self.spread > 0:
            raise ValueError(f"spread: must be positive, got {self.spread}")
        budget_run_length(self.false_alarm_every, self.interval)

    @property
    def sides(self) -> int:
        return 2 if self.bad == "both" else 1

    @property
    def run_length(self) -> float:
        """The in-control ARL (samples) the budget asks of the bad direction(s)."""
        return budget_run_length(self.false_alarm_every, self.interval)

    def start(self) -> ChartState:
        """The state before the first sample: learning, unless the reference is given."""
        if self.centre is not None and self.spread is not None:
            known = Reference(self.centre, self.spread, 0.0, self.spread, 0.0, 0.0, math.inf)
            return ChartState(reference=known, limit=self.limit_for(known))
        return ChartState()

    def limit_for(self, reference: Reference) -> float:
        """The limit judged against ``reference``: the explicit one, or the budget's, allowing
        for how uncertain the reference's centre is."""
        explicit = self._explicit_limit()
        if explicit is not None:
            return explicit
        return self._budget_limit(round(reference.bias, 3))

    def _explicit_limit(self) -> float | None:
        raise NotImplementedError

    def _budget_limit(self, bias: float) -> float:
        raise NotImplementedError

    def update(
        self, state: ChartState, value: float, at: datetime
    ) -> tuple[ChartState, Detection | None]:
        """Take one sample: learn, or judge it against the reference.

        Args:
            state: the state after the previous sample.
            value: the sample's value; NaN and infinities are skipped.
            at: the sample's time (timezone-aware); samples not newer than the last are skipped.

        Returns:
            The new state, and the change this sample confirmed, if any.
        """
        stamp = at.timestamp()
        if not math.isfinite(value) or (state.last_at is not None and stamp <= state.last_at):
            return state, None
        if state.reference is None:
            return self._learn(state, value, stamp), None
        step = self._step(state, (value - state.reference.centre) / state.reference.scale)
        return self._confirm(_advance(state, step, value, stamp, self.warmup), value, at)

    def _learn(self, state: ChartState, value: float, stamp: float) -> ChartState:
        since = stamp if state.warmup_since is None else state.warmup_since
        return self._learned((*state.warmup, value), since, stamp)

    def _learned(self, window: tuple[float, ...], since: float, until: float) -> ChartState:
        """A state judging against the reference ``window`` gives, or still learning when the
        window is too short: under ``warmup`` samples, or under ``warmup`` effectively
        independent ones, counted with phi widened (:func:`warmup_effective_count`; at most
        ``MAX_WARMUP_FACTOR * warmup`` samples)."""
        enough = len(window) >= self.warmup and (
            len(window) >= self.warmup * MAX_WARMUP_FACTOR
            or warmup_effective_count(window) >= self.warmup
        )
        if not enough:
            return ChartState(warmup=window, warmup_since=since, last_at=until)
        reference = learn_reference(window, since, until)
        return ChartState(reference=reference, limit=self.limit_for(reference), last_at=until)

    def _step(self, state: ChartState, z: float) -> tuple[float, float, float]:
        """The new upward and downward statistics, and running mean, after value ``z``."""
        raise NotImplementedError

    def _limits(self, state: ChartState) -> float:
        return state.limit

    def _reference_level(self, state: ChartState) -> float:
        """The level a change is reported against: the reference's centre."""
        assert state.reference is not None
        return state.reference.centre

    def _reference_until(self, state: ChartState) -> float:
        assert state.reference is not None
        return state.reference.until

    def _confirm(
        self, state: ChartState, value: float, at: datetime
    ) -> tuple[ChartState, Detection | None]:
        limit = self._limits(state)
        if state.upper > limit:
            direction: Direction = "up"
            statistic, since, seed = state.upper, state.upper_since, state.upper_values
        elif state.lower > limit:
            direction = "down"
            statistic, since, seed = state.lower, state.lower_since, state.lower_values
        else:
            return state, None
        reference = state.reference
        assert reference is not None and since is not None  # judged samples have both
        began = datetime.fromtimestamp(since, tz=UTC)
        detection = Detection(
            detector=self.name,
            at=at,
            began_at=began,
            direction=direction,
            bad=self.bad in ("both", direction),
            value=value,
            reference=self._reference_level(state),
            reference_span=timedelta(seconds=self._reference_until(state) - reference.since),
            level=statistics.fmean(seed),
            statistic=statistic,
            limit=limit,
        )
        return self._learned(seed, since, at.timestamp()), detection


def _advance(
    old: ChartState, step: tuple[float, float, float], value: float, stamp: float, keep: int
) -> ChartState:
    """The state after a judged sample: the new statistics, when each excursion began (the
    first sample after its statistic sat at zero) and its latest values."""
    upper, lower, mean = step
    upper_since: float | None = None
    upper_values: tuple[float, ...] = ()
    if upper > 0:
        upper_since = old.upper_since if old.upper > 0 else stamp
        upper_values = (*(old.upper_values if old.upper > 0 else ()), value)[-keep:]
    lower_since: float | None = None
    lower_values: tuple[float, ...] = ()
    if lower > 0:
        lower_since = old.lower_since if old.lower > 0 else stamp
        lower_values = (*(old.lower_values if old.lower > 0 else ()), value)[-keep:]
    return ChartState(
        reference=old.reference,
        limit=old.limit,
        upper=upper,
        lower=lower,
        upper_since=upper_since,
        lower_since=lower_since,
        upper_values=upper_values,
        lower_values=lower_values,
        count=old.count + 1,
        mean=mean,
        last_at=stamp,
    )


@dataclass(frozen=True, slots=True)
class Cusum(_Chart):
    """Two-sided tabular CUSUM on standardised values (Page, 1954): ``S+ = max(0, S+ + z - k)``,
    ``S- = max(0, S- - z - k)``; a change is confirmed when one exceeds ``h``; it began at the
    first sample after that statistic last sat at zero.

    Defaults: ``k = 0.5`` (half the 1-sigma shift it is fastest at, the classic choice), and
    ``h`` from the false-alarm budget (9.5 for 30 days at 1 minute, two-sided), never the
    textbook 4 or 5, which page a healthy 1-minute signal every 3 to 8 hours.
    """

    k: float = 0.5
    h: float | None = None
    name: str = field(default="cusum", init=False)

    def __post_init__(self) -> None:
        _Chart.__post_init__(self)
        if not self.k > 0:
            raise ValueError(f"k: must be positive, got {self.k}")
        if self.h is not None and not self.h > 0:
            raise ValueError(f"h: must be positive, got {self.h}")

    def _explicit_limit(self) -> float | None:
        return self.h

    def _budget_limit(self, bias: float) -> float:
        return cusum_limit(self.k, self.run_length, self.sides, bias)

    def _step(self, state: ChartState, z: float) -> tuple[float, float, float]:
        return max(0.0, state.upper + z - self.k), max(0.0, state.lower - z - self.k), 0.0


@dataclass(frozen=True, slots=True)
class Ewma(_Chart):
    """EWMA chart (Roberts, 1959) on standardised values: ``E = (1 - lam) E + lam z`` against
    the time-varying limits ``L * sqrt(lam / (2 - lam) * (1 - (1 - lam)^(2t)))``, exact for the
    t-th sample after the reference. The change began at the most likely start of a shift
    (:func:`shift_start`) among the samples since E last crossed the centre (the latest
    ``warmup`` of them are held; when it is their first, the crossing is kept):
    E can sit on the changed side for tens of samples before the change, so the crossing
    itself dates it too early (issue 6). The new reference is re-learned from the samples
    since the start.

    Defaults: ``lam = 0.2`` (Lucas and Saccucci's choice for shifts near 1 sigma) and ``L`` from
    the false-alarm budget by Brook and Evans' Markov chain (2.962 gives ARL 500).
    """

    lam: float = 0.2
    width: float | None = None
    """``L``; None derives it from the budget."""
    name: str = field(default="ewma", init=False)

    def __post_init__(self) -> None:
        _Chart.__post_init__(self)
        if not 0 < self.lam <= 1:
            raise ValueError(f"lambda: must be in (0, 1], got {self.lam}")
        if self.width is not None and not self.width > 0:
            raise ValueError(f"L: must be positive, got {self.width}")

    def _explicit_limit(self) -> float | None:
        return self.width

    def _budget_limit(self, bias: float) -> float:
        return ewma_limit(self.lam, self.run_length, self.sides, bias)

    def _step(self, state: ChartState, z: float) -> tuple[float, float, float]:
        smoothed = (1 - self.lam) * (state.upper - state.lower) + self.lam * z
        return max(smoothed, 0.0), max(-smoothed, 0.0), 0.0

    def _limits(self, state: ChartState) -> float:
        decay = 1 - (1 - self.lam) ** (2 * state.count)
        return state.limit * math.sqrt(self.lam / (2 - self.lam) * decay)

    def _confirm(
        self, state: ChartState, value: float, at: datetime
    ) -> tuple[ChartState, Detection | None]:
        """As every chart confirms (when, and in which direction, are unchanged), but dated
        from the mean-shift split of the excursion rather than from E's crossing."""
        confirmed, detection = _Chart._confirm(self, state, value, at)
        if detection is None:
            return confirmed, detection
        return _Chart._confirm(self, self._dated(state, detection.direction), value, at)

    def _dated(self, state: ChartState, direction: Direction) -> ChartState:
        """``state`` with the ``direction`` excursion cut to the samples since the shift began."""
        up = direction == "up"
        since = state.upper_since if up else state.lower_since
        values = state.upper_values if up else state.lower_values
        if since is None or state.last_at is None:
            return state
        assert state.reference is not None  # a confirmed change was judged against one
        centre, scale = state.reference.centre, state.reference.scale
        split = shift_start([(v - centre) / scale for v in values], 1.0 if up else -1.0)
        if split == 0:
            return state
        # Held samples are consecutive; their times are not kept. All of the excursion is held
        # when fewer than ``warmup`` are: spread them evenly over its span. Otherwise count back
        # one evaluation interval per sample (a gap after the start makes it late by the gap).
        n = len(values)
        if n < self.warmup:
            began = since + split * (state.last_at - since) / (n - 1)
        else:
            began = max(since, state.last_at - (n - 1 - split) * self.interval.total_seconds())
        kept = values[split:]
        if up:
            return replace(state, upper_since=began, upper_values=kept)
        return replace(state, lower_since=began, lower_values=kept)


def shift_start(values: Sequence[float], sign: float) -> int:
    """Where a shift in the direction ``sign`` (+1 up, -1 down) most likely began in ``values``
    (standardised: the reference level is 0, unit variance), by the Bayesian information
    criterion over three explanations, in one pass over the cumulative sums:

    - every value shifted (the start is the first): gain ``S^2 / n`` in twice the
      log-likelihood over "no shift";
    - the values from ``j`` shifted, those before at the reference level: ``T_j^2 / (n - j)``,
      less ``ln n`` for the start;
    - the values from ``j`` shifted further from a level of their own before it (a reference
      slightly off, a slow drift before the step): ``H_j^2 / j + T_j^2 / (n - j)``, less
      ``2 ln n`` for the start and that level;

    where ``S``, ``H_j`` and ``T_j`` are the sums of all the values, of those before ``j`` and
    of those from ``j``. Without the penalties a split inside pure post-change noise always
    looks better than none, and a change that began at the first value would be dated late.

    Returns:
        The index of the start: 0 when no later start explains the values better.
    """
    n = len(values)
    total = math.fsum(values)
    if n < 2 or not sign * total > 0:
        return 0
    log_n = math.log(n)
    best, start = total * total / n, 0
    head = 0.0
    for j in range(1, n):
        head += values[j - 1]
        tail = total - head
        if not sign * tail > 0:
            continue
        from_reference = tail * tail / (n - j) - log_n
        if from_reference > best:
            best, start = from_reference, j
        if sign * (tail / (n - j) - head / j) > 0:
            from_own_level = head * head / j + tail * tail / (n - j) - 2 * log_n
            if from_own_level > best:
                best, start = from_own_level, j
    return start


@dataclass(frozen=True, slots=True)
class PageHinkley(_Chart):
    """Page-Hinkley test (Page, 1954; Hinkley, 1971) as used on data streams: each standardised
    value is compared with the running mean of those since the reference (the reference's
    centre counting as PRIOR_WEIGHT samples of it, so a shift from the first judged sample is
    seen), less a tolerance ``delta``; the cumulative sum's distance from its extreme is the
    statistic, confirmed above ``lam`` (``threshold``); the change began just after the
    extreme.

    Unlike CUSUM it needs no fixed centre: the running mean follows a level the warm-up got
    slightly wrong. Defaults: ``delta = 0.5`` and the threshold from the budget through the
    CUSUM formula (the running mean settles to the centre, making the two alike).
    """

    delta: float = 0.5
    threshold: float | None = None
    name: str = field(default="page_hinkley", init=False)

    def __post_init__(self) -> None:
        _Chart.__post_init__(self)
        if not self.delta > 0:
            raise ValueError(f"delta: must be positive, got {self.delta}")
        if self.threshold is not None and not self.threshold > 0:
            raise ValueError(f"threshold: must be positive, got {self.threshold}")

    def _explicit_limit(self) -> float | None:
        return self.threshold

    def _budget_limit(self, bias: float) -> float:
        return cusum_limit(self.delta, self.run_length, self.sides, bias)

    def _reference_level(self, state: ChartState) -> float:
        """The running mean the values were compared with, in the signal's units."""
        assert state.reference is not None
        return state.reference.centre + state.mean * state.reference.scale

    def _reference_until(self, state: ChartState) -> float:
        return state.last_at if state.last_at is not None else 0.0

    def _step(self, state: ChartState, z: float) -> tuple[float, float, float]:
        assert state.reference is not None  # a judged sample has its reference
        weight = prior_weight(state.reference)
        mean = state.mean + (z - state.mean) / (state.count + 1 + weight)
        upper = max(0.0, state.upper + z - mean - self.delta)
        return upper, max(0.0, state.lower - (z - mean) - self.delta), mean


def prior_weight(reference: Reference) -> float:
    """How many samples the reference's centre counts for in Page-Hinkley's running mean:
    PRIOR_WEIGHT, or the effective samples the reference was learned from if fewer."""
    return min(PRIOR_WEIGHT, reference.effective)


def default_detector(
    bad: BadDirection = "both",
    false_alarm_every: timedelta = DEFAULT_BUDGET,
    interval: timedelta = DEFAULT_INTERVAL,
) -> PageHinkley:
    """The detector of a signal that names none: a two-sided CUSUM on robustly standardised
    values run against the running mean of those values (Page-Hinkley), its limit from the
    signal's false-alarm budget at the evaluation interval.

    Chosen by measurement over the plain CUSUM against the warm-up's centre: a centre learned
    from 30 samples is off by ~0.2 deviations, which a fixed-centre CUSUM accumulates into early
    false alarms and into change starts dated too early; the running mean removes that error
    as history accrues (benchmarks/README.md: calibration and TCPD sections)."""
    return PageHinkley(bad=bad, false_alarm_every=false_alarm_every, interval=interval)
