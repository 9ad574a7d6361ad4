"""Many charts of one detector judged at once: the steady step of a signal template's charts
(one instant read answering for many systems) as numpy arrays, one row per signal. Pure:
states and samples come in, new arrays go out.

The scalar charts (:mod:`driftowner.detect.changepoint`) stay the reference. :func:`advance`
is the same update, operation for operation (so bit for bit), for the only step that is
common and dull: one new finite sample, newer than the last, judged against a learned
reference, confirming nothing. Every other step (learning a reference, a confirmed change)
is *moved*: :func:`advance` leaves that row as it was and the caller runs the scalar update
on :func:`state_at` of it. Page-Hinkley (the default chart) and CUSUM are vectorised; EWMA's
time-varying limit is not (its power would have to match libm's to the last bit), so its
signals stay on the scalar path (:func:`vectorised`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftowner.detect.changepoint import (
    ChartState,
    Cusum,
    Detector,
    PageHinkley,
    Reference,
    prior_weight,
)

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
Flags = NDArray[np.bool_]


def vectorised(detector: Detector) -> bool:
    """Whether :func:`advance` runs ``detector``'s update (Page-Hinkley and CUSUM do)."""
    return isinstance(detector, PageHinkley | Cusum)


def judging(state: ChartState) -> bool:
    """Whether a chart's state can be held as a row: it judges against a learned reference."""
    return state.reference is not None and state.last_at is not None and not state.warmup


@dataclass(frozen=True, slots=True)
class Rows:
    """The states of ``len(held)`` charts of one detector, one row each, as arrays: what a
    judging :class:`~driftowner.detect.changepoint.ChartState` holds. A row not ``held`` is
    meaningless (its chart's state lives in its watch). ``None`` times are NaN; each
    excursion's latest values are the last ``*_len`` entries of its ``*_window`` row."""

    held: Flags
    references: tuple[Reference | None, ...]
    centre: Floats
    scale: Floats
    prior: Floats
    """Page-Hinkley's weight of the reference's centre in its running mean."""
    limit: Floats
    upper: Floats
    lower: Floats
    upper_since: Floats
    lower_since: Floats
    count: Ints
    mean: Floats
    last_at: Floats
    upper_window: Floats
    lower_window: Floats
    upper_len: Ints
    lower_len: Ints


def empty(size: int, keep: int) -> Rows:
    """``size`` rows, none held; excursions keep at most ``keep`` values (the warm-up)."""
    zeros = np.zeros(size)
    return Rows(
        held=np.zeros(size, dtype=np.bool_),
        references=(None,) * size,
        centre=zeros,
        scale=np.ones(size),
        prior=zeros,
        limit=zeros,
        upper=zeros,
        lower=zeros,
        upper_since=np.full(size, math.nan),
        lower_since=np.full(size, math.nan),
        count=np.zeros(size, dtype=np.int64),
        mean=zeros,
        last_at=np.full(size, math.nan),
        upper_window=np.zeros((size, keep)),
        lower_window=np.zeros((size, keep)),
        upper_len=np.zeros(size, dtype=np.int64),
        lower_len=np.zeros(size, dtype=np.int64),
    )


def hold(rows: Rows, index: Sequence[int], states: Sequence[ChartState]) -> Rows:
    """``rows`` with row ``index[i]`` holding ``states[i]`` (each :func:`judging`)."""
    if not index:
        return rows
    at = np.asarray(index, dtype=np.intp)
    keep = rows.upper_window.shape[1]
    references = list(rows.references)
    for row, state in zip(index, states, strict=True):
        references[row] = state.reference

    def column(values: Sequence[float | None], into: Any) -> Any:
        out = into.copy()
        out[at] = [math.nan if v is None else v for v in values]
        return out

    def window(values: Sequence[tuple[float, ...]], into: Floats) -> Floats:
        out = into.copy()
        for row, seq in zip(index, values, strict=True):
            if seq:
                out[row, keep - len(seq) :] = seq
        return out

    held = rows.held.copy()
    held[at] = True
    return Rows(
        held=held,
        references=tuple(references),
        centre=column([_reference(s).centre for s in states], rows.centre),
        scale=column([_reference(s).scale for s in states], rows.scale),
        prior=column([prior_weight(_reference(s)) for s in states], rows.prior),
        limit=column([s.limit for s in states], rows.limit),
        upper=column([s.upper for s in states], rows.upper),
        lower=column([s.lower for s in states], rows.lower),
        upper_since=column([s.upper_since for s in states], rows.upper_since),
        lower_since=column([s.lower_since for s in states], rows.lower_since),
        count=column([s.count for s in states], rows.count),
        mean=column([s.mean for s in states], rows.mean),
        last_at=column([s.last_at for s in states], rows.last_at),
        upper_window=window([s.upper_values for s in states], rows.upper_window),
        lower_window=window([s.lower_values for s in states], rows.lower_window),
        upper_len=column([len(s.upper_values) for s in states], rows.upper_len),
        lower_len=column([len(s.lower_values) for s in states], rows.lower_len),
    )


def _reference(state: ChartState) -> Reference:
    if state.reference is None:
        raise ValueError("a chart still learning its reference cannot be held as a row")
    return state.reference


def release(rows: Rows, index: Sequence[int]) -> Rows:
    """``rows`` with the rows at ``index`` no longer held (their watches hold their state)."""
    if not index:
        return rows
    held = rows.held.copy()
    held[np.asarray(index, dtype=np.intp)] = False
    return replace(rows, held=held)


def state_at(rows: Rows, row: int) -> ChartState:
    """The chart state a held row stands for, exactly."""
    keep = rows.upper_window.shape[1]
    upper_len, lower_len = int(rows.upper_len[row]), int(rows.lower_len[row])
    return ChartState(
        reference=rows.references[row],
        limit=float(rows.limit[row]),
        upper=float(rows.upper[row]),
        lower=float(rows.lower[row]),
        upper_since=_maybe(rows.upper_since[row]),
        lower_since=_maybe(rows.lower_since[row]),
        upper_values=tuple(rows.upper_window[row, keep - upper_len :].tolist()),
        lower_values=tuple(rows.lower_window[row, keep - lower_len :].tolist()),
        count=int(rows.count[row]),
        mean=float(rows.mean[row]),
        last_at=_maybe(rows.last_at[row]),
    )


def _maybe(value: np.float64) -> float | None:
    return None if math.isnan(value) else float(value)


@dataclass(frozen=True, slots=True)
class Step:
    """What :func:`advance` made of one sample per row."""

    rows: Rows
    """The rows after the quiet samples (the moved rows as they were)."""
    moved: Flags
    """Per sample: the scalar update must take it (a change confirmed, or the row not held)."""


def advance(detector: Detector, rows: Rows, index: Ints, values: Floats, stamps: Floats) -> Step:
    """One sample for each row ``index[i]``: ``values[i]`` at POSIX time ``stamps[i]``, with
    :meth:`~driftowner.detect.changepoint._Chart.update`'s arithmetic in its order.

    A NaN/Inf value, or one not newer than the row's last, changes nothing (the scalar update
    skips it). A row not held, or whose sample crosses the limit, is ``moved`` and left as it
    was. ``index`` holds each row at most once.
    """
    held = rows.held[index]
    last = rows.last_at[index]
    judged = held & np.isfinite(values) & (stamps > last)
    at = index[judged]
    value = values[judged]
    stamp = stamps[judged]
    old_upper, old_lower = rows.upper[at], rows.lower[at]
    z = (value - rows.centre[at]) / rows.scale[at]
    if isinstance(detector, PageHinkley):
        old_mean = rows.mean[at]
        mean = old_mean + (z - old_mean) / (rows.count[at] + 1 + rows.prior[at])
        upper = _positive(old_upper + z - mean - detector.delta)
        lower = _positive(old_lower - (z - mean) - detector.delta)
    elif isinstance(detector, Cusum):
        mean = np.zeros(len(at))
        upper = _positive(old_upper + z - detector.k)
        lower = _positive(old_lower - z - detector.k)
    else:
        raise ValueError(f"{detector.name or 'this'} chart is not vectorised")
    limit = rows.limit[at]
    confirmed = (upper > limit) | (lower > limit)
    moved = ~held
    moved[np.flatnonzero(judged)[confirmed]] = True
    quiet = ~confirmed
    at, value, stamp = at[quiet], value[quiet], stamp[quiet]
    upper, lower, mean = upper[quiet], lower[quiet], mean[quiet]
    old_upper, old_lower = old_upper[quiet], old_lower[quiet]
    upper_window, upper_len, upper_since = _excursion(
        rows.upper_window, rows.upper_len, rows.upper_since, at, upper, old_upper, value, stamp
    )
    lower_window, lower_len, lower_since = _excursion(
        rows.lower_window, rows.lower_len, rows.lower_since, at, lower, old_lower, value, stamp
    )
    return Step(
        rows=replace(
            rows,
            upper=_put(rows.upper, at, upper),
            lower=_put(rows.lower, at, lower),
            upper_since=upper_since,
            lower_since=lower_since,
            count=_put(rows.count, at, rows.count[at] + 1),
            mean=_put(rows.mean, at, mean),
            last_at=_put(rows.last_at, at, stamp),
            upper_window=upper_window,
            lower_window=lower_window,
            upper_len=upper_len,
            lower_len=lower_len,
        ),
        moved=moved,
    )


def _positive(values: Floats) -> Floats:
    """``max(0.0, v)`` per value, as Python's ``max`` gives it (0.0 unless ``v > 0``)."""
    return np.where(values > 0.0, values, 0.0)


def _put(column: NDArray[np.generic], at: Ints, values: NDArray[np.generic]) -> Any:
    out = column.copy()
    out[at] = values
    return out


def _excursion(
    window: Floats,
    length: Ints,
    since: Floats,
    at: Ints,
    statistic: Floats,
    old: Floats,
    value: Floats,
    stamp: Floats,
) -> tuple[Floats, Ints, Floats]:
    """``_advance``'s bookkeeping of one side's excursion: while its statistic is positive,
    the time it began (the first sample after it sat at zero) and its latest values (at most
    the window's width); nothing once it is back at zero."""
    keep = window.shape[1]
    going = statistic > 0
    going_on = going & (old > 0)
    rows = window[at]
    shifted = np.empty_like(rows)
    shifted[:, :-1] = rows[:, 1:]
    shifted[:, -1] = value
    new_len = np.where(going_on, np.minimum(length[at] + 1, keep), np.where(going, 1, 0))
    new_since = np.where(going_on, since[at], np.where(going, stamp, math.nan))
    return _put(window, at, shifted), _put(length, at, new_len), _put(since, at, new_since)
