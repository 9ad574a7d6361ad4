"""The Prometheus source's steady read (``read_values_by_label``, straight from the bytes)
against hostile answers: whatever a broken server or proxy sends, it gives what the full
reading (``read_by_label``) gives, never arrays the rest of the cycle cannot use, never a
raised error; and the placement of a template's last answer never puts a value on the wrong
system, however the series move between two answers."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftowner.sources import LabelledResult, LabelledValues
from driftowner.sources.prometheus import PrometheusSource, _clean_vector

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
AT = NOW.timestamp()
INDEX = {"a": 0, "b": 1, "c": 2, "d": 3}
NAMES = {row: name for name, row in INDEX.items()}


def vector(*series: Any, **extra: Any) -> bytes:
    """A ``status: success`` vector answer of ``series``."""
    data = {"resultType": "vector", "result": list(series)}
    return json.dumps({"status": "success", "data": data, **extra}).encode()


def one(name: str | None, value: Any, at: Any = AT) -> dict[str, Any]:
    """One series labelled ``model=name`` (none: no label) with one point."""
    return {"metric": {} if name is None else {"model": name}, "value": [at, value]}


def source_answering(*bodies: bytes) -> PrometheusSource:
    """A source whose server answers each query with the next of ``bodies`` (HTTP 200)."""
    left = list(bodies)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=left.pop(0) if len(left) > 1 else left[0])

    return PrometheusSource(
        "prom",
        "http://prometheus.test",
        timeout=timedelta(seconds=5),
        transport=httpx.MockTransport(handler),
    )


def per_label(found: LabelledValues | LabelledResult) -> Any:
    """What a reading says per known label value (finite values; none: only NaN/Inf), or its
    error and reason: the arrays and the full reading compared on one footing."""
    if isinstance(found, LabelledResult):
        if found.error is not None:
            return ("error", found.error_reason, found.error)
        known = {name: [s.value for s in found.series[name]] for name in found.series}
        return {name: values for name, values in known.items() if name in INDEX}
    return {
        NAMES[int(row)]: [float(value)] if math.isfinite(value) else []
        for row, value in zip(found.rows, found.values, strict=True)
    }


async def both_readings(body: bytes) -> tuple[Any, Any]:
    """``body`` read by ``read_values_by_label`` and by ``read_by_label`` (instant)."""
    values_source, full_source = source_answering(body), source_answering(body)
    values = await values_source.read_values_by_label("q", NOW, "model", INDEX)
    full = await full_source.read_by_label("q", NOW, NOW, timedelta(seconds=1), "model")
    return values, full


DEEP = b"[" * 10_000 + b"]" * 10_000
HOSTILE = {
    "values NaN and infinities": vector(one("a", "NaN"), one("b", "+Inf"), one("c", "-Inf")),
    "a value past float range, minus zero": vector(one("a", "1e400"), one("b", "-0")),
    "a value in hex": vector(one("a", "0x10"), one("b", "1")),
    "an empty value": vector(one("a", ""), one("b", "1")),
    "a value as a JSON number": vector(one("a", 0.5), one("b", "1")),
    "a time as a string": vector(one("a", "1", str(NOW.timestamp())), one("b", "1")),
    "a time past datetime's range": vector(one("a", "1", 1e20), one("b", "1")),
    "a time before year 1": vector(one("a", "1", -1e15), one("b", "1")),
    "a time of 1e400": vector(one("a", "1"), one("b", "1")).replace(
        b'[1714564800.0, "1"]}]', b'[1e400, "1"]}]'
    ),
    "a time NaN as a bare token": vector(one("a", "1"), one("b", "1")).replace(
        b'[1714564800.0, "1"]}]', b'[NaN, "1"]}]'
    ),
    "a point of one element": vector({"metric": {"model": "a"}, "value": [1]}, one("b", "1")),
    "a point of three elements": vector(
        {"metric": {"model": "a"}, "value": [NOW.timestamp(), "1", 3]}, one("b", "2")
    ),
    "a series without metric": vector({"value": [NOW.timestamp(), "1"]}, one("b", "1")),
    "a series with metric null": vector(
        {"metric": None, "value": [NOW.timestamp(), "1"]}, one("b", "1")
    ),
    "the label missing in one series": vector(one(None, "1"), one("b", "2")),
    "two series for one value": vector(one("a", "1"), one("a", "2"), one("b", "3")),
    "a lone surrogate escaped": vector(one("\ud800", "1"), one("b", "2")),
    "control characters in a value": vector(one("a\x00\n\x1b", "1"), one("b", "2")),
    "a label value of 1 MB": vector(one("x" * 1_000_000, "1"), one("b", "2")),
    "warnings": vector(one("a", "1"), warnings=["results truncated"]),
    "data null": json.dumps({"status": "success", "data": None}).encode(),
    "matrix": json.dumps(
        {"status": "success", "data": {"resultType": "matrix", "result": []}}
    ).encode(),
    "scalar": json.dumps(
        {"status": "success", "data": {"resultType": "scalar", "result": [1, "1"]}}
    ).encode(),
    "string": json.dumps(
        {"status": "success", "data": {"resultType": "string", "result": [1, "x"]}}
    ).encode(),
    "status error": json.dumps(
        {"status": "error", "errorType": "execution", "error": "too many samples"}
    ).encode(),
    "a byte order mark": b"\xef\xbb\xbf" + vector(one("a", "1")),
    "truncated": vector(one("a", "1"))[:-7],
    "trailing garbage": vector(one("a", "1")) + b"}garbage",
    "invalid UTF-8": vector(one("a", "1")).replace(b'"a"', b'"a\xff"'),
    "nested 10,000 deep": DEEP,
    "a skipped field nested 10,000 deep": vector(one("a", "1")).replace(
        b'"status"', b'"x": ' + DEEP + b', "status"'
    ),
    "HTML": b"<html><body><h1>502 Bad Gateway</h1></body></html>",
}


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
async def test_a_hostile_answer_reads_as_the_full_reading_reads_it(body: bytes) -> None:
    """Whatever the answer, the steady read says per system what ``read_by_label`` says (or
    fails with its error and reason); it gives arrays only for an answer whose every time is
    a moment (they become datetimes downstream); and neither reading raises (a JSON nested
    deeper than Python's stack raised RecursionError out of both; a time past datetime's range
    or NaN came out as arrays that crashed the cycle; a point of three elements was accepted
    by the straight read and refused by the full one)."""
    values, full = await both_readings(body)
    assert per_label(values) == per_label(full)
    if isinstance(values, LabelledValues):
        for stamp in values.stamps.tolist():
            datetime.fromtimestamp(stamp, UTC)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (DEEP, "the answer is not JSON: [[[["),
        (HOSTILE["a time past datetime's range"], "OverflowError"),
        (HOSTILE["a time NaN as a bare token"], "NaN"),
        (HOSTILE["a point of three elements"], "not a [time, value] pair"),
    ],
    ids=["deep", "time out of range", "time NaN", "three elements"],
)
async def test_a_malformed_answer_is_a_located_error_not_a_raise(body: bytes, says: str) -> None:
    """Each of these is one ``bad_response`` error that names the source and what was wrong,
    with the source marked down (old code: RecursionError raised, or arrays handed on)."""
    values = await source_answering(body).read_values_by_label("q", NOW, "model", INDEX)
    assert isinstance(values, LabelledResult)
    assert values.error_reason == "bad_response" and values.source_up is False
    assert values.error is not None and values.error.startswith("prometheus source 'prom': ")
    assert says in values.error


def test_the_straight_read_declines_a_deep_answer_and_a_three_element_point() -> None:
    """``_clean_vector`` returns None (the answer then read in full) rather than raising on a
    skipped field nested past msgspec's depth, and rather than reading ``[t, "v", extra]``."""
    assert _clean_vector(HOSTILE["a skipped field nested 10,000 deep"], "model", INDEX) is None
    assert _clean_vector(HOSTILE["a point of three elements"], "model", INDEX) is None
    assert _clean_vector(HOSTILE["a time past datetime's range"], "model", INDEX) is None


LABELS = st.sampled_from(["a", "b", "c", "d", "x", "y"])
"""Label values: four the index knows, two it does not."""


@st.composite
def two_answers(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """A template's label values in one answer, and in the next: permuted, with values
    inserted, deleted and duplicated."""
    first = draw(st.lists(LABELS, min_size=1, max_size=8, unique=True))
    second = list(draw(st.permutations(first)))
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(st.sampled_from(["insert", "delete", "duplicate", "swap"]))
        at = draw(st.integers(0, max(len(second) - 1, 0)))
        if edit == "insert":
            second.insert(at, draw(LABELS))
        elif edit == "delete" and len(second) > 1:
            del second[at]
        elif edit == "duplicate" and second:
            second.insert(draw(st.integers(0, len(second))), second[at])
        elif second:
            other = draw(st.integers(0, len(second) - 1))
            second[at], second[other] = second[other], second[at]
    return first, second


@settings(max_examples=400, deadline=None)
@given(answers=two_answers(), data=st.data())
def test_reusing_the_last_placement_never_puts_a_value_on_the_wrong_system(
    answers: tuple[list[str], list[str]], data: st.DataObject
) -> None:
    """Property: two consecutive answers of one template through one source (the second
    read with the first's placement at hand), whatever the order, insertions, deletions and
    duplicates: the second reading says per system exactly what the full reading of the
    same answer says, and each known value is the one its own series carried (distinct
    values per series, so a misplaced one shows)."""
    first, second = answers
    values = data.draw(st.permutations(range(len(second))))
    body_1 = vector(*(one(name, str(row)) for row, name in enumerate(first)))
    body_2 = vector(*(one(name, f"{value}.5") for name, value in zip(second, values, strict=True)))

    async def read() -> tuple[Any, Any]:
        source = source_answering(body_1, body_2)
        await source.read_values_by_label("q", NOW, "model", INDEX)
        again = await source.read_values_by_label("q", NOW, "model", INDEX)
        full = await source_answering(body_2).read_by_label(
            "q", NOW, NOW, timedelta(seconds=1), "model"
        )
        return again, full

    again, full = asyncio.run(read())
    assert per_label(again) == per_label(full)
    unique = [name for name in second if second.count(name) == 1 and name in INDEX]
    expected = {
        name: [float(f"{value}.5")]
        for name, value in zip(second, values, strict=True)
        if name in unique
    }
    said = per_label(full)
    if isinstance(said, tuple):  # every value shared by several series: the query's error
        assert said[1] == "multiple_series" and expected == {}
        return
    assert {name: got for name, got in said.items() if name in unique} == expected


UNPRINTABLE = {
    "a label value with a lone surrogate and a terminal escape": vector(
        {"metric": {"job": "\ud800\x1b[31mred"}, "value": [AT, "1"]}
    ),
    "an error page with NUL and escapes": b"<h1>\x00\x1b]0;owned\x07 proxy error</h1>",
    "an API error with control characters": json.dumps(
        {"status": "error", "errorType": "bad_data", "error": "parse error \x1b[2J\ud800"}
    ).encode(),
}


@pytest.mark.parametrize("body", UNPRINTABLE.values(), ids=UNPRINTABLE.keys())
async def test_an_error_quoting_the_answer_is_printable_and_encodable(body: bytes) -> None:
    """An error that quotes the server (its body, a label value, its API error) carries no
    control character and no lone surrogate, each escaped as Python writes it: the text goes
    to logs (where a terminal escape would act), findings and an incident's evidence (where
    UTF-8, the store's and a page's, refuses a lone surrogate). Old code quoted them raw."""
    values = await source_answering(body).read_values_by_label("q", NOW, "model", INDEX)
    assert isinstance(values, LabelledResult) and values.error is not None
    assert values.error.isprintable()
    values.error.encode("utf-8")
    assert "\\x1b" in values.error or "\\x00" in values.error or "\\ud800" in values.error
