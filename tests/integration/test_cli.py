"""The command line over a real SQLite store: check-config, schema, evaluate, and the incident
commands acting through the same service functions as the HTTP API."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from driftowner.cli import main
from driftowner.configload import load_config
from driftowner.incidents import snapshot_chain
from driftowner.model import Incident
from driftowner.store import Changes, SqlStore
from tests.fakes.mailbox import running_smtp
from tests.fakes.slack import NO_SERVICE, FakeSlack
from tests.unit.factories import notification

ROOT = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_config_accepts_the_shipped_configs(capsys: pytest.CaptureFixture[str]) -> None:
    """config/demo.yaml and config/example.yaml are valid: exit 0 and a one-line summary."""
    for name in ("demo.yaml", "example.yaml"):
        code, out, err = run(capsys, "check-config", str(ROOT / "config" / name))
        assert (code, err) == (0, "")
        assert out.startswith(f"{ROOT / 'config' / name}: ok (1 systems")


def test_check_config_reports_every_error_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two mistakes: exit 1, each on its own line as FILE: yaml.path: message, no traceback."""
    text = (ROOT / "config" / "demo.yaml").read_text()
    text = text.replace("interval: 2s", "interval: 2 seconds").replace(
        "owner: alice                # required", "owner: alicia                # required"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    code, out, err = run(capsys, "check-config", str(bad))
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert any(line.startswith(f"{bad}: evaluation.interval: ") for line in lines), lines
    assert "Traceback" not in err


def test_check_config_on_a_duration_that_overflowed_prints_one_line_not_a_traceback(
    tmp_path: Path,
) -> None:
    """``after: 99999999999999999999d`` used to crash check-config with OverflowError and a
    traceback; as a process it now exits 1 with the located error alone (issue 5, defect 4)."""
    text = (ROOT / "config" / "demo.yaml").read_text()
    step = "      - after: 20s"
    assert step in text
    bad = tmp_path / "overflow.yaml"
    bad.write_text(text.replace(step, "      - after: 99999999999999999999d"))
    done = subprocess.run(
        [sys.executable, "-m", "driftowner.cli", "check-config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines() == [
        f"{bad}: escalation_chains.demo.steps[1].after: duration '99999999999999999999d' is "
        "longer than the maximum 10y (3650d)"
    ]


def test_check_config_prints_warnings_and_still_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config listening on 0.0.0.0 without external_url and api_token is valid (exit 0)
    but check-config says, on stderr, at which path, what is likely wrong (defect 7)."""
    text = (ROOT / "config" / "demo.yaml").read_text()
    config = tmp_path / "open.yaml"
    config.write_text(text.replace('listen: "127.0.0.1:9587"', 'listen: "0.0.0.0:9587"'))
    code, out, err = run(capsys, "check-config", str(config))
    assert code == 0 and out.startswith(f"{config}: ok (")
    assert [line.split(": ")[1:3] for line in err.splitlines()] == [
        ["server.external_url", "warning"],
        ["server.api_token", "warning"],
    ]


def test_schema_prints_the_json_schema_with_yaml_spellings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``schema`` prints one JSON document describing the config, with the ``for`` alias."""
    code, out, _ = run(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    assert "systems" in schema["properties"]
    assert '"for"' in out


def test_evaluate_prints_findings_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One poll + detect over the demo source: a finding per signal, no store written."""
    config = tmp_path / "demo.yaml"
    text = (ROOT / "config" / "demo.yaml").read_text()
    config.write_text(text.replace("sqlite:///var/demo.db", f"sqlite:///{tmp_path}/never.db"))
    code, out, _ = run(capsys, "evaluate", "--config", str(config), "--json")
    assert code == 0
    document = json.loads(out)
    assert {f["signal"] for f in document["findings"]} == {"accuracy", "adoption", "null_rate"}
    assert all(f["status"] == "ok" for f in document["findings"])
    assert document["conditions"] == []
    assert not (tmp_path / "never.db").exists()


ONE_SIGNAL = """
storage: {url: "sqlite:///%(db)s"}
sources: {csv: {type: file, path: "%(csv)s"}}
owners: {alice: {name: Alice Chen, email: alice@example.com}}
channels: {console: {type: log}}
escalation_chains: {std: {steps: [{notify: owner, via: [console]}]}}
systems:
  fraud-scoring:
    owner: alice
    escalation: std
    signals:
      adoption: {layer: business, source: csv, query: adoption, bad: down}
"""


def test_evaluate_shows_a_drifting_findings_statistic_and_when_it_began(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 6, point 7: a finding carries value, reference, statistic, limit and when the
    change began. A signal with no ``detect`` on a file source whose level fell an hour ago:
    ``evaluate --json`` warm-starts its chart from the file and shows all five."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    rows = ["timestamp,series,value"]
    for minutes in range(600, -1, -1):
        level = 0.41 if minutes > 60 else 0.31
        wobble = 0.01 * ((minutes * 7919) % 13 - 6) / 6
        at = (now - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append(f"{at},adoption,{level + wobble:.4f}")
    csv = tmp_path / "adoption.csv"
    csv.write_text("\n".join(rows) + "\n")
    config = tmp_path / "driftowner.yaml"
    config.write_text(ONE_SIGNAL % {"db": tmp_path / "never.db", "csv": csv})
    code, out, _ = run(capsys, "evaluate", "--config", str(config), "--json")
    assert code == 0
    (finding,) = json.loads(out)["findings"]
    assert finding["status"] == "degraded", finding
    assert finding["reference"] == pytest.approx(0.41, abs=0.01)
    assert finding["statistic"] > finding["limit"] > 0
    began = datetime.fromisoformat(finding["began_at"].replace("Z", "+00:00"))
    assert abs(began - (now - timedelta(minutes=60))) <= timedelta(minutes=5)
    assert "fell" in finding["reason"]
    assert finding["reason"].endswith("(1 false alarm expected per 30 days)")


def _replay_levels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], segments: list[tuple[int, float]], bad: str
) -> list[dict[str, Any]]:
    """``driftowner replay --json`` over a one-signal file config (no ``detect``) whose series
    is ``(count, level)`` segments one a minute, noise sd 0.01 from ``random.Random(2)``:
    the incidents replayed."""
    rng = random.Random(2)
    begin = datetime(2026, 11, 20, tzinfo=UTC)
    rows = ["timestamp,series,value"]
    minute = 0
    for count, level in segments:
        for _ in range(count):
            at = (begin + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")
            rows.append(f"{at},adoption,{level + rng.gauss(0, 0.01):.6f}")
            minute += 1
    csv = tmp_path / "adoption.csv"
    csv.write_text("\n".join(rows) + "\n")
    config = tmp_path / "driftowner.yaml"
    text = ONE_SIGNAL % {"db": tmp_path / "never.db", "csv": csv}
    config.write_text(text.replace("bad: down", f"bad: {bad}"))
    end = begin + timedelta(minutes=minute - 1)
    code, out, err = run(
        capsys,
        "replay",
        "--config",
        str(config),
        "--from",
        begin.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--to",
        end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--json",
    )
    assert code == 0, err
    incidents: list[dict[str, Any]] = json.loads(out)["incidents"]
    return incidents


def test_replay_resolves_a_dip_whose_recovery_follows_the_relearning_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 6, point 4: 2,000 samples at 0.41, 120 at 0.31, 700 at 0.41 (seed 2). The
    default chart's re-learning after the dip stopped on the recovery's first sample, and
    Page-Hinkley never saw a shift from its first judged sample: the incident stayed open.
    Now the one incident resolves."""
    segments = [(2000, 0.41), (120, 0.31), (700, 0.41)]
    (incident,) = _replay_levels(tmp_path, capsys, segments, "down")
    assert incident["state"] == "resolved", incident


@pytest.mark.parametrize(("bad", "away"), [("up", -0.1), ("down", 0.1)])
def test_replay_opens_nothing_for_a_harmless_excursion_and_its_return(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str, away: float
) -> None:
    """Issue 6, point 4: with ``bad: up`` a dip (``down``: a rise) is harmless; the chart
    re-learned its level, and the return read as a bad shift against it, opening an incident
    on a healthy model that never resolved. A return to the level held before opens nothing."""
    segments = [(2000, 0.41), (120, 0.41 + away), (700, 0.41)]
    assert _replay_levels(tmp_path, capsys, segments, bad) == []


@pytest.fixture
def deployed(tmp_path: Path) -> tuple[Path, str]:
    """The demo config over a store in tmp_path holding one open incident."""
    config_path = tmp_path / "driftowner.yaml"
    text = (ROOT / "config" / "demo.yaml").read_text()
    config_path.write_text(text.replace("sqlite:///var/demo.db", f"sqlite:///{tmp_path}/s.db"))
    config = load_config(config_path)
    store = SqlStore(config.storage.url)
    opened = datetime.now(UTC) - timedelta(minutes=3)
    incident = Incident(
        id="inc-cli",
        system="fraud-scoring",
        owner="alice",
        kind="disagreement",
        rule="disagreement:accuracy-fine-adoption-falling",
        layers=("model", "business"),
        signals=("accuracy", "adoption"),
        state="open",
        opened_at=opened,
        summary="accuracy fine, adoption falling",
        ack_within=config.systems["fraud-scoring"].ack_within,
        chain=snapshot_chain(config, config.systems["fraud-scoring"]),
    )
    store.apply(Changes(opened=[incident]))
    store.close()
    return config_path, incident.id


def test_incident_commands_ack_resolve_and_report(
    deployed: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """incidents, ack, resolve, show and report act on the configured store: the timeline
    records who did what, and the report counts the resolution with its times."""
    config, incident_id = deployed
    code, out, _ = run(capsys, "incidents", "--config", str(config), "--state", "open", "--json")
    listed = json.loads(out)["incidents"]
    assert code == 0 and [i["id"] for i in listed] == [incident_id]
    for key in (
        "id",
        "system",
        "owner",
        "kind",
        "rule",
        "layers",
        "state",
        "opened_at",
        "acknowledged_at",
        "resolved_at",
    ):
        assert key in listed[0]

    code, _, err = run(capsys, "ack", incident_id, "--by", "zed", "--config", str(config))
    assert code == 1 and "--by: unknown owner 'zed'" in err
    assert run(capsys, "ack", incident_id, "--by", "alice", "--config", str(config))[0] == 0
    code, _, err = run(capsys, "ack", incident_id, "--by", "alice", "--config", str(config))
    assert code == 1 and "already acknowledged" in err
    code, out, _ = run(
        capsys,
        "resolve",
        incident_id,
        "--by",
        "alice",
        "--note",
        "rolled back",
        "--config",
        str(config),
    )
    assert code == 0 and "resolved by alice after 3m" in out

    code, out, _ = run(capsys, "show", incident_id, "--config", str(config), "--json")
    shown = json.loads(out)
    assert [e["kind"] for e in shown["events"]] == ["acknowledged", "resolved"]
    assert shown["events"][1]["detail"] == "rolled back"
    assert shown["resolved_at"] is not None and shown["resolved_at"].endswith("Z")

    code, out, _ = run(capsys, "report", "--since", "1d", "--config", str(config), "--json")
    row = json.loads(out)["rows"][0]
    assert (row["owner"], row["system"], row["resolved"]) == ("alice", "fraud-scoring", 1)
    assert row["time_to_resolve_seconds"]["median"] == pytest.approx(180, abs=5)
    assert row["slo_breaches"]["ack"] == 1  # acked after 3m; demo's ack_within is 30s

    code, _, err = run(capsys, "report", "--since", "a while", "--config", str(config))
    assert code == 1 and "--since" in err
    # Used to escape as OverflowError (a traceback); now a located error naming the maximum.
    code, _, err = run(
        capsys, "report", "--since", "99999999999999999999d", "--config", str(config)
    )
    assert (code, err.strip()) == (
        1,
        "driftowner report: --since: duration '99999999999999999999d' is longer than the "
        "maximum 10y (3650d)",
    )


def test_note_adds_a_note_told_to_the_incidents_conversations(
    deployed: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``note ID --by WHO --text TEXT`` exits 0 saying what it did; the timeline shows the
    ``note`` event (actor, via ``cli``, the text) and the owner's console conversation gets a
    ``noted`` follow-up. Refusals are one located line and exit 1: an unknown incident, an
    unknown ``--by``, an empty or over-long ``--text``; a missing ``--text`` is argparse's
    usage error (exit 2)."""
    config, incident_id = deployed
    store = SqlStore(load_config(config).storage.url)
    store.apply(Changes(notifications=[notification("n-open", incident_id=incident_id)]))
    store.close()
    argv = ("note", incident_id)
    code, out, err = run(
        capsys, *argv, "--by", "alice", "--text", "rolled back features-v3", "--config", str(config)
    )
    assert (code, err) == (0, "")
    assert out.strip() == (
        f"{incident_id}: note by alice added (incident open); told to every conversation it started"
    )
    code, out, _ = run(capsys, "show", incident_id, "--config", str(config), "--json")
    (event,) = json.loads(out)["events"]
    assert (event["kind"], event["actor"], event["via"], event["detail"]) == (
        "note",
        "alice",
        "cli",
        "rolled back features-v3",
    )
    store = SqlStore(load_config(config).storage.url)
    told = [n for n in store.notifications(incident_id) if n.message.purpose == "noted"]
    store.close()
    assert [(n.channel, n.address, n.message.note) for n in told] == [
        ("console", "alice", "rolled back features-v3")
    ]
    for args, line in (
        (("note", "inc-nope", "--by", "alice", "--text", "x"), "no incident 'inc-nope'"),
        ((*argv, "--by", "zed", "--text", "x"), "driftowner note: --by: unknown owner 'zed'"),
        ((*argv, "--by", "alice", "--text", " "), "driftowner note: --text: a note needs text"),
        (
            (*argv, "--by", "alice", "--text", "n" * 2001),
            "driftowner note: --text: at most 2000 characters (got 2001)",
        ),
    ):
        code, out, err = run(capsys, *args, "--config", str(config))
        assert (code, out) == (1, ""), args
        assert line in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit) as usage:
        main([*argv, "--by", "alice", "--config", str(config)])
    assert usage.value.code == 2
    assert "--text" in capsys.readouterr().err


def test_show_of_an_unknown_incident_exits_1(
    deployed: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown id is one clear line and exit 1."""
    config, _ = deployed
    code, _, err = run(capsys, "show", "inc-nope", "--config", str(config))
    assert code == 1 and "no incident 'inc-nope'" in err


def test_the_console_script_is_installed() -> None:
    """``driftowner`` is on the venv's PATH (the README's commands use it)."""
    assert shutil.which("driftowner") or (ROOT / ".venv" / "bin" / "driftowner").exists()


def test_demo_config_is_found_outside_a_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Away from a checkout, ``driftowner demo`` uses the demo config shipped in the package,
    which is the same file as config/demo.yaml and valid."""
    from driftowner.cli import _demo_config

    monkeypatch.chdir(tmp_path)
    shipped = _demo_config()
    assert shipped.read_text() == (ROOT / "config" / "demo.yaml").read_text()
    assert load_config(shipped).systems["fraud-scoring"].owner == "alice"


NOTIFY_CONFIG = """
storage: {{url: "sqlite:///{db}"}}
sources: {{sim: {{type: demo}}}}
owners:
  alice: {{name: Alice Chen, email: alice@example.com, slack: U0ALICE}}
  bob: {{name: Bob Diaz}}
channels:
  console: {{type: log}}
  slack: {{type: slack, webhook_url: "{slack}"}}
  email: {{type: email, host: 127.0.0.1, port: {smtp}, starttls: false,
          from: driftowner@example.com}}
escalation_chains:
  standard:
    steps:
      - notify: owner
systems:
  fraud-scoring:
    owner: alice
    escalation: standard
    signals:
      accuracy: {{layer: model, source: sim, query: accuracy, detect: {{threshold: {{min: 0.9}}}}}}
"""


def test_notify_test_reaches_the_owner_on_every_channel_and_fails_loudly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """notify-test sends one test message through each channel the owner has a contact on
    (a real SMTP server, the Slack fake, the console), says per channel whether it arrived,
    and exits 1 when one did not."""
    with FakeSlack() as slack, running_smtp() as (box, smtp_port):
        config = tmp_path / "driftowner.yaml"
        config.write_text(
            NOTIFY_CONFIG.format(db=tmp_path / "s.db", slack=slack.url, smtp=smtp_port)
        )
        code, out, _ = run(capsys, "notify-test", "--config", str(config), "--owner", "alice")
        assert code == 0, out
        assert "slack        → U0ALICE: delivered" in out
        assert "email        → alice@example.com: delivered" in out
        assert "console      → alice: delivered" in out
        mail = box.to("alice@example.com")
        assert len(mail) == 1 and "TEST" in str(mail[0]["Subject"])
        assert "fraud-scoring" in str(mail[0]["Subject"])
        assert "<@U0ALICE>" in json.dumps(slack.received[0])

        slack.answer_next(NO_SERVICE)
        code, out, _ = run(capsys, "notify-test", "--config", str(config), "--owner", "alice")
        assert code == 1
        assert "slack        → U0ALICE: failed: slack: HTTP 404 no_service" in out
        assert slack.url not in out

        # bob has neither email nor Slack id: only the console reaches him.
        code, out, _ = run(capsys, "notify-test", "--config", str(config), "--owner", "bob")
        assert code == 0
        assert out.strip().splitlines()[-1] == "console      → bob: delivered"
        assert "slack" not in out and "email" not in out
        code, _, err = run(capsys, "notify-test", "--config", str(config), "--owner", "zed")
        assert code == 1 and "--owner: unknown owner 'zed'" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", "2026-11-27T12:00:00Z"),
        ("now-7d", "2026-11-20T12:00:00Z"),
        ("2026-11-20T08:00:00Z", "2026-11-20T08:00:00Z"),
        ("2026-11-20T09:00:00+01:00", "2026-11-20T08:00:00Z"),
        ("2026-11-20T08:00:00", "2026-11-20T08:00:00Z"),
        ("1795161600", "2026-11-20T08:00:00Z"),
    ],
)
def test_replay_times_accept_rfc3339_unix_seconds_and_now_minus(text: str, expected: str) -> None:
    """--from/--to take RFC 3339 (naive means UTC), Unix seconds, now, and now-DURATION."""
    from driftowner.cli import parse_instant
    from driftowner.clock import rfc3339

    now = datetime(2026, 11, 27, 12, tzinfo=UTC)
    assert rfc3339(parse_instant(text, now)) == expected


def test_replay_over_the_demo_finds_its_one_disagreement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A backtest of the demo's first five minutes (simulated from --from) finds the one
    disagreement incident, with the time its condition began, and writes no store."""
    config = tmp_path / "demo.yaml"
    text = (ROOT / "config" / "demo.yaml").read_text()
    config.write_text(text.replace("sqlite:///var/demo.db", f"sqlite:///{tmp_path}/never.db"))
    code, out, _ = run(
        capsys,
        "replay",
        "--config",
        str(config),
        "--from",
        "2026-11-20T08:00:00Z",
        "--to",
        "2026-11-20T08:05:00Z",
        "--json",
    )
    assert code == 0
    document = json.loads(out)
    (incident,) = document["incidents"]
    assert incident["rule"] == "disagreement:accuracy-fine-adoption-falling"
    assert incident["owner"] == "alice" and incident["state"] == "resolved"
    began = datetime.fromisoformat(incident["condition_began_at"])
    assert began - datetime(2026, 11, 20, 8, tzinfo=UTC) < timedelta(seconds=40)
    assert incident["opened_at"] > incident["condition_began_at"]
    assert not (tmp_path / "never.db").exists()

    for bad, message in (
        (["--from", "yesterday"], "--from: invalid time 'yesterday'"),
        (["--from", "inf"], "--from: invalid time 'inf'"),
        (["--from", "now-99999999w"], "--from: invalid time 'now-99999999w'"),
        (["--from", "now-1h", "--interval", "0s"], "--interval: must be longer than 0s"),
        (["--from", "now-1h", "--interval", "500000w"], "--interval: duration '500000w' is"),
        (["--from", "now", "--to", "now-1h"], "--from is after --to"),
    ):
        code, _, err = run(capsys, "replay", "--config", str(config), *bad)
        assert code == 1 and message in err, (bad, err)
        assert "Traceback" not in err
