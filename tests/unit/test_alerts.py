"""Alerts as signals: selectors (alert names, label matchers), the system label, which alert
episodes fire at an instant, the alert verdict, the alertmanager source's reads and the
webhook body, and the config rules of signals on an alertmanager source."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from driftowner.alerts import Matcher, firing, for_system, parse_selector, render, system_conflict
from driftowner.config import cross_check
from driftowner.configload import ConfigError, load_config_text
from driftowner.detect import rules
from driftowner.detect.bank import Bank
from driftowner.model import ReceivedAlert, SourceResult
from driftowner.sources import build_source
from driftowner.sources.alertmanager import AlertmanagerSource, WebhookPayload, received
from driftowner.store import StoreUnavailable
from tests.unit.factories import SYSTEM, T0, at, make_config, samples

# -- selectors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ServingErrors", '{alertname="ServingErrors"}'),
        ("  ServingErrors ", '{alertname="ServingErrors"}'),
        (
            '{alertname="ServingErrors", model="fraud"}',
            '{alertname="ServingErrors", model="fraud"}',
        ),
        ('ServingErrors{model="fraud"}', '{alertname="ServingErrors", model="fraud"}'),
        ("{severity=~'page|ticket',team!=ml}", '{severity=~"page|ticket", team!="ml"}'),
        ('{a!~"x.*",}', '{a!~"x.*"}'),
        (r'{msg="say \"hi\"\\n"}', r'{msg="say \"hi\"\\n"}'),
        ("{}", "{}"),
    ],
)
def test_a_selector_reads_as_alertmanager_writes_it(text: str, expected: str) -> None:
    """Alert names, braces, both together, the four operators, both quotes, bare values,
    escapes and a trailing comma read into matchers; ``render`` writes them canonically."""
    assert render(parse_selector(text)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("Serving Errors", "is not an alert name"),
        ('{alertname="X"', "does not end with }"),
        ('{alertname="X" model="y"}', "expected , between matchers"),
        ('{alertname=="X"}', "cannot read a matcher"),
        ('{alertname=~"("}', "invalid regex"),
        ("{1abc=x}", "cannot read a matcher"),
    ],
)
def test_a_bad_selector_says_what_is_wrong(text: str, message: str) -> None:
    """Each malformed selector is refused with a message naming the problem."""
    with pytest.raises(ValueError, match=message):
        parse_selector(text)


@pytest.mark.parametrize(
    ("matcher", "labels", "matches"),
    [
        (Matcher("alertname", "=", "X"), {"alertname": "X"}, True),
        (Matcher("alertname", "=", "X"), {"alertname": "Y"}, False),
        (Matcher("model", "!=", "fraud"), {}, True),
        (Matcher("model", "!=", "fraud"), {"model": "fraud"}, False),
        (Matcher("model", "=~", "fr.*"), {"model": "fraud"}, True),
        (Matcher("model", "=~", "fr"), {"model": "fraud"}, False),  # anchored, as Alertmanager
        (Matcher("model", "!~", "fr.*"), {"model": "churn"}, True),
        (Matcher("model", "=", ""), {}, True),  # a missing label is the empty string
    ],
)
def test_matchers_match_as_alertmanager_does(
    matcher: Matcher, labels: dict[str, str], matches: bool
) -> None:
    """Equality, inequality and fully anchored regexes; a missing label counts as empty."""
    assert matcher.matches(labels) is matches


def test_the_system_matcher_is_added_unless_the_query_names_the_label() -> None:
    """``for_system`` adds ``system="..."``; a query already matching on it keeps its own."""
    named = parse_selector("ServingErrors")
    assert render(for_system(named, "system", SYSTEM)) == (
        '{alertname="ServingErrors", system="fraud-scoring"}'
    )
    already = parse_selector('{alertname="X", system="fraud-scoring"}')
    assert for_system(already, "system", SYSTEM) == already


def test_a_matcher_on_the_system_label_must_be_the_systems_own() -> None:
    """Only ``label="this system"`` may stand in a query; anything else takes other systems'
    alerts and is named."""
    assert system_conflict(parse_selector('{system="fraud-scoring"}'), "system", SYSTEM) is None
    problem = system_conflict(parse_selector('{system=~"fraud.*"}'), "system", SYSTEM)
    assert problem is not None and "other systems" in problem


# -- which episodes fire -----------------------------------------------------------------------


def alert(
    start: float,
    end: float | None = None,
    *,
    fingerprint: str = "a1",
    resolved: bool = False,
    **labels: str,
) -> ReceivedAlert:
    """An episode starting ``start`` minutes after T0 (ending ``end`` minutes after it)."""
    chosen = {"alertname": "ServingErrors", "system": SYSTEM, **labels}
    return ReceivedAlert(
        fingerprint=fingerprint,
        labels=tuple(sorted(chosen.items())),
        starts_at=at(start),
        ends_at=None if end is None else at(end),
        resolved=resolved,
        received_at=at(start),
    )


SELECT = parse_selector('{alertname="ServingErrors", system="fraud-scoring"}')


@pytest.mark.parametrize(
    ("episodes", "when", "count"),
    [
        ([alert(0)], 5, 1),  # firing, no end known
        ([alert(0)], -1, 0),  # not started yet
        ([alert(0, 10, resolved=True)], 5, 1),
        ([alert(0, 10, resolved=True)], 10, 0),  # resolved at its end
        ([alert(0, 10)], 15, 0),  # an end that passed without a resolve: resolved
        ([alert(0), alert(20, fingerprint="a1")], 25, 1),  # one alert, newer episode
        ([alert(0), alert(20, 30, resolved=True)], 35, 0),  # a newer episode ends the older
        ([alert(0), alert(0, fingerprint="b2", model="churn")], 5, 2),
        ([alert(0, system="churn-model")], 5, 0),  # another system's alert
        ([alert(0, alertname="Other")], 5, 0),
    ],
)
def test_firing_counts_the_selected_episodes_that_fire_then(
    episodes: list[ReceivedAlert], when: float, count: int
) -> None:
    """An episode fires from its start until its end (a resolve, or an end that passed), or
    until a later episode of the same alert starts; only selected alerts count."""
    assert len(firing(episodes, SELECT, at(when))) == count


# -- the verdict -------------------------------------------------------------------------------

ALERT_CONFIG: dict[str, Any] = {
    "sources": {"prom": {"type": "demo"}, "am": {"type": "alertmanager"}},
    "systems": {
        SYSTEM: {
            "signals": {
                "serving_errors": {"layer": "engineering", "source": "am", "query": "ServingErrors"}
            },
            "disagreements": [
                {
                    "name": "serving-errors-while-model-fine",
                    "healthy": ["accuracy"],
                    "degraded": ["serving_errors"],
                }
            ],
        }
    },
}


def test_an_alert_signal_is_degraded_while_its_alert_fires_and_has_no_chart() -> None:
    """A firing count above zero is degraded, zero is ok, whatever came before (no chart
    learns a reference from alert counts)."""
    config = make_config(ALERT_CONFIG)
    signal = config.systems[SYSTEM].signals["serving_errors"]
    bank = Bank()
    interval = config.evaluation.interval
    fired = bank.judge(
        SYSTEM, "serving_errors", signal, SourceResult(samples((0, 2.0))), T0, interval
    )
    assert (fired.status, fired.detector, fired.value) == ("degraded", "alert", 2.0)
    assert fired.reason == ('2 alerts firing: {alertname="ServingErrors", system="fraud-scoring"}')
    calm = bank.judge(
        SYSTEM, "serving_errors", signal, SourceResult(samples((5, 0.0))), at(5), interval
    )
    assert (calm.status, calm.reason.startswith("no alert firing")) == ("ok", True)
    assert bank.watches == {}


def test_a_firing_alert_while_the_model_is_fine_is_a_disagreement() -> None:
    """ "ServingErrors firing while the model is fine" is a disagreement rule like any other."""
    config = make_config(ALERT_CONFIG)
    bank = Bank()
    interval = config.evaluation.interval
    system = config.systems[SYSTEM]
    accuracy = bank.judge(
        SYSTEM,
        "accuracy",
        system.signals["accuracy"],
        SourceResult(samples((0, 0.95))),
        T0,
        interval,
    )
    errors = bank.judge(
        SYSTEM,
        "serving_errors",
        system.signals["serving_errors"],
        SourceResult(samples((0, 1.0))),
        T0,
        interval,
    )
    holding = rules.conditions(SYSTEM, system, {"accuracy": accuracy, "serving_errors": errors})
    assert [c.rule for c in holding] == ["disagreement:serving-errors-while-model-fine"]


# -- the source --------------------------------------------------------------------------------


class Log:
    """A store's received alerts, in memory; ``broken`` makes every read fail."""

    def __init__(self, *alerts: ReceivedAlert, broken: bool = False) -> None:
        self.alerts = list(alerts)
        self.broken = broken
        self.asked: list[tuple[str, datetime, datetime]] = []

    def received_alerts(self, source: str, start: datetime, end: datetime) -> list[ReceivedAlert]:
        self.asked.append((source, start, end))
        if self.broken:
            raise StoreUnavailable("the store cannot be read: disk I/O error")
        return list(self.alerts)


QUERY = '{alertname="ServingErrors", system="fraud-scoring"}'


async def test_an_instant_read_counts_the_alerts_firing_then() -> None:
    """An instant read is one sample at ``end``: how many selected alerts fire then."""
    log = Log(alert(0), alert(0, fingerprint="b2", model="churn"), alert(0, system="other"))
    source = AlertmanagerSource("am", log)
    result = await source.read(QUERY, at(5), at(5), timedelta(minutes=1))
    assert result.error is None
    assert [(s.at, s.value) for s in result.samples] == [(at(5), 2.0)]
    assert log.asked == [("am", at(5), at(5))]


async def test_a_range_read_is_the_firing_count_at_each_step() -> None:
    """A range read (replay's history) counts at each step within the range."""
    source = AlertmanagerSource("am", Log(alert(10, 20, resolved=True)))
    result = await source.read(QUERY, at(0), at(30), timedelta(minutes=10))
    assert [(s.at, s.value) for s in result.samples] == [
        (at(0), 0.0),
        (at(10), 1.0),
        (at(20), 0.0),
        (at(30), 0.0),
    ]


async def test_an_unreadable_store_is_a_source_down_never_a_healthy_signal() -> None:
    """A store that cannot be read marks the source down (no data, paging nobody), not
    "no alert firing"."""
    result = await AlertmanagerSource("am", Log(broken=True)).read(QUERY, T0, T0, timedelta(1))
    assert (result.error_reason, result.source_up) == ("unreachable", False)
    assert "disk I/O error" in (result.error or "")


async def test_a_query_that_is_no_selector_is_a_query_error() -> None:
    """The config refuses such a query; read directly, it is a located query error."""
    result = await AlertmanagerSource("am", Log()).read("{x", T0, T0, timedelta(1))
    assert result.error_reason == "query_error" and result.source_up


def test_build_source_needs_the_store_for_an_alertmanager_source() -> None:
    """Without the store to read alerts from, building the source says so."""
    config = make_config(ALERT_CONFIG)
    with pytest.raises(ValueError, match="needs the store"):
        build_source("am", config.sources["am"], clock=lambda: T0)
    built = build_source("am", config.sources["am"], clock=lambda: T0, alerts=Log())
    assert isinstance(built, AlertmanagerSource)


# -- the webhook body --------------------------------------------------------------------------


def payload(*alerts: dict[str, Any]) -> WebhookPayload:
    return WebhookPayload.model_validate(
        {
            "version": "4",
            "groupKey": '{}:{alertname="ServingErrors"}',
            "status": "firing",
            "receiver": "driftowner",
            "alerts": list(alerts),
        }
    )


def test_a_firing_alert_without_an_end_fires_until_resolved() -> None:
    """Alertmanager's zero ``endsAt`` of a firing alert is no end; a resolved one without
    an end ends when it was received; fingerprints are kept in lower case."""
    body = payload(
        {
            "status": "firing",
            "labels": {"alertname": "ServingErrors", "system": SYSTEM},
            "startsAt": "2025-03-03T09:00:00.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": "1A30BA71CCA2921F",
        },
        {
            "status": "resolved",
            "labels": {"alertname": "Other"},
            "startsAt": "2025-03-03T08:00:00+01:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": "b2",
        },
    )
    first, second = received(body, at(5))
    assert (first.fingerprint, first.starts_at, first.ends_at) == (
        "1a30ba71cca2921f",
        T0 + timedelta(microseconds=123456),
        None,
    )
    assert first.labels == (("alertname", "ServingErrors"), ("system", SYSTEM))
    assert (second.resolved, second.ends_at, second.starts_at) == (True, at(5), at(-120))


# -- config ------------------------------------------------------------------------------------

YAML = """\
sources:
  prom: {type: demo}
  am: {type: alertmanager, system_label: model}
owners:
  alice: {name: Alice Chen, email: alice@example.com}
channels:
  log: {type: log}
escalation_chains:
  standard: {steps: [{notify: owner}]}
systems:
  fraud-scoring:
    owner: alice
    escalation: standard
%s
    signals:
      accuracy: {layer: model, source: prom, query: accuracy, detect: {threshold: {min: 0.9}}}
%s
"""


def errors(labels: str, signal: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(YAML % (labels, signal))
    return caught.value.errors


def test_the_query_gains_the_systems_label_from_labels_or_its_name() -> None:
    """The system's matcher uses the source's ``system_label`` and the system's
    ``labels`` value (else its name); ``labels.<system_label>`` is a used label."""
    signal = "      errors: {layer: engineering, source: am, query: 'ServingErrors{env=\"prod\"}'}"
    named = load_config_text(YAML % ("", signal)).systems[SYSTEM].signals["errors"]
    assert named.query == '{alertname="ServingErrors", env="prod", model="fraud-scoring"}'
    assert named.alerts
    labelled = load_config_text(YAML % ("    labels: {model: fraud}", signal))
    assert labelled.systems[SYSTEM].signals["errors"].query.endswith('model="fraud"}')


def test_a_loaded_alert_signal_validates_again_unchanged() -> None:
    """A dumped config (no ``alerts`` key: it is derived) validates to the same config."""
    signal = "      errors: {layer: engineering, source: am, query: ServingErrors}"
    config = load_config_text(YAML % ("", signal))
    dumped = config.model_dump(by_alias=True, exclude_unset=True)
    again = type(config).model_validate(dumped)
    assert again == config and not cross_check(again)


@pytest.mark.parametrize(
    ("signal", "expected"),
    [
        (
            "      errors: {layer: engineering, source: am, query: X, bad: up}",
            "systems.fraud-scoring.signals.errors.bad: does not apply on alertmanager source "
            "'am': an alert signal is bad while its alert fires",
        ),
        (
            "      errors: {layer: engineering, source: am, query: X, "
            "detect: {threshold: {max: 0}}}",
            "systems.fraud-scoring.signals.errors.detect: does not apply",
        ),
        (
            "      errors: {layer: engineering, source: am, query: X, false_alarm_every: 7d}",
            "systems.fraud-scoring.signals.errors.false_alarm_every: does not apply",
        ),
        (
            "      errors: {layer: engineering, source: am, query: X, stale_after: 5m}",
            "systems.fraud-scoring.signals.errors.stale_after: does not apply",
        ),
        (
            "      errors: {layer: engineering, source: am, query: 'X{'}",
            "systems.fraud-scoring.signals.errors.query: not an alert selector: the selector "
            "does not end with }",
        ),
        (
            "      errors: {layer: engineering, source: am, query: '{model=\"churn\"}'}",
            'systems.fraud-scoring.signals.errors.query: model="churn" would match alerts of '
            "other systems",
        ),
        (
            "      errors: {layer: engineering, source: am, query: X, alerts: true}",
            "systems.fraud-scoring.signals.errors.alerts: is not written by hand",
        ),
    ],
)
def test_signal_fields_that_do_not_apply_to_alerts_are_located_errors(
    signal: str, expected: str
) -> None:
    """``bad``, ``detect``, ``false_alarm_every`` and ``stale_after`` are errors on an
    alertmanager source; so are a query that is no selector, a matcher taking another
    system's alerts, and the derived ``alerts`` key written by hand. Each names its path."""
    found = errors("", signal)
    assert any(line.startswith(f"<config>: {expected}") for line in found), found


def test_a_signal_template_cannot_read_an_alertmanager_source() -> None:
    """Templates split a Prometheus query by label; an alertmanager source is refused."""
    text = (YAML % ("", "")).replace(
        "systems:",
        "signal_templates:\n  errs: {layer: engineering, source: am, query: X, "
        "system_label: model}\nsystems:",
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    assert any(
        "signal_templates.errs.source: signal templates need a prometheus source" in line
        for line in caught.value.errors
    ), caught.value.errors


def test_the_source_checks_its_system_label_and_token() -> None:
    """An invalid label name and a blank token are located errors."""
    text = (YAML % ("", "")).replace(
        "am: {type: alertmanager, system_label: model}",
        "am: {type: alertmanager, system_label: 'my-label', token: ' '}",
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    joined = "\n".join(caught.value.errors)
    assert "sources.am.system_label: " in joined and "invalid label name 'my-label'" in joined
    assert "sources.am.token: " in joined
