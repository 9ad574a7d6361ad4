"""The ownership registry audit: one rule at a time, each gap named in words its owner acts on,
on configs built in Python (pure: a config in, an Audit out)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from driftowner.audit import Audit, audit, audit_json
from driftowner.config import Config, cross_check

from .factories import SYSTEM, base_config

Document = dict[str, Any]


def _config(*edits: Callable[[Document], None]) -> Config:
    document = base_config()
    for edit in edits:
        edit(document)
    config = Config.model_validate(document)
    assert not cross_check(config)
    return config


def _system(document: Document) -> Document:
    system: Document = document["systems"][SYSTEM]
    return system


def clean(document: Document) -> None:
    """The base config with no gap: the engineering layer not required, data has a team."""
    document["audit"] = {"layers": ["data", "model", "business"]}
    _system(document)["contributors"]["data"] = "ml-fraud"


def no_business_signal(document: Document) -> None:
    del _system(document)["signals"]["adoption"]
    _system(document)["disagreements"] = []


def no_disagreement(document: Document) -> None:
    _system(document)["disagreements"] = []


def disagreement_without_business(document: Document) -> None:
    _system(document)["disagreements"] = [
        {"name": "nulls-up-accuracy-fine", "healthy": ["accuracy"], "degraded": ["null_rate"]}
    ]


def slack_for_everyone(document: Document) -> None:
    """A Slack channel, and later steps without ``via`` (every channel): bob has no Slack id."""
    document["channels"]["slack"] = {
        "type": "slack",
        "webhook_url": "https://hooks.slack.com/services/T/B/X",
    }
    steps = document["escalation_chains"]["standard"]["steps"]
    steps[1].pop("via")


def second_system_for_alice(document: Document) -> None:
    """churn-model, a copy of fraud-scoring (no gap of its own), and a limit of one."""
    document["systems"]["churn-model"] = copy.deepcopy(_system(document))
    document["audit"]["max_systems_per_owner"] = 1


def churn_watches_only_accuracy(document: Document) -> None:
    churn = document["systems"]["churn-model"]
    churn["disagreements"] = []
    churn["signals"] = {"accuracy": churn["signals"]["accuracy"]}


def solo_chain(document: Document) -> None:
    document["escalation_chains"]["solo"] = {
        "steps": [{"notify": "owner", "via": ["email"]}, {"after": "15m", "notify": ["alice"]}]
    }
    _system(document)["escalation"] = "solo"


def no_data_team(document: Document) -> None:
    del _system(document)["contributors"]["data"]


RULES: list[tuple[str, list[Callable[[Document], None]], list[tuple[str, str]]]] = [
    ("a fully covered system has no gap", [clean], []),
    (
        "the default layers: engineering is missing too, and data has no team",
        [],
        [
            (
                "missing_layer",
                "fraud-scoring: no engineering-layer signal, so serving trouble (latency, "
                "errors, saturation) is left to other dashboards",
            ),
            (
                "no_contributors",
                "fraud-scoring: no contributors for the data layer, so no team is told when "
                "its data signals fire",
            ),
        ],
    ),
    (
        "no business-layer signal: 'accuracy fine, adoption falling' cannot be seen",
        [clean, no_business_signal],
        [
            (
                "missing_layer",
                "fraud-scoring: no business-layer signal, so 'accuracy fine, adoption falling' "
                "cannot be seen",
            )
        ],
    ),
    (
        "model and business signals but no rule ties them",
        [clean, no_disagreement],
        [
            (
                "no_disagreement",
                "fraud-scoring: no disagreement rule ties a model signal to a business one, so "
                "'accuracy fine, adoption falling' pages nobody: each team sees its own layer "
                "healthy",
            )
        ],
    ),
    (
        "a disagreement between data and model does not tie model to business",
        [clean, disagreement_without_business],
        [("no_disagreement", "")],
    ),
    (
        "a later step through every channel reaches bob on email but not on slack",
        [clean, slack_for_everyone],
        [
            (
                "unreachable",
                "fraud-scoring: bob cannot be reached on slack (no slack), which step 2 of "
                "chain 'standard' sends through",
            )
        ],
    ),
    (
        "an owner of more systems than audit.max_systems_per_owner",
        [clean, second_system_for_alice],
        [
            (
                "owner_overloaded",
                "alice owns 2 systems (fraud-scoring, churn-model), more than "
                "audit.max_systems_per_owner 1: nobody answers for that many well, and their "
                "absence stops them all",
            )
        ],
    ),
    (
        "a chain whose every step is the owner",
        [clean, solo_chain],
        [
            (
                "single_person_chain",
                "chain 'solo' pages only alice at every step (for fraud-scoring): when alice "
                "does not answer, nobody else is told",
            )
        ],
    ),
    (
        "a layer with signals and no contributor team",
        [clean, no_data_team],
        [("no_contributors", "fraud-scoring: no contributors for the data layer")],
    ),
]


@pytest.mark.parametrize(
    ("edits", "expected"), [(e, x) for _, e, x in RULES], ids=[r[0] for r in RULES]
)
def test_each_rule_names_its_gap(
    edits: list[Callable[[Document], None]], expected: list[tuple[str, str]]
) -> None:
    """Each config gets exactly the gaps expected, in order (each system's, then the
    registry's), each message starting as written."""
    result = audit(_config(*edits))
    assert [gap.code for gap in result.gaps] == [code for code, _ in expected]
    for gap, (_, message) in zip(result.gaps, expected, strict=True):
        assert gap.message.startswith(message)


def test_a_system_audit_carries_layers_ties_reach_and_contributors() -> None:
    """The typed result the status page renders: layers with signals in canonical order, the
    tying rule, every (person, channel) the chain pages with its steps, contributors."""
    result: Audit = audit(_config(clean, slack_for_everyone))
    (system,) = result.systems
    assert (system.name, system.owner, system.owner_name) == (SYSTEM, "alice", "Alice Chen")
    assert system.layers == ("data", "model", "business")
    assert system.disagreements == ("accuracy-fine-adoption-falling",)
    reach = {(r.person, r.channel): (r.steps, r.reachable) for r in system.reach}
    assert reach == {
        ("alice", "console"): ((1,), True),
        ("alice", "email"): ((1,), True),
        ("bob", "console"): ((2,), True),
        ("bob", "email"): ((2,), True),
        ("bob", "slack"): ((2,), False),
        ("dana", "email"): ((3,), True),
    }
    assert system.owner_reachable
    assert dict(system.contributors) == {
        "model": "ml-fraud",
        "business": "risk-product",
        "data": "ml-fraud",
    }


def test_an_owner_without_a_contact_on_the_first_steps_channel_is_unreachable() -> None:
    """The owner lacking Slack where step 1 sends through every channel: the owner is not
    reachable on every channel of the chain, and the gap says 'owner'."""

    def owner_on_every_channel(document: Document) -> None:
        slack_for_everyone(document)
        document["escalation_chains"]["standard"]["steps"][0].pop("via")
        document["owners"]["alice"].pop("slack")

    (system,) = audit(_config(clean, owner_on_every_channel)).systems
    assert not system.owner_reachable
    assert system.gaps[0].message == (
        "fraud-scoring: owner alice cannot be reached on slack (no slack), which step 1 of "
        "chain 'standard' sends through"
    )


def test_the_json_document_keeps_every_gap_and_the_threshold() -> None:
    """``audit --json``: per system its fields and gaps, the registry gaps, the threshold
    and the count of gaps."""
    config = _config(clean, second_system_for_alice, churn_watches_only_accuracy)
    document = audit_json(audit(config))
    assert document["max_systems_per_owner"] == 1
    assert document["gaps"] == 3
    assert [s["name"] for s in document["systems"]] == [SYSTEM, "churn-model"]
    churn = document["systems"][1]
    assert churn["layers"] == ["model"]
    assert churn["missing_layers"] == ["data", "engineering", "business"]
    assert [g["code"] for g in churn["gaps"]] == ["missing_layer", "missing_layer"]
    (overloaded,) = document["registry"]
    assert overloaded["code"] == "owner_overloaded"
    assert overloaded["systems"] == [SYSTEM, "churn-model"]
