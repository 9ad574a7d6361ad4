"""systemd's service notification protocol (sd_notify): READY, WATCHDOG, RELOADING and STOPPING
as datagrams to $NOTIFY_SOCKET. Without NOTIFY_SOCKET (not under systemd) every call is a
no-op, so the daemon calls these unconditionally."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Mapping

import structlog

log = structlog.get_logger("driftowner.sdnotify")

READY = "READY=1"
STOPPING = "STOPPING=1"
WATCHDOG = "WATCHDOG=1"
SEND_TIMEOUT_S = 1.0
"""A datagram to systemd never blocks the event loop longer than this."""
READY_POLL_S = 0.05
"""How often :func:`supervise` looks whether the daemon is ready yet."""


class NotifySocketError(ValueError):
    """$NOTIFY_SOCKET or $WATCHDOG_USEC holds a value this module cannot use."""


def address(notify_socket: str) -> str | bytes:
    """The socket address $NOTIFY_SOCKET names.

    Args:
        notify_socket: the variable's value: an absolute path, or ``@name`` for a socket in the
            abstract namespace.

    Returns:
        The address for ``sendto`` on an AF_UNIX socket.

    Raises:
        NotifySocketError: for any other form (vsock addresses, relative paths).
    """
    if notify_socket.startswith("@") and len(notify_socket) > 1:
        return b"\0" + notify_socket[1:].encode()
    if notify_socket.startswith("/"):
        return notify_socket
    raise NotifySocketError(
        f"NOTIFY_SOCKET: {notify_socket!r} is neither an absolute path nor an @abstract name"
    )


def reloading(monotonic_usec: int) -> str:
    """The message that opens a reload: RELOADING=1 with the CLOCK_MONOTONIC time in µs, which
    systemd >= 253 requires to match a reload it asked for (Type=notify-reload)."""
    return f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec}"


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """How often to ping the watchdog: half of $WATCHDOG_USEC, in seconds.

    Args:
        environ: the process environment.
        pid: this process's id; a $WATCHDOG_PID naming another process means the watchdog is
            not ours to ping.

    Returns:
        Seconds between pings, or None when no watchdog is asked for.

    Raises:
        NotifySocketError: when WATCHDOG_USEC or WATCHDOG_PID is not a positive integer.
    """
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid and _positive(watchdog_pid, "WATCHDOG_PID") != pid:
        return None
    return _positive(usec, "WATCHDOG_USEC") / 2 / 1_000_000


def _positive(value: str, name: str) -> int:
    if not value.isdigit() or int(value) <= 0:
        raise NotifySocketError(f"{name}: {value!r} is not a positive integer")
    return int(value)


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send one notification to systemd.

    Args:
        state: newline-separated ``KEY=VALUE`` assignments, e.g. :data:`READY`.
        environ: the process environment (``os.environ`` when None).

    Returns:
        True when sent; False when there is no $NOTIFY_SOCKET or sending failed (logged with
        the reason: systemd's bookkeeping must never stop the daemon).
    """
    target = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
    if not target:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT_S)
            sock.sendto(state.encode(), address(target))
    except NotifySocketError as error:
        log.error("cannot notify systemd", error=str(error))
        return False
    except OSError as error:
        log.warning("cannot notify systemd", notify_socket=target, error=str(error))
        return False
    return True


async def supervise(
    ready: Callable[[], bool],
    healthy: Callable[[], bool],
    environ: Mapping[str, str] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Tell systemd READY=1 once ``ready()`` holds, then ping WATCHDOG=1 at half of
    $WATCHDOG_USEC for as long as ``healthy()`` holds at each ping. Runs as a task in the
    daemon's event loop, so a stuck loop stops the pings too; cancel it to stop.

    Args:
        ready: whether the daemon serves HTTP, its store is open and its scheduler runs.
        healthy: whether the daemon's loop does its work (the same check as /healthz).
        environ: the process environment (``os.environ`` when None).
        sleep: waits between checks (tests pass one that returns at once).
    """
    environ = os.environ if environ is None else environ
    if not environ.get("NOTIFY_SOCKET"):
        return
    while not ready():
        await sleep(READY_POLL_S)
    notify(READY, environ)
    try:
        interval = watchdog_interval(environ, os.getpid())
    except NotifySocketError as error:
        log.error("no watchdog pings", error=str(error))
        return
    if interval is None:
        return
    while True:
        await sleep(interval)
        if healthy():
            notify(WATCHDOG, environ)
        else:
            log.warning("unhealthy: not pinging the systemd watchdog")
