"""deploy/kubernetes/: the core objects validate against the Kubernetes schemas (strict: no
unknown field), the pieces refer to each other correctly, the pod is locked down, the
ConfigMap's config passes check-config, and the PrometheusRule carries the rules file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).parents[2] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
CORE = [
    "serviceaccount.yaml",
    "configmap.yaml",
    "deployment.yaml",
    "service.yaml",
    "poddisruptionbudget.yaml",
]
"""The objects of Kubernetes' own API; the rest are Prometheus Operator resources."""
VERSIONS = ["1.28.0", kubernetes_validate.latest_version()]


def load(name: str) -> dict[str, Any]:
    document = yaml.safe_load((KUBERNETES / name).read_text())
    assert isinstance(document, dict)
    return document


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = load("deployment.yaml")["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", CORE)
def test_core_objects_validate_against_the_kubernetes_schemas(name: str, version: str) -> None:
    """Each core object is valid for the oldest supported and the newest Kubernetes schema,
    strictly (a misspelt field is an error)."""
    kubernetes_validate.validate(load(name), version, strict=True)


def test_strict_schema_validation_catches_a_misspelt_field() -> None:
    """The schema check is real: a probe misspelt in the Deployment is refused."""
    deployment = load("deployment.yaml")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    """`kubectl apply -k deploy/kubernetes` applies every manifest in the folder."""
    listed = set(load("kustomization.yaml")["resources"])
    present = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_pod_runs_locked_down() -> None:
    """Non-root, read-only root filesystem, all capabilities dropped, no privilege escalation,
    seccomp RuntimeDefault, no service account token."""
    spec = pod_spec()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_probes_check_healthz_and_readyz_on_the_served_port() -> None:
    """Liveness asks /healthz, readiness /readyz, both on the container's http port."""
    (container,) = pod_spec()["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {p["name"] for p in container["ports"]} == {"http"}


def test_service_pdb_and_servicemonitor_select_the_pods() -> None:
    """The Service, the PodDisruptionBudget and the ServiceMonitor all select the Deployment's
    pods, and the ServiceMonitor scrapes the Service's port with the job label the rules use."""
    deployment = load("deployment.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] >= 2
    service = load("service.yaml")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    pdb = load("poddisruptionbudget.yaml")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    monitor = load("servicemonitor.yaml")
    service_labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {
        p["name"] for p in service["spec"]["ports"]
    }
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "driftowner"


def test_config_map_is_mounted_where_the_container_reads_its_config() -> None:
    """The container's --config path is the ConfigMap's key under the config volume's mount,
    and the secrets it reads come from the Secret named in the docs."""
    spec = pod_spec()
    (container,) = spec["containers"]
    config_path = Path(container["args"][container["args"].index("--config") + 1])
    (mount,) = (m for m in container["volumeMounts"] if m["name"] == "config")
    (volume,) = (v for v in spec["volumes"] if v["name"] == "config")
    assert Path(mount["mountPath"]) == config_path.parent
    assert volume["configMap"]["name"] == load("configmap.yaml")["metadata"]["name"]
    assert config_path.name in load("configmap.yaml")["data"]
    secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]}
    assert secrets == {"driftowner"}


def test_config_map_config_passes_check_config(tmp_path: Path) -> None:
    """The config shipped in the ConfigMap is valid for driftowner."""
    config = tmp_path / "driftowner.yaml"
    config.write_text(load("configmap.yaml")["data"]["driftowner.yaml"])
    # The Slack webhook URL comes from the Secret, as the Deployment's env names it.
    env = {**os.environ, "DRIFTOWNER_CHANNELS__SLACK__WEBHOOK_URL": "https://hooks.example/T/B/X"}
    result = subprocess.run(
        [sys.executable, "-m", "driftowner.cli", "check-config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert load("configmap.yaml")["data"]["driftowner.yaml"].count("postgresql://") == 1


def test_prometheus_rule_carries_the_rules_file() -> None:
    """The PrometheusRule's groups are exactly deploy/prometheus/driftowner.rules.yml's."""
    rule = load("prometheusrule.yaml")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    rules_file = yaml.safe_load((DEPLOY / "prometheus" / "driftowner.rules.yml").read_text())
    assert rule["spec"] == rules_file
