"""Config loading: YAML, environment overrides, secret files, and errors as ``FILE: path: msg``."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from driftowner.cli import main
from driftowner.config import (
    MAX_DURATION,
    Config,
    EmailChannelConfig,
    SignalConfig,
    SlackChannelConfig,
    StepConfig,
    SystemConfig,
    TemplateRefConfig,
    config_json_schema,
    config_warnings,
    format_duration,
    format_rate,
    parse_duration,
    parse_percent,
    parse_rate,
    step_channels,
)
from driftowner.configload import (
    ConfigError,
    default_secrets_dir,
    load_config,
    load_config_text,
    warning_lines,
)

from .factories import make_config

ROOT = Path(__file__).resolve().parents[2]
BROKEN = sorted((ROOT / "tests" / "data" / "configs").glob("*.yaml"))

VALID = """\
sources:
  prom: {type: prometheus, url: "http://localhost:9090"}
owners:
  alice: {name: Alice Chen, email: alice@example.com, slack: U024BE7LH}
  bob: {name: Bob Diaz, email: bob@example.com}
teams:
  ml-fraud: {email: ml-fraud@example.com}
channels:
  slack: {type: slack, webhook_url: "https://hooks.slack.com/services/T/B/X"}
  email: {type: email, host: smtp.example.com, from: driftowner@example.com}
escalation_chains:
  standard:
    steps:
      - notify: owner
        via: [slack, email]
      - after: 15m
        notify: [bob]
systems:
  fraud-scoring:
    owner: alice
    escalation: standard
    contributors: {model: ml-fraud}
    signals:
      accuracy:
        layer: model
        source: prom
        query: model_accuracy
        bad: down
        detect: {threshold: {min: 0.90}}
"""


def write(tmp_path: Path, text: str, name: str = "driftowner.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(path: Path, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, **kwargs)  # type: ignore[arg-type]
    return caught.value.errors


def expected_lines(path: Path) -> list[str]:
    prefix = "# expect: "
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]


def expected_errors(path: Path) -> list[str]:
    """The error lines a broken config's ``# expect:`` lines name. ``{here}`` stands for the
    config's directory; a line starting with ``{here}/`` names its own file (one of
    ``systems_dir``), any other is in the config itself."""
    here = str(path.parent)
    return [
        line.replace("{here}", here)
        if line.startswith("{here}/")
        else f"{path}: {line.replace('{here}', here)}"
        for line in expected_lines(path)
    ]


# --- broken configs ----------------------------------------------------------------------


def test_there_is_a_broken_config_for_each_common_mistake() -> None:
    """The table below covers at least 14 distinct mistakes, each stating what it expects."""
    assert len(BROKEN) >= 14
    for path in BROKEN:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# expect: "), path.name


@pytest.mark.parametrize("path", BROKEN, ids=[path.stem for path in BROKEN])
def test_broken_config_yields_exactly_its_errors(path: Path) -> None:
    """Each broken config fails with exactly the error lines its ``# expect:`` lines name."""
    assert errors_of(path, environ={}) == expected_errors(path)


# --- the shipped configs --------------------------------------------------------------------


def test_demo_config_loads_and_tells_the_story() -> None:
    """config/demo.yaml is valid and sets up the simulated disagreement on a short clock."""
    config = load_config(ROOT / "config" / "demo.yaml", environ={})
    source = config.sources["demo"]
    assert source.type == "demo"
    assert (source.seed, source.drift_starts_after, source.drift_lasts) == (
        7,
        timedelta(seconds=20),
        timedelta(seconds=150),
    )
    assert config.storage.url == "sqlite:///var/demo.db"
    assert config.evaluation.interval == timedelta(seconds=2)
    assert list(config.channels) == ["console"]
    chain = config.escalation_chains["demo"]
    assert [step.after.total_seconds() for step in chain.steps] == [0, 20, 40]
    assert [step.notify for step in chain.steps] == ["owner", ["bob"], ["dana"]]
    system = config.systems["fraud-scoring"]
    assert system.owner == "alice"
    assert {name: s.layer for name, s in system.signals.items()} == {
        "accuracy": "model",
        "adoption": "business",
        "null_rate": "data",
    }
    assert system.disagreements[0].name == "accuracy-fine-adoption-falling"
    assert system.disagreements[0].for_ == timedelta(seconds=6)


def test_example_config_loads() -> None:
    """config/example.yaml, the reference users copy, is valid as shipped, its template ref
    expanded, adoption on the default detector with its false-alarm budget."""
    config = load_config(ROOT / "config" / "example.yaml", environ={})
    adoption = config.systems["fraud-scoring"].signals["adoption"]
    assert (adoption.detect, adoption.false_alarm_every) == (None, timedelta(days=30))
    accuracy = config.systems["fraud-scoring"].signals["accuracy"]
    assert (accuracy.template, accuracy.label) == ("accuracy", ("model", "fraud"))
    assert accuracy.query == config.signal_templates["accuracy"].query
    email = config.channels["email"]
    assert isinstance(email, EmailChannelConfig)
    assert email.from_ == "driftowner@example.com"


# --- environment overrides ------------------------------------------------------------------


def test_env_overrides_a_secret_in_a_dict_keyed_section_and_a_duration(tmp_path: Path) -> None:
    """DRIFTOWNER_CHANNELS__SLACK__WEBHOOK_URL reaches the ``slack`` channel, a duration parses,
    and environment wins over YAML."""
    path = write(tmp_path, VALID + "evaluation: {interval: 5m}\n")
    config = load_config(
        path,
        environ={
            "DRIFTOWNER_CHANNELS__SLACK__WEBHOOK_URL": "https://hooks.slack.com/services/T/B/NEW",
            "DRIFTOWNER_EVALUATION__INTERVAL": "30s",
        },
    )
    slack = config.channels["slack"]
    assert isinstance(slack, SlackChannelConfig)
    assert slack.webhook_url.get_secret_value() == "https://hooks.slack.com/services/T/B/NEW"
    assert config.evaluation.interval == timedelta(seconds=30)


def test_env_names_are_case_insensitive_and_keys_keep_their_yaml_spelling(tmp_path: Path) -> None:
    """A lower-case variable works, and ``FRAUD_SCORING`` or ``fraud-scoring`` in a variable name
    both reach the YAML key ``fraud-scoring`` without renaming it."""
    path = write(tmp_path, VALID)
    config = load_config(
        path,
        environ={
            "driftowner_systems__FRAUD_SCORING__runbook": "https://wiki.example.com/a",
            "DRIFTOWNER_SYSTEMS__fraud-scoring__ACK_WITHIN": "10m",
        },
    )
    assert list(config.systems) == ["fraud-scoring"]
    assert config.systems["fraud-scoring"].runbook == "https://wiki.example.com/a"
    assert config.systems["fraud-scoring"].ack_within == timedelta(minutes=10)


def test_env_override_matching_two_yaml_keys_is_an_error(tmp_path: Path) -> None:
    """With both ``ml-fraud`` and ``ML-Fraud`` in the file, ``..._ML_FRAUD`` is ambiguous and
    says so; with only one of them it is not."""
    text = VALID.replace(
        "  ml-fraud: {email: ml-fraud@example.com}\n", "  ml-fraud: {}\n  ML-Fraud: {}\n"
    )
    path = write(tmp_path, text)
    assert errors_of(path, environ={"DRIFTOWNER_TEAMS__ML_FRAUD__EMAIL": "x@example.com"}) == [
        f"{path}: teams (from DRIFTOWNER_TEAMS__ML_FRAUD__EMAIL): "
        "ambiguous override: matches keys 'ml-fraud' and 'ML-Fraud'"
    ]
    config = load_config(
        write(tmp_path, VALID), environ={"DRIFTOWNER_TEAMS__ML_FRAUD__EMAIL": "x@y.z"}
    )
    assert config.teams["ml-fraud"].email == "x@y.z"


def test_env_error_names_the_variable(tmp_path: Path) -> None:
    """A bad value from the environment is reported at its YAML path and names its variable."""
    path = write(tmp_path, VALID)
    assert errors_of(path, environ={"DRIFTOWNER_EVALUATION__INTERVAL": "30x"}) == [
        f"{path}: evaluation.interval (from DRIFTOWNER_EVALUATION__INTERVAL): "
        "invalid duration '30x': expected e.g. 30s, 15m, 2h, 7d, 1w"
    ]


def test_env_cross_reference_error_names_the_variable(tmp_path: Path) -> None:
    """A name set by a variable that refers to nothing is traced back to that variable."""
    path = write(tmp_path, VALID)
    assert errors_of(path, environ={"DRIFTOWNER_SYSTEMS__FRAUD_SCORING__OWNER": "zed"}) == [
        f"{path}: systems.fraud-scoring.owner (from DRIFTOWNER_SYSTEMS__FRAUD_SCORING__OWNER): "
        "unknown owner 'zed': expected one of alice, bob"
    ]


def test_env_typo_is_an_error_but_unrelated_variables_are_ignored(tmp_path: Path) -> None:
    """``DRIFTOWNER_SERVR__LISTEN`` is a mistake worth reporting; ``DRIFTOWNER_CONFIG`` (the
    config path, no ``__``) is not an override at all."""
    path = write(tmp_path, VALID)
    environ = {"DRIFTOWNER_SERVR__LISTEN": "0.0.0.0:1", "DRIFTOWNER_CONFIG": "/etc/x.yaml"}
    assert errors_of(path, environ=environ) == [
        f"{path}: servr (from DRIFTOWNER_SERVR__LISTEN): unknown key, did you mean 'server'?"
    ]
    assert load_config(path, environ={"DRIFTOWNER_CONFIG": "/etc/x.yaml"}).server.listen


def test_env_json_section_merges_and_bad_json_is_reported(tmp_path: Path) -> None:
    """A whole section as JSON deep-merges into the YAML one; invalid JSON names its variable."""
    path = write(tmp_path, VALID + "server: {listen: '127.0.0.1:9000'}\n")
    config = load_config(path, environ={"DRIFTOWNER_SERVER": '{"api_token": "tok-123456"}'})
    assert config.server.listen == "127.0.0.1:9000"
    assert config.server.api_token is not None
    assert config.server.api_token.get_secret_value() == "tok-123456"
    assert errors_of(path, environ={"DRIFTOWNER_SERVER": "listen=1"}) == [
        f"{path}: server (from DRIFTOWNER_SERVER): "
        "not valid JSON (this setting is a section or a list)"
    ]


def test_env_addresses_list_items_by_index(tmp_path: Path) -> None:
    """``..._STEPS__1__AFTER`` changes the second step; an index past the end is an error."""
    path = write(tmp_path, VALID)
    variable = "DRIFTOWNER_ESCALATION_CHAINS__STANDARD__STEPS__1__AFTER"
    config = load_config(path, environ={variable: "20m"})
    assert config.escalation_chains["standard"].steps[1].after == timedelta(minutes=20)
    far = "DRIFTOWNER_ESCALATION_CHAINS__STANDARD__STEPS__5__AFTER"
    assert errors_of(path, environ={far: "20m"}) == [
        f"{path}: escalation_chains.standard.steps (from {far}): "
        "index 5 is past the end of the list (2 items)"
    ]


# --- secrets ------------------------------------------------------------------------------


def test_secrets_directory_supplies_secrets_and_env_wins(tmp_path: Path) -> None:
    """Files named like variables supply values (sub-directories stand for ``__``); files of
    other programs are ignored; the environment wins over a file."""
    secrets = tmp_path / "secrets"
    (secrets / "driftowner_server").mkdir(parents=True)
    (secrets / "driftowner_channels__slack__webhook_url").write_text(
        "https://hooks.slack.com/services/T/B/FILE\n"
    )
    (secrets / "driftowner_server" / "api_token").write_text("from-file-token")
    (secrets / "postgres_password").write_bytes(b"\xff\xfe not ours")
    path = write(tmp_path, VALID)
    config = load_config(path, environ={}, secrets_dir=secrets)
    slack = config.channels["slack"]
    assert isinstance(slack, SlackChannelConfig)
    assert slack.webhook_url.get_secret_value() == "https://hooks.slack.com/services/T/B/FILE"
    assert config.server.api_token is not None
    assert config.server.api_token.get_secret_value() == "from-file-token"
    config = load_config(
        path, environ={"DRIFTOWNER_SERVER__API_TOKEN": "from-env-token"}, secrets_dir=secrets
    )
    assert config.server.api_token is not None
    assert config.server.api_token.get_secret_value() == "from-env-token"


def test_missing_secrets_directory_is_an_error(tmp_path: Path) -> None:
    """An explicitly given secrets directory that does not exist is reported, not ignored."""
    path = write(tmp_path, VALID)
    missing = tmp_path / "nope"
    assert errors_of(path, environ={}, secrets_dir=missing) == [
        f"{path}: secrets directory {str(missing)!r} is not a directory"
    ]


def test_default_secrets_dir_prefers_systemd_credentials() -> None:
    """$CREDENTIALS_DIRECTORY (systemd) is the default secrets directory when set."""
    assert default_secrets_dir({"CREDENTIALS_DIRECTORY": "/run/credentials/x"}) == Path(
        "/run/credentials/x"
    )
    fallback = default_secrets_dir({})
    assert fallback is None or fallback == Path("/run/secrets")


SECRET = "xoxb-9f2c7d41-VERY-SECRET"


@pytest.mark.parametrize(
    ("text", "environ", "secret_file"),
    [
        pytest.param(
            VALID.replace('/services/T/B/X"', f'/services/T/B/X", extra: [{SECRET}]'),
            {},
            None,
            id="secret-in-an-unknown-key",
        ),
        pytest.param(
            VALID.replace('"https://hooks.slack.com/services/T/B/X"', f"[{SECRET}]"),
            {},
            None,
            id="secret-of-the-wrong-type",
        ),
        pytest.param(
            VALID,
            {
                "DRIFTOWNER_CHANNELS__SLACK__TYPE": "slak",
                "DRIFTOWNER_CHANNELS__SLACK__WEBHOOK_URL": SECRET,
            },
            None,
            id="secret-field-of-a-bad-channel",
        ),
        pytest.param(VALID, {}, "driftowner_evaluation__interval", id="secret-file-in-a-duration"),
        pytest.param(
            VALID.replace(
                "  email: {type: email,",
                f"  log: {{type: log, password: {SECRET}}}\n  email: {{type: email,",
            ),
            {},
            None,
            id="password-under-a-log-channel",
        ),
        pytest.param(
            VALID + f"server: {{api_token: {SECRET}, listen: nowhere}}\n",
            {},
            None,
            id="api-token-beside-a-bad-listen",
        ),
        pytest.param(
            VALID + f"server: {{api_token: {SECRET}\n",
            {},
            None,
            id="yaml-error-on-the-secret-line",
        ),
        pytest.param(
            VALID + f"evaluation: {{interval: 'https://hooks.slack.com/services/T/B/{SECRET}'}}\n",
            {},
            None,
            id="webhook-pasted-into-a-duration",
        ),
        pytest.param(
            VALID.replace('"https://hooks.slack.com/services/T/B/X"', SECRET),
            {},
            None,
            id="secret-webhook-url-that-is-no-url",
        ),
        pytest.param(
            VALID,
            {
                "DRIFTOWNER_CHANNELS__HOOK__TYPE": "webhook",
                "DRIFTOWNER_CHANNELS__HOOK__URL": f"ftp://{SECRET}",
            },
            None,
            id="secret-webhook-url-from-env-not-http",
        ),
        pytest.param(VALID, {}, "driftowner_server__api_token", id="secret-file-not-text"),
        pytest.param(
            VALID + f"storage: {{url: 'mysql://u:{SECRET}@db/x'}}\n",
            {},
            None,
            id="password-in-a-storage-url",
        ),
    ],
)
def test_secrets_are_never_echoed(
    tmp_path: Path, text: str, environ: dict[str, str], secret_file: str | None
) -> None:
    """Whatever goes wrong next to a secret, no error line contains the secret's value."""
    secrets_dir = None
    if secret_file is not None:
        secrets_dir = tmp_path / "secrets"
        secrets_dir.mkdir()
        # A NUL makes the secret-file-not-text case; elsewhere it is just one more character.
        (secrets_dir / secret_file).write_text(SECRET + ("\x00" if "token" in secret_file else ""))
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ, secrets_dir=secrets_dir)
    assert caught.value.errors
    assert SECRET not in str(caught.value)
    assert "SECRET" not in str(caught.value)


# --- text, URLs, blank secrets -------------------------------------------------------------


def test_invalid_text_from_env_and_secret_files_is_located_and_not_echoed(tmp_path: Path) -> None:
    """A lone surrogate in a variable and a NUL in a secret file are errors at their YAML path,
    naming where they came from, printable, without the value (issue 5, defect 4)."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "driftowner_server__api_token").write_text("tok\x00en")
    path = write(tmp_path, VALID)
    errors = errors_of(
        path,
        environ={"DRIFTOWNER_SYSTEMS__FRAUD_SCORING__RUNBOOK": "https://wiki/\udcff"},
        secrets_dir=secrets,
    )
    assert errors == [
        f"{path}: server.api_token (from secret file driftowner_server__api_token): is not "
        "valid text: character 4 is U+0000, a NUL character (config text may not hold control "
        "characters or lone surrogates)",
        f"{path}: systems.fraud-scoring.runbook (from DRIFTOWNER_SYSTEMS__FRAUD_SCORING__RUNBOOK)"
        ": is not valid text: character 14 is U+DCFF, a lone surrogate, which is not a character "
        "(config text may not hold control characters or lone surrogates)",
    ]
    for line in errors:
        line.encode("utf-8")  # printable: no lone surrogate left in the line


def test_invalid_text_in_systems_dir_and_file_paths_is_an_error_not_a_crash(
    tmp_path: Path,
) -> None:
    """A NUL in ``systems_dir`` or a file source's path would crash the filesystem call
    (ValueError: embedded null byte); it is a located error instead."""
    path = write(tmp_path, VALID + 'systems_dir: "sys\\0tems"\n')
    assert errors_of(path, environ={}) == [
        f"{path}: systems_dir: is not valid text: character 4 is U+0000, a NUL character "
        "(config text may not hold control characters or lone surrogates)"
    ]
    text = VALID.replace(
        '  prom: {type: prometheus, url: "http://localhost:9090"}',
        '  prom: {type: prometheus, url: "http://localhost:9090"}\n'
        '  csv: {type: file, path: "/tmp/a\\x07b.csv"}',
    )
    assert errors_of(write(tmp_path, text), environ={}) == [
        f"{path}: sources.csv.path: is not valid text: character 7 is U+0007, a control or "
        "non-character code point (config text may not hold control characters or lone "
        "surrogates)"
    ]


def test_invalid_text_in_a_systems_dir_file_names_that_file(tmp_path: Path) -> None:
    """A NUL in a system's name and a lone surrogate in its owner, in a ``systems_dir`` file:
    errors naming that file and the paths, escaped so the lines print."""
    (tmp_path / "systems").mkdir()
    (tmp_path / "systems" / "pay.yaml").write_text('"pay\\0x":\n  owner: "al\\ud800"\n')
    path = write(tmp_path, VALID + "systems_dir: systems\n")
    tail = "(config text may not hold control characters or lone surrogates)"
    assert errors_of(path, environ={}) == [
        f"{tmp_path}/systems/pay.yaml: systems.pay\\x00x: key is not valid text: character 4 "
        f"is U+0000, a NUL character {tail}",
        f"{tmp_path}/systems/pay.yaml: systems.pay\\x00x.owner: is not valid text: character 3 "
        f"is U+D800, a lone surrogate, which is not a character {tail}",
    ]


def test_a_raw_control_character_is_a_yaml_error_with_its_line() -> None:
    """A NUL written raw into the file (not as an escape) is refused by YAML itself; the
    error names its line and column instead of raising ReaderError."""
    with pytest.raises(ConfigError) as caught:
        load_config_text("sources:\n  p\x00: 1\n", name="<doc>", environ={})
    assert caught.value.errors == [
        "<doc>: line 2, column 4: unacceptable character U+0000: YAML does not allow control "
        "characters or lone surrogates"
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!!bool maybe", "not a valid !!bool value"),
        ("!!int 12ab", "not a valid !!int value"),
        ("!!int 0x", "not a valid !!int value"),
        ("!!float fast", "not a valid !!float value"),
        ("!!timestamp tomorrow", "not a valid !!timestamp value"),
        ("!!set [a, b]", "expected a mapping node, but found sequence"),
        ("!!map [a, b]", "expected a mapping node, but found sequence"),
    ],
)
def test_a_value_that_does_not_fit_its_yaml_tag_is_a_located_error(
    value: str, message: str
) -> None:
    """An explicit YAML tag on a value of the wrong shape (``!!int 12ab``) is an error at
    that value's line and column, not a KeyError or ValueError escaping the loader; the value
    itself is not echoed (it may be a secret)."""
    text = VALID.replace("    escalation: standard\n", f"    escalation: {value}\n", 1)
    line = text.splitlines().index(f"    escalation: {value}") + 1
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, name="<doc>", environ={})
    assert caught.value.errors == [f"<doc>: line {line}, column 17: {message}"]


def test_anchors_aliases_and_merge_keys_among_systems_load_as_written_out() -> None:
    """Systems shared through an anchor, a merge key (``<<``) in the systems mapping and an
    anchored systems mapping all load like the same config written out in full (such
    documents are read whole rather than one system at a time)."""
    body = VALID.split("systems:\n", 1)[1]
    system = body.split("  fraud-scoring:\n", 1)[1]
    written_out = load_config_text(
        VALID + "  ranking:\n" + system + "  search:\n" + system, environ={}
    )
    aliased = VALID.replace("  fraud-scoring:\n", "  fraud-scoring: &scoring\n")
    shared = [
        aliased + "  ranking: *scoring\n  search: *scoring\n",
        aliased + "  <<: {ranking: *scoring}\n  search: *scoring\n",
        aliased.replace("systems:\n", "systems: &all\n") + "  ranking: *scoring\n"
        "  search: *scoring\n",
    ]
    for text in shared:
        assert load_config_text(text, environ={}) == written_out


def test_a_file_that_is_not_utf8_names_the_byte(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are a one-line error naming where they are."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"owners: {al\xe9: {}}\n")
    assert errors_of(path, environ={}) == [
        f"{path}: cannot read: not UTF-8 text (invalid continuation byte at byte 11)"
    ]


@pytest.mark.parametrize(
    ("section", "entry", "problem"),
    [
        ("server", "external_url: 'driftowner.example.com'", "server.external_url"),
        ("server", "api_token: '   '", "server.api_token"),
        ("channels", "hook: {type: webhook, url: 'hooks/x'}", "channels.hook.url"),
        ("channels", "hook: {type: webhook, url: '  '}", "channels.hook.url"),
        ("channels", "s2: {type: slack, webhook_url: 'hooks.slack.com/x'}", "channels.s2."),
        ("channels", "s2: {type: slack, token: xoxb-1, api_url: 'slack.com'}", "channels.s2."),
        ("channels", "m: {type: email, host: h, from: f, password: ''}", "channels.m.password"),
        ("sources", "p2: {type: prometheus, url: 'http://'}", "sources.p2.url"),
        ("sources", "p2: {type: prometheus, url: 'http://h:99999'}", "sources.p2.url"),
        ("sources", "p2: {type: prometheus, url: 'http://[::1'}", "sources.p2.url"),
        ("sources", "p2: {type: prometheus, url: 'http://h', bearer_token: ' '}", "sources.p2."),
    ],
)
def test_urls_must_be_http_with_a_host_and_secrets_must_not_be_blank(
    tmp_path: Path, section: str, entry: str, problem: str
) -> None:
    """Links, Prometheus, webhook and Slack URLs must be http(s) with a host, and a secret may
    not be empty or blank: each is an error at its path at load, not a failure at first use
    (issue 5, defect 7)."""
    if section == "server":
        text = VALID + f"server: {{{entry}}}\n"
    else:
        text = VALID.replace(f"{section}:\n", f"{section}:\n  {entry}\n", 1)
    errors = errors_of(write(tmp_path, text), environ={})
    assert errors and all(f": {problem}" in line for line in errors), errors


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "min: 0.90",
            "min: .nan",
            "systems.fraud-scoring.signals.accuracy.detect.threshold.min: must be a finite number",
        ),
        (
            "min: 0.90",
            "min: -.inf",
            "systems.fraud-scoring.signals.accuracy.detect.threshold.min: must be a finite number",
        ),
        (
            "from: driftowner@example.com}",
            "from: d@example.com, port: 99999999999999999999}",
            "channels.email.port: must be less than or equal to 65535",
        ),
    ],
)
def test_numbers_that_would_silently_never_work_are_errors(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    """A NaN threshold never fires and an SMTP port past 65535 never connects: both used to
    load silently; now each is an error at its path."""
    path = write(tmp_path, VALID.replace(old, new, 1))
    assert errors_of(path, environ={}) == [f"{path}: {expected}"]


def test_secret_url_errors_do_not_echo_the_url(tmp_path: Path) -> None:
    """A webhook URL is a secret: its error says what is wrong without showing it."""
    text = VALID + "server: {listen: '127.0.0.1:9587'}\n"
    path = write(tmp_path, text)
    errors = errors_of(
        path,
        environ={
            "DRIFTOWNER_CHANNELS__HOOK__TYPE": "webhook",
            "DRIFTOWNER_CHANNELS__HOOK__URL": "gopher://tok",
        },
    )
    assert errors == [
        f"{path}: channels.hook.url (from DRIFTOWNER_CHANNELS__HOOK__URL): must be an http(s) "
        "URL with a host, e.g. https://host:port/path (value not shown: it is a secret)"
    ]


# --- warnings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("{listen: '127.0.0.1:9587'}", []),
        ("{listen: '[::1]:9587'}", []),
        ("{listen: 'localhost:9587'}", []),
        ("{listen: '0.0.0.0:9587', external_url: 'https://d.example.com', api_token: t}", []),
        ("{listen: '10.1.2.3:9587', api_token: t}", []),
        ("{listen: '10.1.2.3:9587'}", ["server.api_token"]),
        ("{listen: 'driftowner.internal:9587', api_token: t}", []),
        ("{listen: '0.0.0.0:9587', api_token: t}", ["server.external_url"]),
        ("{listen: '[::]:9587'}", ["server.external_url", "server.api_token"]),
        ("{listen: '0.0.0.0:9587', external_url: 'https://d.example.com'}", ["server.api_token"]),
    ],
)
def test_config_warnings_name_open_listeners_and_unreachable_links(
    tmp_path: Path, server: str, expected: list[str]
) -> None:
    """A listen address other machines reach without api_token, and links that would point at
    0.0.0.0 (no external_url), are warnings at their paths; loopback needs neither (issue 5,
    defect 7)."""
    path = write(tmp_path, VALID + f"server: {server}\n")
    lines = warning_lines(load_config(path, environ={}), str(path))
    assert [line.split(": ")[1] for line in lines] == expected
    assert all(line.split(": ")[2] == "warning" for line in lines)
    if "server.external_url" in expected:
        assert any("would point to http://" in line for line in lines)


def test_the_shipped_configs_warn_about_nothing() -> None:
    """The example and the demo listen on loopback: no warning to learn to ignore."""
    for name in ("example.yaml", "demo.yaml"):
        config = load_config(ROOT / "config" / name, environ={})
        assert config_warnings(config) == []


# --- error reporting ------------------------------------------------------------------------


def test_all_errors_are_reported_at_once_in_file_order(tmp_path: Path) -> None:
    """Three independent mistakes give three lines, ordered as they appear in the file."""
    text = (
        VALID.replace('url: "http://localhost:9090"', 'url: "http://localhost:9090", timeout: 10')
        .replace("      - after: 15m\n", "      - after: 15 m\n")
        .replace("        bad: down\n", "        bad: sideways\n")
    )
    path = write(tmp_path, text)
    assert errors_of(path, environ={}) == [
        f"{path}: sources.prom.timeout: invalid duration 10: give a unit, e.g. 10s or 10m",
        f"{path}: escalation_chains.standard.steps[1].after: "
        "invalid duration '15 m': expected e.g. 30s, 15m, 2h, 7d, 1w",
        f"{path}: systems.fraud-scoring.signals.accuracy.bad: "
        "must be 'down', 'up' or 'both', not 'sideways'",
    ]


def test_cross_references_are_checked_only_when_the_schema_holds(tmp_path: Path) -> None:
    """With a schema error present, an unknown owner is not (yet) reported: one round at a time."""
    text = VALID.replace("    owner: alice\n", "    owner: nobody\n").replace(
        "bad: down", "bad: sideways"
    )
    errors = errors_of(write(tmp_path, text), environ={})
    assert len(errors) == 1
    assert "bad: must be" in errors[0]


def test_unreadable_file_and_wrong_top_level(tmp_path: Path) -> None:
    """A missing file, a directory and a top-level list each give one plain error line."""
    missing = tmp_path / "missing.yaml"
    assert errors_of(missing) == [f"{missing}: cannot read: No such file or directory"]
    assert errors_of(tmp_path) == [f"{tmp_path}: cannot read: Is a directory"]
    listed = write(tmp_path, "- sources\n- owners\n")
    assert errors_of(listed, environ={}) == [
        f"{listed}: the top level must be a mapping of sections (sources, owners, ...), not a list"
    ]


def test_empty_file_names_the_required_sections(tmp_path: Path) -> None:
    """An empty file is an empty mapping: every required section is named as missing."""
    path = write(tmp_path, "# nothing yet\n")
    assert errors_of(path, environ={}) == [
        f"{path}: {section}: required"
        for section in ("sources", "owners", "channels", "escalation_chains", "systems")
    ]


def test_duplicate_top_level_key(tmp_path: Path) -> None:
    """A section written twice is found by line, which ``yaml.safe_load`` would hide."""
    path = write(tmp_path, VALID + "teams: {}\n")
    assert errors_of(path, environ={}) == [
        f"{path}: line 30: duplicate key 'teams' at the top level (first at line 6); "
        "only one of them would take effect"
    ]


def test_mapping_keys_are_read_as_written(tmp_path: Path) -> None:
    """An owner called ``no`` stays ``no`` (YAML 1.1 would make it ``False``)."""
    text = VALID.replace("  bob: {", "  no: {name: Nora Olsen, email: no@example.com}\n  bob: {")
    config = load_config(write(tmp_path, text), environ={})
    assert "no" in config.owners


def test_missing_type_names_the_choices(tmp_path: Path) -> None:
    """A source without ``type`` is reported at ``.type`` with the types there are."""
    path = write(tmp_path, VALID.replace("{type: prometheus, ", "{"))
    assert errors_of(path, environ={}) == [
        f"{path}: sources.prom.type: required: one of 'prometheus', 'file', 'demo', 'alertmanager'"
    ]


def test_config_error_str_is_the_joined_lines() -> None:
    """``str(ConfigError)`` is what ``check-config`` prints: one error per line."""
    error = ConfigError(["a.yaml: x: bad", "a.yaml: y: worse"])
    assert str(error) == "a.yaml: x: bad\na.yaml: y: worse"
    assert error.errors == ["a.yaml: x: bad", "a.yaml: y: worse"]


def test_load_config_text_names_the_document() -> None:
    """In-memory YAML (an embedded default) reports errors under the name it is given."""
    with pytest.raises(ConfigError) as caught:
        load_config_text("sources: [", name="<demo>", environ={})
    assert str(caught.value).startswith("<demo>: line 1, column 11: ")


# --- schema details ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(minutes=90)),
        ("500ms", timedelta(milliseconds=500)),
        ("1y", timedelta(days=365)),
        ("0", timedelta(0)),
        (0, timedelta(0)),
    ],
)
def test_parse_duration_accepts_prometheus_syntax(text: str | int, expected: timedelta) -> None:
    """Prometheus durations parse to the right length, and format back to the same text."""
    assert parse_duration(text) == expected
    if isinstance(text, str) and text not in ("0", "1y", "7d"):
        assert format_duration(expected) == text


@pytest.mark.parametrize("text", ["", "30", "1.5h", "30 s", "-5m", "5x", "m", 30, True, None])
def test_parse_duration_rejects_everything_else(text: object) -> None:
    """Anything but a Prometheus duration is a ValueError naming the accepted syntax."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "text",
    [
        "99999999999999999999d",
        "500000w",
        "3651d",
        "11y",
        "10y1ms",
        "9" * 5000 + "s",
        "1" + "0" * 16 + "ms",
    ],
)
def test_parse_duration_refuses_more_than_ten_years_with_a_value_error(text: str) -> None:
    """Past the maximum (10y) is a ValueError naming it, never OverflowError (issue 5, defect
    4), whatever the number of digits."""
    with pytest.raises(ValueError, match=r"longer than the maximum 10y \(3650d\)"):
        parse_duration(text)


def test_parse_duration_accepts_exactly_the_maximum() -> None:
    """10y and 3650d are the maximum and pass; a longer timedelta given directly does not."""
    assert parse_duration("10y") == parse_duration("3650d") == MAX_DURATION
    assert parse_duration(MAX_DURATION) == MAX_DURATION
    with pytest.raises(ValueError, match="maximum"):
        parse_duration(MAX_DURATION + timedelta(milliseconds=1))
    with pytest.raises(ValueError, match="negative"):
        parse_duration(timedelta(seconds=-1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("20%", 0.2), ("2.5%", 0.025), ("150%", 1.5), (0.2, 0.2), ("0.2", 0.2), (1, 1.0)],
)
def test_parse_percent_accepts_percentages_and_fractions(text: object, expected: float) -> None:
    """``20%`` and the fraction ``0.2`` mean the same."""
    assert parse_percent(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["abc", "%", "nan%", "inf", True, None, 20, "20"])
def test_parse_percent_rejects_garbage_and_ambiguous_bare_numbers(text: object) -> None:
    """Garbage is refused, and so is a bare 20, which would otherwise mean 2000%."""
    with pytest.raises(ValueError, match="percentage"):
        parse_percent(text)


def test_json_schema_uses_yaml_spelling_and_describes_durations() -> None:
    """The schema ``driftowner schema`` prints uses ``for``/``from`` and duration strings."""
    schema = config_json_schema()
    text = json.dumps(schema)
    definitions = schema["$defs"]
    assert "for" in definitions["SignalConfig"]["properties"]
    assert "for_" not in definitions["SignalConfig"]["properties"]
    assert "from" in definitions["EmailChannelConfig"]["properties"]
    interval = definitions["EvaluationConfig"]["properties"]["interval"]
    assert interval["type"] == "string"
    assert interval["default"] == "1m"
    assert "pattern" in interval
    assert set(schema["required"]) == {
        "sources",
        "owners",
        "channels",
        "escalation_chains",
        "systems",
    }
    assert "timedelta" not in text


def test_email_implicit_tls_needs_no_starttls_override() -> None:
    """``use_tls: true`` alone means implicit TLS on port 465, not a STARTTLS conflict."""
    channel = EmailChannelConfig.model_validate(
        {"type": "email", "host": "smtp.example.com", "from": "d@example.com", "use_tls": True}
    )
    assert (channel.use_tls, channel.starttls, channel.port) == (True, False, 465)


def test_step_notify_accepts_one_owner_key() -> None:
    """``notify: bob`` is shorthand for ``notify: [bob]``; ``notify: owner`` stays the owner."""
    assert StepConfig.model_validate({"notify": "bob"}).notify == ["bob"]
    assert StepConfig.model_validate({"notify": "owner"}).notify == "owner"


def test_config_is_frozen() -> None:
    """A loaded config cannot be changed by accident."""
    config = load_config_text(VALID, environ={})
    assert isinstance(config, Config)
    with pytest.raises(ValueError, match="frozen"):
        config.server.listen = "0.0.0.0:1"  # type: ignore[misc]


# --- signal templates and systems_dir ----------------------------------------------------------

SYSTEMS_DIR_DATA = ROOT / "tests" / "data" / "systems_dir"
TEMPLATED = SYSTEMS_DIR_DATA / "templates.yaml"

TEMPLATES = """\
signal_templates:
  accuracy:
    layer: model
    source: prom
    query: avg by (model) (avg_over_time(model_accuracy[1h]))
    system_label: model
    bad: down
    detect: {threshold: {min: 0.90}}
"""

DIR_SYSTEM = """\
scoring:
  owner: alice
  escalation: standard
  signals:
    accuracy: {template: accuracy}
"""


def templated(text: str = VALID) -> str:
    """``VALID`` with the accuracy template, fraud-scoring's accuracy a ref to it."""
    plain = (
        "      accuracy:\n        layer: model\n        source: prom\n"
        "        query: model_accuracy\n        bad: down\n"
        "        detect: {threshold: {min: 0.90}}\n"
    )
    assert plain in text
    return TEMPLATES + text.replace(plain, "      accuracy: {template: accuracy}\n")


def with_systems_dir(tmp_path: Path, files: dict[str, str], main: str | None = None) -> Path:
    """A main config (``templated()`` with ``systems_dir: systems.d``) and the directory's files."""
    directory = tmp_path / "systems.d"
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return write(tmp_path, (main or templated()) + "systems_dir: systems.d\n")


def test_templates_and_systems_dir_load_and_expand() -> None:
    """The fixture config loads: systems from the main file then the directory's files in name
    order (hidden files, other suffixes and sub-directories skipped), every template ref a
    SignalConfig with the template's fields, its name and the system's label value."""
    config = load_config(TEMPLATED, environ={})
    assert config.systems_dir == SYSTEMS_DIR_DATA / "templates.d"
    assert list(config.systems) == ["fraud-scoring", "payments-risk", "search-ranking"]
    template = config.signal_templates["accuracy"]
    assert template.system_label == "model"
    for system in config.systems.values():
        assert all(type(signal) is SignalConfig for signal in system.signals.values())

    fraud = config.systems["fraud-scoring"]
    accuracy = fraud.signals["accuracy"]
    assert (accuracy.layer, accuracy.source, accuracy.query) == (
        "model",
        "prom",
        template.query,
    )
    assert (accuracy.template, accuracy.label) == ("accuracy", ("model", "fraud"))
    assert (accuracy.bad, accuracy.detect, accuracy.for_) == (
        "down",
        template.detect,
        timedelta(minutes=5),
    )
    # No labels entry for service: the system's own name.
    assert fraud.signals["latency"].label == ("service", "fraud-scoring")
    adoption = fraud.signals["adoption"]
    assert (adoption.template, adoption.label) == (None, None)
    assert config.systems["search-ranking"].signals["accuracy"].label == (
        "model",
        "search-ranking",
    )
    assert config.systems["payments-risk"].signals["latency"].label == (
        "service",
        "payments-api",
    )


def test_template_ref_overrides_apply_and_the_rest_is_inherited() -> None:
    """detect, for, resolve_after and bad of a ref win over the template's; what the ref does
    not set comes from the template."""
    config = load_config(TEMPLATED, environ={})
    latency = config.systems["fraud-scoring"].signals["latency"]
    assert latency.detect.threshold is not None
    assert latency.detect.threshold.max == 0.25
    assert (latency.for_, latency.resolve_after, latency.bad) == (
        timedelta(minutes=10),
        timedelta(minutes=30),
        "up",
    )
    payments = config.systems["payments-risk"].signals["accuracy"]
    assert payments.bad == "both"
    assert payments.detect.threshold is not None
    assert (payments.detect.threshold.min, payments.detect.threshold.max) == (0.8, 0.99)
    assert payments.for_ == timedelta(minutes=5)
    plain_latency = config.systems["payments-risk"].signals["latency"]
    assert plain_latency.resolve_after is None
    assert plain_latency.detect == config.signal_templates["latency"].detect


def test_check_config_passes_on_templates_and_systems_dir(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``driftowner check-config`` accepts the fixture and counts the directory's systems."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    for name in [name for name in os.environ if name.startswith("DRIFTOWNER_")]:
        monkeypatch.delenv(name)
    assert main(["check-config", str(TEMPLATED)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith(f"{TEMPLATED}: ok (3 systems, 3 owners, 1 sources, 2 channels)")


def test_config_validated_directly_is_expanded_or_refused() -> None:
    """``Config.model_validate`` expands refs too (no loader needed), and refuses a ref that
    names no template; a SystemConfig validated alone keeps its ref."""
    document = load_config_text(templated(), environ={}).model_dump(by_alias=True)
    # A dump holds the expanded signal, which validates again as it is.
    again = Config.model_validate(document)
    assert again.systems["fraud-scoring"].signals["accuracy"].label == ("model", "fraud-scoring")
    document["systems"]["fraud-scoring"]["signals"]["accuracy"] = {"template": "nope"}
    with pytest.raises(ValidationError, match="unknown signal template 'nope'"):
        Config.model_validate(document)
    system = SystemConfig.model_validate(
        {"owner": "alice", "escalation": "standard", "signals": {"a": {"template": "x"}}}
    )
    assert isinstance(system.signals["a"], TemplateRefConfig)


def test_one_system_may_use_a_template_twice(tmp_path: Path) -> None:
    """Two signals of one system on one template (a warning and a hard floor) claim the same
    series, which is not ambiguous."""
    text = templated().replace(
        "      accuracy: {template: accuracy}\n",
        "      accuracy: {template: accuracy}\n"
        "      accuracy_floor: {template: accuracy, detect: {threshold: {min: 0.5}}}\n",
    )
    config = load_config(write(tmp_path, text), environ={})
    signals = config.systems["fraud-scoring"].signals
    assert signals["accuracy"].label == signals["accuracy_floor"].label


def test_template_errors_are_reported_together(tmp_path: Path) -> None:
    """A demo-source template, stale_after on a template (Prometheus), an unknown source, a
    default label value (the system's name) claimed by another system's labels, and a labels
    entry on a system without templates: each at its path, in file order."""
    text = (
        templated()
        .replace("  prom: {type: prometheus,", "  sim: {type: demo}\n  prom: {type: prometheus,")
        .replace(
            "    detect: {threshold: {min: 0.90}}\n",
            "    detect: {threshold: {min: 0.90}}\n    stale_after: 10m\n"
            "  demo_acc:\n    layer: model\n    source: sim\n    query: q\n"
            "    system_label: model\n    detect: {threshold: {min: 0.9}}\n"
            "  lost:\n    layer: data\n    source: promx\n    query: q\n"
            "    system_label: model\n    detect: {threshold: {max: 0.1}}\n",
            1,
        )
        .replace(
            "    contributors: {model: ml-fraud}\n",
            "    contributors: {model: ml-fraud}\n    labels: {team: fraud}\n",
        )
    )
    text += (
        "  other:\n    owner: alice\n    escalation: standard\n"
        "    labels: {model: fraud-scoring}\n"
        "    signals:\n      accuracy: {template: accuracy}\n"
    )
    path = write(tmp_path, text)
    assert errors_of(path, environ={}) == [
        f"{path}: signal_templates.accuracy.stale_after: has no effect on a prometheus source, "
        "whose samples are stamped at query time; a Prometheus series that stops being "
        "scraped vanishes after 5m, which already counts as no data (for data age, query "
        "time() - timestamp(metric) with a threshold)",
        f"{path}: signal_templates.demo_acc.source: signal templates need a prometheus source: "
        "one query returns every system's series ('sim' is a demo source)",
        f"{path}: signal_templates.lost.source: unknown source 'promx', did you mean 'prom'?",
        f"{path}: systems.other.labels.model: systems fraud-scoring and other both claim "
        'model="fraud-scoring" of template accuracy: the split would be ambiguous; give one '
        "of them another labels.model",
    ]


def test_labels_without_templates_and_hand_written_derived_fields(tmp_path: Path) -> None:
    """labels on a system using no template are its own (silences match them); ``label`` on
    a plain signal and ``template`` on a signal written in full are likely mistakes."""
    text = VALID.replace(
        "    contributors: {model: ml-fraud}\n",
        "    contributors: {model: ml-fraud}\n    labels: {model: fraud}\n",
    )
    path = write(tmp_path, text)
    assert load_config(path, environ={}).systems["fraud-scoring"].labels == {"model": "fraud"}
    text = templated(VALID).replace(
        "      accuracy: {template: accuracy}\n",
        "      accuracy: {template: accuracy}\n"
        "      full: {template: accuracy, layer: model, source: prom, query: q,"
        " detect: {threshold: {min: 1}}}\n"
        "      labelled: {layer: model, source: prom, query: q, label: [model, x],"
        " detect: {threshold: {min: 1}}}\n",
    )
    path = write(tmp_path, text)
    assert errors_of(path, environ={}) == [
        f"{path}: systems.fraud-scoring.signals.full.template: a template ref may override "
        "only detect, for, resolve_after and bad: drop layer, source and query (they come "
        "from the template), or drop template for a plain signal",
        f"{path}: systems.fraud-scoring.signals.labelled.label: is not written by hand: it "
        "comes from a signal template's system_label and the system's labels",
    ]


def test_template_ref_typo_and_bad_override(tmp_path: Path) -> None:
    """A misspelled override gets a did-you-mean; an override that breaks the template's
    direction is reported at the ref."""
    text = templated().replace(
        "      accuracy: {template: accuracy}\n",
        "      accuracy: {template: accuracy, fro: 10m}\n",
    )
    path = write(tmp_path, text)
    assert errors_of(path, environ={}) == [
        f"{path}: systems.fraud-scoring.signals.accuracy.fro: unknown key, did you mean 'for'?"
    ]
    path = write(tmp_path, text.replace("fro: 10m", "bad: up"))
    assert errors_of(path, environ={}) == [
        f"{path}: systems.fraud-scoring.signals.accuracy.detect.threshold.min: bad is up, so a "
        "value below min is not bad: remove min or set bad"
    ]


def test_errors_in_a_systems_dir_file_name_that_file_in_line_order(tmp_path: Path) -> None:
    """Schema and cross-reference mistakes of a directory's system are reported with that
    file's name and ``systems.<name>`` paths, the main file's first, then file by file."""
    path = with_systems_dir(
        tmp_path,
        {
            "b.yaml": DIR_SYSTEM.replace("scoring:", "ranking:").replace("alice", "alicia"),
            "a.yml": DIR_SYSTEM.replace("{template: accuracy}", "{template: accuracy, for: 5}")
            + "  ack_within: soon\n",
        },
        templated().replace(
            'url: "http://localhost:9090"', 'url: "http://localhost:9090", timeout: 10'
        ),
    )
    directory = tmp_path / "systems.d"
    assert errors_of(path, environ={}) == [
        f"{path}: sources.prom.timeout: invalid duration 10: give a unit, e.g. 10s or 10m",
        f"{directory / 'a.yml'}: systems.scoring.signals.accuracy.for: "
        "invalid duration 5: give a unit, e.g. 5s or 5m",
        f"{directory / 'a.yml'}: systems.scoring.ack_within: "
        "invalid duration 'soon': expected e.g. 30s, 15m, 2h, 7d, 1w",
    ]
    # Once the schema holds, cross-references: the directory file's unknown owner is
    # reported in that file, after the main file's unknown chain.
    (directory / "a.yml").write_text(DIR_SYSTEM, encoding="utf-8")
    path = write(
        tmp_path,
        templated().replace("    escalation: standard\n", "    escalation: standrd\n")
        + "systems_dir: systems.d\n",
    )
    assert errors_of(path, environ={}) == [
        f"{path}: systems.fraud-scoring.escalation: "
        "unknown escalation chain 'standrd', did you mean 'standard'?",
        f"{directory / 'b.yaml'}: systems.ranking.owner: "
        "unknown owner 'alicia', did you mean 'alice'?",
    ]


def test_a_system_in_two_directory_files_names_both(tmp_path: Path) -> None:
    """The later file's definition is the error, naming the first file and its line."""
    path = with_systems_dir(
        tmp_path, {"a.yaml": "\n" + DIR_SYSTEM, "b.yaml": DIR_SYSTEM.replace("alice", "bob")}
    )
    directory = tmp_path / "systems.d"
    assert errors_of(path, environ={}) == [
        f"{directory / 'b.yaml'}: systems.scoring: system 'scoring' is also defined in "
        f"{directory / 'a.yaml'} (line 2); a system is defined once"
    ]


def test_errors_in_a_config_split_across_many_directory_files_are_located(
    tmp_path: Path,
) -> None:
    """A config of 300 systems split across three ``systems_dir`` files, read one system at a
    time: each mistake is still reported with its own file, YAML path and (for what has no
    path) line, in file and line order, deep into each file."""

    def systems(first: int, count: int) -> str:
        return "".join(
            DIR_SYSTEM.replace("scoring:", f"system-{i}:") for i in range(first, first + count)
        )

    lines_per_system = DIR_SYSTEM.count("\n")
    files = {"a.yaml": systems(0, 100), "b.yaml": systems(100, 100), "c.yaml": systems(200, 100)}
    files["b.yaml"] = files["b.yaml"].replace(
        "system-180:\n  owner: alice\n", "system-180:\n  owner: alice\n  ack_within: soon\n"
    )
    files["c.yaml"] = files["c.yaml"].replace(
        "system-299:\n  owner: alice\n  escalation: standard\n",
        "system-299:\n  owner: alice\n  escalation: standard\n  runbook: [a]\n",
    )
    path = with_systems_dir(tmp_path, files)
    directory = tmp_path / "systems.d"
    assert errors_of(path, environ={}) == [
        f"{directory / 'b.yaml'}: systems.system-180.ack_within: "
        "invalid duration 'soon': expected e.g. 30s, 15m, 2h, 7d, 1w",
        f"{directory / 'c.yaml'}: systems.system-299.runbook: must be a valid string",
    ]
    # Schema right: cross-references, in the file of each system.
    files["b.yaml"] = systems(100, 100).replace(
        "system-150:\n  owner: alice\n", "system-150:\n  owner: alicia\n"
    )
    files["c.yaml"] = systems(200, 100).replace(
        "system-250:\n  owner: alice\n  escalation: standard\n",
        "system-250:\n  owner: alice\n  escalation: standrd\n",
    )
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    assert errors_of(path, environ={}) == [
        f"{directory / 'b.yaml'}: systems.system-150.owner: "
        "unknown owner 'alicia', did you mean 'alice'?",
        f"{directory / 'c.yaml'}: systems.system-250.escalation: "
        "unknown escalation chain 'standrd', did you mean 'standard'?",
    ]
    # A system defined again in a later file names the first file and the line it is on there;
    # a key written twice inside one file is found by its line.
    (directory / "b.yaml").write_text(systems(100, 100), encoding="utf-8")
    (directory / "c.yaml").write_text(
        systems(200, 100) + systems(142, 1) + systems(250, 1), encoding="utf-8"
    )
    line_142 = 42 * lines_per_system + 1
    assert errors_of(path, environ={}) == [
        f"{directory / 'c.yaml'}: systems.system-142: system 'system-142' is also defined in "
        f"{directory / 'b.yaml'} (line {line_142}); a system is defined once",
        f"{directory / 'c.yaml'}: line {101 * lines_per_system + 1}: "
        f"duplicate key 'system-250' in systems (first at line {50 * lines_per_system + 1}); "
        "only one of them would take effect",
    ]


def test_systems_dir_file_shape_mistakes(tmp_path: Path) -> None:
    """A file that is a list, one wrapped in ``systems:``, and duplicate keys inside a file
    are each reported in that file; a YAML syntax error stops the check there."""
    path = with_systems_dir(
        tmp_path,
        {
            "a.yaml": "- scoring\n",
            "b.yaml": "systems:\n" + "".join(f"  {line}\n" for line in DIR_SYSTEM.splitlines()),
            "c.yaml": DIR_SYSTEM + DIR_SYSTEM.replace("alice", "bob"),
        },
    )
    directory = tmp_path / "systems.d"
    assert errors_of(path, environ={}) == [
        f"{directory / 'a.yaml'}: the top level must be a mapping of system names to systems "
        "(the body of a systems: section), not a list",
        f"{directory / 'b.yaml'}: systems.systems: a systems_dir file is the body of a systems: "
        "section: write each system at the top level, without 'systems:'",
        f"{directory / 'c.yaml'}: line 6: duplicate key 'scoring' in systems (first at line 1); "
        "only one of them would take effect",
    ]
    (directory / "d.yaml").write_text("scoring: {owner: [\n", encoding="utf-8")
    errors = errors_of(path, environ={})
    assert len(errors) == 4
    assert errors[-1].startswith(f"{directory / 'd.yaml'}: line 2, column 1: expected the node")


def test_systems_dir_missing_or_a_file(tmp_path: Path) -> None:
    """A missing directory, or a file in its place, is an error at ``systems_dir``; the
    systems it would hold are not asked for as well."""
    main_without_systems = templated().split("systems:\n  fraud-scoring:")[0]
    path = write(tmp_path, main_without_systems + "systems_dir: nowhere\n")
    assert errors_of(path, environ={}) == [
        f"{path}: systems_dir: directory '{tmp_path / 'nowhere'}' does not exist"
    ]
    (tmp_path / "afile").write_text("x")
    path = write(tmp_path, templated() + "systems_dir: afile\n")
    assert errors_of(path, environ={}) == [
        f"{path}: systems_dir: '{tmp_path / 'afile'}' is not a directory"
    ]


def test_systems_only_in_the_directory(tmp_path: Path) -> None:
    """The main file may have no systems section at all; an empty directory file is fine."""
    main_without_systems = templated().split("systems:\n  fraud-scoring:")[0]
    path = with_systems_dir(
        tmp_path, {"a.yaml": DIR_SYSTEM, "empty.yaml": "# nothing yet\n"}, main_without_systems
    )
    config = load_config(path, environ={})
    assert list(config.systems) == ["scoring"]
    assert config.systems["scoring"].signals["accuracy"].label == ("model", "scoring")


def test_env_overrides_reach_directory_systems_and_errors_name_file_and_variable(
    tmp_path: Path,
) -> None:
    """Overrides apply after the merge: a variable changes a directory system, and a bad
    value from it is reported in that system's file, naming the variable."""
    path = with_systems_dir(tmp_path, {"a.yaml": DIR_SYSTEM})
    config = load_config(
        path, environ={"DRIFTOWNER_SYSTEMS__SCORING__RUNBOOK": "https://wiki.example.com/s"}
    )
    assert config.systems["scoring"].runbook == "https://wiki.example.com/s"
    config = load_config(
        path, environ={"DRIFTOWNER_SYSTEMS__SCORING__LABELS__MODEL": "fraud-scoring-v2"}
    )
    assert config.systems["scoring"].signals["accuracy"].label == ("model", "fraud-scoring-v2")
    config = load_config(
        path,
        environ={
            "DRIFTOWNER_SIGNAL_TEMPLATES__ACCURACY__QUERY": "avg by (model) (acc)",
            "DRIFTOWNER_SYSTEMS__SCORING__SIGNALS__ACCURACY__FOR": "10m",
        },
    )
    accuracy = config.systems["scoring"].signals["accuracy"]
    assert (accuracy.query, accuracy.for_) == ("avg by (model) (acc)", timedelta(minutes=10))
    variable = "DRIFTOWNER_SYSTEMS__SCORING__OWNER"
    assert errors_of(path, environ={variable: "zed"}) == [
        f"{tmp_path / 'systems.d' / 'a.yaml'}: systems.scoring.owner (from {variable}): "
        "unknown owner 'zed': expected one of alice, bob"
    ]


def test_env_moves_the_systems_dir_relative_to_the_config_file(tmp_path: Path) -> None:
    """``DRIFTOWNER_SYSTEMS_DIR`` replaces the file's value, relative to the config's
    directory; a missing one names the variable."""
    path = with_systems_dir(tmp_path, {"a.yaml": DIR_SYSTEM})
    other = tmp_path / "other.d"
    other.mkdir()
    (other / "x.yaml").write_text(DIR_SYSTEM.replace("scoring:", "other:"), encoding="utf-8")
    config = load_config(path, environ={"DRIFTOWNER_SYSTEMS_DIR": "other.d"})
    assert list(config.systems) == ["fraud-scoring", "other"]
    assert config.systems_dir == other
    assert errors_of(path, environ={"DRIFTOWNER_SYSTEMS_DIR": "gone.d"}) == [
        f"{path}: systems_dir (from DRIFTOWNER_SYSTEMS_DIR): "
        f"directory '{tmp_path / 'gone.d'}' does not exist"
    ]


def test_json_schema_describes_templates_and_systems_dir() -> None:
    """The schema has the YAML form: a system's signal is a plain signal or a template ref,
    and derived fields (template, label) are not offered on plain signals."""
    schema = config_json_schema()
    definitions = schema["$defs"]
    assert {"signal_templates", "systems_dir"} <= set(schema["properties"])
    signals = definitions["SystemConfig"]["properties"]["signals"]["additionalProperties"]
    assert signals["oneOf"] == [
        {"$ref": "#/$defs/SignalConfig"},
        {"$ref": "#/$defs/TemplateRefConfig"},
    ]
    assert not {"template", "label"} & set(definitions["SignalConfig"]["properties"])
    assert set(definitions["TemplateRefConfig"]["properties"]) == {
        "template",
        "detect",
        "for",
        "resolve_after",
        "bad",
    }
    assert "system_label" in definitions["SignalTemplateConfig"]["required"]
    assert "labels" in definitions["SystemConfig"]["properties"]


# --- outbox pacing and fallbacks ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("1/s", 1.0), ("20/m", 20 / 60), ("5/10s", 0.5), ("3/h", 3 / 3600), ("0.5/s", 0.5)],
)
def test_a_rate_is_read_as_sends_per_second(text: str, per_second: float) -> None:
    """``N/unit`` and ``N/<count><unit>`` give sends per second, and print back as a rate
    that parses to the same number."""
    assert parse_rate(text) == pytest.approx(per_second)
    assert parse_rate(format_rate(parse_rate(text))) == pytest.approx(per_second)


@pytest.mark.parametrize("text", [None, "none"])
def test_no_rate_means_no_limit(text: str | None) -> None:
    """``none`` (or null) sets no rate."""
    assert parse_rate(text) is None


@pytest.mark.parametrize(
    "text",
    ["1", 1, 1.5, "0/s", "1/0s", "fast", "1/d", "-1/s", True, "1/99999999999h", "9" * 400 + "/s"],
)
def test_a_bad_rate_names_the_syntax(text: object) -> None:
    """A bare number, a zero rate, an unknown unit, a rate too slow for a date or not a
    finite number: each refused with the accepted syntax or range."""
    with pytest.raises(ValueError, match=r"invalid rate .*(1/s|more than 0|between)"):
        parse_rate(text)


def test_a_step_may_give_a_channel_a_fallback_and_plain_via_keeps_working() -> None:
    """``via: [{channel: slack, fallback: email}, console]`` sends through slack and console
    at once; email only takes over slack's pages. A plain list has no fallback."""
    config = make_config(
        {
            "channels": {"slack": {"type": "slack", "webhook_url": "https://hooks.example/x"}},
            "escalation_chains": {
                "standard": {
                    "steps": [
                        {
                            "notify": "owner",
                            "via": [{"channel": "slack", "fallback": "email"}, "console"],
                        },
                        {"after": "15m", "notify": ["bob"], "via": ["email"]},
                    ]
                }
            },
        }
    )
    first, second = config.escalation_chains["standard"].steps
    assert step_channels(config, first) == ["slack", "console"]
    assert first.fallbacks == {"slack": "email"}
    assert step_channels(config, second) == ["email"] and second.fallbacks == {}
    again = Config.model_validate(config.model_dump(by_alias=True))
    assert again.escalation_chains == config.escalation_chains
