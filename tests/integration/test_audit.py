"""``driftowner audit`` (table, ``--json``, ``--strict`` exit codes) on configs with and without
gaps, and the same audit on ``/api/v1/systems``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from driftowner.cli import main
from driftowner.configload import load_config
from tests.integration.app_harness import serving

DATA = Path(__file__).resolve().parents[1] / "data" / "audit"
COVERED = DATA / "covered.yaml"
GAPS = DATA / "gaps.yaml"

EXPECTED_GAPS = [
    "churn-model: no business-layer signal, so 'accuracy fine, adoption falling' cannot be seen",
    "churn-model: bob cannot be reached on slack (no slack), which step 2 of chain 'standard' "
    "sends through",
    "chain 'solo' pages only alice at every step (for fraud-scoring): when alice does not "
    "answer, nobody else is told",
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("path", "strict", "code"),
    [(COVERED, False, 0), (COVERED, True, 0), (GAPS, False, 0), (GAPS, True, 1)],
    ids=["no gaps", "no gaps, strict", "gaps", "gaps, strict"],
)
def test_audit_exits_1_only_with_strict_and_gaps(
    capsys: pytest.CaptureFixture[str], path: Path, strict: bool, code: int
) -> None:
    """Gaps are reported either way; only ``--strict`` turns them into exit 1 (for CI)."""
    argv = ["audit", "--config", str(path), *(["--strict"] if strict else [])]
    assert run(capsys, *argv)[0] == code


def test_the_table_has_a_row_per_system_and_names_each_gap(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One row per system (owner, layers, model~business tie, owner reachable, contributors,
    gap count), then every gap on its own line."""
    code, out, err = run(capsys, "audit", "--config", str(GAPS))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == [
        "SYSTEM",
        "OWNER",
        "LAYERS",
        "MODEL~BUSINESS",
        "REACHABLE",
        "CONTRIBUTORS",
        "GAPS",
    ]
    assert lines[1].split() == [
        "fraud-scoring",
        "alice",
        "model,business",
        "yes",
        "yes",
        "model:ml-churn",
        "business:ml-churn",
        "0",
    ]
    assert lines[2].split() == ["churn-model", "alice", "model", "no", "yes", "model:ml-churn", "2"]
    assert lines[3:5] == ["", "3 gaps:"]
    assert lines[5:] == [f"  - {gap}" for gap in EXPECTED_GAPS]


def test_a_covered_registry_says_no_gaps(capsys: pytest.CaptureFixture[str]) -> None:
    """Every layer, a tie, everyone reachable, a team per layer, two people: no gaps."""
    code, out, _ = run(capsys, "audit", "--config", str(COVERED))
    assert code == 0
    assert out.splitlines()[-2:] == ["", "no gaps"]


def test_audit_json_is_one_document_with_every_gap(capsys: pytest.CaptureFixture[str]) -> None:
    """``--json``: the systems with their audit fields, the registry gaps, the threshold."""
    code, out, _ = run(capsys, "audit", "--config", str(GAPS), "--json", "--strict")
    assert code == 1
    document = json.loads(out)
    assert document["gaps"] == 3
    assert document["max_systems_per_owner"] == 5
    churn = document["systems"][1]
    assert churn["name"] == "churn-model"
    assert churn["missing_layers"] == ["data", "engineering", "business"]
    assert [g["message"] for g in churn["gaps"]] == EXPECTED_GAPS[:2]
    assert [g["message"] for g in document["registry"]] == EXPECTED_GAPS[2:]
    assert document["registry"][0]["code"] == "single_person_chain"


def test_audit_on_a_bad_config_prints_located_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config that does not load: exit 1 with its errors located, no traceback."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        GAPS.read_text().replace(
            "audit: {layers: [model, business]}", "audit: {max_systems_per_owner: 0}"
        )
    )
    code, out, err = run(capsys, "audit", "--config", str(bad))
    assert (code, out) == (1, "")
    assert err.startswith(f"{bad}: audit.max_systems_per_owner: ")
    assert "Traceback" not in err


def test_the_systems_api_shows_each_systems_audit_and_the_registry_gaps(tmp_path: Path) -> None:
    """``/api/v1/systems`` keeps its fields and adds ``audit`` per system and a top-level
    ``registry`` list: the same gaps as the command line."""
    text = GAPS.read_text() + f'storage: {{url: "sqlite:///{tmp_path / "store.db"}"}}\n'
    path = tmp_path / "driftowner.yaml"
    path.write_text(text)
    with serving(load_config(path), "inc-audit") as (client, _):
        body = client.get("/api/v1/systems").json()
    fraud, churn = body["systems"]
    assert set(fraud) >= {"name", "owner", "owner_name", "escalation", "runbook", "signals"}
    assert fraud["audit"]["gaps"] == [] and fraud["audit"]["owner_reachable"] is True
    assert churn["audit"]["layers"] == ["model"]
    assert churn["audit"]["disagreements"] == []
    assert [g["message"] for g in churn["audit"]["gaps"]] == EXPECTED_GAPS[:2]
    assert {(r["person"], r["channel"], r["reachable"]) for r in churn["audit"]["reach"]} == {
        ("alice", "email", True),
        ("bob", "email", True),
        ("bob", "slack", False),
    }
    assert [g["message"] for g in body["registry"]] == EXPECTED_GAPS[2:]
