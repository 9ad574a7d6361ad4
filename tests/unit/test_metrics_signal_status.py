"""``driftowner_signal_status``: what /metrics says about each signal's last finding."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import generate_latest

from driftowner.metrics import Metrics
from driftowner.model import Finding
from driftowner.store import MemoryStore

AT = datetime(2026, 11, 30, tzinfo=UTC)


def signal_status_lines(metrics: Metrics) -> list[str]:
    text = generate_latest(metrics.registry).decode()
    return [line for line in text.splitlines() if line.startswith("driftowner_signal_status{")]


def test_each_signal_has_one_on_its_last_status_and_zero_on_the_others() -> None:
    """1 on the status of each signal's latest finding and 0 on the other two; a later
    finding moves the 1; a signal not in a later evaluation keeps what it last had."""
    metrics = Metrics(MemoryStore(), lambda: AT)
    metrics.record_findings(
        [
            Finding("fraud", "accuracy", "model", "ok", AT),
            Finding("search", "adoption", "business", "degraded", AT),
        ]
    )
    metrics.record_findings([Finding("fraud", "accuracy", "model", "no_data", AT)])
    assert signal_status_lines(metrics) == [
        'driftowner_signal_status{layer="model",signal="accuracy",status="ok",system="fraud"} 0.0',
        'driftowner_signal_status{layer="model",signal="accuracy",status="degraded",'
        'system="fraud"} 0.0',
        'driftowner_signal_status{layer="model",signal="accuracy",status="no_data",'
        'system="fraud"} 1.0',
        'driftowner_signal_status{layer="business",signal="adoption",status="ok",'
        'system="search"} 0.0',
        'driftowner_signal_status{layer="business",signal="adoption",status="degraded",'
        'system="search"} 1.0',
        'driftowner_signal_status{layer="business",signal="adoption",status="no_data",'
        'system="search"} 0.0',
    ]


def test_no_finding_yet_exposes_no_signal_status() -> None:
    """Before the first evaluation the family has no samples (nothing is made up)."""
    assert signal_status_lines(Metrics(MemoryStore(), lambda: AT)) == []
