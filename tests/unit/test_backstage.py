"""System owners read from a Backstage catalog (``backstage:`` in the config): multi-document
files and directories, annotations, entity references; every conflict and unknown owner a
located config error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from driftowner.backstage import Component, entity_ref, resolve
from driftowner.configload import ConfigError, load_config

DATA = Path(__file__).resolve().parents[1] / "data" / "backstage"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A copy of tests/data/backstage to edit."""
    target = tmp_path / "backstage"
    shutil.copytree(DATA, target)
    return target


def _errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    return caught.value.errors


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    ("text", "namespace", "expected"),
    [
        ("group:ml-fraud", "default", "group:default/ml-fraud"),
        ("ml-fraud", "default", "group:default/ml-fraud"),
        ("user:default/Alice", "default", "user:default/alice"),
        ("user:bob", "retention", "user:retention/bob"),
        ("retention/ml", "default", "group:retention/ml"),
        ("group:", "default", None),
        ("user:a:b", "default", None),
        ("a/b/c", "default", None),
        ("", "default", None),
    ],
)
def test_entity_references_are_read_as_backstage_writes_them(
    text: str, namespace: str, expected: str | None
) -> None:
    """``[kind:][namespace/]name``, case-insensitive; the kind defaults to group and the
    namespace to the one given (the Component's own); anything else is not a reference."""
    assert entity_ref(text, namespace) == expected


def test_systems_without_an_owner_take_the_catalogs() -> None:
    """From one multi-document file: fraud-scoring takes group:ml-fraud's mapped owner (the
    Component named like it); churn-model takes bob through the annotation on a Component of
    another name in namespace 'retention' (user:bob there is user:retention/bob). An unrelated
    Component with an unmapped owner is none of driftowner's business."""
    config = load_config(DATA / "config.yaml", environ={})
    assert {name: s.owner for name, s in config.systems.items()} == {
        "fraud-scoring": "alice",
        "churn-model": "bob",
    }
    assert config.backstage is not None
    assert config.backstage.owners == {"group:ml-fraud": "alice", "user:retention/bob": "bob"}


def test_a_catalog_directory_is_read_below_it_skipping_hidden_entries(workdir: Path) -> None:
    """A directory: every *.yaml and *.yml below it (a README skipped, a hidden directory's
    conflicting Component never read); owner 'ml-fraud' without kind is a group."""
    config_path = workdir / "config.yaml"
    _edit(config_path, "catalog: catalog-info.yaml", "catalog: catalog")
    _edit(config_path, '"user:retention/bob": bob', '"user:default/bob": bob')
    config = load_config(config_path, environ={})
    assert {name: s.owner for name, s in config.systems.items()} == {
        "fraud-scoring": "alice",
        "churn-model": "bob",
    }


def test_an_owner_in_the_config_that_agrees_with_the_catalog_is_kept(workdir: Path) -> None:
    """Both say alice: no conflict."""
    config_path = workdir / "config.yaml"
    _edit(config_path, "  fraud-scoring:\n", "  fraud-scoring:\n    owner: alice\n")
    assert load_config(config_path, environ={}).systems["fraud-scoring"].owner == "alice"


def test_an_unmapped_catalog_owner_is_located_in_the_catalog(workdir: Path) -> None:
    """The Component fraud-scoring's spec.owner has no backstage.owners entry: the error names
    the catalog file and the line of spec.owner, and says how to map it."""
    config_path = workdir / "config.yaml"
    _edit(config_path, '    "group:ml-fraud": alice\n', "")
    catalog = workdir / "catalog-info.yaml"
    assert _errors(config_path) == [
        f"{config_path}: systems.fraud-scoring.owner: no owner: give one here, or give the "
        "Backstage catalog (catalog-info.yaml) a Component named 'fraud-scoring' or annotated "
        "'driftowner.io/system: fraud-scoring'",
        f"{catalog}: line 18: component 'fraud-scoring' (owner of system 'fraud-scoring'): "
        "spec.owner 'group:ml-fraud' (group:default/ml-fraud) is not in backstage.owners: map "
        'it to an owner key, e.g. "group:default/ml-fraud": <key>',
    ]


def test_a_config_owner_that_disagrees_with_the_catalog_is_a_conflict(workdir: Path) -> None:
    """The registry kept twice, and differently: located at the system's owner, naming the
    Component, its file and line."""
    config_path = workdir / "config.yaml"
    _edit(config_path, "  fraud-scoring:\n", "  fraud-scoring:\n    owner: bob\n")
    catalog = workdir / "catalog-info.yaml"
    assert _errors(config_path) == [
        f"{config_path}: systems.fraud-scoring.owner: 'bob' here, but the Backstage catalog "
        f"gives 'alice' (component 'fraud-scoring', {catalog} line 18, spec.owner "
        "'group:ml-fraud'): keep one; remove owner here to take the catalog's"
    ]


def test_a_mapping_to_an_unknown_owner_is_located_at_backstage_owners(workdir: Path) -> None:
    """``"group:ml-fraud": alicia``: one error, at the mapping (not again at the system)."""
    config_path = workdir / "config.yaml"
    _edit(config_path, '"group:ml-fraud": alice', '"group:ml-fraud": alicia')
    assert _errors(config_path) == [
        f"{config_path}: backstage.owners.group:ml-fraud: unknown owner 'alicia', did you mean "
        "'alice'?"
    ]


def test_two_components_giving_one_system_different_owners_conflict(workdir: Path) -> None:
    """Two Components named fraud-scoring (two files of a directory) with different mapped
    owners: the later one is the error, naming the earlier's file and line."""
    config_path = workdir / "config.yaml"
    _edit(config_path, "catalog: catalog-info.yaml", "catalog: catalog")
    _edit(config_path, '"user:retention/bob": bob', '"user:default/bob": bob')
    second = workdir / "catalog" / "zz-fraud.yaml"
    second.write_text(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata: {name: fraud-scoring}\n"
        "spec:\n  type: service\n  lifecycle: production\n  owner: user:default/bob\n"
    )
    first = workdir / "catalog" / "fraud" / "catalog-info.yaml"
    assert _errors(config_path) == [
        f"{second}: line 7: component 'fraud-scoring' gives system 'fraud-scoring' owner "
        f"'bob', but component 'fraud-scoring' ({first} line 8) gives 'alice': a system has "
        "one owner"
    ]


def test_a_catalog_that_is_not_yaml_is_located_by_line(workdir: Path) -> None:
    """A syntax error in the third document of a multi-document file: its line."""
    catalog = workdir / "catalog-info.yaml"
    _edit(catalog, "  name: churn-service\n", "  name: [churn-service\n")
    assert _errors(workdir / "config.yaml") == [
        f"{catalog}: line 24: not YAML: expected ',' or ']', but got ':'"
    ]


def test_a_missing_catalog_is_an_error_at_backstage_catalog(workdir: Path) -> None:
    """The path names nothing: one error, located at ``backstage.catalog`` (not one more per
    system left without its owner by it)."""
    config_path = workdir / "config.yaml"
    _edit(config_path, "catalog: catalog-info.yaml", "catalog: gone.yaml")
    assert _errors(config_path) == [f"{config_path}: backstage.catalog: 'gone.yaml' does not exist"]


def test_a_malformed_owner_reference_is_an_error_in_both_places(workdir: Path) -> None:
    """A key of backstage.owners and a Component's spec.owner that are not references."""
    config_path = workdir / "config.yaml"
    _edit(config_path, '"user:retention/bob": bob', '"user:a:b": bob')
    _edit(workdir / "catalog-info.yaml", "owner: group:ml-fraud", 'owner: "group:"')
    errors = _errors(config_path)
    assert (
        f"{config_path}: backstage.owners.user:a:b: not a Backstage entity reference "
        "([kind:][namespace/]name)"
    ) in errors
    assert any(
        "spec.owner 'group:' is not an entity reference ([kind:][namespace/]name)" in line
        for line in errors
    )


def test_an_annotation_wins_over_a_name() -> None:
    """A Component annotated for a system decides its owner, even beside a Component of the
    system's name (which may be another thing of the same name)."""
    named = Component("churn", "user:x", "user:default/x", None, "c.yaml", 3)
    annotated = Component("churn-svc", "user:y", "user:default/y", "churn", "c.yaml", 9)
    found = resolve(["churn"], {"user:default/x": "x", "user:default/y": "y"}, [named, annotated])
    assert found.owners == {"churn": "y"}
    assert found.problems == ()
