"""deploy/compose.yaml: valid by the compose specification (parsed with the compose-spec
package, which rejects unknown keys and malformed values), its pieces wired to each other, its
Prometheus config accepted by promtool, its driftowner config by check-config, and its example
exporter serving the drift the story needs."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from compose_spec import PyCompose

from tests.conftest import require_binary
from tests.e2e.test_daemon import free_port, wait_for

DEPLOY = Path(__file__).parents[2] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
EXPORTER = DEPLOY / "compose" / "exporter.py"


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def mounted(service: str, target: str) -> Path:
    """The file deploy/compose.yaml bind-mounts at ``target`` in ``service``."""
    for volume in compose()["services"][service]["volumes"]:
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == target:
            return (DEPLOY / source).resolve()
    raise AssertionError(f"{service} mounts nothing at {target}")


def test_compose_file_is_valid_by_the_compose_specification() -> None:
    """compose-spec parses and validates the file (services, volumes, depends_on, ports)."""
    parsed = PyCompose.from_yaml(COMPOSE.read_text())
    parsed.validate()
    assert set(parsed.service_names()) == {"exporter", "prometheus", "mailpit", "driftowner"}


def test_compose_validation_refuses_a_misspelt_key() -> None:
    """The validation is real: a misspelt service key is an error naming where it is."""
    broken = COMPOSE.read_text().replace("    depends_on:\n", "    depend_on:\n", 1)
    with pytest.raises(ValueError, match="depend_on"):
        PyCompose.from_yaml(broken).validate()


def test_every_reference_in_the_compose_file_exists() -> None:
    """depends_on names services; bind mounts and the build's Dockerfile exist; named
    volumes are declared."""
    document = compose()
    services = document["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} is missing"
            else:
                assert source in document["volumes"], f"{name}: volume {source} undeclared"
    build = services["driftowner"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"


def test_compose_driftowner_config_passes_check_config_and_uses_the_compose_services() -> None:
    """The mounted config is valid, reads the compose Prometheus and mails through Mailpit."""
    config_path = mounted("driftowner", "/etc/driftowner/driftowner.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "driftowner.cli", "check-config", str(config_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(config_path.read_text())
    services = compose()["services"]
    prometheus = urlsplit(config["sources"]["prom"]["url"])
    assert prometheus.hostname in services
    assert f"{prometheus.port}:{prometheus.port}" in services["prometheus"]["ports"][0]
    assert config["channels"]["email"]["host"] == "mailpit"
    assert config["channels"]["email"]["port"] == 1025  # Mailpit's SMTP port


def test_compose_prometheus_config_passes_promtool_and_scrapes_both_services() -> None:
    """promtool accepts the Prometheus config (and the rules it loads); it scrapes the
    exporter and driftowner as job "driftowner", as the alert rules expect."""
    promtool = require_binary("promtool")
    config_path = mounted("prometheus", "/etc/prometheus/prometheus.yml")
    result = subprocess.run(
        [promtool, "check", "config", str(config_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in yaml.safe_load(config_path.read_text())["scrape_configs"]
    }
    listen = yaml.safe_load(mounted("driftowner", "/etc/driftowner/driftowner.yaml").read_text())
    assert jobs["driftowner"] == [f"driftowner:{listen['server']['listen'].rpartition(':')[2]}"]
    exporter_port = compose()["services"]["exporter"]["environment"]["EXPORTER_LISTEN"]
    assert jobs["models"] == [f"exporter:{exporter_port.rpartition(':')[2]}"]


def _exporter_module() -> Any:
    spec = importlib.util.spec_from_file_location("compose_exporter", EXPORTER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("elapsed", "fraud", "churn"),
    [
        (0, (0.95, 0.62), (0.88, 0.40)),
        (300, (0.95, 0.30), (0.72, 0.40)),
        (1199, (0.95, 0.30), (0.72, 0.40)),
        (1200, (0.95, 0.62), (0.88, 0.40)),
    ],
)
def test_exporter_story_drifts_then_recovers(
    elapsed: float, fraud: tuple[float, float], churn: tuple[float, float]
) -> None:
    """Healthy, then (from DRIFT_AFTER_S for DRIFT_LASTS_S) fraud's adoption and churn's
    accuracy fall, then both recover."""
    exporter = _exporter_module()
    assert exporter.levels("fraud", elapsed, 300, 900) == fraud
    assert exporter.levels("churn", elapsed, 300, 900) == churn


def test_exporter_serves_the_drifted_metrics_that_the_compose_config_queries() -> None:
    """The exporter as a process on loopback: its /metrics carries the series the driftowner
    config queries, drifted when the drift has begun."""
    port = free_port()
    env = {**os.environ, "EXPORTER_LISTEN": f"127.0.0.1:{port}", "DRIFT_AFTER_S": "0"}
    process = subprocess.Popen(
        [sys.executable, str(EXPORTER)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:

        def scrape() -> str:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                return ""
            return text if 'model_adoption{model="fraud"}' in text else ""

        text = wait_for(scrape, "the exporter's metrics", 20)
    finally:
        process.terminate()
        process.wait(timeout=10)
    values = {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("model_")
    }
    assert values['model_adoption{model="fraud"}'] == pytest.approx(0.30, abs=0.02)
    assert values['model_accuracy{model="fraud"}'] == pytest.approx(0.95, abs=0.01)
    assert values['model_accuracy{model="churn"}'] == pytest.approx(0.72, abs=0.01)
