"""The file source: CSV parsing, timestamps, instant and range reads, caching, and errors that
name the file and line."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from driftowner.sources.file import FileSource, parse_timestamp

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    return write(
        tmp_path / "metrics.csv",
        "timestamp,series,value\n"
        "2024-05-01T12:00:00Z,adoption,0.62\n"
        "2024-05-01T12:01:00Z,adoption,0.61\n"
        "2024-05-01T12:02:00Z,adoption,0.40\n"
        "2024-05-01T12:00:00Z,accuracy,0.94\n",
    )


async def test_range_read_returns_the_series_samples_within_the_range_oldest_first(
    csv_file: Path,
) -> None:
    """A range read returns exactly the named series' samples in [start, end], in time order."""
    source = FileSource("csv", csv_file)
    result = await source.read("adoption", T0, T0 + MINUTE, MINUTE)
    assert result.error is None
    assert [(s.at, s.value) for s in result.samples] == [(T0, 0.62), (T0 + MINUTE, 0.61)]


async def test_instant_read_returns_the_latest_sample_at_or_before_end(csv_file: Path) -> None:
    """An instant read (start == end) gives one sample: the newest one not after ``end``."""
    source = FileSource("csv", csv_file)
    at = T0 + timedelta(minutes=1, seconds=30)
    result = await source.read("adoption", at, at, MINUTE)
    assert [(s.at, s.value) for s in result.samples] == [(T0 + MINUTE, 0.61)]


async def test_instant_read_before_the_first_sample_is_empty_without_error(
    csv_file: Path,
) -> None:
    """Before the series begins there is no value, and that is not an error."""
    source = FileSource("csv", csv_file)
    at = T0 - MINUTE
    result = await source.read("adoption", at, at, MINUTE)
    assert result.samples == ()
    assert result.error is None


async def test_unknown_series_is_an_empty_result_without_error(csv_file: Path) -> None:
    """A series the file lacks means no data yet (the stale rule's job), not a broken source."""
    result = await FileSource("csv", csv_file).read("latency", T0, T0 + MINUTE, MINUTE)
    assert result.samples == ()
    assert result.error is None
    assert result.source_up


async def test_header_only_file_has_no_series(tmp_path: Path) -> None:
    """A file with just the header is valid and empty."""
    path = write(tmp_path / "m.csv", "timestamp,series,value\n")
    result = await FileSource("csv", path).read("adoption", T0, T0, MINUTE)
    assert result.samples == ()
    assert result.error is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", T0),
        ("2024-05-01T14:00:00+02:00", T0),
        ("2024-05-01T12:00:00", T0),
        ("2024-05-01 12:00:00.000Z", T0),
        ("1714564800", T0),
        ("1714564800.5", T0 + timedelta(milliseconds=500)),
    ],
)
def test_timestamps_are_rfc3339_or_unix_seconds_and_naive_means_utc(
    text: str, expected: datetime
) -> None:
    """Every accepted timestamp spelling parses to the same aware UTC instant."""
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed is not None
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["yesterday", "2024-05-01", "", "1.5e9", "nan", "-5"])
def test_timestamps_that_are_neither_format_are_refused(text: str) -> None:
    """Dates without a time, words, and exotic numbers are not guessed at."""
    assert parse_timestamp(text) is None


async def test_samples_read_back_in_utc_whatever_offset_the_file_used(tmp_path: Path) -> None:
    """Rows written with offsets, ``Z`` and Unix seconds all come back as UTC and sorted."""
    path = write(
        tmp_path / "m.csv",
        "timestamp,series,value\n"
        "1714564920,s,3\n"
        "2024-05-01T14:01:00+02:00,s,2\n"
        "2024-05-01T12:00:00Z,s,1\n",
    )
    result = await FileSource("csv", path).read("s", T0, T0 + 2 * MINUTE, MINUTE)
    assert [s.value for s in result.samples] == [1.0, 2.0, 3.0]
    assert all(s.at.tzinfo is UTC for s in result.samples)


async def test_header_columns_may_come_in_any_order(tmp_path: Path) -> None:
    """The header names the columns; their order is free."""
    path = write(tmp_path / "m.csv", "series,value,timestamp\ns,0.5,2024-05-01T12:00:00Z\n")
    result = await FileSource("csv", path).read("s", T0, T0, MINUTE)
    assert [s.value for s in result.samples] == [0.5]


async def test_missing_file_is_file_missing_and_the_source_is_down(tmp_path: Path) -> None:
    """A file that is not there makes the source itself fail, with reason file_missing."""
    path = tmp_path / "absent.csv"
    result = await FileSource("csv", path).read("s", T0, T0, MINUTE)
    assert result.error_reason == "file_missing"
    assert not result.source_up
    assert result.error is not None
    assert "'csv'" in result.error
    assert str(path) in result.error


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("time,series,value\n", 1, "header"),
        ("timestamp,series,value\n2024-05-01T12:00:00Z,s,0.5\nnot-a-time,s,1\n", 3, "timestamp"),
        ("timestamp,series,value\n2024-05-01T12:00:00Z,s,high\n", 2, "value"),
        ("timestamp,series,value\n\n2024-05-01T12:00:00Z,s\n", 3, "3 fields"),
        ("timestamp,series,value\n2024-05-01T12:00:00Z,,1\n", 2, "series"),
    ],
)
async def test_a_malformed_row_is_file_invalid_naming_file_and_line(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    """A broken file is a broken source: file_invalid, down, and the message says where."""
    path = write(tmp_path / "bad.csv", text)
    result = await FileSource("csv", path).read("s", T0, T0, MINUTE)
    assert result.error_reason == "file_invalid"
    assert not result.source_up
    assert result.error is not None
    assert f"{path} line {line}:" in result.error
    assert fragment in result.error
    assert "\n" not in result.error


async def test_non_utf8_file_is_file_invalid(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are reported, not a crash."""
    path = tmp_path / "latin.csv"
    path.write_bytes(b"timestamp,series,value\n2024-05-01T12:00:00Z,caf\xe9,1\n")
    result = await FileSource("csv", path).read("s", T0, T0, MINUTE)
    assert result.error_reason == "file_invalid"


async def test_a_bad_byte_deep_in_a_large_file_is_named_before_any_bad_row(
    tmp_path: Path,
) -> None:
    """The file is read line by line, but the error is what reading it whole said: the
    offset of the first byte that is not UTF-8 in the whole file (not within a chunk), and
    it wins over a malformed row that comes before it."""
    head = "timestamp,series,value\n1714564800,s,1\n1714564800,s,oops\n"
    rows = "".join(f"{1714564800 + i},s,{i}\n" for i in range(2000))
    data = (head + rows).encode() + b"1714564800,caf\xe9,1\n"
    path = tmp_path / "large.csv"
    path.write_bytes(data)
    result = await FileSource("csv", path).read("s", T0, T0, MINUTE)
    assert result.error == f"file source 'csv': {path} is not UTF-8 text (byte {len(data) - 4})"
    assert result.error_reason == "file_invalid"


async def test_rows_may_come_in_any_order_and_files_with_crlf_or_a_bom_read_the_same(
    tmp_path: Path,
) -> None:
    """Rows out of time order are sorted, a repeated instant keeps the later row, and Windows
    line ends or a byte order mark change nothing."""
    text = (
        "timestamp,series,value\n"
        "2024-05-01T12:02:00Z,s,3\n"
        "2024-05-01T12:00:00Z,s,1\n"
        "2024-05-01T12:02:00Z,s,4\n"
        "2024-05-01T12:01:00Z,s,2\n"
    )
    for name, raw in [
        ("plain.csv", text.encode()),
        ("crlf.csv", text.replace("\n", "\r\n").encode()),
        ("bom.csv", b"\xef\xbb\xbf" + text.encode()),
    ]:
        path = tmp_path / name
        path.write_bytes(raw)
        result = await FileSource("csv", path).read("s", T0, T0 + 2 * MINUTE, MINUTE)
        assert result.error is None, name
        assert [(s.at, s.value) for s in result.samples] == [
            (T0, 1.0),
            (T0 + MINUTE, 2.0),
            (T0 + 2 * MINUTE, 4.0),
        ], name


async def test_series_sampled_at_the_same_instants_share_them(tmp_path: Path) -> None:
    """10,000 series sampled together hold one tuple of instants between them, not one each
    (the parsed file stays small beside the daemon's other memory)."""
    rows = "".join(f"{1714564800 + 60 * t},s{i},{t}\n" for t in range(3) for i in range(3))
    path = write(tmp_path / "m.csv", "timestamp,series,value\n" + rows + "1714564800,odd,1\n")
    source = FileSource("csv", path)
    for name in ("s0", "s1", "s2"):
        result = await source.read(name, T0, T0 + 2 * MINUTE, MINUTE)
        assert [s.value for s in result.samples] == [0.0, 1.0, 2.0]
    parsed = source._load()
    assert isinstance(parsed, dict)
    assert parsed["s0"].times is parsed["s1"].times is parsed["s2"].times
    assert parsed["odd"].times == (T0,)


async def test_nan_and_inf_are_dropped_and_only_nan_is_non_finite(tmp_path: Path) -> None:
    """NaN/Inf rows are skipped; when nothing finite remains the read says so (source up)."""
    path = write(
        tmp_path / "m.csv",
        "timestamp,series,value\n"
        "2024-05-01T12:00:00Z,mixed,NaN\n"
        "2024-05-01T12:01:00Z,mixed,0.5\n"
        "2024-05-01T12:00:00Z,broken,+Inf\n"
        "2024-05-01T12:01:00Z,broken,nan\n",
    )
    source = FileSource("csv", path)
    mixed = await source.read("mixed", T0, T0 + MINUTE, MINUTE)
    assert [s.value for s in mixed.samples] == [0.5]
    broken = await source.read("broken", T0, T0 + MINUTE, MINUTE)
    assert broken.samples == ()
    assert broken.error_reason == "non_finite"
    assert broken.error is not None
    assert "only NaN/Inf" in broken.error
    assert broken.source_up


async def test_file_is_cached_until_its_mtime_or_size_changes(tmp_path: Path) -> None:
    """Same mtime and size: the cached parse is used (a same-size rewrite with the old mtime
    is not seen); a new mtime makes the next read parse the file again."""
    path = write(tmp_path / "m.csv", "timestamp,series,value\n2024-05-01T12:00:00Z,s,1\n")
    source = FileSource("csv", path)
    assert [s.value for s in (await source.read("s", T0, T0, MINUTE)).samples] == [1.0]

    before = path.stat()
    write(path, "timestamp,series,value\n2024-05-01T12:00:00Z,s,2\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert [s.value for s in (await source.read("s", T0, T0, MINUTE)).samples] == [1.0]

    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert [s.value for s in (await source.read("s", T0, T0, MINUTE)).samples] == [2.0]


async def test_file_is_read_again_when_its_size_changes(tmp_path: Path) -> None:
    """Appending rows changes the size, so new samples show up on the next read."""
    path = write(tmp_path / "m.csv", "timestamp,series,value\n2024-05-01T12:00:00Z,s,1\n")
    source = FileSource("csv", path)
    before = path.stat()
    assert len((await source.read("s", T0, T0 + MINUTE, MINUTE)).samples) == 1
    with path.open("a", encoding="utf-8") as handle:
        handle.write("2024-05-01T12:01:00Z,s,2\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    result = await source.read("s", T0, T0 + MINUTE, MINUTE)
    assert [s.value for s in result.samples] == [1.0, 2.0]


async def test_a_fixed_file_recovers_after_an_error(tmp_path: Path) -> None:
    """Errors are not sticky: once the file is valid again, reads succeed."""
    path = tmp_path / "m.csv"
    source = FileSource("csv", path)
    assert (await source.read("s", T0, T0, MINUTE)).error_reason == "file_missing"
    write(path, "timestamp,series,value\n2024-05-01T12:00:00Z,s,1\n")
    result = await source.read("s", T0, T0, MINUTE)
    assert result.error is None
    assert [s.value for s in result.samples] == [1.0]


async def test_a_later_row_for_the_same_instant_replaces_the_earlier(tmp_path: Path) -> None:
    """Duplicate timestamps of a series keep one sample: the last one written."""
    path = write(
        tmp_path / "m.csv",
        "timestamp,series,value\n2024-05-01T12:00:00Z,s,1\n1714564800,s,2\n",
    )
    result = await FileSource("csv", path).read("s", T0, T0 + MINUTE, MINUTE)
    assert [s.value for s in result.samples] == [2.0]


async def test_concurrent_reads_of_a_new_file_parse_it_once(
    csv_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cycle reads every signal of a file source at once: the reads wait for the first one's
    parse instead of each parsing the file in its own thread (with 10,000 signals that held
    several copies of a large file at the memory peak)."""
    source = FileSource("csv", csv_file)
    parses = 0
    parse = source._parse

    def slow_parse(lines: Iterable[str]) -> object:
        nonlocal parses
        parses += 1
        time.sleep(0.05)  # a large file: long enough for the other reads to arrive meanwhile
        return parse(lines)

    monkeypatch.setattr(source, "_parse", slow_parse)
    results = await asyncio.gather(
        *(source.read("adoption", T0, T0 + 2 * MINUTE, MINUTE) for _ in range(20))
    )
    assert parses == 1
    assert all(len(result.samples) == 3 for result in results)
