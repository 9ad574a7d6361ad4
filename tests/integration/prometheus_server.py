"""A real Prometheus for tests: load OpenMetrics history with ``promtool``, serve it on a free
loopback port, stop it afterwards.

Use it from any test::

    from tests.integration.prometheus_server import openmetrics, running_prometheus

    with running_prometheus(tmp_path, openmetrics(...)) as base_url:
        ...

Under ``CI=true`` a missing ``prometheus`` or ``promtool`` fails the test; elsewhere it skips
with the reason (see :func:`tests.conftest.require_binary`).
"""

from __future__ import annotations

import contextlib
import math
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_binary

READY_TIMEOUT = 30.0
"""Seconds to wait for ``/-/ready`` before giving up."""

_START_ATTEMPTS = 3

_CONFIG = """\
# Written by tests/integration/prometheus_server.py: serve stored history only.
global:
  scrape_interval: 1m
  evaluation_interval: 1m
scrape_configs: []
"""


CONFIG_HEAD = """\
evaluation: {interval: 1m}
sources:
  prom: {type: prometheus, url: "%(url)s", timeout: 10s}
owners:
  alice: {name: Alice Chen, email: alice@example.com}
channels:
  console: {type: log}
escalation_chains:
  standard:
    steps: [{notify: owner, via: [console]}]
"""
"""A driftowner config's head for tests over this Prometheus: one ``prom`` source (its URL a
``%(url)s`` placeholder), owner ``alice``, a ``console`` log channel and a one-step
``standard`` chain; a test adds its ``systems`` (and templates)."""


@dataclass(frozen=True)
class Family:
    """One metric family of OpenMetrics history.

    Args:
        name: The family name (``model_accuracy``; a counter's family has no ``_total``).
        type: ``gauge`` or ``counter`` (the counter's samples get ``_total``).
        samples: ``(labels, unix_seconds, value)``, any order; written sorted by series and time.
        help: Optional ``# HELP`` text.
    """

    name: str
    type: str
    samples: Iterable[tuple[Mapping[str, str], float, float]]
    help: str = ""


def openmetrics(*families: Family) -> str:
    """OpenMetrics text of ``families``, ending with ``# EOF`` as promtool requires."""
    lines: list[str] = []
    for family in families:
        if family.help:
            lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.type}")
        sample_name = f"{family.name}_total" if family.type == "counter" else family.name
        ordered = sorted(
            ((_labels(labels), at, value) for labels, at, value in family.samples),
            key=lambda row: (row[0], row[1]),
        )
        for labels, at, value in ordered:
            lines.append(f"{sample_name}{labels} {_number(value)} {_number(at)}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def running_prometheus(
    tmp_path: Path, openmetrics_text: str, *, scrape_targets: Sequence[str] = ()
) -> Iterator[str]:
    """Run a Prometheus over ``openmetrics_text`` and yield its base URL.

    With ``scrape_targets`` (``127.0.0.1:PORT`` of live exporters) it also scrapes them every
    second, job ``model-monitoring``, as it would a model server in production.

    Writes the text to ``tmp_path``, loads it into a fresh TSDB with ``promtool tsdb
    create-blocks-from openmetrics``, starts ``prometheus`` on a free ``127.0.0.1`` port with no
    scrape targets and 100 years of retention, waits (at most :data:`READY_TIMEOUT` s) for
    ``/-/ready``, yields ``http://127.0.0.1:PORT``, and stops the server on exit.

    Put history within the last few hours before now so queries at now see it.

    Raises:
        pytest.fail.Exception: promtool rejected the text, or Prometheus did not become ready
            (the message carries their output).
    """
    prometheus = require_binary("prometheus")
    promtool = require_binary("promtool")
    if not openmetrics_text.rstrip().endswith("# EOF"):
        pytest.fail("OpenMetrics text must end with '# EOF'")
    tmp_path.mkdir(parents=True, exist_ok=True)
    history = tmp_path / "history.om"
    history.write_text(openmetrics_text, encoding="utf-8")
    data_dir = tmp_path / "tsdb"
    loaded = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(history), str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if loaded.returncode != 0:
        pytest.fail(
            f"promtool could not load {history} (exit {loaded.returncode}):\n"
            f"{loaded.stdout}\n{loaded.stderr}"
        )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        _CONFIG if not scrape_targets else _scrape_config(scrape_targets), encoding="utf-8"
    )
    log_path = tmp_path / "prometheus.log"

    for attempt in range(_START_ATTEMPTS):
        port = _free_port()
        base_url = f"http://127.0.0.1:{port}"
        with log_path.open("w", encoding="utf-8") as log:
            process = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={data_dir}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=100y",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        try:
            if not _wait_ready(process, base_url, log_path, retry=attempt + 1 < _START_ATTEMPTS):
                continue  # someone took the port between probing and binding: try another
            yield base_url
            return
        finally:
            _stop(process)


def _scrape_config(targets: Sequence[str]) -> str:
    listed = ", ".join(f'"{target}"' for target in targets)
    return (
        "# Written by tests/integration/prometheus_server.py: history plus live exporters.\n"
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1m\n"
        "scrape_configs:\n"
        "  - job_name: model-monitoring\n"
        "    scrape_interval: 1s\n"
        f"    static_configs: [{{targets: [{listed}]}}]\n"
    )


def _wait_ready(
    process: subprocess.Popen[bytes], base_url: str, log_path: Path, *, retry: bool
) -> bool:
    """Wait for ``/-/ready``: true once ready; false when the port was taken and ``retry``.

    Raises:
        pytest.fail.Exception: prometheus exited or stayed unready, with its log's tail.
    """
    deadline = time.monotonic() + READY_TIMEOUT
    last = "no answer yet"
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                if retry and "address already in use" in _tail(log_path):
                    return False
                pytest.fail(
                    f"prometheus exited with {code} before becoming ready:\n{_tail(log_path)}"
                )
            try:
                response = client.get(f"{base_url}/-/ready")
                if response.status_code == 200:
                    return True
                last = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
    pytest.fail(
        f"prometheus at {base_url} not ready within {READY_TIMEOUT:.0f}s ({last}):\n"
        f"{_tail(log_path)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    pairs = (f'{key}="{_escape(value)}"' for key, value in sorted(labels.items()))
    return "{" + ",".join(pairs) + "}"


def _escape(value: str) -> str:
    """A label value escaped for the exposition format (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))
