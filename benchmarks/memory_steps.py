"""Where the daemon's resident memory goes, step by step, in one fresh process: the imports,
loading the config, the first evaluation cycle (read and judge). Run by
``benchmarks.bench_cost memory`` on the config it writes; imports nothing at module level
beyond the standard library, so the first step measures the daemon's own imports.

    .venv/bin/python -m benchmarks.memory_steps CONFIG [--tracemalloc]

Prints one ``step RSS_MB`` line per step (VmRSS after ``gc.collect()``); with
``--tracemalloc``, also the traced peak and what stays traced after loading the config
(tracing slows loading about 3x and adds its own memory to the RSS figures).
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path


def rss_mb() -> float:
    """This process's resident set (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def steps(config_path: Path, *, trace: bool) -> list[tuple[str, float]]:
    """VmRSS after each step of a daemon's start, as (step, MB)."""
    measured = [("python", rss_mb())]
    import driftowner.cli
    import driftowner.daemon  # noqa: F401 - the imports `driftowner run` makes

    gc.collect()
    measured.append(("imports", rss_mb()))
    if trace:
        import tracemalloc

        tracemalloc.start()
    from driftowner.configload import load_config

    config = load_config(config_path)
    gc.collect()
    measured.append(("config loaded", rss_mb()))
    if trace:
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        measured.append(("  traced: still referenced", current / 2**20))
        measured.append(("  traced: peak while loading", peak / 2**20))
    measured.append(("first cycle", _first_cycle(config)))
    return measured


def _first_cycle(config: object) -> float:
    import asyncio

    from driftowner import cycle, poll
    from driftowner.clock import utcnow
    from driftowner.config import Config
    from driftowner.detect.bank import Bank
    from driftowner.sources import build_source

    assert isinstance(config, Config)
    sources = {
        name: build_source(name, spec, clock=utcnow) for name, spec in config.sources.items()
    }
    bank = Bank()
    now = utcnow()
    results, _ = asyncio.run(poll.read(config, sources, now, bank))
    findings = cycle.judge(config, results, bank, now)
    del results
    gc.collect()
    assert sum(len(signals) for signals in findings.values()) == len(config.systems)
    return rss_mb()


if __name__ == "__main__":
    for step, mb in steps(Path(sys.argv[1]), trace="--tracemalloc" in sys.argv[2:]):
        print(f"{step} {mb:.1f}")
