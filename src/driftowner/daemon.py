"""Wiring of the running daemon: config, store, sources, channels, the scheduler's jobs, the
HTTP server in the same event loop, signals (TERM and INT stop, HUP reloads) and logging."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import prometheus_client
import structlog
import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from driftowner import cycle, outbox, poll, runner, sdnotify
from driftowner.api import Runtime, create_app
from driftowner.api.runtime import observe_sources
from driftowner.channels import Channel, build_channel
from driftowner.clock import utcnow
from driftowner.config import Config
from driftowner.configload import ConfigError, default_secrets_dir, load_config, warning_lines
from driftowner.detect.bank import Bank
from driftowner.ids import new_incident_id, new_notification_id
from driftowner.links import LinkSigner
from driftowner.metrics import Metrics
from driftowner.sources import Source, build_source
from driftowner.store import SqlStore, Store, StoreError, StoreUnavailable

log = structlog.get_logger("driftowner.daemon")

STOP_TIMEOUT_S = 4.0
LEAD_EVERY = timedelta(seconds=5)
"""How often an instance claims or renews leadership."""
LEAD_TTL = timedelta(seconds=20)
"""How long a leader's claim lasts unrenewed: a leader that dies is replaced within this."""


EVENT_LOOP_ENV = "DRIFTOWNER_EVENT_LOOP"
"""Names the daemon's event loop: ``auto`` (the default: uvloop when installed, else
asyncio's own), ``uvloop`` (required: refuse to start without it) or ``asyncio``."""


class EventLoopChoiceError(ValueError):
    """``$DRIFTOWNER_EVENT_LOOP`` names no usable event loop."""


def loop_factory(
    environ: Mapping[str, str] = os.environ,
) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop the daemon runs on, as ``$DRIFTOWNER_EVENT_LOOP`` chooses: uvloop's
    (libuv: less CPU per send and per request than asyncio's) when installed, unless the
    variable says ``asyncio``.

    Args:
        environ: The environment to read the choice from.

    Returns:
        A factory of uvloop loops, or None for asyncio's default loop.

    Raises:
        EventLoopChoiceError: the value is not ``auto``, ``uvloop`` or ``asyncio``, or it
            is ``uvloop`` and uvloop is not installed.
    """
    choice = environ.get(EVENT_LOOP_ENV, "").strip() or "auto"
    if choice not in ("auto", "uvloop", "asyncio"):
        raise EventLoopChoiceError(
            f"${EVENT_LOOP_ENV}: {choice!r} is not one of auto, uvloop, asyncio"
        )
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise EventLoopChoiceError(
                f"${EVENT_LOOP_ENV}: uvloop is not installed (pip install uvloop, or say "
                "auto or asyncio)"
            ) from None
        return None
    return uvloop.new_event_loop


def run_on_chosen_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` to completion on the loop :func:`loop_factory` chooses.

    Raises:
        EventLoopChoiceError: as :func:`loop_factory` (``main`` is then closed unrun).
    """
    try:
        factory = loop_factory()
    except EventLoopChoiceError:
        main.close()
        raise
    log.info("event loop", loop="asyncio" if factory is None else "uvloop")
    with asyncio.Runner(loop_factory=factory) as loop_runner:
        return loop_runner.run(main)


YOUNGEST_COLLECTION_AFTER = 7_000
"""Container objects made (less those freed) before the garbage collector looks at the
youngest ones: ten times Python's 700. Delivering a page makes a few dozen short-lived
containers (its row, message, document, request), so at 700 the collector ran every few
pages."""


def collect_garbage_less_often() -> None:
    """Collect the youngest generation after :data:`YOUNGEST_COLLECTION_AFTER` new
    containers, not Python's 700 (a larger threshold already set is kept).

    Each young collection is cheap, but at 700 they came every few pages, and each tenth one
    walks the middle generation too: about 0.02 ms of CPU a webhook page of ~0.2 ms
    (``benchmarks/README.md``). Reference counting still frees at once whatever is not in a
    cycle; a cycle waits a little longer. (The long-lived state is kept out of the walks by
    :class:`driftowner.runner.Heap`.)
    """
    youngest, middle, oldest = gc.get_threshold()
    gc.set_threshold(max(youngest, YOUNGEST_COLLECTION_AFTER), middle, oldest)


def configure_logging(*, json_lines: bool | None = None, level: int = logging.INFO) -> None:
    """structlog for driftowner and the libraries it runs (uvicorn, APScheduler): readable
    console lines on a terminal, one JSON object per line otherwise. Called once, at start."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if json_lines else _keep,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Access logs are noise for a daemon scraped every few seconds.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _keep(_logger: Any, _name: str, event: Any) -> Any:
    return event


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns TERM, INT and HUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Daemon:
    """One driftowner process. Construction does no I/O; :meth:`run` does everything."""

    def __init__(
        self,
        config_path: Path,
        *,
        listen: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config_path = config_path
        self.listen_override = listen
        self.clock = clock
        self.config: Config | None = None
        self.store: Store | None = None
        self.metrics: Metrics | None = None
        self.sources: dict[str, Source] = {}
        self.channels: dict[str, Channel] = {}
        self.runtime: Runtime | None = None
        self.signer: LinkSigner | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self.last_cycle_at: float = time.monotonic()
        self._failing: dict[tuple[str, str], str] = {}
        self._recorded = cycle.Recorded()
        """(system, signal) → the status ``driftowner_signal_status`` last got."""
        self.bank = Bank()
        """Every signal's detector state between evaluations: change-point charts (warm-started
        from history) and the last verdict of the others (see ``cycle.judge``)."""
        self.pager = cycle.Pager(new_notification_id, self.links)
        self.heap = runner.Heap()
        """Keeps the collector off each config's long-lived state once its charts are warm."""
        self._stopping = False
        self._running: set[asyncio.Task[Any]] = set()
        self.holder = ""
        """This instance's name in the leadership lease, set once it listens."""
        self.leading = False
        self.last_lead_at: float = time.monotonic()
        self._deliverer: outbox.Deliverer | None = None
        self._delivering: asyncio.Task[None] | None = None
        """The delivery loop while the daemon runs; without it (jobs run by hand), an
        escalation delivers inline."""
        self.store_failures: dict[str, str] = {}
        """Job (lead, evaluate, escalate, deliver) → why its last run could not write the
        store; a job's next successful run clears it."""
        self._stop = asyncio.Event()

    # -- config ------------------------------------------------------------------------------

    def _load(self) -> Config:
        config = load_config(self.config_path, secrets_dir=default_secrets_dir())
        if self.listen_override:
            config = config.model_copy(
                update={"server": config.server.model_copy(update={"listen": self.listen_override})}
            )
        return config

    def _warn(self, config: Config) -> None:
        """Log what a valid config probably gets wrong (see ``config_warnings``), loudly."""
        for line in warning_lines(config, str(self.config_path)):
            log.warning("config warning", warning=line)

    def _build_edges(self, config: Config) -> tuple[dict[str, Source], dict[str, Channel]]:
        sources = {
            name: build_source(name, spec, clock=self.clock, alerts=self.store)
            for name, spec in config.sources.items()
        }
        channels = {name: build_channel(name, spec) for name, spec in config.channels.items()}
        return sources, channels

    async def reload(self) -> list[str]:
        """Load the config again; on any error keep running on the old one.

        Returns:
            The errors, empty on success.
        """
        assert self.metrics is not None and self.runtime is not None
        try:
            config = self._load()
            if self.config is not None:
                _refuse_restart_only_changes(self.config_path, self.config, config)
        except ConfigError as error:
            self.metrics.config_reload_ok.set(0)
            log.error("config reload failed; keeping the running config", errors=error.errors)
            return list(error.errors)
        self._warn(config)
        old_sources, old_channels = self.sources, self.channels
        self.sources, self.channels = self._build_edges(config)
        self.config = config
        self.runtime.config = config
        self.runtime.sources = self.sources
        if self.store is not None:
            self.signer = LinkSigner(self.store.secret("links"), config.server.base_url)
            self.runtime.links = self.signer
        self._schedule(config)
        if self._deliverer is not None:
            self._deliverer.configure(config, self.channels)
        self.metrics.config_reload_ok.set(1)
        self.metrics.config_reload_time.set(time.time())
        log.info("config reloaded", systems=len(config.systems), path=str(self.config_path))
        await _close_all(old_sources, old_channels)
        return []

    # -- jobs --------------------------------------------------------------------------------

    def links(self, incident_id: str, action: str, recipient: str | None = None) -> str | None:
        """URLs carried by notifications: the incident's API view and signed ack/resolve
        links acting as their recipient, under ``server.external_url`` as configured now."""
        if self.signer is None:
            return None
        return self.signer(incident_id, action, recipient)

    async def evaluate(self) -> None:
        """Poll, detect, reconcile; then escalate at once so an opened incident's owner hears
        of it in the same cycle; then deliver."""
        assert self.config and self.store and self.metrics
        config, store, metrics = self.config, self.store, self.metrics
        try:
            started = time.perf_counter()
            now = self.clock()
            accepts = await asyncio.to_thread(store.accepted_after, self.bank.accept_cursor)
            self.bank.apply_accepts(accepts)
            self.bank.note_open(await asyncio.to_thread(store.incidents, unresolved=True))
            results, stats = await poll.read(config, self.sources, now, self.bank)
            findings = cycle.judge(config, results, self.bank, now)
            poll.log_query_failures(self._failing, stats.failing)
            self._failing = stats.failing
            for source, up in stats.up.items():
                metrics.source_up.labels(source).set(1 if up else 0)
            for (source, reason), count in stats.errors.items():
                metrics.source_errors.labels(source, reason).inc(count)
            for source, durations in stats.durations.items():
                for seconds in durations:
                    metrics.source_query_duration.labels(source).observe(seconds)
            # Only the statuses that moved: a steady cycle builds no finding for its quiet
            # signals (their evidence is made when the API reads it).
            metrics.record_findings(findings.moved(self._recorded))
            if self.runtime is not None:
                self.runtime.findings = findings.summaries()
                self.runtime.source_health = observe_sources(
                    self.runtime.source_health, config, stats.up, stats.failing, now
                )
            # Store work runs in a worker thread: a large evaluation (a transaction per
            # system) never stalls /healthz, /metrics or signal handling.
            await asyncio.to_thread(
                runner.evaluate,
                store,
                config,
                findings,
                now,
                new_incident_id,
                self.pager,
                self._wake_delivery(),
            )
            metrics.evaluation_duration.observe(time.perf_counter() - started)
            self.heap.settle(config)
            self.last_cycle_at = time.monotonic()
            self.store_failures.pop("evaluate", None)
        except StoreUnavailable as error:
            self._store_failed("evaluate", error)
        except Exception:
            log.exception("evaluation failed")
        await self.escalate_and_deliver()

    async def escalate_and_deliver(self) -> None:
        """Derive due escalation steps, then have their pages delivered: the running delivery
        loop is woken (it drains the outbox on its own, not per tick); jobs run by hand
        deliver inline."""
        assert self.config and self.store and self.metrics
        try:
            await asyncio.to_thread(
                runner.escalate,
                self.store,
                self.config,
                self.clock(),
                self.pager,
                self.metrics,
                self._wake_delivery(),
            )
            self.store_failures.pop("escalate", None)
        except StoreUnavailable as error:
            self._store_failed("escalate", error)
        except Exception:
            log.exception("escalation failed")
        deliverer = self.deliverer()
        if self._delivering is not None:
            deliverer.wake()
        else:
            await deliverer.deliver_now()

    def _wake_delivery(self) -> runner.Queued | None:
        """What a store job in a worker thread calls after each commit that queued
        notifications: the running delivery loop is woken at once (so a storm's first pages
        go while the rest is still being written), from that thread, safely. None when no
        delivery loop runs (jobs run by hand deliver once they are done)."""
        if self._delivering is None:
            return None
        loop, deliverer = asyncio.get_running_loop(), self.deliverer()

        def queued() -> None:
            # A loop closed meanwhile (the daemon stopping) has nobody left to wake.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(deliverer.wake)

        return queued

    def deliverer(self) -> outbox.Deliverer:
        """The outbox's delivery loop over this daemon's store, channels and config."""
        assert self.config and self.store and self.metrics
        if self._deliverer is None:
            self._deliverer = outbox.Deliverer(
                self.store,
                self.channels,
                self.config,
                self.clock,
                self.metrics,
                # The running loop delivers only while this instance leads; jobs run by hand
                # (no loop) were already let through by their caller, as a leader's job is.
                leading=lambda: not self._stopping and (self.leading or self._delivering is None),
                report=self._delivery_report,
            )
        return self._deliverer

    def _delivery_report(self, problem: StoreUnavailable | None) -> None:
        if problem is None:
            self.store_failures.pop("deliver", None)
        else:
            self._store_failed("deliver", problem)

    def _store_failed(self, job: str, error: StoreUnavailable) -> None:
        """Remember that ``job`` could not write the store. No traceback and no line per
        cycle: the store logs each change of what it cannot write, once, and /readyz,
        /healthz and ``driftowner_store_writable`` report it while it lasts."""
        self.store_failures[job] = str(error)

    async def lead(self) -> None:
        """Claim or renew leadership. Only the leader evaluates, escalates and delivers, so
        instances sharing one store (PostgreSQL, for HA) never page twice; the others serve
        HTTP and take over within LEAD_TTL when the leader stops renewing.

        A claim the store cannot write follows on PostgreSQL (another instance may lead) and
        never demotes the one instance of a SQLite store (see ``Store.try_lead``); if even
        its lease cannot be read, a SQLite instance keeps leading or not as it did."""
        assert self.store is not None and self.metrics is not None
        try:
            leading = await asyncio.to_thread(
                self.store.try_lead, self.holder, LEAD_TTL, self.clock()
            )
            self.store_failures.pop("lead", None)
        except StoreUnavailable as error:
            self._store_failed("lead", error)
            leading = self.leading and self.store.single_instance
        except Exception:
            log.exception("leadership claim failed")
            leading = False
        self.last_lead_at = time.monotonic()
        if leading != self.leading:
            log.info("leading" if leading else "following", holder=self.holder)
        if not leading:
            # What a leader's jobs could not write is no longer this instance's work.
            for job in ("evaluate", "escalate", "deliver"):
                self.store_failures.pop(job, None)
            if "lead" not in self.store_failures:
                # A follower writes its lease (and API actions, which answer for themselves):
                # once that commits, what it could not write while leading no longer counts.
                self.store.forget_unwritable("incidents", "outbox")
        self.leading = leading
        self.metrics.leader.set(1 if leading else 0)

    async def _lead_job(self) -> None:
        if not self._stopping:
            await self.lead()

    async def _evaluate_job(self) -> None:
        if self.leading:
            await self._guarded(self.evaluate)

    async def _escalate_job(self) -> None:
        if self.leading:
            await self._guarded(self.escalate_and_deliver)

    async def _guarded(self, job: Callable[[], Awaitable[None]]) -> None:
        """Run a scheduled job unless stopping, tracked so a stop can wait for it."""
        if self._stopping:
            return
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await job()
        finally:
            if task is not None:
                self._running.discard(task)

    def _schedule(self, config: Config) -> None:
        assert self.scheduler is not None
        jobs = {
            "lead": (self._lead_job, LEAD_EVERY.total_seconds()),
            "evaluate": (self._evaluate_job, config.evaluation.interval.total_seconds()),
            "escalate": (
                self._escalate_job,
                config.evaluation.escalation_interval.total_seconds(),
            ),
        }
        for job_id, (func, seconds) in jobs.items():
            existing = self.scheduler.get_job(job_id)
            if existing is not None and existing.trigger.interval.total_seconds() == seconds:
                continue
            self.scheduler.add_job(
                func,
                "interval",
                seconds=seconds,
                id=job_id,
                replace_existing=True,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(int(seconds), 1),
                next_run_time=datetime.now(UTC),
            )

    def healthy(self) -> bool:
        """A leader completed an evaluation cycle within three intervals, and its last
        evaluation, escalation and delivery could write the store; a follower renewed its
        claim attempt within three claim periods (its loop runs, it just does not lead). The
        one instance of a SQLite store that does not lead because it cannot use its store
        does no work it should: unhealthy."""
        if self.config is None or self.store is None:
            return False
        if self.leading and self.store_failures.keys() - {"lead"}:
            return False
        if not self.leading and self.store.single_instance and "lead" in self.store_failures:
            return False
        if not self.leading:
            limit = 3 * LEAD_EVERY.total_seconds() + 30
            return time.monotonic() - self.last_lead_at < limit
        limit = 3 * self.config.evaluation.interval.total_seconds() + 30
        return time.monotonic() - self.last_cycle_at < limit

    # -- run ---------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until TERM or INT. Returns the process exit code."""
        try:
            config = self._load()
        except ConfigError as error:
            for line in error.errors:
                print(line, file=sys.stderr)
            return 1
        self.config = config
        self._warn(config)
        # Counters' *_created series double the exposition for no use here.
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        host, _, port = config.server.listen.rpartition(":")
        try:
            # Bind before anything runs: a daemon that cannot serve must not evaluate or page.
            sock = _bind(host.strip("[]"), int(port))
        except OSError as error:
            log.error("cannot listen", listen=config.server.listen, error=str(error))
            return 1
        # Host and listen address name this instance: two instances cannot share them (the port
        # is bound), and an instance restarted after a crash reclaims its own lease at once
        # instead of waiting out the lease its previous life left.
        self.holder = f"{socket.gethostname()}/{config.server.listen}"
        self.store = SqlStore(config.storage.url)
        try:
            self.store.open()
        except StoreError as error:
            sock.close()
            log.error("cannot open the store", error=str(error))
            return 1
        loop = asyncio.get_running_loop()
        server = self._server(config, host.strip("[]"), int(port), loop)
        await self.lead()  # a lone instance evaluates from its first cycle
        self.last_cycle_at = time.monotonic()
        self.scheduler = AsyncIOScheduler(event_loop=loop, timezone=UTC)
        self._schedule(config)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self._sd_reload()))
        self.scheduler.start()
        collect_garbage_less_often()
        self._delivering = asyncio.create_task(self.deliverer().run())
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        supervised = asyncio.create_task(sdnotify.supervise(lambda: server.started, self.healthy))
        log.info(
            "driftowner started",
            listen=config.server.listen,
            config=str(self.config_path),
            systems=len(config.systems),
            store=_safe_url(config.storage.url),
        )
        stopped = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if serving in done and serving.exception() is not None:
            log.error("http server failed", error=str(serving.exception()))
            code = 1
        elif serving in done and not self._stop.is_set():
            log.error("http server stopped", listen=config.server.listen)
            code = 1
        log.info("stopping")
        supervised.cancel()
        stopped.cancel()
        await self._shut_down(server, serving)
        log.info("stopped")
        return code

    def _server(
        self, config: Config, host: str, port: int, loop: asyncio.AbstractEventLoop
    ) -> _Server:
        """Metrics, edges and the HTTP app over the opened store, ready to serve."""
        assert self.store is not None
        self.signer = LinkSigner(self.store.secret("links"), config.server.base_url)
        self.metrics = Metrics(self.store, self.clock)
        self.metrics.config_reload_ok.set(1)
        self.metrics.config_reload_time.set(time.time())
        self.metrics.leader.set(0)
        self.sources, self.channels = self._build_edges(config)
        self.runtime = Runtime(
            config=config,
            store=self.store,
            metrics=self.metrics,
            clock=self.clock,
            links=self.signer,
            healthy=self.healthy,
            sources=self.sources,
            reload=lambda: asyncio.run_coroutine_threadsafe(self._sd_reload(), loop).result(30),
        )
        return _Server(
            uvicorn.Config(
                create_app(self.runtime),
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                lifespan="off",
            )
        )

    async def _shut_down(self, server: _Server, serving: asyncio.Task[None]) -> None:
        """Stop within STOP_TIMEOUT_S: let a running cycle and the sends in flight finish and
        record (bounded) rather than cancel them between a send and its record; start no new
        one; stop serving; hand leadership over; close the edges and the store."""
        assert self.scheduler is not None and self.store is not None
        sdnotify.notify(sdnotify.STOPPING)
        self._stopping = True
        self.scheduler.pause()
        if self._running:
            await asyncio.wait(set(self._running), timeout=STOP_TIMEOUT_S / 4)
        await self.deliverer().stop(STOP_TIMEOUT_S / 4)
        if self._delivering is not None:
            self._delivering.cancel()
            self._delivering = None
        self.scheduler.shutdown(wait=False)
        server.should_exit = True
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(serving, STOP_TIMEOUT_S / 2)
        if self.leading:
            # Hand over at once rather than after LEAD_TTL.
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.resign, self.holder, self.clock())
        await _close_all(self.sources, self.channels)
        self.store.close()

    async def _sd_reload(self) -> list[str]:
        """:meth:`reload`, framed for systemd by RELOADING=1 and READY=1."""
        sdnotify.notify(sdnotify.reloading(time.monotonic_ns() // 1000))
        try:
            return await self.reload()
        finally:
            sdnotify.notify(sdnotify.READY)


RESTART_ONLY: tuple[tuple[str, str, str], ...] = (
    ("server", "listen", "the HTTP listener stays bound to the old address"),
    ("storage", "url", "the running store stays open"),
)
"""Settings a reload cannot apply: ``(section, field, why)``."""


def _refuse_restart_only_changes(path: Path, running: Config, loaded: Config) -> None:
    """A reload that changes a setting only a restart applies is refused as a whole: applying
    the rest would leave the config saying one thing (links to a new port) and the process
    doing another.

    Raises:
        ConfigError: one line per such change, ``FILE: section.field: ...``.
    """
    errors = []
    for section, field, why in RESTART_ONLY:
        before = getattr(getattr(running, section), field)
        after = getattr(getattr(loaded, section), field)
        if before != after:
            errors.append(
                f"{path}: {section}.{field}: changed, which takes a restart ({why}); "
                "reload refused, the running config is kept: restart driftowner to apply it"
            )
    if errors:
        raise ConfigError(errors)


async def _close_all(sources: dict[str, Source], channels: dict[str, Channel]) -> None:
    closables: list[Source | Channel] = [*sources.values(), *channels.values()]
    for closable in closables:
        try:
            await asyncio.wait_for(closable.aclose(), 1.0)
        except Exception:
            log.warning("close failed", edge=getattr(closable, "name", "?"))


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (IPv6 when the host is one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _safe_url(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)
