"""Property tests of config loading: whatever YAML, environment or secret a user supplies,
:func:`~driftowner.configload.load_config` returns a Config or raises a ConfigError whose every
line names the file and where in it the problem is. Never another exception, and never a
loaded duration that overflows the datetime arithmetic the daemon does with it."""

from __future__ import annotations

import copy
import re
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from driftowner.config import MAX_DURATION, Config
from driftowner.configload import (
    ConfigError,
    _LeanLoader,
    _parse_exact,
    _parse_lean,
    _parse_yaml,
    _PyLeanLoader,
    format_yaml_path,
    load_config,
)
from driftowner.escalation import step_due_at
from driftowner.incidents import snapshot_chain

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((ROOT / "config" / "example.yaml").read_text(encoding="utf-8"))
FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_LINE = re.compile(r"line \d+(, column \d+)?: ")
_TOP_LEVEL = "the top level must be a mapping"

# --- strategies -----------------------------------------------------------------------------

UNITS = ("ms", "s", "m", "h", "d", "w", "y")
durations = st.one_of(
    st.builds(
        lambda parts: "".join(f"{n}{u}" for n, u in parts),
        st.lists(
            st.tuples(
                st.one_of(st.integers(0, 10**6), st.integers(0, 10**40)), st.sampled_from(UNITS)
            ),
            min_size=1,
            max_size=3,
        ),
    ),
    st.sampled_from(["0", "500000w", "99999999999999999999d", "3650d", "3651d", "10y", "1y1ms"]),
)
# Any code point, lone surrogates and NUL included.
texts = st.one_of(
    st.text(st.characters(codec=None, categories=None), max_size=12),
    st.sampled_from(["\x00", "a\ud800b", "\udcff", "\ufffe", "http://", "ftp://x", "notaurl", " "]),
    durations,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
keys = st.one_of(st.sampled_from(sorted(Config.model_fields)), texts)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=20,
)


def paths_in(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a mapping value or list item of ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key)
            yield from paths_in(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*path, index)
            yield from paths_in(value, (*path, index))


EXAMPLE_PATHS = sorted(paths_in(EXAMPLE), key=repr)


@st.composite
def mutated_example(draw: st.DrawFn) -> Any:
    """config/example.yaml with one to three values replaced, removed or added at random
    paths."""
    data = copy.deepcopy(EXAMPLE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(EXAMPLE_PATHS))
        parent = data
        for part in path[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                break
        else:
            action = draw(st.sampled_from(["value", "duration", "delete", "add"]))
            last = path[-1]
            try:
                if action == "delete" and isinstance(parent, dict):
                    parent.pop(last, None)
                elif action == "add" and isinstance(parent, dict):
                    parent[draw(texts)] = draw(documents)
                elif isinstance(parent, dict | list):
                    value = draw(durations if action == "duration" else documents)
                    parent[last] = value
            except (IndexError, TypeError):
                pass
    return data


env_names = st.one_of(
    st.sampled_from(
        [
            "DRIFTOWNER_SERVER__LISTEN",
            "DRIFTOWNER_SERVER__API_TOKEN",
            "DRIFTOWNER_SERVER__EXTERNAL_URL",
            "DRIFTOWNER_SERVER",
            "DRIFTOWNER_SOURCES__PROM__URL",
            "DRIFTOWNER_SOURCES__PROM__TIMEOUT",
            "DRIFTOWNER_EVALUATION__INTERVAL",
            "DRIFTOWNER_ESCALATION_CHAINS__STANDARD__REPEAT",
            "DRIFTOWNER_ESCALATION_CHAINS__STANDARD__STEPS__1__AFTER",
            "DRIFTOWNER_ESCALATION_CHAINS__STANDARD__STEPS",
            "DRIFTOWNER_CHANNELS__SLACK__WEBHOOK_URL",
            "DRIFTOWNER_SYSTEMS_DIR",
            "DRIFTOWNER_SYSTEMS__FRAUD_SCORING__OWNER",
            "DRIFTOWNER_SYSTEMS__FRAUD_SCORING__STALE_FOR",
        ]
    ),
    st.builds(lambda rest: "DRIFTOWNER_" + rest, texts),
)
environments = st.dictionaries(env_names, st.one_of(texts, durations), max_size=3)


# --- the property ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def write(workdir: Path, document: bytes) -> Path:
    path = workdir / "driftowner.yaml"
    path.write_bytes(document)
    return path


def dump(data: Any) -> bytes:
    """YAML for ``data``: strings a raw stream may not hold are written as escapes."""
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False).encode("utf-8")


def durations_of(node: Any) -> Iterator[timedelta]:
    if isinstance(node, timedelta):
        yield node
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from durations_of(getattr(node, name))
    elif isinstance(node, dict):
        for value in node.values():
            yield from durations_of(value)
    elif isinstance(node, list | tuple):
        for value in node:
            yield from durations_of(value)


def top_level_keys(path: Path) -> list[str]:
    """The file's top-level keys as written (as the loader reads them: text, not ``False``)."""
    try:
        node = yaml.compose(path.read_bytes(), Loader=yaml.SafeLoader)
    except (yaml.YAMLError, ValueError):
        return []
    if not isinstance(node, yaml.MappingNode):
        return []
    return [key.value for key, _ in node.value if isinstance(key, yaml.ScalarNode)]


def assert_loads_or_locates(path: Path, environ: dict[str, str] | None = None) -> None:
    """The property: a Config whose durations are safe to compute with, or a ConfigError
    whose every line starts with the file and a location (a YAML path or a line), printable
    as UTF-8."""
    try:
        config = load_config(path, environ=environ or {})
    except ConfigError as error:
        assert error.errors
        roots = {format_yaml_path((key,)) for key in top_level_keys(path)}
        roots |= set(Config.model_fields)
        for line in error.errors:
            line.encode("utf-8")  # a lone surrogate would make printing it fail
            assert "\x00" not in line
            assert line.startswith(f"{path}: "), line
            rest = line[len(f"{path}: ") :]
            located = (
                _LINE.match(rest)
                or rest.startswith((_TOP_LEVEL, "cannot read: "))
                or any(
                    rest.startswith(root)
                    and rest[len(root) : len(root) + 1] in (".", "[", ":", " ")
                    for root in roots
                )
            )
            assert located, line
        return
    now = datetime(2026, 11, 29, tzinfo=UTC)
    for duration in durations_of(config):
        assert timedelta(0) <= duration <= MAX_DURATION
        assert now + 2 * duration >= now - 3 * duration
    for system in config.systems.values():
        snapshot = snapshot_chain(config, system)
        last = len(snapshot.steps) * (snapshot.repeat + 1) - 1
        assert step_due_at(snapshot, now, last) is not None


@FUZZ
@given(documents)
def test_arbitrary_yaml_loads_or_is_a_located_error(workdir: Path, data: Any) -> None:
    """Random nested mappings, lists and scalars (any text, lone surrogates and NUL too) as a
    config file: a Config or a located ConfigError, nothing else."""
    assert_loads_or_locates(write(workdir, dump(data)))


@FUZZ
@given(mutated_example())
def test_a_mutated_example_loads_or_is_a_located_error(workdir: Path, data: Any) -> None:
    """config/example.yaml with random values, durations and keys at random paths: a Config
    whose durations are safe to compute with, or a located ConfigError."""
    assert_loads_or_locates(write(workdir, dump(data)))


@FUZZ
@given(environments)
def test_random_environment_overrides_load_or_are_located_errors(
    workdir: Path, environ: dict[str, str]
) -> None:
    """Random DRIFTOWNER_* variables (any text, lone surrogates included) over the example: a
    Config or a located ConfigError naming the path."""
    assert_loads_or_locates(write(workdir, dump(EXAMPLE)), environ)


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "replace")))
def test_arbitrary_bytes_load_or_are_located_errors(workdir: Path, document: bytes) -> None:
    """Any bytes as the config file (not UTF-8, not YAML, NUL): a located ConfigError."""
    assert_loads_or_locates(write(workdir, document))


# --- the lean reading against the exact one ---------------------------------------------------

YAML_PIECES = st.sampled_from(
    [
        *("\t", " ", ":", ": ", "- ", "\n", "#", "&x ", "*x", "<<: ", "? ", "!!str ", "!!int "),
        *("!x ", "%", "---\n", "...\n", "\\", '"', "'", "{", "}", "[", "]", ",", "|", ">"),
        *("\ufeff", "\x85", "\r\n", "!", "%YAML 1.1\n", "x" * 1100),
    ]
)


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    """YAML for random data in a random style, with up to three random pieces of YAML syntax
    inserted at random places (most of them then no longer parse, or parse differently)."""
    text = yaml.dump(
        draw(documents),
        allow_unicode=draw(st.booleans()),
        default_flow_style=draw(st.sampled_from([None, True, False])),
        default_style=draw(st.sampled_from([None, '"', "'", "|", ">"])),
    )
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(YAML_PIECES) + text[at:]
    return text


@FUZZ
@given(
    yaml_texts(),
    st.sampled_from([(), ("systems",)]),
    st.sampled_from([_LeanLoader, _PyLeanLoader]),
)
# Where libyaml and the pure-Python parser read the same text differently (read exactly):
@example("a: !\nb: 1\n", (), _LeanLoader)  # an explicit tag on an empty value: '' or None
@example("a: [x,\n\ufeffy]\n", (), _LeanLoader)  # a byte order mark after the start
@example("a: b\tc\n", (), _LeanLoader)  # a tab inside a plain value: Python's parser refuses it
# Duplicate keys where the lean reading goes entry by entry, and inside an entry:
@example("a: 1\nsystems: {s: 1}\na: 2\n", (), _LeanLoader)
@example("systems:\n  s: {owner: a}\n  s: {owner: b}\n", (), _LeanLoader)
@example("s: {owner: a, owner: b}\n", ("systems",), _LeanLoader)
@example("!!str {}\n", (), _PyLeanLoader)  # a tag on a mapping read entry by entry
def test_the_lean_reading_gives_what_the_exact_reading_gives(
    text: str, root: tuple[str, ...], loader_class: type[Any]
) -> None:
    """Reading a document one system at a time gives the same data and key positions as
    reading it whole with the pure-Python loader whenever that loader accepts it; a document
    it refuses gets the same located problems. Over Python's parser (PyYAML without libyaml)
    the lean reading accepts only what the exact one accepts; over libyaml a few more (it is
    more lenient in corners of YAML syntax, such as ``? `` inside a flow collection)."""
    exact_problems: list[Any] = []
    try:
        exact = _parse_exact(text, exact_problems, root)
    except RecursionError:
        return  # nesting deeper than Python's stack: neither reading holds it
    lean = _parse_lean(text, root, loader_class)
    if loader_class is _PyLeanLoader:
        assert lean is None or not exact_problems
    if lean is not None:
        assert lean.positions() == exact.positions()
        assert not exact_problems or exact.syntax_error  # never past a duplicate key
        if not exact_problems:
            assert not lean.syntax_error
            assert repr(lean.data) == repr(exact.data)  # repr: NaN is not equal to itself
    if loader_class is _LeanLoader:
        problems: list[Any] = []
        read = _parse_yaml(text, problems, root)
        assert read.positions() == exact.positions()
        if lean is None:  # read exactly: the same problems, data and syntax verdict
            assert (problems, read.syntax_error) == (exact_problems, exact.syntax_error)
            assert repr(read.data) == repr(exact.data)
