"""One query per signal template versus one query per system, against a real Prometheus.

N models' accuracy history is loaded into a real Prometheus (Debian's, via promtool). The
baseline, in the same run and against the same server, polls N systems whose signals each
query their own model (``avg(model_accuracy{model="m-7"})``); the template variant polls the
same N systems through one ``avg by (model) (model_accuracy)`` template. The ratio template /
per-system is what to compare across machines.

    .venv/bin/python -m benchmarks.bench_templates [N ...]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.integration.prometheus_server import Family, openmetrics, running_prometheus
from tests.unit.factories import ACCURACY_TEMPLATE, templated_document

from driftowner.config import Config
from driftowner.poll import poll
from driftowner.sources import build_source


def history(models: int, now: float) -> str:
    moments = [now - 600 + 30 * i for i in range(20)]
    return openmetrics(
        Family(
            "model_accuracy",
            "gauge",
            [({"model": f"m-{m}"}, t, 0.95) for m in range(models) for t in moments],
        )
    )


def config(models: int, url: str, *, templated: bool) -> Config:
    document, system = templated_document(url)
    for m in range(models):
        name = f"m-{m}"
        # The baseline: the template's fields, but one query per model.
        plain = {key: value for key, value in ACCURACY_TEMPLATE.items() if key != "system_label"}
        plain["query"] = f'avg(model_accuracy{{model="{name}"}})'
        signal = {"template": "accuracy"} if templated else plain
        document["systems"][name] = {**system, "signals": {"accuracy": signal}}
    return Config.model_validate(document)


async def best_poll(cfg: Config, at: datetime, runs: int = 3) -> float:
    source = build_source("prom", cfg.sources["prom"], clock=lambda: at)
    times = []
    try:
        for _ in range(runs):
            started = time.perf_counter()
            findings, stats = await poll(cfg, {"prom": source}, at)
            times.append(time.perf_counter() - started)
            assert stats.errors == {}, stats.errors
            assert all(f["accuracy"].status == "ok" for f in findings.values())
    finally:
        await source.aclose()
    return min(times)


def main(sizes: list[int]) -> None:
    print("| systems | per-system queries (s) | one template query (s) | template / per-system |")
    print("|---:|---:|---:|---:|")
    for models in sizes:
        now = time.time()
        with (
            tempfile.TemporaryDirectory() as tmp,
            running_prometheus(Path(tmp), history(models, now)) as url,
        ):
            at = datetime.fromtimestamp(now - 30, UTC)
            plain = asyncio.run(best_poll(config(models, url, templated=False), at))
            templated = asyncio.run(best_poll(config(models, url, templated=True), at))
        print(f"| {models} | {plain:.3f} | {templated:.3f} | {templated / plain:.3f} |")


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [100, 1000, 3000])
