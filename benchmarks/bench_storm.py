"""The storm: one broken upstream feature pipeline makes 2,000 systems of 50 owners breach at
once. How many messages reach the owners, and how long until every owner has heard of all of
theirs, with grouping on (the default) and, in the same run, off (``grouping: {wait: 0s}``)
as the baseline.

Each run starts the daemon as a process (``driftowner run``) over a fresh SQLite store and a
config of 2,000 systems that all read one series of a CSV history (broken from before the
daemon starts), each ``depends_on: [features-v3]`` (healthy), paging through one ``webhook``
channel to Debian's nginx-light on loopback (``return 200``, one access-log line per
request with its arrival time). A run ends when every outbox row is delivered.

Reported per run: messages (nginx access-log lines), messages per owner (average), and the
time from the first incident opened to the last message's arrival ("every owner has heard of
all of theirs": each row is marked delivered only after its 200). Absolute numbers are for
orientation only (a shared 2-core machine).

    .venv/bin/python benchmarks/bench_storm.py [--systems N] [--owners N]
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.test_storm import storm_config, write_history  # noqa: E402

from benchmarks.bench_delivery import free_port, start_nginx  # noqa: E402

TIMEOUT = 600.0


@dataclass
class Result:
    mode: str
    messages: int
    rows: int
    seconds: float
    """From the first incident opened to the last message's arrival."""


def _delivered(db: Path) -> tuple[int, int, float | None]:
    """(outbox rows, delivered rows, earliest incident opened, Unix seconds) of a store."""
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            rows, delivered = connection.execute(
                "SELECT count(*), count(delivered_at) FROM outbox"
            ).fetchone()
            (opened,) = connection.execute("SELECT min(opened_at) FROM incidents").fetchone()
    except sqlite3.Error:
        return 0, 0, None
    return int(rows), int(delivered), opened


def run(mode: str, systems: int, owners: int, tmp: Path) -> Result:
    """One storm with grouping ``on`` or ``off``; returns what the receiver saw."""
    nginx = start_nginx(tmp)
    csv, db = tmp / "history.csv", tmp / "store.db"
    # Broken since 3 s before now: the first evaluation finds every system breaching.
    write_history(csv, datetime.now(UTC), broken_from=-3)
    extra = "grouping: {wait: 0s}" if mode == "off" else ""
    config = tmp / "driftowner.yaml"
    url = f"http://127.0.0.1:{nginx.port}/hook"
    config.write_text(
        storm_config(free_port(), db, csv, url, systems=systems, owners=owners, extra=extra)
    )
    with (tmp / "daemon.log").open("ab") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "driftowner.cli", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            rows, delivered, opened = _delivered(db)
            if rows >= systems and delivered == rows:
                break
            time.sleep(0.5)
        else:
            raise SystemExit(f"{mode}: not every page was delivered within {TIMEOUT:g}s")
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        nginx.process.terminate()
        nginx.process.wait(timeout=10)
    arrivals = nginx.arrivals("/hook")
    assert opened is not None
    return Result(mode, len(arrivals), rows, max(arrivals) - float(opened))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", type=int, default=2000)
    parser.add_argument("--owners", type=int, default=50)
    args = parser.parse_args()
    results = []
    for mode in ("on", "off"):
        with tempfile.TemporaryDirectory(prefix=f"storm-{mode}-") as tmp:
            results.append(run(mode, args.systems, args.owners, Path(tmp)))
    print(f"storm: {args.systems} systems, {args.owners} owners, webhook to nginx on loopback")
    print("| grouping | pages (rows) | messages | messages per owner | all heard after |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.mode} | {r.rows} | {r.messages} | {r.messages / args.owners:.1f} "
            f"| {r.seconds:.1f} s |"
        )


if __name__ == "__main__":
    main()
