"""A stand-in for your model-monitoring metrics, for deploy/compose.yaml: two models' accuracy
and adoption as Prometheus gauges. After DRIFT_AFTER_S seconds, for DRIFT_LASTS_S seconds,
fraud-scoring's adoption falls while its accuracy stays fine (layers disagree), and
churn-prediction's accuracy drifts down. Then both recover.

Run: python exporter.py   (EXPORTER_LISTEN=0.0.0.0:8000 by default)
"""

from __future__ import annotations

import os
import random
import time

from prometheus_client import CollectorRegistry, Gauge, start_http_server

HEALTHY = {"fraud": (0.95, 0.62), "churn": (0.88, 0.40)}
"""Each model's (accuracy, adoption) while healthy."""
DRIFTED = {"fraud": (0.95, 0.30), "churn": (0.72, 0.40)}
"""... and while drifting: fraud's adoption falls, churn's accuracy falls."""


def levels(
    model: str, elapsed: float, drift_after: float, drift_lasts: float
) -> tuple[float, float]:
    """A model's (accuracy, adoption) ``elapsed`` seconds after the exporter started."""
    drifting = drift_after <= elapsed < drift_after + drift_lasts
    return (DRIFTED if drifting else HEALTHY)[model]


def main() -> None:
    host, _, port = os.environ.get("EXPORTER_LISTEN", "0.0.0.0:8000").rpartition(":")
    drift_after = float(os.environ.get("DRIFT_AFTER_S", "300"))
    drift_lasts = float(os.environ.get("DRIFT_LASTS_S", "900"))
    registry = CollectorRegistry()
    accuracy = Gauge("model_accuracy", "Accuracy on labelled traffic", ["model"], registry=registry)
    adoption = Gauge(
        "model_adoption", "Share of model decisions users act upon", ["model"], registry=registry
    )
    start_http_server(int(port), addr=host, registry=registry)
    print(f"exporter on {host}:{port}; drift after {drift_after:.0f}s for {drift_lasts:.0f}s")
    noise = random.Random(7)
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        for model in HEALTHY:
            acc, adopt = levels(model, elapsed, drift_after, drift_lasts)
            accuracy.labels(model).set(round(acc + noise.uniform(-0.01, 0.01), 4))
            adoption.labels(model).set(round(adopt + noise.uniform(-0.02, 0.02), 4))
        time.sleep(5)


if __name__ == "__main__":
    main()
