"""systemd: the sd_notify module against a real datagram socket, and deploy/driftowner.service
checked by systemd's own tools (verify; security exposure at most 2.0)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftowner import sdnotify
from tests.conftest import require_binary
from tests.e2e.test_sdnotify import NotifyListener

UNIT = Path(__file__).parents[2] / "deploy" / "driftowner.service"
MAX_EXPOSURE = 2.0


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    listening = NotifyListener(f"@driftowner-unit-{uuid.uuid4().hex}")
    yield listening
    listening.close()


def test_notify_sends_one_datagram_to_a_socket_file(tmp_path: Path) -> None:
    """A NOTIFY_SOCKET path receives the state verbatim as one datagram."""
    listening = NotifyListener(str(tmp_path / "n.sock"))
    try:
        assert sdnotify.notify("READY=1\nSTATUS=up", {"NOTIFY_SOCKET": listening.notify_socket})
        assert listening.next() == "READY=1\nSTATUS=up"
    finally:
        listening.close()


def test_notify_reaches_an_abstract_socket(listener: NotifyListener) -> None:
    """'@name' in NOTIFY_SOCKET is the abstract namespace: the datagram arrives there."""
    assert sdnotify.notify(sdnotify.STOPPING, {"NOTIFY_SOCKET": listener.notify_socket})
    assert listener.next() == "STOPPING=1"


def test_notify_without_notify_socket_sends_nothing() -> None:
    """Outside systemd (no NOTIFY_SOCKET) notify is a no-op that says so."""
    assert sdnotify.notify(sdnotify.READY, {}) is False


@pytest.mark.parametrize(
    ("value", "why"),
    [("vsock:2:1234", "neither an absolute path"), ("relative.sock", "neither an absolute path")],
)
def test_unusable_notify_socket_is_a_located_error(value: str, why: str) -> None:
    """A NOTIFY_SOCKET this module cannot use names the variable and the value."""
    with pytest.raises(sdnotify.NotifySocketError, match=rf"NOTIFY_SOCKET: .*{why}"):
        sdnotify.address(value)
    assert sdnotify.notify(sdnotify.READY, {"NOTIFY_SOCKET": value}) is False


def test_notify_to_a_socket_nobody_listens_on_fails_without_raising(tmp_path: Path) -> None:
    """A vanished systemd socket is logged and reported as not sent, never raised."""
    assert sdnotify.notify(sdnotify.READY, {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


@pytest.mark.parametrize(
    ("environ", "pid", "expected"),
    [
        ({}, 7, None),
        ({"WATCHDOG_USEC": "30000000"}, 7, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 7, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, 7, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process(
    environ: dict[str, str], pid: int, expected: float | None
) -> None:
    """Pings come at half of WATCHDOG_USEC, and only when WATCHDOG_PID is unset or ours."""
    assert sdnotify.watchdog_interval(environ, pid) == expected


@pytest.mark.parametrize(
    "environ",
    [
        {"WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "9", "WATCHDOG_PID": "x"},
    ],
)
def test_bad_watchdog_variables_are_located_errors(environ: dict[str, str]) -> None:
    """A WATCHDOG_USEC or WATCHDOG_PID that is not a positive integer is named in the error."""
    with pytest.raises(sdnotify.NotifySocketError, match=r"WATCHDOG_(USEC|PID): .* positive"):
        sdnotify.watchdog_interval(environ, 1)


async def test_supervise_says_ready_once_ready_then_pings_only_while_healthy(
    listener: NotifyListener,
) -> None:
    """READY=1 waits for ready(); after it, each watchdog period pings only if healthy() holds
    then: healthy, unhealthy, unhealthy, healthy gives exactly two pings."""
    readiness = iter([False, False, True])
    health = iter([True, False, False, True])
    ticks: list[float] = []

    async def tick(seconds: float) -> None:
        ticks.append(seconds)
        if len(ticks) > 2 + 4:  # two readiness polls, four watchdog periods
            raise asyncio.CancelledError

    environ = {"NOTIFY_SOCKET": listener.notify_socket, "WATCHDOG_USEC": "2000000"}
    with pytest.raises(asyncio.CancelledError):
        await sdnotify.supervise(lambda: next(readiness), lambda: next(health), environ, tick)
    assert ticks[:2] == [sdnotify.READY_POLL_S] * 2
    assert ticks[2:6] == [1.0] * 4
    assert [listener.next() for _ in range(3)] == ["READY=1", "WATCHDOG=1", "WATCHDOG=1"]
    listener.sock.settimeout(0)
    with pytest.raises(BlockingIOError):
        listener.sock.recv(4096)


def test_reloading_carries_the_monotonic_time() -> None:
    """RELOADING=1 comes with MONOTONIC_USEC, as Type=notify-reload (systemd >= 253) needs."""
    assert sdnotify.reloading(123456) == "RELOADING=1\nMONOTONIC_USEC=123456"


def _unit_with_installed_paths(tmp_path: Path) -> Path:
    """The unit with /opt/driftowner/bin pointed at this checkout's installed driftowner:
    `systemd-analyze verify` checks that every Exec*= program exists."""
    installed = Path(sys.prefix) / "bin"
    assert (installed / "driftowner").exists()
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/driftowner/bin", str(installed)))
    return unit


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own checker finds nothing wrong in the unit (no unknown key, bad value or
    missing program)."""
    analyze = require_binary("systemd-analyze")
    unit = _unit_with_installed_paths(tmp_path)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_unit_is_a_notify_service_with_watchdog_reload_and_state_directory() -> None:
    """The unit asks for readiness and watchdog notifications and has reload and state set."""
    settings = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if re.match(r"^\w+=", line)
    )
    assert settings["Type"] == "notify"
    assert settings["WatchdogSec"] == "30s"
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert settings["StateDirectory"] == "driftowner"
    assert settings["User"] == "driftowner"


def test_unit_exposure_is_at_most_two(tmp_path: Path) -> None:
    """`systemd-analyze security --offline=true` rates the unit's exposure at most 2.0 (it was
    7.3 MEDIUM before the hardening)."""
    analyze = require_binary("systemd-analyze")
    result = subprocess.run(
        [analyze, "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout
