"""``PrometheusSource.read_by_label`` against mocked HTTP (respx): one query's series split by a
label (instant and range), unlabelled and ambiguous series set aside, NaN dropped, and every
failure reported exactly as ``read`` reports it, never carrying a secret."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

import tests.unit.test_source_prometheus_transport as transport
from driftowner.model import Sample, SourceResult
from driftowner.sources import LabelledResult, LabelledSource, supports_labels, supports_values
from driftowner.sources.demo import DemoSource
from driftowner.sources.file import FileSource
from driftowner.sources.prometheus import PrometheusSource
from tests.unit.test_source_prometheus_transport import (
    BASE,
    NOW,
    PASSWORD,
    STEP,
    TOKEN,
    SourceFactory,
    success,
)

# The transport tests' fixtures (a respx router, sources on its mock transport) serve here too.
router = transport.router
make_source = transport.make_source

Outcome = httpx.Response | Exception


def series(labels: dict[str, str], value: str, at: datetime = NOW) -> dict[str, Any]:
    """One series of an instant vector."""
    return {"metric": labels, "value": [at.timestamp(), value]}


def ranged(labels: dict[str, str], *points: tuple[datetime, str]) -> dict[str, Any]:
    """One series of a range matrix."""
    return {"metric": labels, "values": [[at.timestamp(), value] for at, value in points]}


def answer(
    router: respx.Router, result_type: str, *found: Any, over_range: bool = False
) -> respx.Route:
    """Answer every instant (or, with ``over_range``, range) query with ``found`` series."""
    path = "/api/v1/query_range" if over_range else "/api/v1/query"
    return router.get(path).mock(side_effect=lambda request: success(result_type, list(found)))


def plain(samples: Sequence[Sample]) -> list[tuple[datetime, float]]:
    return [(sample.at, sample.value) for sample in samples]


def split(result: LabelledResult) -> dict[str, list[tuple[datetime, float]]]:
    """``result.series`` as plain ``(at, value)`` pairs, for comparing."""
    return {value: plain(samples) for value, samples in result.series.items()}


async def assert_asked_as_read_asks(
    source: PrometheusSource, route: respx.Route, start: datetime, end: datetime
) -> None:
    """The by-label read ``route`` last served sent the very request ``read`` sends."""
    by_label = route.calls.last.request
    await source.read("q", start, end, STEP)
    assert route.calls.last.request.url == by_label.url


async def instant_by_label(
    source: PrometheusSource, query: str = "q", label: str = "model"
) -> LabelledResult:
    return await source.read_by_label(query, NOW, NOW, STEP, label)


def assert_failed(result: LabelledResult, reason: str, *, up: bool) -> str:
    """Checks what the transport tests check of a failed read, and that no series came back."""
    assert result.series == {}
    return transport.assert_failed(
        SourceResult(
            error=result.error, error_reason=result.error_reason, source_up=result.source_up
        ),
        reason,
        up=up,
    )


def serve(router: respx.Router, path: str, outcome: Outcome) -> None:
    """Answer GET ``path`` with (a fresh copy of) ``outcome``, or raise it."""
    if isinstance(outcome, Exception):
        router.get(path).mock(side_effect=outcome)
        return
    canned = outcome

    def fresh(request: httpx.Request) -> httpx.Response:
        return httpx.Response(canned.status_code, headers=canned.headers, content=canned.read())

    router.get(path).mock(side_effect=fresh)


# Splitting


async def test_instant_vector_is_split_by_the_label(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """start == end is one instant query at end, the request ``read`` sends; each series lands
    under its label value with its one sample, keys sorted, nothing set aside."""
    route = answer(
        router,
        "vector",
        series({"model": "b"}, "0.8"),
        series({"model": "a", "job": "x"}, "0.9"),
        series({"model": "c"}, "0.7"),
    )
    source = make_source()
    result = await source.read_by_label("q", NOW, NOW, STEP, "model")
    assert result.error is None
    assert result.source_up
    assert list(result.series) == ["a", "b", "c"]
    assert split(result) == {"a": [(NOW, 0.9)], "b": [(NOW, 0.8)], "c": [(NOW, 0.7)]}
    assert (result.unlabelled, result.ambiguous) == (0, ())
    assert route.call_count == 1
    await assert_asked_as_read_asks(source, route, NOW, NOW)


async def test_range_matrix_is_split_by_the_label_oldest_first(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """A range read is one query_range request, the one ``read`` sends; each series' values
    come back under its label value, sorted oldest first, in UTC."""
    start = NOW - 2 * STEP
    t0, t1, t2 = start, start + STEP, NOW
    route = answer(
        router,
        "matrix",
        ranged({"model": "a"}, (t2, "0.92"), (t0, "0.90"), (t1, "0.91")),
        ranged({"model": "b"}, (t1, "0.5"), (t2, "0.6")),
        over_range=True,
    )
    source = make_source()
    result = await source.read_by_label("q", start, NOW, STEP, "model")
    assert result.error is None
    assert split(result) == {"a": [(t0, 0.90), (t1, 0.91), (t2, 0.92)], "b": [(t1, 0.5), (t2, 0.6)]}
    assert all(s.at.utcoffset() == timedelta(0) for s in result.series["a"])
    assert route.call_count == 1
    await assert_asked_as_read_asks(source, route, start, NOW)


async def test_range_selector_at_an_instant_gives_each_series_its_latest_sample(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """As with ``read``, a matrix answering an instant read stands for its newest sample, per
    series."""
    older = NOW - STEP
    answer(
        router,
        "matrix",
        ranged({"model": "a"}, (older, "1"), (NOW, "2")),
        ranged({"model": "b"}, (older, "3")),
    )
    result = await instant_by_label(make_source(), "model_accuracy[5m]")
    assert split(result) == {"a": [(NOW, 2.0)], "b": [(older, 3.0)]}


async def test_series_without_the_label_are_ignored_and_counted(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """A series lacking the label, or carrying it empty (which Prometheus treats as absent), is
    left out and counted in ``unlabelled``; the labelled ones still come back."""
    answer(
        router,
        "vector",
        series({"model": "a"}, "1"),
        series({"job": "x"}, "2"),
        series({"model": ""}, "3"),
        series({}, "4"),
    )
    result = await instant_by_label(make_source())
    assert result.error is None
    assert list(result.series) == ["a"]
    assert result.unlabelled == 3


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(
            success("vector", [series({"job": "x"}, "1"), series({"job": "y"}, "2")]),
            id="vector-without-the-label",
        ),
        pytest.param(success("scalar", [NOW.timestamp(), "1"]), id="scalar"),
    ],
)
async def test_no_series_with_the_label_is_a_query_error(
    router: respx.Router, make_source: SourceFactory, response: httpx.Response
) -> None:
    """When series came back but none has the label (the query aggregated it away, or is a
    scalar), no value can be told apart: a query_error naming the label, source up, and the
    unlabelled series counted; never an empty success that would look like no data."""
    router.get("/api/v1/query").mock(return_value=response)
    result = await instant_by_label(make_source())
    error = assert_failed(result, "query_error", up=True)
    assert "'model'" in error
    assert "by (model)" in error
    assert result.unlabelled >= 1


async def test_values_shared_by_several_series_are_ambiguous_and_left_out(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """Two series with the same label value (the query did not aggregate by it): that value is
    dropped and listed in ``ambiguous``; the unambiguous values come back without error."""
    answer(
        router,
        "vector",
        series({"model": "b", "instance": "i1"}, "0.1"),
        series({"model": "a", "instance": "i1"}, "0.2"),
        series({"model": "b", "instance": "i2"}, "0.3"),
        series({"model": "c", "instance": "i1"}, "0.4"),
        series({"model": "a", "instance": "i2"}, "0.5"),
    )
    result = await instant_by_label(make_source(), "model_accuracy")
    assert (result.error, result.error_reason, result.source_up) == (None, None, True)
    assert split(result) == {"c": [(NOW, 0.4)]}
    assert result.ambiguous == ("a", "b")


async def test_every_value_ambiguous_is_a_multiple_series_error(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """When every label value has several series nothing can be returned: the whole result is
    the multiple_series error (source up), naming the label, with the values in ``ambiguous``."""
    answer(
        router,
        "vector",
        *(
            series({"model": model, "instance": instance}, "1")
            for model in ("a", "b")
            for instance in ("i1", "i2")
        ),
        series({"job": "x"}, "1"),
    )
    result = await instant_by_label(make_source(), "model_accuracy")
    error = assert_failed(result, "multiple_series", up=True)
    assert "'model'" in error
    assert "by (model)" in error
    assert result.ambiguous == ("a", "b")
    assert result.unlabelled == 1


async def test_nan_and_inf_are_dropped_per_series_and_an_emptied_series_keeps_its_key(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """NaN, +Inf and -Inf samples are left out of each series; a series with nothing finite
    keeps its key with an empty tuple (absent key = no series), and nothing is an error."""
    start = NOW - 3 * STEP
    points = [start + i * STEP for i in range(4)]
    answer(
        router,
        "matrix",
        ranged({"model": "a"}, *zip(points, ["NaN", "0.5", "+Inf", "-Inf"], strict=True)),
        ranged({"model": "b"}, *zip(points, ["NaN", "+Inf", "-Inf", "NaN"], strict=True)),
        over_range=True,
    )
    result = await make_source().read_by_label("q", start, NOW, STEP, "model")
    assert result.error is None
    assert split(result) == {"a": [(start + STEP, 0.5)], "b": []}
    assert result.series["b"] == ()


async def test_empty_result_is_no_series_without_error(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """An empty vector means the source answered with no data for any value."""
    answer(router, "vector")
    assert await instant_by_label(make_source()) == LabelledResult(series={})


async def test_one_native_histogram_series_is_a_query_error_as_in_read(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """A native histogram among the series cannot be judged as a number: query_error, up."""
    answer(
        router,
        "vector",
        series({"model": "a"}, "1"),
        {"metric": {"model": "b"}, "histogram": [NOW.timestamp(), {"count": "1"}]},
    )
    error = assert_failed(await instant_by_label(make_source()), "query_error", up=True)
    assert "histogram" in error


# Requests


async def test_a_long_range_asks_for_at_most_11000_points_like_read(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """Prometheus refuses more than 11,000 points per series: 30 days at 1 s is asked for with
    a widened step, the same one ``read`` uses."""
    route = answer(router, "matrix", over_range=True)
    source, start, fine = make_source(), NOW - timedelta(days=30), timedelta(seconds=1)
    await source.read_by_label("q", start, NOW, fine, "model")
    await source.read("q", start, NOW, fine)
    by_label, read = (float(call.request.url.params["step"]) for call in route.calls)
    assert by_label == read
    assert (NOW - start).total_seconds() / by_label + 1 <= 11_000


@pytest.mark.parametrize(
    ("kwargs", "header"),
    [
        pytest.param(
            {"username": "reader", "password": SecretStr(PASSWORD)},
            "Basic " + base64.b64encode(f"reader:{PASSWORD}".encode()).decode(),
            id="basic",
        ),
        pytest.param({"bearer_token": SecretStr(TOKEN)}, f"Bearer {TOKEN}", id="bearer"),
        pytest.param({}, None, id="none"),
    ],
)
async def test_the_configured_auth_goes_with_a_by_label_read(
    router: respx.Router, make_source: SourceFactory, kwargs: dict[str, Any], header: str | None
) -> None:
    """username/password become HTTP Basic auth, bearer_token ``Bearer <token>``, and without
    credentials no Authorization header is sent."""
    route = answer(router, "vector")
    await instant_by_label(make_source(**kwargs))
    assert route.calls.last.request.headers.get("Authorization") == header


# Failures: the same as read's


def _cases(test: Callable[..., object], argnames: str | tuple[str, ...]) -> list[Any]:
    """The cases a transport test is parametrized with over ``argnames``, as ``pytest.param``."""
    (mark,) = (
        mark
        for mark in getattr(test, "pytestmark", [])
        if mark.name == "parametrize" and mark.args[0] == argnames
    )
    several = isinstance(argnames, tuple)
    return [
        case
        if isinstance(case, pytest.ParameterSet)
        else pytest.param(*case)
        if several
        else pytest.param(case)
        for case in mark.args[1]
    ]


READ_FAILURES: list[Any] = [
    # The server-error cases of the transport tests, each proven there against read.
    *(
        pytest.param(case.values[0], id=case.id)
        for case in _cases(
            transport.test_error_answer_gives_its_reason_and_source_up,
            ("answer", "reason", "up", "named"),
        )
    ),
    # Their unparseable bodies, as 200 answers.
    *(
        pytest.param(httpx.Response(200, content=case.values[0]), id=f"body-{i}")
        for i, case in enumerate(
            _cases(transport.test_garbage_body_is_bad_response_and_down, "body")
        )
    ),
    pytest.param(success("string", [NOW.timestamp(), "abc"]), id="string-result"),
    pytest.param(success("vector", [{"metric": {"model": "a"}, "value": 1}]), id="malformed-value"),
    pytest.param(httpx.ReadTimeout("timed out"), id="read-timeout"),
    pytest.param(httpx.ConnectTimeout("connect timed out"), id="connect-timeout"),
    pytest.param(httpx.ConnectError("[Errno 111] Connection refused"), id="connection-refused"),
    pytest.param(httpx.RemoteProtocolError("server disconnected"), id="protocol-error"),
]


@pytest.mark.parametrize("failure", READ_FAILURES)
@pytest.mark.parametrize("ranged_read", [False, True], ids=["instant", "range"])
async def test_every_failure_maps_exactly_as_read_maps_it(
    router: respx.Router, make_source: SourceFactory, failure: Outcome, ranged_read: bool
) -> None:
    """Timeouts, unreachable servers, 5xx, ``status: error``, bad PromQL and unparseable bodies
    give a by-label read the same error text, error_reason and source_up as ``read``, and no
    series."""
    start = NOW - timedelta(hours=1) if ranged_read else NOW
    serve(router, "/api/v1/query_range" if ranged_read else "/api/v1/query", failure)
    source = make_source(timeout=timedelta(seconds=3))
    read = await source.read("q", start, NOW, STEP)
    by_label = await source.read_by_label("q", start, NOW, STEP, "model")
    assert read.error is not None
    assert by_label == LabelledResult.failed(read)
    assert by_label.series == {}


async def test_a_range_ending_before_it_starts_is_refused_as_by_read(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """start after end is the caller's mistake: query_error, source up, no request sent."""
    route = answer(router, "matrix", over_range=True)
    source = make_source()
    later = NOW + STEP
    read = await source.read("q", later, NOW, STEP)
    result = await source.read_by_label("q", later, NOW, STEP, "model")
    assert_failed(result, "query_error", up=True)
    assert result == LabelledResult.failed(read)
    assert not route.called


async def test_series_that_are_not_objects_are_bad_response_and_read_does_not_raise(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """A vector of non-objects is not the API's shape: bad_response, down, for a by-label
    read; ``read`` reports it as several series instead of raising."""
    answer(router, "vector", 1, 2)
    source = make_source()
    assert_failed(await instant_by_label(source), "bad_response", up=False)
    read = await source.read("q", NOW, NOW, STEP)
    assert read.error_reason == "multiple_series"


@pytest.mark.parametrize("failure", transport.ECHOING_FAILURES)
@pytest.mark.parametrize(
    ("kwargs", "secret"),
    # Basic auth, bearer token, password in the URL: as in the transport tests.
    _cases(transport.test_secrets_never_appear_in_error_strings, ("kwargs", "secret")),
)
async def test_secrets_never_appear_in_error_strings(
    router: respx.Router,
    make_source: SourceFactory,
    failure: Callable[[str], Outcome],
    kwargs: dict[str, Any],
    secret: str,
) -> None:
    """Even when the server or the network echoes the password or token back (in an error, a
    body, or as the ambiguous label value itself), the by-label error text has it masked."""
    serve(router, "/api/v1/query", failure(secret))
    error = (await instant_by_label(make_source(**kwargs), label="t")).error
    assert error is not None
    assert secret not in error


# The capability


async def test_supports_labels_tells_which_sources_can_split_by_label(tmp_path: Path) -> None:
    """Prometheus implements the optional LabelledSource capability and the array read the
    poll uses for templates (``supports_values``); the file and demo sources and unrelated
    objects implement neither."""
    prometheus = PrometheusSource("prom", BASE, timeout=timedelta(seconds=1))
    assert supports_labels(prometheus)
    assert supports_values(prometheus)
    assert isinstance(prometheus, LabelledSource)
    demo = DemoSource(
        "demo",
        seed=1,
        started_at=datetime(2024, 1, 1, tzinfo=UTC),
        drift_starts_after=timedelta(hours=1),
        drift_lasts=timedelta(hours=1),
    )
    for other in (FileSource("file", tmp_path / "x.csv"), demo, object()):
        assert not supports_labels(other)
        assert not supports_values(other)
    await prometheus.aclose()
