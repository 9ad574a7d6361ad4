"""``PrometheusSource.read_values_by_label`` against mocked HTTP (respx): a clean instant vector
becomes arrays (row, value, time) that say exactly what ``read_by_label`` says of it, and any
other answer is ``read_by_label``'s own result, errors included."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.unit.test_source_prometheus_transport as transport
from driftowner.sources import LabelledResult, LabelledValues, supports_values
from tests.unit.test_source_prometheus_by_label import answer, series
from tests.unit.test_source_prometheus_transport import NOW, STEP, SourceFactory, success

router = transport.router
make_source = transport.make_source

INDEX = {"a": 0, "b": 1, "c": 2, "d": 3}


def as_series(found: LabelledValues, index: dict[str, int]) -> dict[str, list[float]]:
    """What the arrays say per known label value: its finite values (none: only NaN/Inf)."""
    names = {row: name for name, row in index.items()}
    out: dict[str, list[float]] = {}
    for row, value, stamp in zip(found.rows, found.values, found.stamps, strict=True):
        assert stamp == NOW.timestamp()
        out[names[int(row)]] = [float(value)] if math.isfinite(value) else []
    return out


async def test_a_clean_vector_becomes_arrays_that_say_what_read_by_label_says(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """Each series' row in the index, its value (NaN and infinities kept, to be told apart
    from a missing series) and its time; label values the index does not know are named in
    ``others``; the same request as ``read_by_label``."""
    route = answer(
        router,
        "vector",
        series({"model": "b"}, "0.8"),
        series({"model": "zz", "job": "x"}, "0.9"),
        series({"model": "a"}, "NaN"),
        series({"model": "c"}, "+Inf"),
        series({"model": "d"}, "0.25"),
    )
    source = make_source()
    assert supports_values(source)
    found = await source.read_values_by_label("q", NOW, "model", INDEX)
    assert isinstance(found, LabelledValues)
    assert as_series(found, INDEX) == {"a": [], "b": [0.8], "c": [], "d": [0.25]}
    assert found.others == ("zz",)
    values_url = route.calls.last.request.url
    by_label = await source.read_by_label("q", NOW, NOW, STEP, "model")
    assert route.calls.last.request.url == values_url
    assert {k: [s.value for s in v] for k, v in by_label.series.items() if k in INDEX} == (
        as_series(found, INDEX)
    )


ODD_ANSWERS: list[tuple[str, Any]] = [
    ("matrix", [{"metric": {"model": "a"}, "values": [[NOW.timestamp(), "1"]]}]),
    ("vector", [series({"model": "a"}, "1"), series({"model": "a"}, "2")]),
    ("vector", [series({"model": "a"}, "1"), series({"model": "b"}, "2"), series({}, "3")]),
    ("vector", [series({"job": "x"}, "1")]),
    ("vector", [series({"model": "a"}, "1"), {"metric": {"model": "b"}, "value": [1, 2]}]),
    ("vector", [series({"model": "a"}, "abc")]),
    ("vector", [{"metric": {"model": "a"}, "histogram": [1, {}]}]),
    ("vector", [series({"model": "zz"}, "1"), series({"model": "zz"}, "2")]),
    ("vector", []),
    ("scalar", [NOW.timestamp(), "1"]),
    ("string", [NOW.timestamp(), "x"]),
]


async def test_any_other_answer_is_exactly_read_by_label_s_result(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """A matrix, a shared label value, an unlabelled series, a malformed or unparsable point,
    a native histogram, no series, a scalar, a string: the result is the very
    :class:`LabelledResult` ``read_by_label`` gives (its error text included)."""
    source = make_source()
    for result_type, found in ODD_ANSWERS:
        router.routes.clear()
        router.get("/api/v1/query").mock(return_value=success(result_type, found))
        got = await source.read_values_by_label("q", NOW, "model", INDEX)
        assert isinstance(got, LabelledResult), (result_type, found)
        assert got == await source.read_by_label("q", NOW, NOW, STEP, "model")


async def test_a_failed_query_is_the_error_read_by_label_gives(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """A refused query and an unreachable server fail as ``read_by_label`` fails."""
    source = make_source()
    router.get("/api/v1/query").mock(
        return_value=httpx.Response(
            400, json={"status": "error", "errorType": "bad_data", "error": "parse error"}
        )
    )
    refused = await source.read_values_by_label("q(", NOW, "model", INDEX)
    assert isinstance(refused, LabelledResult) and refused.error_reason == "query_error"
    assert refused == await source.read_by_label("q(", NOW, NOW, STEP, "model")
    router.routes.clear()
    router.get("/api/v1/query").mock(side_effect=httpx.ConnectError("refused"))
    down = await source.read_values_by_label("q", NOW, "model", INDEX)
    assert isinstance(down, LabelledResult) and not down.source_up
    assert down == await source.read_by_label("q", NOW, NOW, STEP, "model")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    answers=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d", "x", "y"]),
            st.one_of(
                st.floats(allow_nan=True, allow_infinity=True).map(repr),
                st.sampled_from(["NaN", "+Inf", "-Inf", "1e-300", "0"]),
            ),
        ),
        max_size=8,
        unique_by=lambda pair: pair[0],
    )
)
async def test_arrays_agree_with_read_by_label_on_any_clean_vector(
    router: respx.Router, make_source: SourceFactory, answers: list[tuple[str, str]]
) -> None:
    """Property: for any clean vector (known and unknown label values, any float spelling),
    the arrays give each known value the finite samples ``read_by_label`` gives it, and name
    every other value."""
    source = make_source()
    router.routes.clear()
    body = [series({"model": name}, text.replace("inf", "Inf")) for name, text in answers]
    router.get("/api/v1/query").mock(return_value=success("vector", body))
    found = await source.read_values_by_label("q", NOW, "model", INDEX)
    by_label = await source.read_by_label("q", NOW, NOW, STEP, "model")
    if not answers:
        assert found == by_label
        return
    assert isinstance(found, LabelledValues)
    assert as_series(found, INDEX) == {
        k: [s.value for s in v] for k, v in by_label.series.items() if k in INDEX
    }
    assert found.others == tuple(sorted(k for k in by_label.series if k not in INDEX))


LABEL_VALUES = st.one_of(st.sampled_from(["a", "b", "c", "d", "zz", "yy", ""]), st.integers(0, 3))
POINTS = st.one_of(
    st.tuples(
        st.one_of(st.floats(1e9, 2e9), st.integers(0, 2**40)),
        st.sampled_from(["0.5", "1e-300", "NaN", "+Inf", "-Inf", "abc", "", "0x1p-2"]),
    ).map(list),
    st.sampled_from([[1.5], [1.5, "1", "2"], [True, "1"], [1.5, 2.0], "1.5", None]),
)
CLEAN_SERIES = st.fixed_dictionaries(
    {
        "metric": st.fixed_dictionaries(
            {"model": st.sampled_from(["a", "b", "c", "d", "zz", "yy"])},
            optional={"job": st.just("x")},
        ),
        "value": st.tuples(
            st.one_of(st.floats(1e9, 2e9), st.integers(0, 2**40)),
            st.sampled_from(["0.5", "1e-300", "-2", "NaN", "+Inf", "-Inf"]),
        ).map(list),
    }
)
ODD_SERIES = st.fixed_dictionaries(
    {"metric": st.dictionaries(st.sampled_from(["model", "job"]), LABEL_VALUES)},
    optional={"value": POINTS, "histogram": st.just([1, {}])},
)
SERIES = st.one_of(CLEAN_SERIES, CLEAN_SERIES, CLEAN_SERIES, ODD_SERIES)
"""Mostly series as Prometheus sends them (so that whole answers are often clean), some
odd."""


@settings(max_examples=300, deadline=None)
@given(
    status=st.sampled_from(["success", "success", "error"]),
    result_type=st.sampled_from(["vector", "vector", "vector", "matrix", "scalar"]),
    result=st.lists(SERIES, max_size=6),
    before=st.lists(CLEAN_SERIES, max_size=6),
)
def test_an_answer_read_straight_from_its_bytes_gives_what_its_parsed_objects_give(
    status: str, result_type: str, result: list[dict[str, Any]], before: list[dict[str, Any]]
) -> None:
    """Property: whatever the answer (an error, a matrix, a series without the label, with
    an empty, unknown, shared or non-string value, a point of the wrong shape or type, a
    value that is no number, a native histogram), the arrays read straight from its bytes
    (msgspec) are exactly those made from it parsed into objects (orjson), and an answer the
    parsed reading declines is declined from the bytes too (then it is read in full); and
    reading it after another answer (the placement of that one's series at hand, reused
    when its label values come in the same order) gives the same as reading it alone."""
    from driftowner.sources.prometheus import _Answer, _clean_vector, _vector_values

    def body_of(status: str, result_type: str, result: list[dict[str, Any]]) -> bytes:
        document = {"status": status, "data": {"resultType": result_type, "result": result}}
        return json.dumps(document).encode()

    body = body_of(status, result_type, result)
    alone = _clean_vector(body, "model", INDEX)
    earlier = _clean_vector(body_of("success", "vector", before), "model", INDEX)
    again = _clean_vector(body, "model", INDEX, earlier[1] if earlier else None)
    assert (alone is None) == (again is None)
    if alone is not None and again is not None:
        assert _same(alone[0], again[0])
    repeated = _clean_vector(body, "model", INDEX, alone[1] if alone else None)
    if alone is not None and repeated is not None:
        assert repeated[1] is alone[1]  # the same values in the same order: placed as before
        assert _same(alone[0], repeated[0])
    straight = alone[0] if alone is not None else None
    matrix = result_type == "matrix"
    parsed = (
        _vector_values(_Answer(result, matrix=matrix, instant=True, end=NOW), "model", INDEX)
        if status == "success" and result_type in ("vector", "matrix")
        else None
    )
    if straight is None:
        return
    assert parsed is not None
    assert _same(straight, parsed)


def _same(got: LabelledValues, expected: LabelledValues) -> bool:
    """The same arrays bit for bit (NaN included), the same other values."""
    return got.others == expected.others and all(
        mine.dtype == theirs.dtype and mine.tobytes() == theirs.tobytes()
        for mine, theirs in zip(
            (got.rows, got.values, got.stamps),
            (expected.rows, expected.values, expected.stamps),
            strict=True,
        )
    )


def test_a_steady_answer_is_read_straight_from_its_bytes() -> None:
    """The answer a template reads every cycle (each series its label and a point) takes the
    path straight from the bytes, NaN and infinities included, unknown values named."""
    from driftowner.sources.prometheus import _clean_vector

    result = [
        {"metric": {"model": name, "job": "x"}, "value": [NOW.timestamp(), text]}
        for name, text in [("b", "0.8"), ("a", "NaN"), ("c", "+Inf"), ("zz", "1")]
    ]
    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})
    read = _clean_vector(body.encode(), "model", INDEX)
    assert read is not None
    found = read[0]
    assert as_series(found, INDEX) == {"a": [], "b": [0.8], "c": []}
    assert found.others == ("zz",)


async def test_a_template_whose_series_change_is_placed_afresh(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """A source reuses the placement of a template's last answer only while its label values
    come in the same order: a series added, gone or moved is placed anew, cycle after
    cycle, as a fresh source places it."""
    answers = [
        [("a", "1"), ("b", "2"), ("zz", "3")],
        [("a", "4"), ("b", "5"), ("zz", "6")],  # the same series: the placement reused
        [("b", "7"), ("a", "8")],  # reordered, one gone
        [("b", "9"), ("a", "10"), ("c", "11"), ("yy", "12")],  # one known, one unknown added
    ]
    source = make_source()
    for pairs in answers:
        router.routes.clear()
        body = [series({"model": name}, text) for name, text in pairs]
        router.get("/api/v1/query").mock(return_value=success("vector", body))
        found = await source.read_values_by_label("q", NOW, "model", INDEX)
        assert isinstance(found, LabelledValues)
        assert as_series(found, INDEX) == {
            name: [float(text)] for name, text in pairs if name in INDEX
        }
        assert found.others == tuple(sorted(name for name, _ in pairs if name not in INDEX))
