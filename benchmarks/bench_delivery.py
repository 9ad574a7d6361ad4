"""Delivery throughput and latency: driftowner's outbox against Debian's Alertmanager, in the
same run, to the same receiver.

Two receivers, each on a loopback port:

- ``nginx``: Debian's nginx-light, ``return 200``, one access-log line per request with its
  arrival time (``$msec``): a receiver that is never the bottleneck.
- ``slow``: a small Python HTTP server in its own process that answers one request at a time,
  20 ms each (a listen backlog of 128).

For each receiver, N pages (default 10,000) fall due at one instant ``t0``:

- driftowner: N notifications committed to a SQLite outbox in one transaction (as an
  escalation writes them), then the delivery loop (:class:`driftowner.outbox.Deliverer`)
  sends them through the ``webhook`` channel, recording each outcome in the store as its
  send finishes (every page durable before and after it is sent). The channel's pace is the
  default (``max_in_flight: 16``, no rate) unless ``--max-in-flight`` says otherwise.
- Alertmanager 0.25 (``prometheus-alertmanager``): N alerts POSTed to ``/api/v2/alerts`` in
  batches of 1,000, a route with ``group_by: ['...']`` (one group, so one webhook, per
  alert), ``group_wait: 0s``, a ``webhook_configs`` receiver.

Reported: throughput (pages per second from ``t0`` to the last arrival), p50/p99 of arrival minus
``t0`` (from "notification created" to "page delivered"), for the slow receiver the requests
that failed (arrived at the receiver but abandoned by the sender, or refused) and the retries,
and the ratio driftowner / Alertmanager. Absolute numbers are for orientation only (a shared
2-core machine); the ratio is the result.

    .venv/bin/python benchmarks/bench_delivery.py [--pages N] [--slow-pages N]
        [--max-in-flight K] [--only nginx|slow|outbox|send|processes|split] [--processes 1,2,3]
        [--senders 1,2] [--rounds 3] [--collector daemon|frozen|python] [--store sqlite|memory]

``--only send`` runs the HTTP path alone: ``--pages`` signed pages through
``WebhookChannel.send`` to nginx, 16 at a time, beside the same bodies from a bare aiohttp
session (the floor), CPU a page of each.

``--only processes`` is a prototype, not the daemon: ``--pages`` pages to nginx delivered by
1, 2, 3 (``--processes``) processes at once, each running :class:`Deliverer` over the same
SQLite outbox (each leasing from it, as instances over one store do), to see whether delivery
in several processes would use this machine's second core. No Alertmanager.

``--only split`` is a prototype, not the daemon: one process owns the SQLite outbox and runs
:class:`Deliverer` and the webhook channel as in the nginx run (every page committed before it
is sent, every outcome committed as it completes), but the channel's POSTs go, as built and
batched per turn of the loop, over a Unix socket to 1, 2 (``--senders``) sender processes
that only POST them with the channels' ``AiohttpSender`` and send back each outcome. Each
round (``--rounds``) runs the single process and each split, the order rotated, each beside
Alertmanager to the same nginx, after measuring the free cores; every run also prints how many
of the machine's cores were idle from ``t0`` to the last outcome.

``--collector daemon|frozen|python`` sets the garbage collector of the runs in this process
(not those of ``--only processes``): as the daemon has it while it delivers (the default),
frozen long-lived state only, or Python's defaults (see :data:`COLLECTORS`).

``--store memory`` runs the nginx and slow runs' driftowner over the in-memory store instead
of SQLite: nothing is durable (no commit, no fsync), the delivery loop, channel and HTTP client
unchanged. Not the daemon's configuration: it measures what durability costs a page, and what
the delivery path does without it.

``--only outbox`` runs neither receiver nor Alertmanager: it measures the outbox's own cost
(lease, send bookkeeping, group commit) with a channel that answers at once, at 2,000 pages,
``--pages`` and twice that, so a cost that grows with the backlog shows.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import multiprocessing
import os
import pickle
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import structlog

from driftowner.channels import Channel, build_channel
from driftowner.config import Config
from driftowner.daemon import collect_garbage_less_often, loop_factory
from driftowner.model import Delivery, Incident, Message, Notification
from driftowner.outbox import Deliverer
from driftowner.runner import Heap
from driftowner.store import Changes, MemoryStore, Settled, SqlStore

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.unit.factories import incident, make_config, message  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- receivers --------------------------------------------------------------------------------

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    log_format arrivals '$msec $uri $status';
    access_log {tmp}/access.log arrivals;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=16384;
        location / {{ return 200 "ok"; }}
    }}
}}
"""


@dataclass
class Nginx:
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    def arrivals(self, path: str) -> list[float]:
        """Arrival times (Unix seconds) of requests to ``path``, in log order."""
        times = []
        for line in self.log.read_text().splitlines():
            at, uri, _status = line.split(" ")
            if uri == path:
                times.append(float(at))
        return times


def start_nginx(tmp: Path) -> Nginx:
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port))
    process = subprocess.Popen(
        ["/usr/sbin/nginx", "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{port}/ready")
    return Nginx(port, tmp / "access.log", process)


def _slow_server(port: int, arrivals: Any, ready: Any) -> None:
    """One request at a time, 20 ms each; records each answered request's arrival time."""

    class Handler(BaseHTTPRequestHandler):
        # One request per connection: a keep-alive client must not hold the only worker; and
        # a connection that sends nothing for 2 s is dropped (Go's client keeps spare
        # connections open, idle, which would otherwise block the one worker for minutes).
        protocol_version = "HTTP/1.0"
        timeout = 2

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            arrived = time.time()
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(0.02)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            arrivals.put((self.path, arrived))

        do_GET = do_POST

    class Server(HTTPServer):
        request_queue_size = 128

        def handle_error(self, request: Any, client_address: Any) -> None:
            """A client that gave up (a broken pipe) is counted by the sender, not here."""

    server = Server(("127.0.0.1", port), Handler)
    ready.set()
    server.serve_forever()


@dataclass
class Slow:
    port: int
    process: multiprocessing.Process
    queue: Any
    seen: list[tuple[str, float]]

    def arrivals(self, path: str) -> list[float]:
        while not self.queue.empty():
            self.seen.append(self.queue.get())
        return [at for p, at in self.seen if p == path]


def start_slow() -> Slow:
    port = free_port()
    queue: Any = multiprocessing.Queue()
    ready = multiprocessing.Event()
    process = multiprocessing.Process(target=_slow_server, args=(port, queue, ready), daemon=True)
    process.start()
    ready.wait(10)
    return Slow(port, process, queue, [])


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status < 500:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- driftowner -------------------------------------------------------------------------------


def driftowner_config(url: str, store_url: str, max_in_flight: int | None) -> Config:
    # group_wait 0s: one request per page, as Alertmanager's group_by ['...'] sends one per
    # alert (grouping would send fewer, larger requests: another benchmark).
    hook: dict[str, Any] = {"type": "webhook", "url": url, "timeout": "10s", "group_wait": "0s"}
    if max_in_flight is not None:
        hook["max_in_flight"] = max_in_flight
    return make_config({"storage": {"url": store_url}, "channels": {"hook": hook}})


def pages(count: int, at: datetime) -> tuple[list[Incident], list[Notification]]:
    """``count`` pages due at ``at``, 50 incidents' worth to 50 owners' webhook address."""
    incidents = [incident(id=f"inc-{i}", system=f"system-{i}") for i in range(50)]
    notes = []
    for index in range(count):
        owner = index % 50
        text: Message = message(f"inc-{owner}")
        notes.append(
            Notification(
                id=f"page-{index:06d}",
                incident_id=f"inc-{owner}",
                channel="hook",
                recipient="alice",
                address=f"owner-{owner}",
                message=text,
                created_at=at,
                next_attempt_at=at,
            )
        )
    return incidents, notes


class Instant:
    """A channel that answers every send at once, in this process (after yielding to the
    loop once, as a send does): what a page costs then is the outbox's own work."""

    name = "hook"

    async def send(self, notification: Notification) -> Delivery:
        await asyncio.sleep(0)
        return Delivery.delivered()

    async def aclose(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class Spent:
    """CPU seconds a run spent: in every thread of the process, in the event loop's thread
    alone (the rest is the store's calls, run in worker threads), and in the garbage
    collector's collections (in whichever thread they ran)."""

    every: float
    loop: float
    collecting: float
    idle: float = float("nan")
    """The machine's cores idle (every process's, not only this one's), on average, from
    ``t0`` to the last outcome."""

    def per_page(self, count: int) -> str:
        """Milliseconds of CPU a page: all of it, and how it splits between the threads."""
        return (
            f"{self.every / count * 1000:.3f} ms CPU a page (the event loop's thread "
            f"{self.loop / count * 1000:.3f}, the store's worker threads "
            f"{(self.every - self.loop) / count * 1000:.3f}; garbage collection "
            f"{self.collecting / count * 1000:.3f})"
        )


class Collections:
    """CPU seconds spent in the garbage collector's collections while it is in effect (a
    ``with`` block), each timed in the thread that ran it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began = 0.0

    def _observe(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._began

    def __enter__(self) -> Collections:
        gc.callbacks.append(self._observe)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self._observe)


COLLECTORS = ("daemon", "frozen", "python")
"""``--collector``: the garbage collector as the daemon has it while it delivers (``daemon``);
with the long-lived state frozen but Python's thresholds (``frozen``: the daemon before young
collections were made rarer); or Python's defaults, nothing frozen (``python``: how this
benchmark ran the delivery loop before 2026-11-30's issue 7 entry)."""
collector = "daemon"
store_kind = "sqlite"
"""``--store``: the store of driftowner's nginx and slow runs (``memory``: nothing durable)."""


def as_in_the_daemon(config: Config) -> None:
    """The garbage collector as the daemon has it while it delivers (as ``--collector``
    says): its long-lived state frozen after the config's first evaluation
    (:class:`driftowner.runner.Heap`), young collections less often once delivery starts."""
    if collector in ("daemon", "frozen"):
        Heap().settle(config)
    if collector == "daemon":
        collect_garbage_less_often()


async def run_driftowner(
    url: str,
    count: int,
    tmp: Path,
    max_in_flight: int | None,
    channels: dict[str, Channel] | None = None,
) -> tuple[float, float, int, int, Spent]:
    """(t0, the time the last outcome was recorded, delivered, attempts, the CPU spent from
    the first lease to the last outcome) for ``count`` pages through the outbox to ``url``
    (through ``channels`` instead, when given)."""
    config = driftowner_config(url, f"sqlite:///{tmp}/outbox.db", max_in_flight)
    store: SqlStore | MemoryStore = (
        MemoryStore() if store_kind == "memory" else SqlStore(config.storage.url)
    )
    store.open()
    as_in_the_daemon(config)
    now = datetime.now(UTC)
    incidents, notes = pages(count, now)
    store.apply(Changes(opened=incidents))
    ticks = machine_ticks()
    if channels is None:
        channels = {name: build_channel(name, spec) for name, spec in config.channels.items()}
    store.apply(Changes(notifications=notes))  # committed: durable before anything is sent
    t0 = now.timestamp()
    # This coroutine runs on the event loop's thread: its thread_time is that thread's CPU.
    cpu, loop_cpu = time.process_time(), time.thread_time()
    deliverer = Deliverer(store, channels, config, lambda: datetime.now(UTC))
    with Collections() as collections:
        while store.outbox_pending():
            await deliverer.drain()
            due = store.next_due()
            if due is not None and store.outbox_pending():
                await asyncio.sleep(max((due - datetime.now(UTC)).total_seconds(), 0.0))
    recorded = time.time()
    spent = Spent(
        time.process_time() - cpu,
        time.thread_time() - loop_cpu,
        collections.seconds,
        cores_idle(ticks, machine_ticks()),
    )
    rows = [n for i in range(50) for n in store.notifications(f"inc-{i}")]
    delivered = sum(1 for row in rows if row.delivered_at is not None)
    attempts = sum(row.attempts for row in rows)
    for channel in channels.values():
        await channel.aclose()
    store.close()
    return t0, recorded, delivered, attempts, spent


class TimedStore(SqlStore):
    """The SQLite store, timing its claims and group commits (wall time, in the worker
    threads that make them): with several processes over one file, how long each waits for
    the one write lock shows there."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.claims: list[float] = []
        self.commits: list[float] = []

    def lease_due(self, now: datetime, lease: timedelta, limit: int = 100) -> list[Notification]:
        began = time.perf_counter()
        try:
            return super().lease_due(now, lease, limit)
        finally:
            self.claims.append(time.perf_counter() - began)

    def settle(self, outcomes: Sequence[Settled]) -> None:
        began = time.perf_counter()
        try:
            super().settle(outcomes)
        finally:
            self.commits.append(time.perf_counter() - began)


@dataclass(frozen=True)
class ProcessRun:
    """What one delivery process of the prototype did."""

    delivered: int
    cpu: float
    claims: list[float]
    commits: list[float]


def _delivery_process(
    url: str, store_url: str, max_in_flight: int | None, start: Any, results: Any
) -> None:
    """One delivery process of the prototype (:func:`run_processes`): the existing delivery
    loop over the shared SQLite outbox, draining until no page is owed; puts a
    :class:`ProcessRun` (CPU from the start to its last drain) on ``results``."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    config = driftowner_config(url, store_url, max_in_flight)

    async def drain_shared() -> ProcessRun:
        store = TimedStore(store_url)
        store.open()
        channels = {name: build_channel(name, spec) for name, spec in config.channels.items()}
        deliverer = Deliverer(store, channels, config, lambda: datetime.now(UTC))
        as_in_the_daemon(config)
        await asyncio.to_thread(start.wait)
        cpu = time.process_time()
        # Another process's leased pages are owed but not due here: look again shortly.
        while store.outbox_pending():
            if not await deliverer.drain():
                await asyncio.sleep(0.005)
        cpu = time.process_time() - cpu
        for channel in channels.values():
            await channel.aclose()
        store.close()
        return ProcessRun(deliverer.delivered, cpu, store.claims, store.commits)

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        results.put(runner.run(drain_shared()))


def run_processes(
    url: str, count: int, tmp: Path, max_in_flight: int | None, processes: int
) -> tuple[float, float, list[ProcessRun]]:
    """The prototype of delivery in several processes: ``processes`` processes, started
    (and their imports done) beforehand, each running :class:`Deliverer` over the same
    SQLite outbox, leasing from it as instances over one store do. ``count`` pages are
    committed at ``t0`` and the processes told to start. Returns (t0, when the last process
    finished, what each process did)."""
    context = multiprocessing.get_context("spawn")
    store_url = f"sqlite:///{tmp}/outbox.db"
    store = SqlStore(store_url)
    store.open()
    incidents, _ = pages(0, datetime.now(UTC))
    store.apply(Changes(opened=incidents))
    start, results = context.Event(), context.Queue()
    workers = [
        context.Process(
            target=_delivery_process, args=(url, store_url, max_in_flight, start, results)
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    time.sleep(2.0)  # each has imported, opened the store and waits
    now = datetime.now(UTC)
    _, notes = pages(count, now)
    t0 = now.timestamp()
    store.apply(Changes(notifications=notes))
    start.set()
    runs = [results.get(timeout=300) for _ in workers]
    finished = time.time()
    for worker in workers:
        worker.join(10)
    store.close()
    return t0, finished, runs


def _spin(seconds: float, start: Any, results: Any) -> None:
    """Once ``start`` is set, keep one core busy for ``seconds``; put the CPU seconds it got
    on ``results``."""
    start.wait(60)
    began, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - began < seconds:
        pass
    results.put(time.process_time() - cpu)


def cores_free(processes: int = 2, seconds: float = 1.0) -> float:
    """How many cores ``processes`` busy processes get at once now (CPU seconds per second of
    all of them together): on a machine shared with other work, the most several delivery
    processes could use."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    spinners = [
        context.Process(target=_spin, args=(seconds, start, results)) for _ in range(processes)
    ]
    for spinner in spinners:
        spinner.start()
    time.sleep(2.0)  # each has started (imported this module) and waits
    start.set()
    got = sum(results.get(timeout=60) for _ in spinners)
    for spinner in spinners:
        spinner.join(10)
    return float(got) / seconds


def processes_against_nginx(
    count: int, max_in_flight: int | None, processes: list[int], tmp: Path
) -> None:
    """The prototype's numbers: for each number of processes, ``count`` pages to nginx."""
    print(f"{count} pages to nginx, delivered by several processes over one SQLite outbox:")
    for n in processes:
        print(f"  two busy processes get {cores_free():.2f} cores now (2.00: both are free)")
        with tempfile.TemporaryDirectory(dir=tmp) as own:
            base = Path(own)
            target = start_nginx(base)
            path = f"/processes-{n}"
            try:
                t0, finished, runs = run_processes(
                    f"http://127.0.0.1:{target.port}{path}", count, base, max_in_flight, n
                )
                times = wait_for(target.arrivals, path, count, 5)
                summary(f"{n} process{'es' if n > 1 else ''}", t0, times, count)
                cpu = sum(run.cpu for run in runs)
                claims = [seconds for run in runs for seconds in run.claims]
                commits = [seconds for run in runs for seconds in run.commits]
                print(
                    f"  {'':12} {sum(run.delivered for run in runs)} delivered "
                    f"({', '.join(str(run.delivered) for run in runs)}), "
                    f"{len(times) - count} duplicates, {cpu / count * 1000:.3f} ms CPU a page "
                    f"(every process), each process busy {cpu / (n * (finished - t0)):.0%} "
                    f"of the time from t0;\n  {'':12} {len(claims)} claims, "
                    f"{statistics.median(claims) * 1000:.1f} ms each (median), "
                    f"{len(commits)} group commits, "
                    f"{statistics.median(commits) * 1000:.1f} ms each (median)"
                )
            finally:
                target.process.terminate()
                target.process.wait(10)


async def outbox_alone(counts: list[int], tmp: Path) -> None:
    """The outbox's own cost per page, without an HTTP client: ``count`` pages through the
    delivery loop to :class:`Instant`, each durable before and after its send as in the
    nginx run; CPU of every thread (the store's included), per page, at each size."""
    print("the outbox alone (a channel that answers at once):")
    for count in counts:
        with tempfile.TemporaryDirectory(dir=tmp) as own:
            t0, recorded, delivered, _, spent = await run_driftowner(
                "http://127.0.0.1:1/unused", count, Path(own), None, {"hook": Instant()}
            )
        print(
            f"  {count:6d} pages: {delivered} delivered in {recorded - t0:5.2f} s, "
            f"{count / (recorded - t0):6.0f} pages/s, {spent.per_page(count)}"
        )


async def sends_alone(count: int, tmp: Path) -> None:
    """The HTTP path's own cost per page, without the outbox: ``count`` pages through
    ``WebhookChannel.send`` (signed, as a configured ``secret`` makes them) to nginx, 16 at a
    time, beside the same bodies POSTed by a bare aiohttp session (the floor); CPU of every
    thread, per page. Each is run twice, alternately, after a warm-up."""
    import aiohttp
    from pydantic import SecretStr

    from driftowner.channels.webhook import WebhookChannel, build_payload

    target = start_nginx(tmp)
    url = f"http://127.0.0.1:{target.port}/send"
    _, notes = pages(count, datetime.now(UTC))
    bodies = [json.dumps(build_payload(n), separators=(",", ":")).encode() for n in notes]

    async def sixteen_at_a_time(send: Any) -> tuple[float, float]:
        queue = iter(range(count))

        async def worker() -> None:
            for index in queue:
                await send(index)

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(16)))
        return time.process_time() - cpu, time.perf_counter() - wall

    async def through_channel() -> tuple[float, float]:
        channel = WebhookChannel(
            "hook", SecretStr(url), timeout=timedelta(seconds=10), secret=SecretStr("s3cret")
        )

        async def send(index: int) -> None:
            delivery = await channel.send(notes[index])
            assert delivery.ok, delivery

        try:
            return await sixteen_at_a_time(send)
        finally:
            await channel.aclose()

    async def bare_aiohttp() -> tuple[float, float]:
        async with aiohttp.ClientSession() as session:

            async def send(index: int) -> None:
                async with session.post(url, data=bodies[index]) as answer:
                    await answer.read()
                    assert answer.status == 200

            return await sixteen_at_a_time(send)

    try:
        print(f"{count} sends to nginx, 16 at a time (ms CPU a page, pages/s):")
        await through_channel()  # warm-up: imports, the first connections
        runs = (("WebhookChannel.send", through_channel), ("bare aiohttp", bare_aiohttp))
        for _ in range(2):
            for name, run in runs:
                cpu, wall = await run()
                print(
                    f"  {name:20} {cpu / count * 1000:.3f} ms CPU a page, "
                    f"{count / wall:6.0f} pages/s"
                )
    finally:
        target.process.terminate()
        target.process.wait(10)


# -- a split (prototype): one process owns the outbox, sender processes only do HTTP ----------

_FRAME = struct.Struct("!I")
"""A frame on a sender's socket: its length (4 bytes, network order), then a pickle: a batch
of requests (owner to sender), a batch of outcomes (sender to owner), or a control word."""


def _write_frame(writer: asyncio.StreamWriter, item: Any) -> None:
    data = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    writer.writelines((_FRAME.pack(len(data)), data))


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    (size,) = _FRAME.unpack(await reader.readexactly(_FRAME.size))
    return pickle.loads(await reader.readexactly(size))


def _sender_process(path: str, index: int, in_flight: int) -> None:
    """One sender process of the split: connects to the owner's socket at ``path``, POSTs each
    request of each batch it receives with the channels' own :class:`AiohttpSender` (at most
    ``in_flight`` at once), and sends back, batched per turn of its loop, each outcome as it
    completes: ``(id, status, None, None)`` for a 2xx, ``(id, status, headers, body)`` for
    any other answer (the owner's channel judges it: Retry-After, the error's text), or
    ``(id, 0, error class, message)`` for transport trouble. On ``None`` it answers
    ``("stats", CPU seconds since it connected, requests sent)`` and exits."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    import httpx

    from driftowner.channels.http import AiohttpSender

    async def serve() -> None:
        reader, writer = await asyncio.open_unix_connection(path)
        _write_frame(writer, ("hello", index))
        loop = asyncio.get_running_loop()
        sender = AiohttpSender(10.0)
        urls: dict[str, httpx.URL] = {}
        limit = asyncio.Semaphore(in_flight)
        done: list[tuple[int, int, Any, Any]] = []
        tasks: set[asyncio.Task[None]] = set()

        def flush() -> None:
            batch = done[:]
            done.clear()
            _write_frame(writer, batch)

        def finished(item: tuple[int, int, Any, Any]) -> None:
            if not done:
                loop.call_soon(flush)
            done.append(item)

        async def one(rid: int, url: str, headers: dict[str, str], body: bytes) -> None:
            async with limit:
                try:
                    answer = await sender.post(urls[url], body, headers)
                except httpx.TransportError as error:
                    finished((rid, 0, type(error).__name__, str(error)))
                    return
            if 200 <= answer.status < 300:
                finished((rid, answer.status, None, None))
            else:
                finished((rid, answer.status, list(answer._raw_headers), answer._body))

        cpu, sent = time.process_time(), 0
        while (batch := await _read_frame(reader)) is not None:
            for rid, url, headers, body in batch:
                if url not in urls:
                    urls[url] = httpx.URL(url)
                task = loop.create_task(one(rid, url, headers, body))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            sent += len(batch)
        await asyncio.gather(*tasks)
        await sender.aclose()
        _write_frame(writer, ("stats", time.process_time() - cpu, sent))
        await writer.drain()
        writer.close()

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve())


class SenderPool:
    """The owner's side of the split: ``count`` sender processes (spawned, their imports done,
    before ``t0``), each on its own Unix socket connection. :meth:`post` queues a request
    and returns its answer; the requests queued in one turn of the owner's loop go out as one
    frame per sender (round robin, request by request). A sender whose connection closes
    fails its requests in flight as ``httpx.ReadError`` (the channel then retries them: the
    same ``Idempotency-Key``)."""

    def __init__(self, count: int, tmp: Path, in_flight: int = 64) -> None:
        self.count = count
        self._path = str(tmp / "senders.sock")
        self._in_flight = in_flight
        self._writers: list[asyncio.StreamWriter] = []
        self._owed: list[set[int]] = [set() for _ in range(count)]
        self._futures: dict[int, asyncio.Future[Any]] = {}
        self._queued: list[list[tuple[int, str, Mapping[str, str], bytes]]] = [
            [] for _ in range(count)
        ]
        self._next_id = 0
        self._turn = 0
        self._flushing = False
        self._names: dict[int, tuple[Any, str]] = {}
        self._stats: dict[int, asyncio.Future[tuple[float, int]]] = {}
        self._processes: list[Any] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        connected: dict[int, asyncio.Future[asyncio.StreamWriter]] = {
            i: loop.create_future() for i in range(self.count)
        }
        self._stats = {i: loop.create_future() for i in range(self.count)}

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            _, index = await _read_frame(reader)
            connected[index].set_result(writer)
            await self._read(index, reader)

        self._server = await asyncio.start_unix_server(accept, self._path)
        context = multiprocessing.get_context("spawn")
        for index in range(self.count):
            process = context.Process(
                target=_sender_process, args=(self._path, index, self._in_flight), daemon=True
            )
            process.start()
            self._processes.append(process)
        self._writers = [await asyncio.wait_for(connected[i], 60) for i in range(self.count)]

    async def _read(self, index: int, reader: asyncio.StreamReader) -> None:
        import httpx

        from driftowner.channels import http

        futures, owed = self._futures, self._owed[index]
        try:
            while True:
                frame = await _read_frame(reader)
                if isinstance(frame, tuple):
                    self._stats[index].set_result((frame[1], frame[2]))
                    return
                for rid, status, headers, body in frame:
                    owed.discard(rid)
                    future = futures.pop(rid)
                    if status:
                        future.set_result(http.Answer(status, headers or (), body or b""))
                    else:
                        kind = getattr(httpx, headers, None) or getattr(http, headers)
                        future.set_exception(kind(body))
        except (asyncio.IncompleteReadError, ConnectionError):
            for rid in owed:
                futures.pop(rid).set_exception(httpx.ReadError("the sender process is gone"))
            owed.clear()

    def post(self, url: Any, body: bytes, headers: Mapping[str, str]) -> asyncio.Future[Any]:
        named = self._names.get(id(url))
        if named is None:
            named = self._names[id(url)] = (url, str(url))  # keeps url, so its id stays
        rid = self._next_id = self._next_id + 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._futures[rid] = future
        turn = self._turn = (self._turn + 1) % self.count
        self._queued[turn].append((rid, named[1], headers, body))
        self._owed[turn].add(rid)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flushing = False
        for index, queued in enumerate(self._queued):
            if queued:
                _write_frame(self._writers[index], queued)
                self._queued[index] = []

    async def stop(self) -> list[tuple[float, int]]:
        """Tell each sender to finish; (CPU seconds, requests sent) of each."""
        for writer in self._writers:
            _write_frame(writer, None)
        stats = [await asyncio.wait_for(self._stats[i], 60) for i in range(self.count)]
        for writer in self._writers:
            writer.close()
        for process in self._processes:
            await asyncio.to_thread(process.join, 10)
        if self._server is not None:
            self._server.close()
        return stats


class RemoteSender:
    """A :class:`driftowner.channels.http.Sender` that hands each request, already built by
    the channel (URL, headers, body bytes), to a sender process of ``pool`` and returns its
    answer: the channel's own code builds, signs and judges; only the POST moves."""

    def __init__(self, pool: SenderPool) -> None:
        self._pool = pool

    async def post(self, url: Any, body: bytes, headers: Mapping[str, str]) -> Any:
        return await self._pool.post(url, body, headers)

    async def aclose(self) -> None:
        """The pool is the run's to stop."""


async def run_split(
    url: str, count: int, tmp: Path, max_in_flight: int | None, senders: int
) -> tuple[tuple[float, float, int, int, Spent], list[tuple[float, int]]]:
    """:func:`run_driftowner` with the webhook channel's POSTs moved to ``senders`` sender
    processes (started before ``t0``); also (CPU seconds, requests) of each sender."""
    config = driftowner_config(url, f"sqlite:///{tmp}/outbox.db", max_in_flight)
    pool = SenderPool(senders, tmp)
    await pool.start()
    channels = {name: build_channel(name, spec) for name, spec in config.channels.items()}
    for channel in channels.values():
        channel._http = RemoteSender(pool)  # type: ignore[attr-defined]
    try:
        outcome = await run_driftowner(url, count, tmp, max_in_flight, channels)
    finally:
        stats = await pool.stop()
    return outcome, stats


# -- Alertmanager -----------------------------------------------------------------------------

AM_CONF = """
route:
  receiver: target
  group_by: ['...']
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 24h
receivers:
  - name: target
    webhook_configs:
      - url: {url}
        send_resolved: false
"""


def run_alertmanager(url: str, count: int, tmp: Path) -> tuple[float, subprocess.Popen[bytes]]:
    """Start Alertmanager sending to ``url``, POST ``count`` alerts; returns (t0, process)."""
    (tmp / "am").mkdir()
    (tmp / "am.yml").write_text(AM_CONF.format(url=url))
    port = free_port()
    process = subprocess.Popen(
        [
            "prometheus-alertmanager",
            f"--config.file={tmp / 'am.yml'}",
            f"--storage.path={tmp / 'am'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "am.log").open("wb"),
    )
    wait_http(f"http://127.0.0.1:{port}/-/ready")
    starts = datetime.now(UTC).isoformat()
    t0 = time.time()
    for first in range(0, count, 1000):
        alerts = [
            {
                "labels": {"alertname": "DriftDetected", "system": f"system-{i}"},
                "annotations": {"summary": "accuracy falling"},
                "startsAt": starts,
            }
            for i in range(first, min(first + 1000, count))
        ]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert answer.status == 200, answer.status
    return t0, process


def am_failures(tmp: Path) -> int:
    """Failed notify attempts Alertmanager logged (each is retried)."""
    text = (tmp / "am.log").read_text(errors="replace")
    return sum(
        1
        for line in text.splitlines()
        if "Notify for alerts failed" in line or "Notify attempt failed" in line
    )


# -- measuring --------------------------------------------------------------------------------


def wait_for(arrivals: Any, path: str, count: int, timeout: float) -> list[float]:
    """Arrivals at ``path`` once ``count`` have come, or whatever came within ``timeout``."""
    deadline = time.monotonic() + timeout
    seen = arrivals(path)
    while len(seen) < count and time.monotonic() < deadline:
        time.sleep(0.1)
        seen = arrivals(path)
    return seen


def machine_ticks() -> tuple[int, int]:
    """(idle, all) clock ticks of every core since boot (``/proc/stat``)."""
    with open("/proc/stat") as stat:
        fields = [int(field) for field in stat.readline().split()[1:9]]
    return fields[3] + fields[4], sum(fields)


def cores_idle(before: tuple[int, int], after: tuple[int, int]) -> float:
    """How many of the machine's cores were idle between two :func:`machine_ticks`."""
    idle, every = after[0] - before[0], after[1] - before[1]
    return (os.cpu_count() or 1) * idle / every if every else float("nan")


def summary(name: str, t0: float, times: list[float], count: int) -> dict[str, float]:
    latencies = sorted(at - t0 for at in times)
    last = latencies[-1] if latencies else float("nan")
    p99 = latencies[max(int(len(latencies) * 0.99) - 1, 0)] if latencies else float("nan")
    result = {
        "arrived": len(times),
        "distinct_expected": count,
        "seconds_to_last": last,
        "per_second": min(len(times), count) / last if latencies else 0.0,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": p99,
        "first": latencies[0] if latencies else float("nan"),
    }
    if len(times) < count:
        print(f"  {name:12} ONLY {len(times)} of {count} pages arrived within the wait")
    print(
        f"  {name:12} {len(times):6d} requests for {count} pages, the last at {last:7.2f} s, "
        f"{result['per_second']:8.0f} pages/s, p50 {result['p50']:.2f} s, p99 {p99:.2f} s"
    )
    return result


async def against(
    receiver: str, count: int, max_in_flight: int | None, tmp: Path, senders: int = 0
) -> dict[str, Any]:
    """driftowner then Alertmanager, ``count`` pages each, to one ``receiver``; with
    ``senders``, driftowner as the split prototype (:func:`run_split`)."""
    how = f", split: the owner and {senders} sender process(es)" if senders else ""
    print(f"{count} pages to {receiver}{how}:")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=tmp) as own:
        base = Path(own)
        target: Nginx | Slow = start_nginx(base) if receiver == "nginx" else start_slow()
        url = f"http://127.0.0.1:{target.port}"
        try:
            stats: list[tuple[float, int]] = []
            if senders:
                (t0, recorded, delivered, attempts, spent), stats = await run_split(
                    f"{url}/driftowner", count, base, max_in_flight, senders
                )
            else:
                t0, recorded, delivered, attempts, spent = await run_driftowner(
                    f"{url}/driftowner", count, base, max_in_flight
                )
            idle = spent.idle
            times = wait_for(target.arrivals, "/driftowner", count, 5)
            results["driftowner"] = summary("driftowner", t0, times, count)
            results["driftowner"]["idle"] = idle
            results["driftowner"].update(
                delivered=delivered,
                retries=attempts - count,
                recorded_after=recorded - t0,
                cpu_per_page=spent.every / count,
            )
            print(
                f"  {'':12} {delivered} recorded delivered in the store, {attempts - count} "
                f"retries, last outcome recorded {recorded - t0:.2f} s after t0,\n"
                f"  {'':12} {spent.per_page(count)}"
            )
            print(
                f"  {'':12} the machine's cores idle from t0 to the last outcome: {idle:.2f}; "
                f"the first page arrived {results['driftowner']['first']:.2f} s after t0"
            )
            if stats:
                cpu = sum(seconds for seconds, _ in stats)
                results["driftowner"].update(
                    owner_cpu_per_page=spent.every / count,
                    sender_cpu_per_page=cpu / count,
                    cpu_per_page=(spent.every + cpu) / count,
                )
                print(
                    f"  {'':12} (the owner's), the senders' "
                    f"{cpu / count * 1000:.3f} ms CPU a page ("
                    + ", ".join(f"{s / max(n, 1) * 1000:.3f} ms x {n}" for s, n in stats)
                    + f"); every process {(spent.every + cpu) / count * 1000:.3f}"
                )
            am_t0, am = run_alertmanager(f"{url}/alertmanager", count, base)
            try:
                wait = 60.0 if receiver == "nginx" else 600.0
                times = wait_for(target.arrivals, "/alertmanager", count, wait)
                distinct = len(times)
                results["alertmanager"] = summary("alertmanager", am_t0, times, count)
                results["alertmanager"]["failed_attempts"] = am_failures(base)
                print(
                    f"  {'':12} {am_failures(base)} failed notify attempts logged "
                    f"(retried), {distinct} requests answered"
                )
            finally:
                am.terminate()
                am.wait(10)
        finally:
            if isinstance(target, Nginx):
                target.process.terminate()
                target.process.wait(10)
            else:
                target.process.terminate()
                target.process.join(10)
    d, a = results["driftowner"], results["alertmanager"]
    print(
        f"  ratio driftowner/alertmanager: throughput {d['per_second'] / a['per_second']:.2f}, "
        f"p99 latency {d['p99'] / a['p99']:.2f} (below 1 is faster)"
    )
    return results


async def split_against_nginx(
    count: int, max_in_flight: int | None, senders: list[int], rounds: int, tmp: Path
) -> None:
    """The split prototype's numbers: ``rounds`` rounds, each running the single process
    (``0``) and the split with each number of ``senders``, in an order rotated round by
    round, each beside Alertmanager to the same nginx; the free cores before each round."""
    modes = [0, *senders]
    rows: list[tuple[int, dict[str, Any]]] = []
    for round_ in range(rounds):
        free = cores_free()
        print(f"round {round_ + 1}: two busy processes get {free:.2f} cores now (2.00: free)")
        shift = round_ % len(modes)
        for mode in modes[shift:] + modes[:shift]:
            rows.append((mode, await against("nginx", count, max_in_flight, tmp, mode)))
    print("summary (pages/s, p99 s, ms CPU a page of every driftowner process, ratio):")
    for mode in modes:
        for result in (r for m, r in rows if m == mode):
            d, a = result["driftowner"], result["alertmanager"]
            print(
                f"  {'single' if not mode else f'split {mode}':9} {d['per_second']:6.0f} "
                f"p99 {d['p99']:.2f}  cpu {d['cpu_per_page'] * 1000:.3f}  "
                f"owner {d.get('owner_cpu_per_page', d['cpu_per_page']) * 1000:.3f}  "
                f"idle {d['idle']:.2f}  first {d['first']:.2f}  "
                f"AM {a['per_second']:6.0f} p99 {a['p99']:.2f}  "
                f"ratio {d['per_second'] / a['per_second']:.2f}"
            )


def main() -> None:
    # Retries are counted from the store; a line per retry would drown the report.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=10_000)
    parser.add_argument("--slow-pages", type=int, default=10_000)
    parser.add_argument("--max-in-flight", type=int, default=None)
    parser.add_argument(
        "--only", choices=["nginx", "slow", "outbox", "send", "processes", "split"], default=None
    )
    parser.add_argument("--processes", default="1,2,3")
    parser.add_argument("--senders", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--collector", choices=COLLECTORS, default="daemon")
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    args = parser.parse_args()
    global collector, store_kind
    collector = args.collector
    store_kind = args.store
    factory = loop_factory()
    if args.only == "processes":
        with tempfile.TemporaryDirectory() as tmp:
            counts = [int(n) for n in args.processes.split(",")]
            processes_against_nginx(args.pages, args.max_in_flight, counts, Path(tmp))
        return
    if args.only == "outbox":
        with tempfile.TemporaryDirectory() as tmp, asyncio.Runner(loop_factory=factory) as loop:
            loop.run(outbox_alone([2_000, args.pages, 2 * args.pages], Path(tmp)))
        return
    if args.only == "send":
        with tempfile.TemporaryDirectory() as tmp, asyncio.Runner(loop_factory=factory) as loop:
            loop.run(sends_alone(args.pages, Path(tmp)))
        return
    for tool in ("/usr/sbin/nginx", "prometheus-alertmanager"):
        if shutil.which(tool) is None:
            sys.exit(f"needs {tool}: apt-get install -y nginx-light prometheus-alertmanager")
    # The daemon's event loop ($DRIFTOWNER_EVENT_LOOP: uvloop when installed, or asyncio).
    print(f"event loop: {'asyncio' if factory is None else 'uvloop'}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only == "split":
            senders = [int(n) for n in args.senders.split(",")]
            with asyncio.Runner(loop_factory=factory) as loop:
                loop.run(
                    split_against_nginx(
                        args.pages, args.max_in_flight, senders, args.rounds, Path(tmp)
                    )
                )
            return
        if args.only in (None, "nginx"):
            with asyncio.Runner(loop_factory=factory) as loop:
                loop.run(against("nginx", args.pages, args.max_in_flight, Path(tmp)))
        if args.only in (None, "slow"):
            with asyncio.Runner(loop_factory=factory) as loop:
                loop.run(against("slow", args.slow_pages, args.max_in_flight, Path(tmp)))


if __name__ == "__main__":
    main()
