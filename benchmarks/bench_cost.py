"""What the change-point charts cost at scale: one evaluation cycle over 10,000 series against a
real Prometheus beside the same PromQL sent alone, and the daemon's resident memory.

    .venv/bin/python -m benchmarks.bench_cost cycle [SYSTEMS]     # default 2000 (x 5 templates)
    .venv/bin/python -m benchmarks.bench_cost memory [SYSTEMS...] [--tracemalloc]  # 10000

``cycle``: SYSTEMS models' five signals (accuracy, latency, adoption, null rate, mean score) are
loaded into a real Prometheus (Debian's, via promtool: 195 minutes at one sample a minute, white
noise). The config has five signal templates with no ``detect`` (the default detector, a chart
per system and signal) split by ``model``. The first cycle warm-starts every chart from the
first three hours (enough for every chart to finish its warm-up: the default chart's warm-up on
white noise takes ~58 samples, some windows over 120); the steady cycle (read, judge every
chart, and the daemon's reconcile into SQLite) is then measured 15 times, a minute apart in the
data (each reads the next sample), each followed at once (same run, same server, same load) by
the baseline: exactly the requests that cycle sent (recorded around the source's own aiohttp
sender) sent with a bare ``httpx.AsyncClient``, concurrently, each body read (and, for "+ JSON
decoding", decoded).
Best and median of each are printed; the ratio cycle / bare is the number to compare across
machines.

``memory``: the real daemon (``driftowner run``) over SYSTEMS systems of one signal each (the
default detector) on a file source holding 50 seconds of history, evaluated every second;
its resident set (VmRSS) after 3 evaluations. Then the same start step by step in a fresh
process (``benchmarks/memory_steps.py``): the imports, the config load, the first cycle; with
``--tracemalloc`` also the config load's traced peak and what it leaves referenced.
"""

from __future__ import annotations

import asyncio
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from tests.integration.prometheus_server import Family, openmetrics, running_prometheus
from tests.unit.factories import templated_document

from driftowner import poll, runner
from driftowner.channels.http import AiohttpSender, Answer
from driftowner.config import Config
from driftowner.cycle import Pager, Recorded
from driftowner.detect.bank import Bank
from driftowner.ids import new_incident_id, new_notification_id
from driftowner.metrics import Metrics
from driftowner.sources.prometheus import PrometheusSource
from driftowner.store import SqlStore

SIGNALS = ("accuracy", "latency", "adoption", "null_rate", "mean_score")
REPEATS = 15
"""Steady cycles measured, each followed at once by a bare round of the requests it sent: the
best of each is kept, and the median (the bare queries take tens of milliseconds on a shared
machine, so one slow round says little; interleaved, both see the same load)."""
MINUTES = 180 + REPEATS
"""History: three hours before the warm start, then a minute for each steady cycle."""


def history(models: int, now: float) -> str:
    """MINUTES of white noise per model and signal, one sample a minute."""
    rng = random.Random(7)
    moments = [now - 60 * (MINUTES - i) for i in range(MINUTES)]
    return openmetrics(
        *(
            Family(
                f"model_{signal}",
                "gauge",
                [
                    ({"model": f"m-{m}"}, t, round(0.5 + 0.05 * rng.gauss(0, 1), 5))
                    for m in range(models)
                    for t in moments
                ],
            )
            for signal in SIGNALS
        )
    )


def config(models: int, url: str, db: Path) -> Config:
    document, system = templated_document(url)
    document["evaluation"] = {"interval": "1m"}
    document["storage"] = {"url": f"sqlite:///{db}"}
    document["signal_templates"] = {
        signal: {
            "layer": "model",
            "source": "prom",
            "system_label": "model",
            "bad": "both",
            "query": f"avg by (model) (model_{signal})",
        }
        for signal in SIGNALS
    }
    system["signals"] = {signal: {"template": signal} for signal in SIGNALS}
    for m in range(models):
        document["systems"][f"m-{m}"] = system
    return Config.model_validate(document)


class Recording:
    """The source's own network (its aiohttp sender), remembering every request URL sent
    through it."""

    def __init__(self) -> None:
        self.urls: list[httpx.URL] = []
        self.inner: AiohttpSender | None = None

    def open(self, timeout: float) -> Recording:
        """The source's getter: the sender the source would make, wrapped."""
        self.inner = AiohttpSender(timeout)
        return self

    async def get(self, url: httpx.URL, headers: Mapping[str, str]) -> Answer:
        assert self.inner is not None
        self.urls.append(url)
        return await self.inner.get(url, headers)

    async def aclose(self) -> None:
        if self.inner is not None:
            await self.inner.aclose()


async def measure_cycle(models: int, url: str, at: datetime, db: Path) -> dict[str, float]:
    cfg = config(models, url, db)
    transport = Recording()
    source = PrometheusSource("prom", url, timeout=timedelta(seconds=60), getter=transport.open)
    store = SqlStore(cfg.storage.url)
    pager = Pager(new_notification_id, lambda _i, _a, _r=None: None)
    store.open()
    bank = Bank()
    sources: dict[str, Any] = {"prom": source}
    try:
        started = time.perf_counter()
        findings, stats = await poll.poll(cfg, sources, at, bank)
        first = time.perf_counter() - started
        assert stats.errors == {}, stats.errors
        learned = sum(1 for w in bank.watches.values() if w.state.reference is not None)
        polls: list[float] = []
        cycles: list[float] = []
        bare: list[float] = []
        decoded: list[float] = []
        metrics = Metrics(store, lambda: at)
        recorded = Recorded()
        metrics.record_findings(findings.moved(recorded))
        heap = runner.Heap()
        heap.settle(cfg)  # as the daemon does after a config's first evaluation
        async with httpx.AsyncClient(timeout=60) as client:
            for run in range(REPEATS):
                now = at + timedelta(minutes=run + 1)  # each cycle reads the next sample
                transport.urls.clear()
                started = time.perf_counter()
                # As the daemon's evaluation does: accepts and open incidents read, poll and
                # judge, the statuses that moved recorded, then reconcile into the store.
                bank.apply_accepts(store.accepted_after(bank.accept_cursor))
                bank.note_open(store.incidents(unresolved=True))
                findings, stats = await poll.poll(cfg, sources, now, bank)
                metrics.record_findings(findings.moved(recorded))
                polled = time.perf_counter()
                runner.evaluate(store, cfg, findings, now, new_incident_id, pager)
                heap.settle(cfg)
                polls.append(polled - started)
                cycles.append(time.perf_counter() - started)
                # At once, under the same load: the very requests this cycle sent, bare.
                sent = list(transport.urls)
                started = time.perf_counter()
                answers = await asyncio.gather(*(client.get(u) for u in sent))
                bare.append(time.perf_counter() - started)
                assert all(a.status_code == 200 and a.content for a in answers)
                for answer in answers:
                    answer.json()
                decoded.append(time.perf_counter() - started)
        statuses = [f.status for signals in findings.values() for f in signals.values()]
    finally:
        await source.aclose()
        store.close()
    return {
        "series": float(len(statuses)),
        "charts learned": float(learned),
        "ok": float(statuses.count("ok")),
        "queries": float(len(sent)),
        "first cycle (warm start)": first,
        "poll + judge": min(polls),
        "cycle (poll + judge + reconcile)": min(cycles),
        "bare queries": min(bare),
        "bare queries + JSON decoding": min(decoded),
        "cycle, median": statistics.median(cycles),
        "bare queries, median": statistics.median(bare),
        "bare queries + JSON decoding, median": statistics.median(decoded),
    }


def cycle_main(models: int) -> None:
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        text = history(models, now)
        with running_prometheus(Path(tmp), text) as url:
            del text
            # The warm start REPEATS minutes before the history ends: each steady cycle then
            # reads a fresh sample, as the daemon does at a 1-minute interval (cycles a second
            # apart read the same newest sample again and again, which the charts, rightly,
            # come to see as a shift).
            at = datetime.fromtimestamp(now - 30 - 60 * REPEATS, UTC)
            result = asyncio.run(measure_cycle(models, url, at, Path(tmp) / "bench.db"))
    for name, value in result.items():
        print(f"| {name} | {value:.3f} |" if value % 1 else f"| {name} | {value:.0f} |")
    print(f"| poll + judge / bare | {result['poll + judge'] / result['bare queries']:.2f} |")
    ratio = result["cycle (poll + judge + reconcile)"] / result["bare queries"]
    print(f"| cycle / bare | {ratio:.2f} |")
    decoding = result["poll + judge"] / result["bare queries + JSON decoding"]
    print(f"| poll + judge / (bare + JSON decoding) | {decoding:.2f} |")
    whole = result["cycle (poll + judge + reconcile)"] / result["bare queries + JSON decoding"]
    print(f"| cycle / (bare + JSON decoding) | {whole:.2f} |")
    median = result["cycle, median"] / result["bare queries, median"]
    print(f"| cycle / bare, medians | {median:.2f} |")
    median = result["cycle, median"] / result["bare queries + JSON decoding, median"]
    print(f"| cycle / (bare + JSON decoding), medians | {median:.2f} |")


def memory_fixture(root: Path, systems: int, port: int) -> Path:
    """The memory benchmark's config in ``root`` (and the CSV history it reads): SYSTEMS
    systems of one default-chart signal on a file source, listening on ``port``."""
    now = datetime.now(UTC)
    csv = root / "history.csv"
    with csv.open("w") as out:
        out.write("timestamp,series,value\n")
        rng = random.Random(3)
        for second in range(-40, 10):
            at = int((now + timedelta(seconds=second)).timestamp())
            for s in range(systems):
                out.write(f"{at},s{s},{0.9 + 0.01 * rng.gauss(0, 1):.5f}\n")
    signal = {"layer": "model", "source": "f", "bad": "down"}
    document = {
        "server": {"listen": f"127.0.0.1:{port}"},
        "storage": {"url": f"sqlite:///{root / 'store.db'}"},
        "evaluation": {"interval": "1s"},
        "sources": {"f": {"type": "file", "path": str(csv)}},
        "owners": {"alice": {"name": "Alice", "email": "alice@example.com"}},
        "channels": {"console": {"type": "log"}},
        "escalation_chains": {"std": {"steps": [{"notify": "owner", "via": ["console"]}]}},
        "systems": {
            f"system-{i}": {
                "owner": "alice",
                "escalation": "std",
                "signals": {"accuracy": {**signal, "query": f"s{i}"}},
            }
            for i in range(systems)
        },
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def memory_main(systems: int, *, trace: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = memory_fixture(root, systems, port)
        with (root / "daemon.log").open("w") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "driftowner.cli", "run", "--config", config.name],
                cwd=root,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 600
            while _evaluations(port) < 3:
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise SystemExit(f"the daemon did not evaluate 3 times: see {root}")
                time.sleep(1)
            rss = _rss_mb(daemon.pid)
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
        # The same start, step by step, in a fresh process (see benchmarks/memory_steps.py).
        command = [sys.executable, "-m", "benchmarks.memory_steps", str(config)]
        output = subprocess.run(
            [*command, "--tracemalloc"] if trace else command,
            check=True,
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent.parent,
        ).stdout
        measured = dict(line.rsplit(" ", 1) for line in output.splitlines())
        mb = {step: float(value) for step, value in measured.items()}
        row = [
            f"{systems}",
            f"{rss:.0f}",
            f"{mb['imports']:.0f}",
            f"+{mb['config loaded'] - mb['imports']:.0f}",
            f"+{mb['first cycle'] - mb['config loaded']:.0f}",
        ]
        if trace:
            row += [
                f"{mb['  traced: peak while loading']:.0f}",
                f"{mb['  traced: still referenced']:.0f}",
            ]
        print(f"| {' | '.join(row)} |")


def _evaluations(port: int) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except httpx.HTTPError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("driftowner_evaluation_duration_seconds_count"):
            return float(line.split()[-1])
    return 0.0


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "cycle"
    if what == "cycle":
        cycle_main(int(sys.argv[2]) if len(sys.argv) > 2 else 2000)
    elif what == "memory":
        trace = "--tracemalloc" in sys.argv[2:]
        header = "| systems | daemon RSS after 3 evaluations | imports | config | first cycle |"
        if trace:
            header += " config: traced peak | traced after |"
        print(header + "\n|" + "---:|" * header.count(" | ") + "---:|")
        for size in [arg for arg in sys.argv[2:] if arg != "--tracemalloc"] or ["10000"]:
            memory_main(int(size), trace=trace)
    else:
        raise SystemExit(f"unknown benchmark {what!r}: cycle or memory")
