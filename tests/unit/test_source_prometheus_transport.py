"""The Prometheus source against mocked HTTP (respx): request shape, auth headers, result types,
and every failure turned into a one-line error with the right reason and source_up, never
carrying a secret."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from driftowner.config import PrometheusSourceConfig
from driftowner.model import SourceResult
from driftowner.sources import build_source
from driftowner.sources.prometheus import PrometheusSource

BASE = "http://prometheus.test:9090"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
STEP = timedelta(minutes=1)
PASSWORD = "hunter2-p4ss"
TOKEN = "tok-SECRET-123"


def success(result_type: str, result: Any) -> httpx.Response:
    return httpx.Response(
        200, json={"status": "success", "data": {"resultType": result_type, "result": result}}
    )


def vector(*values: str, at: datetime = NOW) -> httpx.Response:
    return success(
        "vector",
        [{"metric": {"job": f"j{i}"}, "value": [at.timestamp(), v]} for i, v in enumerate(values)],
    )


def api_error(status: int, error_type: str, error: str) -> httpx.Response:
    return httpx.Response(status, json={"status": "error", "errorType": error_type, "error": error})


@pytest.fixture
def router() -> Iterator[respx.Router]:
    mock = respx.Router(base_url=BASE, assert_all_called=False)
    yield mock


SourceFactory = Callable[..., PrometheusSource]


@pytest.fixture
async def make_source(router: respx.Router) -> AsyncIterator[SourceFactory]:
    made: list[PrometheusSource] = []

    def make(**kwargs: Any) -> PrometheusSource:
        kwargs.setdefault("timeout", timedelta(seconds=5))
        url = kwargs.pop("url", BASE)
        source = PrometheusSource(
            "prom", url, transport=httpx.MockTransport(router.async_handler), **kwargs
        )
        made.append(source)
        return source

    yield make
    for source in made:
        await source.aclose()


async def instant(source: PrometheusSource, query: str = "up") -> SourceResult:
    return await source.read(query, NOW, NOW, STEP)


def assert_failed(result: SourceResult, reason: str, *, up: bool) -> str:
    assert result.samples == ()
    assert result.error_reason == reason, result.error
    assert result.source_up is up
    assert result.error is not None
    assert "prometheus source 'prom'" in result.error
    assert "\n" not in result.error
    return result.error


# Requests


async def test_instant_read_queries_api_v1_query_at_end(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """start == end is GET /api/v1/query with the query and ``time`` = end in Unix seconds."""
    route = router.get("/api/v1/query").mock(return_value=vector("0.93"))
    result = await instant(make_source(), 'avg(model_accuracy{model="fraud"})')
    assert [(s.at, s.value) for s in result.samples] == [(NOW, 0.93)]
    assert result.error is None
    params = route.calls.last.request.url.params
    assert params["query"] == 'avg(model_accuracy{model="fraud"})'
    assert float(params["time"]) == NOW.timestamp()


async def test_range_read_queries_query_range_with_start_end_and_step(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """A range read is GET /api/v1/query_range; matrix values come back oldest first, UTC."""
    start = NOW - timedelta(minutes=2)
    points = [[(start + i * STEP).timestamp(), str(0.9 + i / 100)] for i in (2, 0, 1)]
    route = router.get("/api/v1/query_range").mock(
        return_value=success("matrix", [{"metric": {}, "values": points}])
    )
    result = await make_source().read("x", start, NOW, STEP)
    assert [(s.at, s.value) for s in result.samples] == [
        (start, 0.9),
        (start + STEP, 0.91),
        (NOW, 0.92),
    ]
    assert all(s.at.tzinfo is not None and s.at.utcoffset() == timedelta(0) for s in result.samples)
    params = route.calls.last.request.url.params
    assert float(params["start"]) == start.timestamp()
    assert float(params["end"]) == NOW.timestamp()
    assert float(params["step"]) == 60


async def test_range_read_widens_the_step_to_stay_within_11000_points(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """Prometheus refuses more than 11,000 points per series, so the step is widened first."""
    route = router.get("/api/v1/query_range").mock(return_value=success("matrix", []))
    start = NOW - timedelta(days=30)
    await make_source().read("x", start, NOW, timedelta(seconds=1))
    params = route.calls.last.request.url.params
    step = float(params["step"])
    assert (NOW - start).total_seconds() / step + 1 <= 11_000


async def test_naive_datetimes_are_taken_as_utc(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """A caller passing a naive datetime gets UTC semantics rather than local time."""
    route = router.get("/api/v1/query").mock(return_value=vector("1"))
    naive = NOW.replace(tzinfo=None)
    await make_source().read("up", naive, naive, STEP)
    assert float(route.calls.last.request.url.params["time"]) == NOW.timestamp()


async def test_url_with_path_prefix_keeps_the_prefix(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """A Prometheus behind a path prefix (``/prom``) is queried under that prefix."""
    route = router.get("/prom/api/v1/query").mock(return_value=vector("1"))
    result = await instant(make_source(url=BASE + "/prom/"))
    assert result.error is None
    assert route.called


# Result types


async def test_scalar_result_is_one_sample(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """``resultType: scalar`` ([time, "value"]) reads as one sample."""
    router.get("/api/v1/query").mock(return_value=success("scalar", [NOW.timestamp(), "0.5"]))
    result = await instant(make_source(), "scalar(x)")
    assert [(s.at, s.value) for s in result.samples] == [(NOW, 0.5)]


async def test_matrix_for_an_instant_read_gives_its_latest_sample(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """A range selector evaluated at one instant (``x[5m]``) stands for its newest sample."""
    values = [[(NOW - timedelta(seconds=s)).timestamp(), str(s)] for s in (120, 60, 0)]
    router.get("/api/v1/query").mock(
        return_value=success("matrix", [{"metric": {}, "values": values}])
    )
    result = await instant(make_source(), "x[5m]")
    assert [(s.at, s.value) for s in result.samples] == [(NOW, 0.0)]


async def test_string_result_is_a_query_error(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """A query that yields a string is the config's mistake: query_error, source up."""
    router.get("/api/v1/query").mock(return_value=success("string", [NOW.timestamp(), "abc"]))
    assert_failed(await instant(make_source(), '"abc"'), "query_error", up=True)


async def test_empty_result_is_no_data_without_error(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """An empty vector means the source answered with no data: no samples, no error."""
    router.get("/api/v1/query").mock(return_value=success("vector", []))
    result = await instant(make_source(), "missing_metric")
    assert result == SourceResult()


async def test_several_series_is_multiple_series_with_source_up(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """A query returning two series cannot be judged as one signal: multiple_series, up."""
    router.get("/api/v1/query").mock(return_value=vector("0.9", "0.8"))
    error = assert_failed(await instant(make_source()), "multiple_series", up=True)
    assert "2 series" in error
    assert 'job="j0"' in error


async def test_nan_and_inf_values_are_dropped_from_a_range(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """NaN, +Inf and -Inf samples are left out; the finite ones remain."""
    start = NOW - 3 * STEP
    raw = ["NaN", "0.5", "+Inf", "-Inf"]
    values = [[(start + i * STEP).timestamp(), v] for i, v in enumerate(raw)]
    router.get("/api/v1/query_range").mock(
        return_value=success("matrix", [{"metric": {}, "values": values}])
    )
    result = await make_source().read("x", start, NOW, STEP)
    assert [(s.at, s.value) for s in result.samples] == [(start + STEP, 0.5)]
    assert result.error is None


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-Inf"])
async def test_only_nan_or_inf_is_non_finite_with_source_up(
    router: respx.Router, make_source: SourceFactory, value: str
) -> None:
    """When nothing finite remains, the read says "only NaN/Inf" (reason non_finite), source up."""
    router.get("/api/v1/query").mock(return_value=vector(value))
    error = assert_failed(await instant(make_source(), "x/0"), "non_finite", up=True)
    assert "only NaN/Inf" in error


# Server errors


@pytest.mark.parametrize(
    ("answer", "reason", "up", "named"),
    [
        # A 400 bad_data (bad PromQL) keeps the source up and shows errorType and error.
        pytest.param(
            api_error(
                400, "bad_data", 'invalid parameter "query": 1:5: parse error: unclosed left paren'
            ),
            "query_error",
            True,
            ("bad_data", "unclosed left paren"),
            id="400-bad_data-is-query_error-with-prometheus-message",
        ),
        # A 422 (expression cannot be executed) is the query's fault, not the server's.
        pytest.param(
            api_error(422, "execution", "many-to-many matching not allowed"),
            "query_error",
            True,
            ("execution: many-to-many matching not allowed",),
            id="422-execution-is-query_error",
        ),
        # ``status: error`` is honoured even when a proxy rewrote the HTTP status to 200.
        pytest.param(
            api_error(200, "bad_data", "nope"),
            "query_error",
            True,
            ("bad_data: nope",),
            id="status-error-in-200-body-is-query_error",
        ),
        # A 5xx means the server itself failed: http_status, source down, status in the text.
        pytest.param(
            httpx.Response(500, text="oops"),
            "http_status",
            False,
            ("HTTP 500",),
            id="500-is-http_status-and-down",
        ),
        # 503 (query aborted/unavailable) is source down; Prometheus's error text is kept.
        pytest.param(
            api_error(503, "unavailable", "too many concurrent queries"),
            "http_status",
            False,
            ("HTTP 503", "unavailable: too many concurrent queries"),
            id="503-with-prometheus-body-is-down-and-names-the-error",
        ),
        # Prometheus's own query timeout (503, errorType timeout) is reported as a timeout.
        pytest.param(
            api_error(503, "timeout", "query timed out in expression evaluation"),
            "timeout",
            False,
            (),
            id="503-query-timeout-is-reason-timeout",
        ),
        # A 401/404 that is not Prometheus's JSON (proxy, wrong URL): the source is unusable.
        pytest.param(
            httpx.Response(401, text="<html>no</html>"),
            "http_status",
            False,
            ("HTTP 401",),
            id="non-json-4xx-is-http_status-and-down",
        ),
    ],
)
async def test_error_answer_gives_its_reason_and_source_up(
    router: respx.Router,
    make_source: SourceFactory,
    answer: httpx.Response,
    reason: str,
    up: bool,
    named: tuple[str, ...],
) -> None:
    """An error answer from the server is classified: the query's fault (query_error, source
    up), the server's (http_status or timeout, source down); the error keeps what it says."""
    router.get("/api/v1/query").mock(return_value=answer)
    error = assert_failed(await instant(make_source()), reason, up=up)
    for text in named:
        assert text in error


async def test_long_server_error_text_is_truncated(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """A huge error text from the server is cut to about 200 characters of detail."""
    router.get("/api/v1/query").mock(return_value=api_error(400, "bad_data", "x" * 5000))
    error = assert_failed(await instant(make_source()), "query_error", up=True)
    assert len(error) < 300


@pytest.mark.parametrize(
    "body",
    [
        b"<html>not prometheus</html>",
        b"",
        b'{"status": "success"}',
        b'{"status": "success", "data": {"resultType": "vector", "result": {}}}',
        b'{"status": "success", "data": {"resultType": "vector", "result": [{"value": 1}]}}',
        b'{"status": "success", "data": {"resultType": "matrix",'
        b' "result": [{"values": [[1, "abc"]]}]}}',
        b'{"status": "success", "data": {"resultType": "histogram", "result": []}}',
        b"[1, 2, 3]",
    ],
)
async def test_garbage_body_is_bad_response_and_down(
    router: respx.Router, make_source: SourceFactory, body: bytes
) -> None:
    """A 200 whose body is not the API's JSON is an unparseable answer: bad_response, down."""
    router.get("/api/v1/query").mock(return_value=httpx.Response(200, content=body))
    assert_failed(await instant(make_source()), "bad_response", up=False)


# Network failures


async def test_timeout_is_reason_timeout_and_down(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """An HTTP timeout says how long it waited; the source is down."""
    router.get("/api/v1/query").mock(side_effect=httpx.ReadTimeout("timed out"))
    error = assert_failed(
        await instant(make_source(timeout=timedelta(seconds=3))), "timeout", up=False
    )
    assert "3s" in error


async def test_connection_refused_is_unreachable_and_down(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """A refused connection is unreachable, names the URL and keeps the OS reason."""
    router.get("/api/v1/query").mock(
        side_effect=httpx.ConnectError("[Errno 111] Connection refused")
    )
    error = assert_failed(await instant(make_source()), "unreachable", up=False)
    assert BASE in error
    assert "Connection refused" in error


LoopbackHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_from_loopback(
    handler: LoopbackHandler, release: asyncio.Event, read_timeout: timedelta
) -> tuple[SourceResult, float]:
    """Serve ``handler`` on loopback, read from it through a source configured with
    ``read_timeout``, and return the result with the seconds the read took. ``release`` is set
    before the server closes, so a handler waiting on it can let go."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    source = PrometheusSource("prom", f"http://127.0.0.1:{port}", timeout=read_timeout)
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        result = await asyncio.wait_for(instant(source), timeout=10)
        return result, loop.time() - began
    finally:
        release.set()
        await source.aclose()
        server.close()
        await server.wait_closed()


async def test_a_real_server_that_never_answers_times_out_within_the_timeout() -> None:
    """The configured timeout is applied to real sockets: a loopback server that accepts and
    never answers yields ``timeout`` after about that long, not a hang."""
    hold = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hold.wait()
        writer.close()

    result, elapsed = await read_from_loopback(silent, hold, timedelta(seconds=0.3))
    assert_failed(result, "timeout", up=False)
    assert elapsed < 3


async def test_a_server_dripping_its_answer_is_cut_off_at_the_total_timeout() -> None:
    """The timeout bounds the whole request: a loopback server sending one byte every 0.1 s
    (never idle long enough for a per-read timeout) still yields ``timeout`` promptly."""
    stop = asyncio.Event()

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        while not stop.is_set():
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.close()

    result, elapsed = await read_from_loopback(drip, stop, timedelta(seconds=0.5))
    assert_failed(result, "timeout", up=False)
    assert elapsed < 3


# Auth and secrets


async def test_basic_auth_sends_the_authorization_header(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """username/password become an HTTP Basic Authorization header."""
    route = router.get("/api/v1/query").mock(return_value=vector("1"))
    await instant(make_source(username="reader", password=SecretStr(PASSWORD)))
    credentials = base64.b64encode(f"reader:{PASSWORD}".encode()).decode()
    assert route.calls.last.request.headers["Authorization"] == f"Basic {credentials}"


async def test_bearer_token_sends_the_bearer_header(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """bearer_token becomes ``Authorization: Bearer <token>``."""
    route = router.get("/api/v1/query").mock(return_value=vector("1"))
    await instant(make_source(bearer_token=SecretStr(TOKEN)))
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"


async def test_no_auth_sends_no_authorization_header(
    router: respx.Router, make_source: SourceFactory
) -> None:
    """Without credentials nothing pretends to authenticate."""
    route = router.get("/api/v1/query").mock(return_value=vector("1"))
    await instant(make_source())
    assert "Authorization" not in route.calls.last.request.headers


ECHOING_FAILURES: list[Callable[[str], httpx.Response | Exception]] = [
    lambda secret: api_error(400, "bad_data", f"bad query near {secret}"),
    lambda secret: api_error(503, "unavailable", f"upstream said {secret}"),
    lambda secret: httpx.Response(500, text=f"Authorization: {secret}"),
    lambda secret: httpx.Response(200, text=f"garbage {secret}"),
    lambda secret: httpx.Response(200, json={"status": "success", "data": {"bad": secret}}),
    lambda secret: httpx.ConnectError(f"could not connect with {secret}"),
    lambda secret: httpx.ReadTimeout(f"timeout {secret}"),
    lambda secret: success("vector", [{"metric": {"t": secret}, "value": [1, "1"]}] * 2),
]


@pytest.mark.parametrize("failure", ECHOING_FAILURES)
@pytest.mark.parametrize(
    ("kwargs", "secret"),
    [
        ({"username": "reader", "password": SecretStr(PASSWORD)}, PASSWORD),
        ({"bearer_token": SecretStr(TOKEN)}, TOKEN),
        ({"url": f"http://reader:{PASSWORD}@prometheus.test:9090"}, PASSWORD),
    ],
)
async def test_secrets_never_appear_in_error_strings(
    router: respx.Router,
    make_source: SourceFactory,
    failure: Callable[[str], httpx.Response | Exception],
    kwargs: dict[str, Any],
    secret: str,
) -> None:
    """Even when the server or the network echoes the password or token back, the error text
    (and the source's repr) has it masked."""
    outcome = failure(secret)
    if isinstance(outcome, Exception):
        router.get("/api/v1/query").mock(side_effect=outcome)
    else:
        router.get("/api/v1/query").mock(return_value=outcome)
    source = make_source(**kwargs)
    result = await instant(source)
    assert result.error is not None
    assert secret not in result.error
    assert secret not in repr(source)
    assert secret not in json.dumps(result.error)


# Lifecycle


async def test_construction_does_no_io_and_the_client_opens_on_first_read() -> None:
    """Building a source touches nothing, even pointing at a host that does not exist."""
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return vector("1")

    source = PrometheusSource(
        "prom", BASE, timeout=timedelta(seconds=1), transport=httpx.MockTransport(handler)
    )
    assert calls == []
    await source.aclose()
    assert (await instant(source)).samples[0].value == 1.0
    await source.aclose()
    assert (await instant(source)).samples[0].value == 1.0
    await source.aclose()
    assert len(calls) == 2


async def test_build_source_wires_prometheus_config() -> None:
    """The factory passes url, timeout and auth from the config to the source."""
    config = PrometheusSourceConfig(
        type="prometheus",
        url=BASE,
        timeout=timedelta(seconds=2),
        bearer_token=SecretStr(TOKEN),
    )
    source = build_source("prom", config, clock=lambda: NOW)
    assert isinstance(source, PrometheusSource)
    assert source.name == "prom"
    await source.aclose()


@pytest.mark.parametrize(
    "body",
    [
        b'{"status": "success", "data": {"resultType": "vector", "result": []}}',
        b'{"a": NaN, "b": -Infinity}',  # bare tokens: orjson refuses them, json reads them
        b'{"s": "\\ud800"}',  # a lone surrogate escaped: the same
        b'{"k": 1, "k": 2}',
        b"\xef\xbb\xbf{}",  # a byte order mark
        b"not json",
        b"",
    ],
)
def test_an_answer_is_read_as_the_json_module_reads_it(body: bytes) -> None:
    """The fast JSON reader changes nothing: every body gives what :func:`json.loads` gives
    (``None`` where it refuses the body), NaN compared as NaN."""
    from driftowner.sources.prometheus import _json_or_none

    try:
        expected = json.loads(body)
    except ValueError:
        expected = None
    assert json.dumps(_json_or_none(httpx.Response(200, content=body))) == json.dumps(expected)


def test_an_integer_past_64_bits_is_read_as_a_float() -> None:
    """The one difference from :func:`json.loads`: orjson reads an integer past 64 bits as
    a float. Prometheus sends none (sample values and errors are strings, times floats)."""
    from driftowner.sources.prometheus import _json_or_none

    body = b'{"big": 123456789012345678901234567890}'
    assert _json_or_none(httpx.Response(200, content=body)) == {"big": 1.2345678901234568e29}
