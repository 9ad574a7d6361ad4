"""The Prometheus source: PromQL over the Prometheus HTTP API (``/api/v1/query`` and
``/api/v1/query_range``), with basic or bearer auth, turned into one series of samples
(:meth:`PrometheusSource.read`) or into series keyed by one label
(:meth:`PrometheusSource.read_by_label`), both through the same request and error handling.

Every way the server or the network can fail becomes a :class:`SourceResult` error whose text
names the source and never contains a password or token.

The requests go out through the HTTP channels' senders (:mod:`driftowner.channels.http`): in
production aiohttp called directly (:class:`~driftowner.channels.http.AiohttpSender`), which
costs about 40% of the CPU time httpx's client took for the same five answers of 2,000 series
(benchmarks/README.md, "Cost at scale"); with a transport given (tests: ``httpx.MockTransport``,
respx), that transport, through :class:`~driftowner.channels.http.HttpxSender`. Either way the
request is the one httpx's client sent (URL and query encoded by httpx, the same headers,
auth and timeouts) and the answer is read as httpx's ``Response``. A signal template's steady
answer (:meth:`PrometheusSource.read_values_by_label` of a clean vector) is read straight from
its bytes into arrays (:func:`_clean_vector`, msgspec); every other answer is parsed whole.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec
import numpy as np
import orjson
from numpy.typing import NDArray
from pydantic import SecretStr

from driftowner import __version__
from driftowner.channels import timeout_seconds
from driftowner.channels.http import AiohttpSender, Answer, AnswerTooLarge, HttpxSender
from driftowner.model import Sample, SourceResult
from driftowner.sources import (
    LabelledResult,
    LabelledValues,
    as_utc,
    clamp_step,
    finite_result,
    finite_samples,
    one_line,
)

_MAX_DETAIL = 200
"""Characters of a server's error text kept in an error message."""

_Parsed = TypeVar("_Parsed")

_PLACEMENTS_KEPT = 256
"""Templates whose last answer's placement a source keeps (beyond, it forgets them all)."""

_ACCEPT_ENCODING = "gzip, deflate"
"""What httpx's client asked for: the encodings httpx decodes without optional packages."""


class Getter(Protocol):
    """What the source sends its GETs through: :class:`~driftowner.channels.http.AiohttpSender`
    (the network), :class:`~driftowner.channels.http.HttpxSender` (a transport), or a wrapper
    around one."""

    async def get(self, url: httpx.URL, headers: Mapping[str, str]) -> Answer:
        """GET ``url`` with ``headers`` and read the whole answer.

        Raises:
            httpx.TransportError: The request could not be sent or its answer not read.
        """
        ...

    async def aclose(self) -> None:
        """Release connections; the getter may be used again afterwards."""
        ...


@dataclass(frozen=True, slots=True)
class _Answer:
    """The series of a successful answer, as the API sent them, and how they were asked for."""

    series: list[Any]
    matrix: bool
    """``resultType: matrix`` (``values`` per series) rather than vector (one ``value``)."""
    instant: bool
    end: datetime
    times: dict[float, datetime] = field(default_factory=dict)
    """Each Unix time of the answer as a datetime, made once: every series of an instant
    answer, and of a range answer at one step, shares its times."""


class PrometheusSource:
    """Reads PromQL from one Prometheus server (or anything speaking its HTTP API).

    Args:
        name: The source's name in the config, used in error messages.
        url: Base URL of the server (``http://localhost:9090``, may carry a path prefix).
        timeout: How long one HTTP request may take, connecting included.
        username: Basic auth user; needs ``password``.
        password: Basic auth password.
        bearer_token: Sent as ``Authorization: Bearer ...``; exclusive with basic auth.
        transport: The HTTP transport to use instead of the network (tests).
        getter: Makes what sends the requests, given the timeout in seconds, instead of the
            network's :class:`~driftowner.channels.http.AiohttpSender` (the cost benchmark
            wraps that one to record the requests a cycle sends); exclusive with
            ``transport``.

    Nothing is opened at construction: the HTTP session is created on the first read and
    closed by :meth:`aclose`.

    Raises:
        ValueError: Both ``transport`` and ``getter`` are given.
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        timeout: timedelta,
        username: str | None = None,
        password: SecretStr | None = None,
        bearer_token: SecretStr | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        getter: Callable[[float], Getter] | None = None,
    ) -> None:
        if transport is not None and getter is not None:
            raise ValueError("give a transport or a getter, not both")
        self.name = name
        self._url = url.rstrip("/")
        self._shown_url = _without_userinfo(self._url)
        self._timeout = timeout
        self._username = username
        self._password = password
        self._bearer_token = bearer_token
        self._transport = transport
        self._getter = getter
        self._http: Getter | None = None
        self._headers: dict[str, str] | None = None
        self._placements: dict[tuple[str, int], tuple[Mapping[str, int], _Placement]] = {}
        """(label, id(index)) -> (that index, held so its id stays its own; the placement of
        the last clean answer read with them)."""
        self._secrets = _secret_texts(url, password, bearer_token)
        self._label = f"prometheus source {name!r}"

    def __repr__(self) -> str:
        return f"PrometheusSource(name={self.name!r}, url={self._shown_url!r})"

    async def read(
        self, query: str, start: datetime, end: datetime, step: timedelta
    ) -> SourceResult:
        """Evaluate ``query``: an instant query at ``end`` when ``start == end``, else a range
        query from ``start`` to ``end`` every ``step`` (widened to at most 11,000 points).

        Returns:
            The one series the query selects, NaN/Inf dropped; or the error that prevented it.
        """
        return await self._evaluate(query, start, end, step, self._one_series)

    async def read_by_label(
        self, query: str, start: datetime, end: datetime, step: timedelta, label: str
    ) -> LabelledResult:
        """Evaluate ``query`` as :meth:`read` does and split its series by their ``label``.

        Returns:
            Label value -> that series' samples, NaN/Inf dropped; ambiguous values and unlabelled
            series set aside (see :class:`~driftowner.sources.LabelledResult`); or the error
            that prevented it, the same error :meth:`read` would give.
        """
        outcome = await self._evaluate(
            query, start, end, step, lambda answer: self._by_label(answer, label)
        )
        if isinstance(outcome, SourceResult):
            return LabelledResult.failed(outcome)
        return outcome

    async def read_values_by_label(
        self, query: str, at: datetime, label: str, index: Mapping[str, int]
    ) -> LabelledValues | LabelledResult:
        """Evaluate ``query`` at the instant ``at`` and split its series by their ``label``
        into arrays: each series' row in ``index``, value and time, in one pass with no
        sample object per series (the steady read of a signal template).

        Returns:
            The arrays; or, for an answer that is not a clean vector (a matrix, a series
            without the label, a value two series share, a malformed point), exactly what
            :meth:`read_by_label` returns for it, errors included.
        """
        outcome: LabelledValues | LabelledResult | SourceResult = await self._evaluate(
            query,
            at,
            at,
            timedelta(seconds=1),
            lambda answer: self._values_by_label(answer, label, index),
            lambda body: self._read_clean(body, label, index),
        )
        if isinstance(outcome, SourceResult):
            return LabelledResult.failed(outcome)
        return outcome

    def _read_clean(
        self, body: bytes, label: str, index: Mapping[str, int]
    ) -> LabelledValues | None:
        """:func:`_clean_vector`, given the placement of the last clean answer read with
        this ``label`` and ``index`` (a template's, the same object every cycle of a config)."""
        key = (label, id(index))
        held = self._placements.get(key)
        last = held[1] if held is not None and held[0] is index else None
        read = _clean_vector(body, label, index, last)
        if read is None:
            return None
        values, placement = read
        if placement is not last:
            if len(self._placements) >= _PLACEMENTS_KEPT:
                self._placements.clear()  # a config's templates, then a reload's: start over
            self._placements[key] = (index, placement)
        return values

    async def aclose(self) -> None:
        """Close the HTTP session, if one was opened; a later read opens a new one."""
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    def _sender(self) -> Getter:
        """The network (or the transport, or the getter, given), opened on first use."""
        if self._http is None:
            seconds = timeout_seconds(self._timeout)
            if self._transport is not None:
                self._http = HttpxSender(self._transport, seconds)
            elif self._getter is not None:
                self._http = self._getter(seconds)
            else:
                self._http = AiohttpSender(seconds)
        return self._http

    def _request_headers(self) -> dict[str, str]:
        """The headers of every request, made once: httpx's client's, with the auth it added
        (basic auth given, else the URL's own ``user:password@``, else the bearer token)."""
        if self._headers is None:
            headers = {
                "Accept": "application/json",
                "Accept-Encoding": _ACCEPT_ENCODING,
                "User-Agent": f"driftowner/{__version__}",
            }
            if self._bearer_token is not None:
                headers["Authorization"] = f"Bearer {self._bearer_token.get_secret_value()}"
            if self._username is not None and self._password is not None:
                headers["Authorization"] = _basic(self._username, self._password.get_secret_value())
            else:
                own = _userinfo(self._url)
                if own is not None:
                    headers["Authorization"] = _basic(*own)
            self._headers = headers
        return self._headers

    async def _evaluate(
        self,
        query: str,
        start: datetime,
        end: datetime,
        step: timedelta,
        parse: Callable[[_Answer], _Parsed | SourceResult],
        clean: Callable[[bytes], _Parsed | None] | None = None,
    ) -> _Parsed | SourceResult:
        """Send ``query`` (instant when ``start == end``, else a range) and ``parse`` a
        successful answer; every failure on the way is the :class:`SourceResult` error.
        ``clean`` reads an answer of HTTP 200 from its bytes first, if it can (None: it
        cannot, and the answer is read in full); it must give what ``parse`` would."""
        start, end = as_utc(start), as_utc(end)
        if end < start:
            return self._error(
                f"range start {start.isoformat()} is after its end {end.isoformat()}",
                "query_error",
                up=True,
            )
        instant = start == end
        if instant:
            path = "/api/v1/query"
            params = {"query": query, "time": _unix(end)}
        else:
            path = "/api/v1/query_range"
            params = {
                "query": query,
                "start": _unix(start),
                "end": _unix(end),
                "step": _seconds(clamp_step(start, end, step)),
            }
        try:
            # The sender's timeout bounds each phase; this bounds the whole request (slow drips
            # too). The URL carries no user:password@: that is the Authorization header.
            async with asyncio.timeout(self._timeout.total_seconds()):
                url = httpx.URL(self._shown_url + path, params=params)
                answer = await self._sender().get(url, self._request_headers())
                response = answer.response()  # the body decoded by its Content-Encoding
        except (httpx.TimeoutException, TimeoutError):
            return self._error(
                f"no answer from {self._shown_url} within {_seconds(self._timeout)}s",
                "timeout",
                up=False,
            )
        except httpx.DecodingError as exc:
            return self._error(f"cannot decode the answer: {exc}", "bad_response", up=False)
        except AnswerTooLarge as exc:
            return self._error(
                f"the answer to {one_line(query, 80)!r} is larger than {exc.limit / 2**20:g} MiB "
                "(the most read); not read further: narrow the query",
                "bad_response",
                up=False,
            )
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            return self._error(f"cannot reach {self._shown_url}: {detail}", "unreachable", up=False)
        if clean is not None and response.status_code == 200:
            read = clean(response.content)
            if read is not None:
                return read
        return self._interpret(response, parse, instant=instant, end=end)

    def _interpret(
        self,
        response: httpx.Response,
        parse: Callable[[_Answer], _Parsed | SourceResult],
        *,
        instant: bool,
        end: datetime,
    ) -> _Parsed | SourceResult:
        """Turn an HTTP response into what ``parse`` makes of it, or the error it carries."""
        status = response.status_code
        body = _json_or_none(response)
        api_error = _api_error(body)
        if status >= 500:
            reason = "timeout" if api_error and api_error[0] == "timeout" else "http_status"
            return self._error(_http_detail(response, api_error), reason, up=False)
        if status >= 400 and api_error is not None:
            # Prometheus refused the query (bad_data, execution): the server itself is fine.
            return self._error(
                f"query rejected (HTTP {status}): {_api_detail(api_error)}", "query_error", up=True
            )
        if not 200 <= status < 300:
            return self._error(_http_detail(response, api_error), "http_status", up=False)
        if body is None:
            snippet = one_line(response.text, 80) if response.text else "empty body"
            return self._error(f"the answer is not JSON: {snippet}", "bad_response", up=False)
        if api_error is not None:
            return self._error(f"query rejected: {_api_detail(api_error)}", "query_error", up=True)
        try:
            answer = self._answer(body, instant=instant, end=end)
            if isinstance(answer, SourceResult):
                return answer
            return parse(answer)
        except (KeyError, IndexError, TypeError, ValueError, OverflowError, OSError) as exc:
            return self._error(
                f"unexpected answer from the query API ({type(exc).__name__}: {exc})",
                "bad_response",
                up=False,
            )

    def _answer(self, body: Any, *, instant: bool, end: datetime) -> _Answer | SourceResult:
        """The series of a ``status: success`` body (a scalar as one series without labels), or
        the error of a result that is not numbers.

        Raises:
            KeyError, IndexError, TypeError, ValueError: the body is not shaped like the API's.
        """
        if not isinstance(body, dict) or body.get("status") != "success":
            raise ValueError("status is not 'success'")
        data = body["data"]
        result_type = data["resultType"]
        result = data["result"]
        if result_type == "scalar":
            scalar = {"metric": {}, "value": result}
            return _Answer([scalar], matrix=False, instant=instant, end=end)
        if result_type == "string":
            return self._error("the query returns a string, not a number", "query_error", up=True)
        if result_type not in ("vector", "matrix"):
            raise ValueError(f"unknown resultType {result_type!r}")
        if not isinstance(result, list):
            raise TypeError("result is not a list")
        return _Answer(result, matrix=result_type == "matrix", instant=instant, end=end)

    def _one_series(self, answer: _Answer) -> SourceResult:
        """The samples of the one series of ``answer``; more than one is an error."""
        if not answer.series:
            return SourceResult()
        if len(answer.series) > 1:
            shown = _first_few([_shown_labels(series) for series in answer.series[:4]])
            return self._error(
                f"the query returns {len(answer.series)} series ({shown}); it must return "
                "one: aggregate it (sum, avg, max) or select one series by its labels",
                "multiple_series",
                up=True,
            )
        samples = self._points(answer.series[0], answer)
        if isinstance(samples, SourceResult):
            return samples
        return finite_result(self._label, samples)

    def _by_label(self, answer: _Answer, label: str) -> LabelledResult | SourceResult:
        """The series of ``answer`` keyed by their value of ``label``.

        Raises:
            KeyError, IndexError, TypeError, ValueError: a series is not shaped like the API's.
        """
        by_value: dict[str, list[list[Sample]]] = {}
        unlabelled: list[dict[str, Any]] = []
        for series in answer.series:
            samples = self._points(series, answer)
            if isinstance(samples, SourceResult):
                return samples
            metric = _metric(series)
            value = metric.get(label)
            if value is None or value == "":  # Prometheus: an empty value is no label
                unlabelled.append(metric)
            elif isinstance(value, str):
                by_value.setdefault(value, []).append(samples)
            else:
                raise TypeError(f"label {label!r} is not a string: {one_line(repr(value), 60)}")
        ambiguous = tuple(sorted(value for value, found in by_value.items() if len(found) > 1))
        if by_value and len(ambiguous) == len(by_value):
            shown = _first_few([f"{value!r}: {len(by_value[value])}" for value in ambiguous])
            return LabelledResult.failed(
                self._error(
                    f"every value of label {label!r} has several series ({shown}); "
                    f"aggregate the query by ({label}) so each value has one",
                    "multiple_series",
                    up=True,
                ),
                unlabelled=len(unlabelled),
                ambiguous=ambiguous,
            )
        if unlabelled and not by_value:
            shown = _first_few([_labels(metric) for metric in unlabelled])
            return LabelledResult.failed(
                self._error(
                    f"none of the {len(unlabelled)} series the query returns has label "
                    f"{label!r} ({shown}); keep it: aggregate by ({label})",
                    "query_error",
                    up=True,
                ),
                unlabelled=len(unlabelled),
            )
        return LabelledResult(
            series={
                value: finite_samples(found[0])
                for value, found in sorted(by_value.items())
                if len(found) == 1
            },
            unlabelled=len(unlabelled),
            ambiguous=ambiguous,
        )

    def _values_by_label(
        self, answer: _Answer, label: str, index: Mapping[str, int]
    ) -> LabelledValues | LabelledResult | SourceResult:
        """The arrays of a clean vector answer, else :meth:`_by_label`'s reading of it."""
        values = _vector_values(answer, label, index)
        return self._by_label(answer, label) if values is None else values

    def _points(self, series: Any, answer: _Answer) -> list[Sample] | SourceResult:
        """The samples of one series of ``answer``, oldest first, NaN/Inf kept; for an instant
        read of a range selector, its latest sample.

        Raises:
            KeyError, IndexError, TypeError, ValueError: the series is not shaped like the API's.
        """
        if not isinstance(series, dict):
            raise TypeError("a series is not an object")
        if not answer.matrix:
            if "value" not in series and "histogram" in series:
                return self._error(
                    "the query returns a native histogram, not a number", "query_error", up=True
                )
            return [_sample(series["value"], answer.times)]
        if "values" not in series and "histograms" in series:
            return self._error(
                "the query returns native histograms, not numbers", "query_error", up=True
            )
        samples = sorted((_sample(point, answer.times) for point in series["values"]), key=_at)
        if answer.instant:
            # A range selector evaluated at one instant: its latest sample stands for it.
            samples = [sample for sample in samples if sample.at <= answer.end][-1:]
        return samples

    def _error(self, detail: str, reason: str, *, up: bool) -> SourceResult:
        return SourceResult(
            error=_printable(self._scrub(one_line(f"{self._label}: {detail}", 400))),
            error_reason=reason,
            source_up=up,
        )

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _printable(text: str) -> str:
    """``text`` with each character that is not printable escaped as Python writes it
    (``\\x1b``, ``\\x00``, ``\\ud800``): an error quotes the server's answer and label
    values, and goes on to logs, findings and an incident's evidence, where a terminal escape
    would act and a lone surrogate cannot be encoded (UTF-8 refuses it: the store, a page)."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _secret_texts(url: str, *secrets: SecretStr | None) -> list[str]:
    """Every secret value that must never appear in an error, longest first."""
    found = [secret.get_secret_value() for secret in secrets if secret is not None]
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        found.append(password)
    return sorted({text for text in found if text}, key=len, reverse=True)


def _without_userinfo(url: str) -> str:
    """``url`` without ``user:password@``, for messages."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid url>"
    if "@" not in parts.netloc:
        return url
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _userinfo(url: str) -> tuple[str, str] | None:
    """The ``user:password@`` of ``url`` decoded, as httpx's client took it for basic auth, or
    None when it has none."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return None
    if not parsed.username and not parsed.password:
        return None
    return parsed.username, parsed.password


def _basic(username: str, password: str) -> str:
    """The ``Authorization`` value of HTTP basic auth, made by httpx's ``BasicAuth``."""
    request = httpx.Request("GET", "http://prometheus")
    next(httpx.BasicAuth(username, password).sync_auth_flow(request))
    return request.headers["Authorization"]


def _json_or_none(response: httpx.Response) -> Any:
    """The parsed JSON body, or ``None`` when there is none or it does not parse.

    orjson reads an answer of 2,000 series in about 60% of the time :mod:`json` takes; what
    orjson refuses and :mod:`json` reads (``NaN`` or ``Infinity`` as bare tokens, a lone
    surrogate escaped, a byte order mark) is read by :mod:`json`. The one difference: an
    integer past 64 bits comes back as a float (Prometheus sends none: sample values and
    errors are strings, times floats)."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(response.content)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's stack
        return None


def _api_error(body: Any) -> tuple[str, str] | None:
    """``(errorType, error)`` of a Prometheus ``status: error`` body, else ``None``."""
    if isinstance(body, dict) and body.get("status") == "error":
        return (str(body.get("errorType") or "unknown"), str(body.get("error") or "no detail"))
    return None


def _api_detail(api_error: tuple[str, str]) -> str:
    error_type, error = api_error
    return one_line(f"{error_type}: {error}", _MAX_DETAIL)


def _http_detail(response: httpx.Response, api_error: tuple[str, str] | None) -> str:
    status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    if api_error is not None:
        return f"{status}: {_api_detail(api_error)}"
    return status


def _sample(point: Sequence[Any], times: dict[float, datetime]) -> Sample:
    """One ``[unix_seconds, "value"]`` pair of the API as a sample (its time looked up in, or
    added to, ``times``).

    Raises:
        TypeError, ValueError, IndexError: the pair is not shaped like that.
    """
    if not isinstance(point, list | tuple) or len(point) != 2:
        raise ValueError(f"a sample is not a [time, value] pair: {one_line(repr(point), 60)}")
    timestamp, value = point
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool):
        raise TypeError(f"a sample time is not a number: {timestamp!r}")
    if not isinstance(value, str):
        raise TypeError(f"a sample value is not a string: {one_line(repr(value), 60)}")
    # float() reads the API's "NaN", "+Inf" and "-Inf" spellings too.
    at = times.get(timestamp)
    if at is None:
        at = times[timestamp] = datetime.fromtimestamp(timestamp, tz=UTC)
    return Sample(at=at, value=float(value))


def _vector_values(answer: _Answer, label: str, index: Mapping[str, int]) -> LabelledValues | None:
    """A vector answer's series as :class:`~driftowner.sources.LabelledValues`, or None when
    it is anything else (then :meth:`PrometheusSource._by_label` parses it and names what is
    wrong): every series must carry a non-empty string ``label``, no two the same, and one
    ``[time, "value"]`` point each.

    Each pass over the series is one ``map`` (itemgetter, a type, a length): a loop written in
    Python took about twice as long for an answer of 2,000 series."""
    series = answer.series
    if answer.matrix or not series:
        return None
    try:
        names = list(map(itemgetter(label), map(_METRIC, series)))
        points = list(map(_VALUE, series))
    except (KeyError, TypeError):  # a series or its metric not an object; no label
        return None
    if set(map(type, points)) != {list} or set(map(len, points)) != {2}:
        return None
    times = list(map(_FIRST, points))
    texts = list(map(_SECOND, points))
    if not set(map(type, times)) <= {int, float} or set(map(type, texts)) != {str}:
        return None
    placement = _place(names, index)
    return None if placement is None else _columns(placement, times, texts)


def _clean_vector(
    body: bytes, label: str, index: Mapping[str, int], last: _Placement | None = None
) -> tuple[LabelledValues, _Placement] | None:
    """What :func:`_vector_values` makes of a clean vector answer, read straight from its
    bytes, and where its series went: msgspec decodes only each series' ``label`` and its
    point, into typed structs (no dict or list per series), checking the answer's shape as
    it goes; None for any other answer (an error, a matrix, a series without the label or
    with a native histogram, a value NaN spelled as a bare token), which is then read in
    full. An answer whose label values are those of ``last`` (the same template's last
    answer), in the same order, is placed as that one was: one comparison instead of a
    look-up per series.

    For the five answers of 2,000 series of a cycle this takes about two thirds of the time
    of orjson's objects turned into arrays (benchmarks/README.md, "Cost at scale")."""
    try:
        series = _vector_decoder(label).decode(body).data.result
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None  # RecursionError: a skipped field nested deeper than msgspec goes
    if not series:
        return None
    names = list(map(_NAME, series))
    placement = last if last is not None and last.names == names else _place(names, index)
    if placement is None:
        return None
    values = _columns(placement, list(map(_AT, series)), list(map(_TEXT, series)))
    return None if values is None else (values, placement)


@cache
def _vector_decoder(label: str) -> msgspec.json.Decoder[Any]:
    """Decodes a ``status: success`` vector answer keeping, of each series, its value of
    ``label`` (which must be a string) and its ``[time, "value"]`` point; every other field
    is skipped unread. The structs are not tracked by the garbage collector (they hold only
    strings and floats): 2,000 series decoded as tracked objects triggered a collection of
    the young generation every 700, and promoted them to the older ones."""
    metric = msgspec.defstruct("Metric", [("name", str)], rename={"name": label}, gc=False)
    # forbid_unknown_fields: a point of three elements is refused, as _sample refuses it.
    point = msgspec.defstruct(
        "Point",
        [("at", float), ("text", str)],
        array_like=True,
        forbid_unknown_fields=True,
        gc=False,
    )
    series = msgspec.defstruct("Series", [("metric", metric), ("value", point)], gc=False)
    data = msgspec.defstruct(
        "Data",
        [("resultType", Literal["vector"]), ("result", list[series])],  # type: ignore[valid-type]
    )
    answer = msgspec.defstruct("Answer", [("status", Literal["success"]), ("data", data)])
    return msgspec.json.Decoder(answer)


@dataclass(frozen=True, slots=True)
class _Placement:
    """Where the series of an answer go, by their label values (``names``, in answer order):
    the rows of those the index knows, which series those are, and the other values."""

    names: list[Any]
    rows: NDArray[np.int64]
    mine: NDArray[np.bool_]
    others: tuple[str, ...]


def _place(names: list[Any], index: Mapping[str, int]) -> _Placement | None:
    """Each series' row in ``index`` by its label value, or None when a label value the index
    does not know is not a non-empty string, or two series share one."""
    try:
        placed = np.fromiter(map(index.get, names, repeat(-1)), dtype=np.int64, count=len(names))
    except TypeError:  # a label value that is not even hashable
        return None
    others = [names[row] for row in np.flatnonzero(placed < 0).tolist()]
    if any(type(name) is not str or not name for name in others) or len(set(others)) < len(others):
        return None
    mine = placed >= 0
    rows = placed[mine]
    if rows.size and np.bincount(rows).max() > 1:
        return None
    return _Placement(names, rows, mine, tuple(sorted(others)))


def _columns(placement: _Placement, times: list[float], texts: list[str]) -> LabelledValues | None:
    """The placed series' values (``texts`` read as floats) and times, or None when a value
    is not a number or a time is not one :func:`_sample` reads (NaN, infinite, outside the
    years 1 to 9999: each time becomes a datetime downstream)."""
    try:
        # float() reads the API's "NaN", "+Inf" and "-Inf" spellings, as _sample does.
        values = np.fromiter(map(float, texts), dtype=np.float64, count=len(texts))
        stamps = np.fromiter(times, dtype=np.float64, count=len(times))
        for stamp in np.unique(stamps).tolist():  # an answer's series share a time or a few
            datetime.fromtimestamp(stamp, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    mine = placement.mine
    return LabelledValues(placement.rows, values[mine], stamps[mine], placement.others)


_METRIC, _VALUE = itemgetter("metric"), itemgetter("value")
_FIRST, _SECOND = itemgetter(0), itemgetter(1)
_NAME, _AT, _TEXT = attrgetter("metric.name"), attrgetter("value.at"), attrgetter("value.text")


def _metric(series: Any) -> dict[str, Any]:
    """The label set of one series of the API (``{}`` when it has none).

    Raises:
        TypeError: the series or its ``metric`` is not an object.
    """
    if not isinstance(series, dict):
        raise TypeError("a series is not an object")
    metric = series.get("metric", {})
    if not isinstance(metric, dict):
        raise TypeError("a series' metric is not an object")
    return metric


def _shown_labels(series: Any) -> str:
    """The labels of one series for a message, whatever its shape."""
    return _labels(series.get("metric", {})) if isinstance(series, dict) else "{?}"


def _first_few(texts: Sequence[str], few: int = 3) -> str:
    """The first ``few`` of ``texts`` joined by commas, ``...`` when there are more."""
    return ", ".join(texts[:few]) + (", ..." if len(texts) > few else "")


def _at(sample: Sample) -> datetime:
    return sample.at


def _labels(metric: Any) -> str:
    if not isinstance(metric, dict):
        return "{?}"
    inner = ",".join(f'{key}="{value}"' for key, value in sorted(metric.items()))
    return one_line("{" + inner + "}", 80)


def _unix(moment: datetime) -> str:
    """An API timestamp: Unix seconds with millisecond precision."""
    return f"{moment.timestamp():.3f}"


def _seconds(duration: timedelta) -> str:
    """A duration as the API's float seconds (``60``, ``0.5``)."""
    return f"{duration.total_seconds():.3f}".rstrip("0").rstrip(".")
