"""How /metrics scales with stored incidents.

The scrape derives every incident metric from the store. It reads plain columns
(``Store.timings``); the baseline, measured in the same run on the same store, is decoding
every incident whole (``Store.incidents``), which is what the scrape did before. The ratio
scrape / baseline is what to compare across machines; seconds are printed for orientation.

    .venv/bin/python benchmarks/bench_scrape.py [N ...]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import generate_latest

from driftowner.configload import load_config
from driftowner.incidents import snapshot_chain
from driftowner.metrics import Metrics
from driftowner.model import Incident
from driftowner.store import Changes, SqlStore, Store

ROOT = Path(__file__).resolve().parents[1]


def fill(store: Store, count: int, now: datetime) -> None:
    """``count`` incidents over 500 systems and 50 owners, one opened an hour, mostly resolved
    after 50 minutes and acknowledged after 5."""
    config = load_config(ROOT / "config" / "demo.yaml")
    chain = snapshot_chain(config, config.systems["fraud-scoring"])
    batch = []
    for i in range(count):
        opened = now - timedelta(hours=i)
        done = i > 100
        batch.append(
            Incident(
                id=f"inc-{i}",
                system=f"system-{i % 500}",
                owner=f"owner-{i % 50}",
                kind="drift",
                rule=f"drift:signal-{i // 500}",
                layers=("model",),
                signals=("accuracy",),
                state="resolved" if done else "open",
                opened_at=opened,
                summary="accuracy falling",
                chain=chain,
                first_acknowledged_at=opened + timedelta(minutes=5),
                resolved_at=opened + timedelta(minutes=50) if done else None,
                ack_within=timedelta(minutes=30),
                resolve_within=timedelta(hours=1),
            )
        )
    store.apply(Changes(opened=batch))


def best_of(runs: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(count: int, now: datetime) -> tuple[float, float]:
    """(scrape, baseline) seconds over a fresh store of ``count`` incidents."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SqlStore(f"sqlite:///{tmp}/bench.db")
        store.open()
        fill(store, count, now)
        metrics = Metrics(store, lambda: now)
        scrape = best_of(5, lambda: generate_latest(metrics.registry))
        baseline = best_of(5, store.incidents)
        store.close()
    return scrape, baseline


def main(sizes: list[int]) -> None:
    now = datetime.now(UTC)
    print("| incidents | scrape (s) | baseline: decode all (s) | scrape / baseline |")
    print("|---:|---:|---:|---:|")
    for count in sizes:
        scrape, baseline = measure(count, now)
        print(f"| {count} | {scrape:.3f} | {baseline:.3f} | {scrape / baseline:.2f} |")


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [1000, 10000, 50000])
