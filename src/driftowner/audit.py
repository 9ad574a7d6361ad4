"""The ownership registry, checked: per system, who owns it, which layers it watches, whether a
disagreement rule ties its model to its business outcome, whether everyone its chain pages can
be reached, who contributes per layer; across systems, owners of too many systems and chains
that page one person only. Pure: a config in, an :class:`Audit` out, each gap named in words
its owner acts on. ``driftowner audit``, ``/api/v1/systems`` and the status page show it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from driftowner.config import (
    CONTACT_FIELD,
    Config,
    SystemConfig,
    owner_contact,
    step_channels,
    step_owner_keys,
)
from driftowner.model import LAYERS, Layer

GapCode = Literal[
    "missing_layer",
    "no_disagreement",
    "unreachable",
    "no_contributors",
    "owner_overloaded",
    "single_person_chain",
]
"""What kind of gap: a bounded label for programs (the message is for people)."""

_UNSEEN: dict[Layer, str] = {
    "data": "a shift in its inputs (nulls, schema, distribution) is seen only once it hurts",
    "model": "'accuracy falling' cannot be seen",
    "engineering": "serving trouble (latency, errors, saturation) is left to other dashboards",
    "business": "'accuracy fine, adoption falling' cannot be seen",
}
"""What a system cannot see without a signal in each layer."""


@dataclass(frozen=True, slots=True)
class Gap:
    """One thing the registry gets wrong, named so that someone can fix it."""

    code: GapCode
    message: str
    systems: tuple[str, ...] = ()
    """The systems it concerns (one for a system's own gap)."""


@dataclass(frozen=True, slots=True)
class Reach:
    """Whether one person a system's chain pages has a contact on one channel it pages through."""

    person: str
    channel: str
    steps: tuple[int, ...]
    """The chain's steps (1-based) that send to this person through this channel."""
    reachable: bool


@dataclass(frozen=True, slots=True)
class SystemAudit:
    """One system's place in the registry and its gaps."""

    name: str
    owner: str
    owner_name: str | None
    escalation: str
    layers: tuple[Layer, ...]
    """The layers it has signals in, in canonical order."""
    disagreements: tuple[str, ...]
    """Its disagreement rules that tie a model signal to a business one."""
    reach: tuple[Reach, ...]
    contributors: Mapping[Layer, str]
    gaps: tuple[Gap, ...]

    @property
    def owner_reachable(self) -> bool:
        """Whether the accountable owner can be reached on every channel the chain uses on
        them."""
        return all(r.reachable for r in self.reach if r.person == self.owner)


@dataclass(frozen=True, slots=True)
class Audit:
    """The whole registry checked."""

    systems: tuple[SystemAudit, ...]
    registry: tuple[Gap, ...]
    """Gaps across systems (owners of too many systems, one-person chains)."""
    max_systems_per_owner: int

    @property
    def gaps(self) -> tuple[Gap, ...]:
        """Every gap: each system's, in config order, then the registry's."""
        return (*(gap for system in self.systems for gap in system.gaps), *self.registry)


def audit(config: Config) -> Audit:
    """The ownership registry of ``config`` checked.

    Args:
        config: A validated config.

    Returns:
        Every system's audit, in config order, and the gaps across systems.
    """
    systems = tuple(_system(config, name, system) for name, system in config.systems.items())
    registry = (*_overloaded(config), *_one_person_chains(config))
    return Audit(systems, registry, config.audit.max_systems_per_owner)


def _system(config: Config, name: str, system: SystemConfig) -> SystemAudit:
    present = {signal.layer for signal in system.signals.values()}
    layers = tuple(layer for layer in LAYERS if layer in present)
    ties = tuple(
        rule.name
        for rule in system.disagreements
        if {"model", "business"}
        <= {system.signals[name].layer for name in (*rule.healthy, *rule.degraded)}
    )
    reach = _reach(config, system)
    gaps: list[Gap] = []
    for layer in config.audit.layers:
        if layer not in present:
            gaps.append(
                Gap(
                    "missing_layer",
                    f"{name}: no {layer}-layer signal, so {_UNSEEN[layer]}",
                    (name,),
                )
            )
    if {"model", "business"} <= present and not ties:
        gaps.append(
            Gap(
                "no_disagreement",
                f"{name}: no disagreement rule ties a model signal to a business one, so "
                "'accuracy fine, adoption falling' pages nobody: each team sees its own layer "
                "healthy",
                (name,),
            )
        )
    gaps.extend(_unreachable(config, name, system, reach))
    for layer in layers:
        if layer not in system.contributors:
            gaps.append(
                Gap(
                    "no_contributors",
                    f"{name}: no contributors for the {layer} layer, so no team is told when "
                    f"its {layer} signals fire",
                    (name,),
                )
            )
    owner = config.owners.get(system.owner)
    return SystemAudit(
        name=name,
        owner=system.owner,
        owner_name=owner.name if owner is not None else None,
        escalation=system.escalation,
        layers=layers,
        disagreements=ties,
        reach=reach,
        contributors=dict(system.contributors),
        gaps=tuple(gaps),
    )


def _reach(config: Config, system: SystemConfig) -> tuple[Reach, ...]:
    """Every (person, channel) the system's chain pages through, with the steps that do."""
    chain = config.escalation_chains.get(system.escalation)
    if chain is None:
        return ()
    steps: dict[tuple[str, str], list[int]] = {}
    for index, step in enumerate(chain.steps, start=1):
        for person in step_owner_keys(step, system.owner):
            for channel in step_channels(config, step):
                steps.setdefault((person, channel), []).append(index)
    return tuple(
        Reach(person, channel, tuple(at), owner_contact(config, person, channel) is not None)
        for (person, channel), at in steps.items()
    )


def _unreachable(
    config: Config, name: str, system: SystemConfig, reach: tuple[Reach, ...]
) -> list[Gap]:
    gaps: list[Gap] = []
    for r in reach:
        if r.reachable:
            continue
        channel = config.channels.get(r.channel)
        field = CONTACT_FIELD.get(channel.type) if channel is not None else None
        missing = f"no {field}" if field else "no contact"
        role = "owner " if r.person == system.owner else ""
        steps = ", ".join(str(step) for step in r.steps)
        gaps.append(
            Gap(
                "unreachable",
                f"{name}: {role}{r.person} cannot be reached on {r.channel} ({missing}), "
                f"which step {steps} of chain {system.escalation!r} sends through",
                (name,),
            )
        )
    return gaps


def _overloaded(config: Config) -> list[Gap]:
    limit = config.audit.max_systems_per_owner
    owned: dict[str, list[str]] = {}
    for name, system in config.systems.items():
        owned.setdefault(system.owner, []).append(name)
    return [
        Gap(
            "owner_overloaded",
            f"{owner} owns {len(names)} systems ({', '.join(names)}), more than "
            f"audit.max_systems_per_owner {limit}: nobody answers for that many well, and "
            "their absence stops them all",
            tuple(names),
        )
        for owner, names in owned.items()
        if len(names) > limit
    ]


def _one_person_chains(config: Config) -> list[Gap]:
    """Chains whose every step, for a system, pages the same one person: nobody else is ever
    told when that person does not answer."""
    alone: dict[tuple[str, str], list[str]] = {}
    for name, system in config.systems.items():
        chain = config.escalation_chains.get(system.escalation)
        if chain is None:
            continue
        people = {p for step in chain.steps for p in step_owner_keys(step, system.owner)}
        if len(people) == 1:
            alone.setdefault((system.escalation, next(iter(people))), []).append(name)
    return [
        Gap(
            "single_person_chain",
            f"chain {chain!r} pages only {person} at every step (for {', '.join(names)}): "
            f"when {person} does not answer, nobody else is told",
            tuple(names),
        )
        for (chain, person), names in alone.items()
    ]


def gap_json(gap: Gap) -> dict[str, Any]:
    """One gap as JSON."""
    return {"code": gap.code, "message": gap.message, "systems": list(gap.systems)}


def system_audit_json(system: SystemAudit) -> dict[str, Any]:
    """One system's audit as JSON (the ``audit`` field of ``/api/v1/systems``)."""
    return {
        "layers": list(system.layers),
        "missing_layers": [layer for layer in LAYERS if layer not in system.layers],
        "disagreements": list(system.disagreements),
        "owner_reachable": system.owner_reachable,
        "reach": [
            {
                "person": r.person,
                "channel": r.channel,
                "steps": list(r.steps),
                "reachable": r.reachable,
            }
            for r in system.reach
        ],
        "contributors": dict(system.contributors),
        "gaps": [gap_json(gap) for gap in system.gaps],
    }


def audit_json(result: Audit) -> dict[str, Any]:
    """The whole audit as one JSON document (``driftowner audit --json``)."""
    return {
        "systems": [
            {
                "name": system.name,
                "owner": system.owner,
                "owner_name": system.owner_name,
                "escalation": system.escalation,
                **system_audit_json(system),
            }
            for system in result.systems
        ],
        "registry": [gap_json(gap) for gap in result.registry],
        "max_systems_per_owner": result.max_systems_per_owner,
        "gaps": len(result.gaps),
    }
