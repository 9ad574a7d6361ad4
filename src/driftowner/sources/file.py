"""The file source: samples from a CSV file with the header ``timestamp,series,value``.

The timestamp is RFC 3339 (``2024-05-01T12:00:00Z``, an offset, or naive meaning UTC) or Unix
seconds (``1714564800`` or ``1714564800.5``); a signal's ``query`` names the series. The file
is parsed again only when its modification time or size changes.
"""

from __future__ import annotations

import asyncio
import csv
import re
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

from driftowner.model import Sample, SourceResult
from driftowner.sources import as_utc, finite_result, one_line

HEADER = ("timestamp", "series", "value")
_UNIX_SECONDS = re.compile(r"[0-9]+(\.[0-9]*)?")
_HAS_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ]")


@dataclass(frozen=True, slots=True)
class _Series:
    """One series of the file, sorted by time, one value per instant."""

    times: tuple[datetime, ...]
    """Shared by every series sampled at the same instants."""
    values: array[float]
    """8 bytes a value (a tuple of floats takes 32)."""


_Parsed = dict[str, _Series] | SourceResult
"""A parsed file, or the error that stopped parsing it."""


class FileSource:
    """Reads series from one CSV file.

    Args:
        name: The source's name in the config, used in error messages.
        path: The CSV file. It need not exist yet: a missing file is reported on each read.
    """

    instant_reads_any_age = True
    """An instant read answers the newest sample at any age (see ``reads_any_age``)."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self._path = Path(path)
        self._label = f"file source {name!r}"
        self._cache: tuple[tuple[int, int], _Parsed] | None = None
        self._loading = threading.Lock()
        """One parse at a time: a cycle's many concurrent reads share the first one's result
        instead of each parsing the file in its own thread (N copies at the memory peak)."""

    def __repr__(self) -> str:
        return f"FileSource(name={self.name!r}, path={str(self._path)!r})"

    async def read(
        self, query: str, start: datetime, end: datetime, step: timedelta
    ) -> SourceResult:
        """The samples of series ``query`` within ``[start, end]`` as they are in the file.

        A range read returns every sample of the range (``step`` is not used: the file's own
        sampling is kept); an instant read (``start == end``) returns the latest sample at or
        before ``end``. A series the file does not have is an empty result, not an error.
        """
        start, end = as_utc(start), as_utc(end)
        parsed = await asyncio.to_thread(self._load)
        if isinstance(parsed, SourceResult):
            return parsed
        series = parsed.get(query)
        if series is None:
            return SourceResult()
        if start == end:
            index = bisect_right(series.times, end)
            chosen = range(index - 1, index) if index else range(0)
        else:
            chosen = range(bisect_left(series.times, start), bisect_right(series.times, end))
        return finite_result(
            self._label, [Sample(at=series.times[i], value=series.values[i]) for i in chosen]
        )

    async def aclose(self) -> None:
        """Forget the parsed file; the next read parses it again."""
        self._cache = None

    def _load(self) -> _Parsed:
        """The parsed file, from the cache while its mtime and size are unchanged."""
        with self._loading:
            return self._load_once()

    def _load_once(self) -> _Parsed:
        try:
            status = self._path.stat()
        except FileNotFoundError:
            return self._fail(f"{self._path} does not exist", "file_missing")
        except OSError as exc:
            return self._fail(f"cannot read {self._path}: {exc.strerror or exc}", "file_invalid")
        key = (status.st_mtime_ns, status.st_size)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        try:
            # Streamed line by line: a large file is never held whole (nor as a UCS-4 copy).
            with self._path.open(encoding="utf-8-sig") as lines:
                parsed = self._parse(lines)
                for _ in lines:  # a bad row stopped the parse; a bad byte is still reported first
                    pass
        except FileNotFoundError:
            return self._fail(f"{self._path} does not exist", "file_missing")
        except UnicodeDecodeError:
            parsed = self._not_utf8()
        except OSError as exc:
            return self._fail(f"cannot read {self._path}: {exc.strerror or exc}", "file_invalid")
        self._cache = (key, parsed)
        return parsed

    def _not_utf8(self) -> SourceResult:
        """The file is not UTF-8: the error names the first bad byte, found by decoding the
        whole file (a streamed decoder knows only its offset within a chunk)."""
        where = ""
        try:
            self._path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            where = f" (byte {exc.start})"
        except OSError:
            pass  # gone or rewritten since: the next read parses it again
        return self._fail(f"{self._path} is not UTF-8 text{where}", "file_invalid")

    def _parse(self, lines: Iterable[str]) -> _Parsed:
        reader = csv.reader(lines)
        columns: dict[str, int] | None = None
        collected: dict[str, tuple[list[datetime], array[float]]] = {}
        # Series sampled together share their timestamps: one datetime per distinct text
        # (10,000 series of 50 samples held 500,000 equal datetimes otherwise).
        times: dict[str, datetime | None] = {}
        try:
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if columns is None:
                    names = [cell.strip().lower() for cell in row]
                    if sorted(names) != sorted(HEADER):
                        return self._invalid(
                            line,
                            f"the header must be {','.join(HEADER)}, "
                            f"not {one_line(','.join(row), 80)}",
                        )
                    columns = {name: position for position, name in enumerate(names)}
                    continue
                if len(row) != len(HEADER):
                    return self._invalid(
                        line, f"expected {len(HEADER)} fields ({','.join(HEADER)}), got {len(row)}"
                    )
                raw_time = row[columns["timestamp"]].strip()
                series = row[columns["series"]].strip()
                raw_value = row[columns["value"]].strip()
                at = times.get(raw_time)
                if at is None:
                    at = times[raw_time] = parse_timestamp(raw_time)
                if at is None:
                    return self._invalid(
                        line,
                        f"invalid timestamp {one_line(raw_time, 40)!r}: expected RFC 3339 "
                        "(2024-05-01T12:00:00Z) or Unix seconds",
                    )
                if not series:
                    return self._invalid(line, "the series is empty")
                try:
                    value = float(raw_value)
                except ValueError:
                    return self._invalid(
                        line, f"invalid value {one_line(raw_value, 40)!r}: expected a number"
                    )
                points = collected.get(series)
                if points is None:
                    points = collected[series] = ([], array("d"))
                points[0].append(at)
                points[1].append(value)
        except csv.Error as exc:
            return self._invalid(reader.line_num, f"not valid CSV: {exc}")
        # An empty file (just created, or truncated by its writer) has no series yet.
        return _series(collected)

    def _invalid(self, line: int, detail: str) -> SourceResult:
        return self._fail(f"{self._path} line {line}: {detail}", "file_invalid")

    def _fail(self, detail: str, reason: str) -> SourceResult:
        return SourceResult(
            error=one_line(f"{self._label}: {detail}", 400), error_reason=reason, source_up=False
        )


def _series(collected: Mapping[str, tuple[list[datetime], array[float]]]) -> dict[str, _Series]:
    """Each series' rows (in file order) sorted by time, the last row for an instant kept;
    series with the same instants share one tuple of them."""
    timelines: dict[tuple[datetime, ...], tuple[datetime, ...]] = {}
    parsed: dict[str, _Series] = {}
    for name, (times, values) in collected.items():
        if any(later <= earlier for earlier, later in pairwise(times)):
            # Out of order, or an instant written twice: a later row replaces an earlier one.
            latest = dict(zip(times, values, strict=True))
            times = sorted(latest)
            values = array("d", (latest[at] for at in times))
        timeline = tuple(times)
        parsed[name] = _Series(timelines.setdefault(timeline, timeline), values)
    return parsed


def parse_timestamp(text: str) -> datetime | None:
    """A file timestamp as an aware UTC datetime, or ``None`` when it is not one.

    Accepts Unix seconds (integer or decimal) and RFC 3339 date-times; a date-time without an
    offset is UTC.
    """
    try:
        if _UNIX_SECONDS.fullmatch(text):
            return datetime.fromtimestamp(float(text), tz=UTC)
        if not _HAS_TIME.match(text):
            return None
        return as_utc(datetime.fromisoformat(text))
    except (ValueError, OverflowError, OSError):
        return None
