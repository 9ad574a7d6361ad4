"""The daemon as a process under a stand-in for systemd: a real AF_UNIX datagram socket named
by NOTIFY_SOCKET (a path, or an '@' abstract name) receives READY=1 once /readyz answers,
WATCHDOG=1 again and again, RELOADING=1 then READY=1 around a SIGHUP reload, and STOPPING=1 on
SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.test_daemon import STARTED, Deployment, _deployment, _get, wait_for
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.e2e

WAIT_S = 20.0
"""The longest a test waits for one notification before it fails."""


class NotifyListener:
    """What systemd listens on: a datagram socket, bound to a file or an abstract name."""

    def __init__(self, notify_socket: str) -> None:
        self.notify_socket = notify_socket
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if notify_socket.startswith("@"):
            self.sock.bind(b"\0" + notify_socket[1:].encode())
        else:
            self.sock.bind(notify_socket)
        self.sock.settimeout(WAIT_S)
        self.received: list[str] = []

    def next(self) -> str:
        """The next notification; fails the test after WAIT_S without one."""
        try:
            message = self.sock.recv(4096).decode()
        except TimeoutError:
            raise AssertionError(
                f"no notification within {WAIT_S}s; so far: {self.received}"
            ) from None
        self.received.append(message)
        return message

    def next_other_than_watchdog(self) -> str:
        """The next notification that is not a watchdog ping."""
        while (message := self.next()) == "WATCHDOG=1":
            pass
        return message

    def close(self) -> None:
        self.sock.close()


def _start(deployment: Deployment, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The daemon over ``deployment``'s config, with ``env`` as its environment."""
    with (deployment.root / "daemon.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "driftowner.cli", "run", "--config", str(deployment.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=deployment.root,
            env=env,
        )
    STARTED.append(process)
    return process


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest) -> Iterator[NotifyListener]:
    # A short directory: an AF_UNIX path has a 108-byte limit that pytest's tmp_path may pass.
    with tempfile.TemporaryDirectory(prefix="sdnotify") as directory:
        if request.param == "path":
            name = str(Path(directory) / "notify.sock")
        else:
            name = f"@driftowner-test-{uuid.uuid4().hex}"
        listening = NotifyListener(name)
        yield listening
        listening.close()


def test_daemon_tells_systemd_ready_watchdog_reloading_and_stopping(
    tmp_path: Path, listener: NotifyListener
) -> None:
    """Under NOTIFY_SOCKET and WATCHDOG_USEC the daemon sends READY=1 only when /readyz already
    answers 200, pings WATCHDOG=1 repeatedly, frames a SIGHUP reload with RELOADING=1 (with its
    CLOCK_MONOTONIC time) and READY=1, and says STOPPING=1 on SIGTERM before exiting 0."""
    with FakeSlack() as slack:
        deployment = _deployment(tmp_path, slack, drop_at=3, recover_at=25, step2="4s")
        env = {**os.environ, "NOTIFY_SOCKET": listener.notify_socket, "WATCHDOG_USEC": "400000"}
        process = _start(deployment, env)

        assert listener.next() == "READY=1"
        assert _get(f"{deployment.url}/readyz") == 200
        assert [listener.next() for _ in range(3)] == ["WATCHDOG=1"] * 3

        before = time.monotonic_ns() // 1000
        process.send_signal(signal.SIGHUP)
        reloading = listener.next_other_than_watchdog()
        after = time.monotonic_ns() // 1000
        first, _, stamp = reloading.partition("\n")
        assert first == "RELOADING=1"
        key, _, usec = stamp.partition("=")
        assert key == "MONOTONIC_USEC"
        assert before <= int(usec) <= after
        assert listener.next_other_than_watchdog() == "READY=1"
        assert "config reloaded" in deployment.log()

        process.send_signal(signal.SIGTERM)
        assert listener.next_other_than_watchdog() == "STOPPING=1"
        assert process.wait(timeout=10) == 0


def test_daemon_pings_no_watchdog_that_belongs_to_another_process(
    tmp_path: Path, listener: NotifyListener
) -> None:
    """WATCHDOG_PID naming another process means the watchdog is not the daemon's: it still says
    READY=1 and STOPPING=1, but between them sends no WATCHDOG=1 (the reload's READY=1 is the
    next message after the first one)."""
    with FakeSlack() as slack:
        deployment = _deployment(tmp_path, slack, drop_at=3, recover_at=25, step2="4s")
        env = {
            **os.environ,
            "NOTIFY_SOCKET": listener.notify_socket,
            "WATCHDOG_USEC": "200000",
            "WATCHDOG_PID": str(os.getpid()),
        }
        process = _start(deployment, env)
        assert listener.next() == "READY=1"
        # The daemon runs a few evaluation cycles (interval 1s); a watchdog ping would be due
        # every 0.1 s. The next message must still be the reload's.
        cycles = "driftowner_evaluation_duration_seconds_count"
        wait_for(lambda: deployment.metrics().get(cycles, 0) >= 3, "three cycles", WAIT_S)
        process.send_signal(signal.SIGHUP)
        assert listener.next().startswith("RELOADING=1\n")
        assert listener.next() == "READY=1"
        process.send_signal(signal.SIGTERM)
        assert listener.next() == "STOPPING=1"
        assert process.wait(timeout=10) == 0
