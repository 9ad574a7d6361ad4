"""The command line: a thin entry point over the daemon and the service functions."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from driftowner import __version__, service, silences
from driftowner import report as reports
from driftowner.audit import Audit, audit, audit_json
from driftowner.clock import rfc3339, utcnow
from driftowner.config import Config, config_json_schema, format_duration, parse_duration
from driftowner.configload import ConfigError, default_secrets_dir, load_config, warning_lines
from driftowner.ids import new_silence_id
from driftowner.incidents import LifecycleError
from driftowner.links import LinkSigner
from driftowner.model import STATES, Delivery
from driftowner.store import Conflict, SqlStore, Store, StoreError

if TYPE_CHECKING:
    from driftowner.daemon import Daemon

DEFAULT_CONFIG = Path("config/driftowner.yaml")
DEMO_CONFIG = Path("config/demo.yaml")


class Failure(Exception):
    """An error to print as one line and exit 1 with."""


def _config_path(value: str | None) -> Path:
    if value:
        return Path(value)
    from_env = os.environ.get("DRIFTOWNER_CONFIG")
    return Path(from_env) if from_env else DEFAULT_CONFIG


def _load(path: Path) -> Config:
    return load_config(path, secrets_dir=default_secrets_dir())


def _store(config: Config) -> Store:
    store = SqlStore(config.storage.url)
    store.open()
    return store


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, sort_keys=False))


def _links_for(config: Config, store: Store) -> LinkSigner:
    return LinkSigner(store.secret("links"), config.server.base_url)


# -- commands ---------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from driftowner.daemon import Daemon, configure_logging

    configure_logging()
    return _run_daemon(Daemon(_config_path(args.config), listen=args.listen))


def cmd_demo(args: argparse.Namespace) -> int:
    from driftowner.daemon import Daemon, configure_logging

    configure_logging()
    return _run_daemon(Daemon(_demo_config(), listen=args.listen))


def _run_daemon(daemon: Daemon) -> int:
    """Run the daemon on the event loop ``$DRIFTOWNER_EVENT_LOOP`` chooses (exit 2, with
    the reason, when it names none)."""
    from driftowner.daemon import EventLoopChoiceError, run_on_chosen_loop

    try:
        return run_on_chosen_loop(daemon.run())
    except EventLoopChoiceError as error:
        print(f"driftowner: {error}", file=sys.stderr)
        return 2


def _demo_config() -> Path:
    """./config/demo.yaml in a checkout (so it can be edited), else the copy shipped inside
    the package: ``driftowner demo`` works wherever driftowner is installed."""
    if DEMO_CONFIG.exists():
        return DEMO_CONFIG
    return Path(str(resources.files("driftowner").joinpath("demo.yaml")))


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(Path(args.path))
    for line in warning_lines(config, args.path):
        print(line, file=sys.stderr)
    # A file name with undecodable bytes holds surrogates, which stdout would refuse.
    shown = args.path.encode("utf-8", "backslashreplace").decode("utf-8")
    print(
        f"{shown}: ok ({len(config.systems)} systems, {len(config.owners)} owners, "
        f"{len(config.sources)} sources, {len(config.channels)} channels)"
    )
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    result = audit(_load(_config_path(args.config)))
    if args.json:
        _print_json(audit_json(result))
    else:
        _print_audit_table(result)
    return 1 if args.strict and result.gaps else 0


def _print_audit_table(result: Audit) -> None:
    """The audit as a table, one row per system, then every gap on a line of its own."""
    rows = [("SYSTEM", "OWNER", "LAYERS", "MODEL~BUSINESS", "REACHABLE", "CONTRIBUTORS", "GAPS")]
    for system in result.systems:
        rows.append(
            (
                system.name,
                system.owner,
                ",".join(system.layers) or "-",
                "yes" if system.disagreements else "no",
                "yes" if system.owner_reachable else "no",
                " ".join(f"{layer}:{team}" for layer, team in system.contributors.items()) or "-",
                str(len(system.gaps)),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    gaps = result.gaps
    print()
    if not gaps:
        print("no gaps")
        return
    print(f"{len(gaps)} gap{'s' if len(gaps) != 1 else ''}:")
    for gap in gaps:
        print(f"  - {gap.message}")


def cmd_schema(_: argparse.Namespace) -> int:
    _print_json(config_json_schema())
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from driftowner import poll
    from driftowner.cycle import Findings
    from driftowner.detect import rules
    from driftowner.sources import build_source

    config = _load(_config_path(args.config))

    async def once() -> Findings:
        # Opened only if an alertmanager source reads the alerts the webhook kept.
        alerts = SqlStore(config.storage.url)
        sources = {
            n: build_source(n, s, clock=utcnow, alerts=alerts) for n, s in config.sources.items()
        }
        try:
            findings, _ = await poll.poll(config, sources, utcnow())
        finally:
            for source in sources.values():
                await source.aclose()
            alerts.close()
        return findings

    findings = asyncio.run(once())
    holding = {
        system: rules.conditions(system, config.systems[system], signals)
        for system, signals in findings.items()
    }
    if args.json:
        _print_json(
            {
                "findings": [
                    service.finding_json(f)
                    for signals in findings.values()
                    for f in signals.values()
                ],
                "conditions": [
                    {
                        "system": c.system,
                        "rule": c.rule,
                        "kind": c.kind,
                        "layers": list(c.layers),
                        "summary": c.summary,
                        "for": format_duration(c.hold_for),
                    }
                    for conditions in holding.values()
                    for c in conditions
                ],
            }
        )
        return 0
    for system, signals in findings.items():
        print(system)
        for f in signals.values():
            print(f"  {f.signal:<24} {f.layer:<12} {f.status:<9} {f.reason}")
        for c in holding[system]:
            print(f"  ! {c.rule}: {c.summary} (opens after {format_duration(c.hold_for)})")
    return 0


def cmd_notify_test(args: argparse.Namespace) -> int:
    from driftowner.channels import build_channel
    from driftowner.escalation import test_notifications
    from driftowner.ids import new_notification_id

    config = _load(_config_path(args.config))
    if args.owner not in config.owners:
        known = ", ".join(sorted(config.owners))
        raise Failure(f"--owner: unknown owner {args.owner!r} (known: {known})")
    notifications = test_notifications(config, args.owner, utcnow(), new_notification_id)
    if not notifications:
        raise Failure(f"owner {args.owner!r} has no contact on any configured channel")

    async def send_all() -> list[tuple[str, str, Delivery]]:
        results = []
        for notification in notifications:
            channel = build_channel(notification.channel, config.channels[notification.channel])
            try:
                results.append(
                    (notification.channel, notification.address, await channel.send(notification))
                )
            finally:
                await channel.aclose()
        return results

    failed = 0
    for channel_name, address, delivery in asyncio.run(send_all()):
        outcome = (
            "delivered"
            if delivery.ok
            else ("failed, would be retried" if delivery.recoverable else "failed")
        )
        failed += not delivery.ok
        detail = f": {delivery.detail}" if delivery.detail and not delivery.ok else ""
        print(f"{channel_name:<12} → {address}: {outcome}{detail}")
    return 1 if failed else 0


def parse_instant(text: str, now: datetime) -> datetime:
    """An instant on the command line: RFC 3339 (``2026-11-20T08:00:00Z``), Unix seconds,
    ``now``, or ``now-DURATION`` (``now-7d``).

    Raises:
        ValueError: naming the accepted forms.
    """
    value = text.strip()
    try:
        if value == "now":
            return now
        if value.startswith("now-"):
            return now - parse_duration(value[4:])
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except ValueError:
            pass
        parsed = datetime.fromisoformat(value)
    except (ValueError, OverflowError, OSError):
        raise ValueError(
            f"invalid time {text!r}: expected RFC 3339 (2026-11-20T08:00:00Z), Unix seconds, "
            "now or now-7d, within years 1 to 9999"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def cmd_replay(args: argparse.Namespace) -> int:
    from driftowner.replay import replay, replay_json
    from driftowner.sources import build_source

    config = _load(_config_path(args.config))
    now = utcnow()
    window: dict[str, datetime] = {}
    for flag, text in (("--from", args.start), ("--to", args.end)):
        try:
            window[flag] = parse_instant(text, now)
        except ValueError as error:
            raise Failure(f"{flag}: {error}") from error
    interval = None
    if args.interval:
        try:
            interval = parse_duration(args.interval)
        except ValueError as error:
            raise Failure(f"--interval: {error}") from error
        if interval <= timedelta(0):
            raise Failure("--interval: must be longer than 0s")
    start, end = window["--from"], window["--to"]
    if start > end:
        raise Failure("--from is after --to")

    async def run() -> Any:
        # The demo source simulates relative to its start: start it at --from.
        # Opened only if an alertmanager source reads the alerts the webhook kept.
        alerts = SqlStore(config.storage.url)
        sources = {
            n: build_source(n, s, clock=lambda: start, alerts=alerts)
            for n, s in config.sources.items()
        }
        try:
            return await replay(config, sources, start, end, interval=interval)
        finally:
            for source in sources.values():
                await source.aclose()
            alerts.close()

    try:
        result = asyncio.run(run())
    except ValueError as error:  # the range cannot be replayed (e.g. too many instants)
        raise Failure(str(error)) from error
    if args.json:
        _print_json(replay_json(result))
        return 0
    print(
        f"replayed {result.evaluations} evaluations every {format_duration(result.interval)} "
        f"from {rfc3339(start)} to {rfc3339(end)}"
    )
    for failure in result.failures:
        print(f"  ! {failure.system}/{failure.signal}: no history: {failure.error}")
    if not result.incidents:
        print("no incident would have opened")
        return 0
    print(f"{'SYSTEM':<20} {'RULE':<44} {'BEGAN':<20} {'OPENED':<20} {'RESOLVED':<20}")
    for i in result.incidents:
        print(
            f"{i.system:<20} {i.rule:<44} {_short(i.condition_began_at):<20} "
            f"{_short(i.opened_at):<20} {_short(i.resolved_at) if i.resolved_at else 'still open'}"
        )
    return 0


def _short(at: datetime | None) -> str:
    return "-" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def cmd_incidents(args: argparse.Namespace) -> int:
    config = _load(_config_path(args.config))
    now = utcnow()
    found = _store(config).incidents(state=args.state, owner=args.owner, system=args.system)
    if args.json:
        _print_json({"incidents": [service.incident_json(i, now) for i in found]})
        return 0
    if not found:
        print("no incidents")
        return 0
    print(f"{'ID':<15} {'STATE':<13} {'SYSTEM':<20} {'OWNER':<10} {'AGE':>9}  SUMMARY")
    for i in found:
        age = format_duration(_whole(i.age(now)))
        print(f"{i.id:<15} {i.state:<13} {i.system:<20} {i.owner:<10} {age:>9}  {i.summary}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    config = _load(_config_path(args.config))
    store = _store(config)
    incident = service.get(store, args.id)
    now = utcnow()
    events = store.events(args.id)
    if args.json:
        body = service.incident_json(incident, now)
        body["events"] = [service.event_json(e) for e in events]
        _print_json(body)
        return 0
    body = service.incident_json(incident, now)
    for key in (
        "id",
        "system",
        "owner",
        "kind",
        "rule",
        "state",
        "summary",
        "opened_at",
        "acknowledged_at",
        "resolved_at",
    ):
        print(f"{key + ':':<17} {body[key] if body[key] is not None else '-'}")
    print(f"{'layers:':<17} {', '.join(incident.layers)}")
    for key, label in (
        ("time_to_acknowledge_seconds", "time to ack:"),
        ("time_to_resolve_seconds", "time to resolve:"),
    ):
        if body[key] is not None:
            print(f"{label:<17} {body[key]:.1f}s")
    print("events:")
    for e in events:
        via = e.via or "?"
        print(
            f"  {e.at.isoformat(timespec='seconds')}  {e.kind:<19} {e.actor:<8} {via:<5} {e.detail}"
        )
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    config = _load(_config_path(args.config))
    store = _store(config)
    incident = service.acknowledge(
        store, config, args.id, args.by, args.note or "", utcnow(), "cli", _links_for(config, store)
    )
    print(f"{incident.id} acknowledged by {args.by}; escalation stopped")
    return 0


def cmd_note(args: argparse.Namespace) -> int:
    # The text is checked here so that an error names this command's option (--text), not
    # the HTTP body's field (note).
    problem = service.text_problem(args.text, service.MAX_TEXT_CHARS, required=True)
    if problem is not None:
        raise Failure(f"--text: {problem}")
    config = _load(_config_path(args.config))
    store = _store(config)
    incident, _ = service.add_note(
        store, config, args.id, args.by, args.text, utcnow(), "cli", _links_for(config, store)
    )
    print(
        f"{incident.id}: note by {args.by} added (incident {incident.state}); "
        "told to every conversation it started"
    )
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    config = _load(_config_path(args.config))
    store = _store(config)
    incident = service.resolve(
        store,
        config,
        args.id,
        args.by,
        args.note or "",
        utcnow(),
        _links_for(config, store),
        "cli",
        accept=args.accept,
    )
    ttr = incident.time_to_resolve
    took = format_duration(_whole(ttr)) if ttr is not None else "?"
    relearn = "; the new level is accepted, detectors re-learn it" if args.accept else ""
    print(f"{incident.id} resolved by {args.by} after {took}{relearn}")
    return 0


def cmd_reassign(args: argparse.Namespace) -> int:
    config = _load(_config_path(args.config))
    store = _store(config)
    incident = service.reassign(
        store,
        config,
        args.id,
        args.to,
        args.reason,
        args.by,
        utcnow(),
        "cli",
        _links_for(config, store),
    )
    print(f"{incident.id} now owned by {incident.owner}; escalation restarts with them")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    config = _load(_config_path(args.config))
    try:
        since = parse_duration(args.since)
    except ValueError as error:
        raise Failure(f"--since: {error}") from error
    rows = reports.report(_store(config), since, utcnow())
    if args.json:
        _print_json({"since": args.since, "rows": [reports.report_row_json(r) for r in rows]})
        return 0
    print(
        f"{'OWNER':<10} {'SYSTEM':<20} {'OPEN':>4} {'ACKED':>5} {'RESOLVED':>8} "
        f"{'TTA p50':>8} {'TTA p90':>8} {'TTR p50':>8} {'TTR p90':>8} {'BREACH':>6} "
        f"{'HELD':>8} {'GIVEN':>5} {'GOT':>3} {'OLDEST':>8}"
    )
    for r in rows:
        print(
            f"{r.owner:<10} {r.system:<20} {r.open:>4} {r.acknowledged:>5} {r.resolved:>8} "
            f"{_fmt_s(r.ack_median_s):>8} {_fmt_s(r.ack_p90_s):>8} "
            f"{_fmt_s(r.resolve_median_s):>8} {_fmt_s(r.resolve_p90_s):>8} "
            f"{r.ack_slo_breaches + r.resolve_slo_breaches:>6} "
            f"{_fmt_s(r.held_s):>8} {r.handovers_given:>5} {r.handovers_received:>3} "
            f"{_fmt_s(r.oldest_unresolved_s):>8}"
        )
    return 0


def cmd_silence_add(args: argparse.Namespace) -> int:
    config = _load(_config_path(args.config))
    now = utcnow()
    silence = silences.make(
        config,
        system=args.system,
        owner=args.owner,
        labels=silences.parse_labels(args.label or ()),
        duration=args.for_,
        reason=args.reason,
        by=args.by,
        via="cli",
        now=now,
        new_id=new_silence_id(),
    )
    silences.add(_store(config), silence)
    covered = ", ".join(silences.covered(config, silence))
    print(f"{silence.id} holds the pages of {covered} until {rfc3339(silence.ends_at)}")
    return 0


def cmd_silence_list(args: argparse.Namespace) -> int:
    config = _load(_config_path(args.config))
    now = utcnow()
    found = silences.listed(_store(config), config, now, every=args.all)
    if args.json:
        _print_json({"silences": [silences.silence_json(s, now, config) for s in found]})
        return 0
    if not found:
        print("no silences")
        return 0
    print(f"{'ID':<15} {'ACTIVE':<6} {'UNTIL':<19} {'BY':<10} {'COVERS':<30} REASON")
    for s in found:
        until = s.ends_at if s.expired_at is None else min(s.ends_at, s.expired_at)
        active = "yes" if s.active(now) else "no"
        print(f"{s.id:<15} {active:<6} {_short(until):<19} {s.by:<10} {s.matcher:<30} {s.reason}")
    return 0


def cmd_silence_expire(args: argparse.Namespace) -> int:
    config = _load(_config_path(args.config))
    silence = silences.expire(_store(config), args.id, args.by, "cli", utcnow())
    print(f"{silence.id} expired by {silence.expired_by}; its open incidents page their owners")
    return 0


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return format_duration(timedelta(seconds=round(seconds)))


def _whole(value: timedelta) -> timedelta:
    return timedelta(seconds=round(value.total_seconds()))


# -- parser -----------------------------------------------------------------------------------


def config_arg(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--config",
        help="config file (default: $DRIFTOWNER_CONFIG, then ./config/driftowner.yaml)",
    )


def _incident_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """incidents, show, ack, resolve, note, reassign, report: the commands over the store."""
    c = sub.add_parser("incidents", help="list incidents")
    config_arg(c)
    c.add_argument("--state", choices=STATES)
    c.add_argument("--owner")
    c.add_argument("--system")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_incidents)

    c = sub.add_parser("show", help="one incident with its event timeline")
    config_arg(c)
    c.add_argument("id")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_show)

    for name, func, text in (
        ("ack", cmd_ack, "acknowledge an incident: escalation stops"),
        ("resolve", cmd_resolve, "resolve an incident"),
    ):
        c = sub.add_parser(name, help=text)
        config_arg(c)
        c.add_argument("id")
        c.add_argument("--by", required=True, help="owner key of the person acting")
        c.add_argument("--note")
        if name == "resolve":
            c.add_argument(
                "--accept",
                action="store_true",
                help="the new level is normal: the signals' detectors re-learn their reference",
            )
        c.set_defaults(func=func)

    c = sub.add_parser(
        "note", help="add a note to an incident, told to every conversation it started"
    )
    config_arg(c)
    c.add_argument("id")
    c.add_argument("--by", required=True, help="owner key of the person writing")
    c.add_argument("--text", required=True, help="the note (at most 2000 characters)")
    c.set_defaults(func=cmd_note)

    c = sub.add_parser("reassign", help="make another owner accountable for an incident")
    config_arg(c)
    c.add_argument("id")
    c.add_argument("--to", required=True)
    c.add_argument("--reason", required=True)
    c.add_argument(
        "--by",
        default=os.environ.get("USER") or "cli",
        help="who hands the incident over (default: $USER)",
    )
    c.set_defaults(func=cmd_reassign)

    c = sub.add_parser("report", help="time to acknowledge and resolve, per owner and system")
    config_arg(c)
    c.add_argument("--since", default="30d")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_report)


def _silence_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """silence add, list, expire: holding pages on the configured store."""
    silence = sub.add_parser("silence", help="hold the pages of systems for a while")
    commands = silence.add_subparsers(dest="silence_command", required=True, metavar="ACTION")
    c = commands.add_parser("add", help="hold the pages of a system, an owner's or labelled ones")
    config_arg(c)
    matcher = c.add_mutually_exclusive_group(required=True)
    matcher.add_argument("--system", help="one system")
    matcher.add_argument("--owner", help="every system of this owner")
    matcher.add_argument(
        "--label", action="append", help="NAME=VALUE: systems with this label (repeatable)"
    )
    c.add_argument("--for", dest="for_", required=True, help="how long, e.g. 2h (at most 30d)")
    c.add_argument("--reason", required=True)
    c.add_argument("--by", required=True, help="owner key of the person silencing")
    c.set_defaults(func=cmd_silence_add)

    c = commands.add_parser("list", help="the silences and maintenance windows holding now")
    config_arg(c)
    c.add_argument("--all", action="store_true", help="also those ended or expired")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_silence_list)

    c = commands.add_parser("expire", help="end a silence now: held incidents page again")
    config_arg(c)
    c.add_argument("id")
    c.add_argument(
        "--by",
        default=os.environ.get("USER") or "cli",
        help="who ends it (default: $USER)",
    )
    c.set_defaults(func=cmd_silence_expire)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="driftowner",
        description="One accountable owner for every production AI system.",
    )
    p.add_argument("--version", action="version", version=f"driftowner {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("run", help="run the daemon")
    config_arg(c)
    c.add_argument("--listen", help="HOST:PORT to serve HTTP on (overrides server.listen)")
    c.set_defaults(func=cmd_run)

    c = sub.add_parser("demo", help="run the daemon on config/demo.yaml (simulated metrics)")
    c.add_argument("--listen", help="HOST:PORT to serve HTTP on")
    c.set_defaults(func=cmd_demo)

    c = sub.add_parser("check-config", help="validate a config file")
    c.add_argument("path")
    c.set_defaults(func=cmd_check_config)

    c = sub.add_parser("schema", help="print the JSON Schema of the config")
    c.set_defaults(func=cmd_schema)

    c = sub.add_parser("evaluate", help="one poll + detect cycle; prints findings, changes nothing")
    config_arg(c)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("replay", help="backtest: the incidents the rules would have opened")
    config_arg(c)
    c.add_argument("--from", dest="start", required=True, help="RFC 3339, Unix seconds, now-7d")
    c.add_argument("--to", dest="end", default="now", help="default: now")
    c.add_argument("--interval", help="between evaluations (default: evaluation.interval)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_replay)

    c = sub.add_parser(
        "audit", help="the ownership registry checked: layers, disagreement rules, reachability"
    )
    config_arg(c)
    c.add_argument("--json", action="store_true")
    c.add_argument("--strict", action="store_true", help="exit 1 when there is any gap")
    c.set_defaults(func=cmd_audit)

    c = sub.add_parser("notify-test", help="one test message through each of an owner's channels")
    config_arg(c)
    c.add_argument("--owner", required=True)
    c.set_defaults(func=cmd_notify_test)

    _incident_commands(sub)
    _silence_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as error:
        for line in error.errors:
            print(line, file=sys.stderr)
        return 1
    except (Failure, service.NotFound, LifecycleError, Conflict, StoreError) as error:
        print(f"driftowner {args.command}: {error}", file=sys.stderr)
        return 1
    except SQLAlchemyError as error:
        reason = getattr(error, "orig", None) or error
        print(f"driftowner {args.command}: store error: {reason}", file=sys.stderr)
        return 1
    except service.BadRequest as error:
        print(f"driftowner {args.command}: --{error.field}: {error}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
