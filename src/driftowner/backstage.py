"""Ownership from where it already lives: system owners read from a Backstage catalog, so the
registry is not kept twice.

A catalog is a ``catalog-info.yaml`` file (entities separated by ``---``) or a directory of them
(every ``*.yaml``/``*.yml`` below it, in path order; hidden entries skipped). Of its entities only
``kind: Component`` matters: a system takes the owner (``spec.owner``) of the Component that
carries the annotation ``driftowner.io/system: <system>``, or else of the Component named like
the system. ``spec.owner`` is a Backstage entity reference, ``[<kind>:][<namespace>/]<name>``,
case-insensitive; the kind defaults to ``group`` and the namespace to the Component's own
(``default`` unless ``metadata.namespace`` says). ``backstage.owners`` maps such references
(written the same way; namespace ``default`` when left out) to keys of ``owners``.

Reading the files is the shell (:func:`read_catalog`); deciding each system's owner is pure
(:func:`resolve`). Problems come back located (file and line, or the config path) for the
loader to report with the config's own errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

ANNOTATION = "driftowner.io/system"
"""The Component annotation naming the driftowner system it owns (when names differ)."""

_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class Component:
    """A Component entity of the catalog, as far as ownership goes."""

    name: str
    owner: str
    """``spec.owner`` as written."""
    owner_ref: str | None
    """``spec.owner`` as a full reference (``group:default/ml-fraud``); None when malformed."""
    system: str | None
    """The ``driftowner.io/system`` annotation, when present."""
    file: str
    line: int
    """Where ``spec.owner`` is written (1-based), for errors."""


@dataclass(frozen=True, slots=True)
class CatalogProblem:
    """A mistake in a catalog file: where, and what."""

    file: str
    line: int | None
    message: str


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every Component read, and every problem met reading the files."""

    components: tuple[Component, ...] = ()
    problems: tuple[CatalogProblem, ...] = ()


@dataclass(frozen=True, slots=True)
class Resolution:
    """Each system's owner as the catalog gives it, and the problems found deciding it."""

    owners: Mapping[str, str] = field(default_factory=dict)
    """system → owner key, for systems the catalog covers."""
    sources: Mapping[str, Component] = field(default_factory=dict)
    """system → the Component its owner came from."""
    problems: tuple[CatalogProblem, ...] = ()
    """Catalog-located problems (an unmapped owner, two Components disagreeing)."""


def entity_ref(text: str, default_namespace: str = "default") -> str | None:
    """A Backstage entity reference in full, lower case: ``kind:namespace/name``, the kind
    defaulting to ``group``; None when it is not a reference (empty parts, extra separators)."""
    kind, _, rest = text.strip().rpartition(":") if ":" in text else ("group", "", text.strip())
    namespace, _, name = rest.rpartition("/") if "/" in rest else (default_namespace, "", rest)
    parts = [kind.strip(), namespace.strip(), name.strip()]
    if not all(parts) or any(":" in part or "/" in part for part in parts):
        return None
    return f"{parts[0]}:{parts[1]}/{parts[2]}".lower()


def read_catalog(path: Path) -> Catalog:
    """Every Component of the catalog at ``path`` (a file or a directory).

    Never raises for a bad catalog: a missing path, an unreadable file or YAML that does not
    parse is a :class:`CatalogProblem`.
    """
    if not path.exists():
        return Catalog(problems=(CatalogProblem(str(path), None, "does not exist"),))
    files = [path] if path.is_file() else _catalog_files(path)
    components: list[Component] = []
    problems: list[CatalogProblem] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            problems.append(CatalogProblem(str(file), None, f"cannot read: {reason}"))
            continue
        try:
            documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            detail = getattr(exc, "problem", None) or str(exc)
            problems.append(CatalogProblem(str(file), line, f"not YAML: {detail}"))
            continue
        for document in documents:
            component = _component(document, str(file))
            if component is not None:
                components.append(component)
    return Catalog(tuple(components), tuple(problems))


def _catalog_files(directory: Path) -> list[Path]:
    return sorted(
        found
        for found in directory.rglob("*")
        if found.suffix in _SUFFIXES
        and found.is_file()
        and not any(part.startswith(".") for part in found.relative_to(directory).parts)
    )


def _component(document: Node | None, file: str) -> Component | None:
    """The Component a YAML document describes; None for another kind, or one without a
    name or an owner (not ours to judge unless a system needs it: see :func:`resolve`)."""
    if not isinstance(document, MappingNode):
        return None
    kind = _scalar(document, "kind")
    if kind is None or kind[0].lower() != "component":
        return None
    name = _scalar(document, "metadata", "name")
    owner = _scalar(document, "spec", "owner")
    if name is None:
        return None
    namespace = _scalar(document, "metadata", "namespace")
    system = _scalar(document, "metadata", "annotations", ANNOTATION)
    line = owner[1] if owner is not None else document.start_mark.line + 1
    written = owner[0] if owner is not None else ""
    home = namespace[0] if namespace else "default"
    return Component(
        name=name[0],
        owner=written,
        owner_ref=entity_ref(written, home) if written else None,
        system=system[0] if system is not None else None,
        file=file,
        line=line,
    )


def _scalar(node: Node, *keys: str) -> tuple[str, int] | None:
    """The text at ``keys`` under a mapping node and its line (1-based); None when absent or
    not a scalar."""
    for key in keys:
        if not isinstance(node, MappingNode):
            return None
        found = [v for k, v in node.value if isinstance(k, ScalarNode) and k.value == key]
        if not found:
            return None
        node = found[-1]
    if not isinstance(node, ScalarNode):
        return None
    return node.value, node.start_mark.line + 1


def resolve(
    systems: Iterable[str], owner_map: Mapping[str, str], components: Iterable[Component]
) -> Resolution:
    """Each system's owner key from the catalog. Pure.

    Args:
        systems: The systems to find owners for (those without ``owner`` in the config, and
            those with one, to check they agree).
        owner_map: Full owner references (see :func:`entity_ref`) → owner keys.
        components: The catalog's Components.

    Returns:
        The owner of every system some Component covers (annotated for it, else named like
        it), and a problem for each such Component whose owner is malformed or unmapped, or
        that disagrees with another Component covering the same system.
    """
    components = list(components)
    owners: dict[str, str] = {}
    sources: dict[str, Component] = {}
    problems: list[CatalogProblem] = []
    for system in systems:
        annotated = [c for c in components if c.system == system]
        named = [c for c in components if c.name == system and c.system in (None, system)]
        for component in annotated or named:
            key = _owner_key(component, system, owner_map, problems)
            if key is None:
                continue
            earlier = sources.get(system)
            if earlier is not None and owners[system] != key:
                problems.append(
                    CatalogProblem(
                        component.file,
                        component.line,
                        f"component {component.name!r} gives system {system!r} owner {key!r}, "
                        f"but component {earlier.name!r} ({earlier.file} line {earlier.line}) "
                        f"gives {owners[system]!r}: a system has one owner",
                    )
                )
                continue
            owners.setdefault(system, key)
            sources.setdefault(system, component)
    return Resolution(owners, sources, tuple(problems))


def _owner_key(
    component: Component,
    system: str,
    owner_map: Mapping[str, str],
    problems: list[CatalogProblem],
) -> str | None:
    """The owner key ``component`` gives ``system``, or None with the problem noted."""
    where = f"component {component.name!r} (owner of system {system!r})"
    if not component.owner:
        problems.append(CatalogProblem(component.file, component.line, f"{where}: no spec.owner"))
        return None
    if component.owner_ref is None:
        problems.append(
            CatalogProblem(
                component.file,
                component.line,
                f"{where}: spec.owner {component.owner!r} is not an entity reference "
                "([kind:][namespace/]name)",
            )
        )
        return None
    key = owner_map.get(component.owner_ref)
    if key is None:
        problems.append(
            CatalogProblem(
                component.file,
                component.line,
                f"{where}: spec.owner {component.owner!r} ({component.owner_ref}) is not in "
                f'backstage.owners: map it to an owner key, e.g. "{component.owner_ref}": <key>',
            )
        )
    return key
