"""How one evaluation cycle (poll + judge + reconcile) scales with the number of systems.

Each system is a copy of the demo's fraud-scoring (three signals on the built-in simulated
source, one threshold pair and a 5-minute baseline). The baseline, measured in the same run,
is the per-system cost of a 10-system cycle; the ratio per-system cost at N / per-system
cost at 10 says whether the cycle stays linear (1.0) as systems are added.

    .venv/bin/python benchmarks/bench_cycle.py [N ...]
"""

from __future__ import annotations

import asyncio
import copy
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from driftowner import cycle, poll, runner
from driftowner.config import Config
from driftowner.detect.bank import Bank
from driftowner.ids import new_incident_id, new_notification_id
from driftowner.sources import build_source
from driftowner.store import SqlStore

ROOT = Path(__file__).resolve().parents[1]


def config_with(systems: int, store_url: str) -> Config:
    document: dict[str, Any] = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    template = document["systems"].pop("fraud-scoring")
    for index in range(systems):
        document["systems"][f"system-{index}"] = copy.deepcopy(template)
    document["storage"] = {"url": store_url}
    return Config.model_validate(document)


async def one_cycle(systems: int) -> tuple[float, float]:
    """(poll + detect, reconcile) seconds of one cycle over a fresh store, best of 3."""
    with tempfile.TemporaryDirectory() as tmp:
        config = config_with(systems, f"sqlite:///{tmp}/bench.db")
        store = SqlStore(config.storage.url)
        store.open()
        now = datetime.now(UTC)
        sources = {n: build_source(n, s, clock=lambda: now) for n, s in config.sources.items()}
        polls, records = [], []
        bank = Bank()
        pager = cycle.Pager(new_notification_id, lambda _i, _a, _r=None: None)
        for _ in range(3):
            started = time.perf_counter()
            results, _ = await poll.read(config, sources, now, bank)
            findings = cycle.judge(config, results, bank, now)
            polled = time.perf_counter()
            runner.evaluate(store, config, findings, now, new_incident_id, pager)
            polls.append(polled - started)
            records.append(time.perf_counter() - polled)
        store.close()
    return min(polls), min(records)


def main(sizes: list[int]) -> None:
    base_poll, base_record = asyncio.run(one_cycle(10))
    base = (base_poll + base_record) / 10
    print("| systems | poll + detect (s) | reconcile + store (s) | per system / per system at 10 |")
    print("|---:|---:|---:|---:|")
    for systems in sizes:
        poll, record = asyncio.run(one_cycle(systems))
        ratio = (poll + record) / systems / base
        print(f"| {systems} | {poll:.3f} | {record:.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [100, 1000, 3000])
