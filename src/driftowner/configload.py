"""Loading the config: a YAML file, environment overrides and a secrets directory become one
validated :class:`~driftowner.config.Config`, or a :class:`ConfigError` listing every mistake
as ``FILE: yaml.path: message``.

How values combine (later wins): the YAML file (with the systems of ``systems_dir``), then
files in the secrets directory, then environment variables.

``systems_dir`` (relative to the config file's directory; with :func:`load_config_text`, to
``base_dir`` or the working directory) names a directory whose ``*.yaml`` and ``*.yml`` files
(in name order; hidden files and sub-directories skipped) each hold a mapping of system name
to system: the body of a ``systems:`` section. Their systems join those of the main file, and
the loaded ``Config.systems_dir`` is the path as resolved. Mistakes in such a file are
reported with that file's name and the path ``systems.<name>...``, in that file's line order
(the main file's lines first, then each directory file's). A system defined twice (in the
main file and a directory file, or in two directory files) is an error naming both files; a
missing ``systems_dir`` is an error at ``systems_dir``. A directory file that is not YAML
stops the check, like the main file.

Environment overrides and secret files are applied after the merge, so they reach the
directory's systems as well: ``DRIFTOWNER_SYSTEMS__PAYMENTS__OWNER=bob`` overrides the owner
of ``payments`` wherever it is defined, and an error in the value names the directory file
and the variable. ``DRIFTOWNER_SYSTEMS_DIR`` may itself move the directory (relative to the
config file's directory too). A variable naming a system that is defined nowhere adds it, as
before, as if it were in the main file.

Template refs (``signals: {accuracy: {template: accuracy}}``) are expanded by
:class:`~driftowner.config.Config` as it validates: a ref naming no template is reported
with the schema errors; the other template rules are cross-references.

Environment variables are ``DRIFTOWNER_`` + the YAML path joined with ``__``, e.g.
``DRIFTOWNER_EVALUATION__INTERVAL=30s`` or ``DRIFTOWNER_CHANNELS__SLACK__WEBHOOK_URL=...``.
They are read with pydantic-settings' ``EnvSettingsSource`` (``env_prefix="DRIFTOWNER_"``,
``env_nested_delimiter="__"``, case-insensitive), one variable at a time so that every value
remembers which variable it came from. What follows from that, and what this module adds:

- Names are matched case-insensitively, and pydantic-settings lower-cases them. So a variable
  addressing an existing key of a user-keyed section (``sources``, ``owners``, ``teams``,
  ``channels``, ``escalation_chains``, ``systems``, ``signals``) is matched to the YAML key
  ignoring case, or else treating ``_`` and ``-`` as the same:
  ``DRIFTOWNER_SYSTEMS__FRAUD_SCORING__OWNER`` overrides ``systems.fraud-scoring.owner``, and
  the key keeps its YAML spelling. A variable that matches two YAML keys that way
  (``ml-fraud`` and ``ML-Fraud``) is an error. A variable naming a key that is not in the file
  adds it, spelled in lower case (write such keys in lower case, or put them in the YAML file).
  Shells cannot export a name with ``-``; ``env``, systemd and container runtimes can, and
  such names work too.
- A whole section may be given as JSON (``DRIFTOWNER_SERVER='{"listen": "0.0.0.0:9587"}'``);
  it is deep-merged into the YAML section, and deeper variables win over it.
- List items are addressed by index (``DRIFTOWNER_ESCALATION_CHAINS__STANDARD__STEPS__1__AFTER``,
  an extension: pydantic-settings alone would turn the index into a mapping key); an index
  past the end of the YAML list is an error. A whole list is given as JSON
  (``..._VIA='["slack"]'``).
- A ``DRIFTOWNER_`` variable with ``__`` that names no field is an error (a typo must not be
  ignored silently); one without ``__`` that names no section (``DRIFTOWNER_CONFIG``) is not a
  config override and is ignored.

The secrets directory follows pydantic-settings' secrets semantics: each file is a variable
named after the file (case-insensitive, content stripped of surrounding whitespace), so
``driftowner_channels__slack__webhook_url`` holds the Slack webhook URL. Sub-directories stand
for ``__`` (``driftowner_channels/slack/webhook_url``), as with ``secrets_nested_subdir``. Files
not starting with ``driftowner_`` and hidden entries are ignored; so is any file that resolves
outside the directory.

Errors: every problem is found in one pass and reported at once, in file order: YAML syntax
(``FILE: line N, column M: problem``, a raw control character included; nothing else is
checked then), text that is not valid (a key or string, from the file, a variable or a secret
file, holding a control character or a lone surrogate, written as a YAML escape such as
``"\\0"`` or ``"\\ud800"``: ``FILE: yaml.path: is not valid text: character N is U+XXXX``,
the value not shown; nothing else is checked then either), duplicate mapping keys
(``FILE: line N: duplicate key 'x' in systems ...``, which ``yaml.safe_load`` would hide),
schema violations and then, only if the schema holds and no key is duplicated, the
cross-references of :func:`~driftowner.config.cross_check`, each as ``FILE: yaml.path:
message``. A value that came from a variable or secret file names it:
``FILE: evaluation.interval (from DRIFTOWNER_EVALUATION__INTERVAL): invalid duration ...``.
Plain mapping keys are read as the text written (an owner called ``no`` stays ``"no"``). A
value that does not fit its explicit YAML tag (``!!int 12ab``) is a YAML error at its line and
column, the value not shown.

Reading at scale: each file is parsed with libyaml when PyYAML has it, one top-level section
and one system at a time (never the whole node tree of 10,000 systems at once), and where
each key sits is found again only when a problem is to be reported. A document libyaml
refuses, or one that holds what libyaml reads differently, is read whole by PyYAML's
pure-Python loader, so YAML errors read exactly as that loader reports them (see
``_parse_lean`` for the few documents libyaml accepts that the pure-Python loader refused).

Error lines are always printable: a character a YAML file may not hold raw is written as a
Python escape (``\\x00``) wherever it would appear, YAML paths included.

Errors never show a secret: values of ``SecretStr`` fields and of secret files are masked
wherever they would appear in a message, as are passwords inside URLs and Slack webhook paths.
A secret typed into a field that is not a secret (a token pasted as ``listen``) can still be
echoed by that field's error unless it matches those patterns.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import re
import sys
import types
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Discriminator, SecretStr, Tag, ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict, SettingsError
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from driftowner import backstage
from driftowner.config import (
    SIGNAL_ENTRY_TAGS,
    TEMPLATE_OVERRIDES,
    VIA_TAGS,
    Config,
    ConfigIssue,
    TemplateRefConfig,
    config_warnings,
    cross_check,
    unknown_name,
)

ENV_PREFIX = "DRIFTOWNER_"
"""Prefix of the environment variables (and secret file names) that override the config."""
ENV_NESTED_DELIMITER = "__"
"""Joins the YAML path in an environment variable name."""

YamlPath = tuple[str | int, ...]
Positions = dict[YamlPath, tuple[int, int]]
"""Where each key (or list item) of a document sits: YAML path -> (line, column), 1-based."""
_MISSING: Any = object()
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NON_PRINTABLE: re.Pattern[str] = yaml.reader.Reader.NON_PRINTABLE
"""What a YAML stream may not hold raw; a config string may not hold it either."""
_LOC_NOISE = re.compile(r"[\[\](),'\"]")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@'\"]*:)[^@/\s'\"]+@")
_SLACK_HOOK = re.compile(r"(?P<head>hooks\.slack\.com/services/)[^\s'\"]+")
_MIN_RAW_SECRET = 4
_SYSTEMS_DIR_SUFFIXES = (".yaml", ".yml")
"""Shorter secrets are masked only where they appear quoted, so short words stay readable."""


class ConfigError(Exception):
    """The config is invalid; ``errors`` holds every problem as ``FILE: yaml.path: message``."""

    def __init__(self, errors: Sequence[str]) -> None:
        """Keep the error lines; ``str()`` of the exception is the lines joined by newlines."""
        self.errors: list[str] = list(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


def default_secrets_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The secrets directory to use when none is given.

    ``$CREDENTIALS_DIRECTORY`` when set (systemd ``LoadCredential=``), else ``/run/secrets``
    when it is a directory (Docker and Kubernetes secrets), else ``None``.
    """
    env = os.environ if environ is None else environ
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if credentials:
        return Path(credentials)
    run_secrets = Path("/run/secrets")
    return run_secrets if run_secrets.is_dir() else None


def load_config(
    path: Path,
    *,
    environ: Mapping[str, str] | None = None,
    secrets_dir: Path | None = None,
) -> Config:
    """Read, merge and validate the config at ``path``.

    Args:
        path: The YAML file.
        environ: The environment to take ``DRIFTOWNER_*`` overrides from (default: the
            process environment).
        secrets_dir: A directory of secret files (see the module docs); ``None`` reads none.

    Returns:
        The validated config, cross-references checked.

    Raises:
        ConfigError: with every problem found, each as ``FILE: yaml.path: message``.
    """
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"{name}: cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})"]
        ) from None
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read: {exc.strerror or exc}"]) from None
    except ValueError as exc:  # a NUL or an unencodable character in the path itself
        raise ConfigError([f"{_printable(name)}: cannot read: invalid file name ({exc})"]) from None
    return load_config_text(
        text, name=name, environ=environ, secrets_dir=secrets_dir, base_dir=path.parent
    )


def load_config_text(
    text: str,
    *,
    name: str = "<config>",
    environ: Mapping[str, str] | None = None,
    secrets_dir: Path | None = None,
    base_dir: Path | None = None,
) -> Config:
    """Like :func:`load_config`, for YAML already in memory (an embedded default config).

    Args:
        text: The YAML document.
        name: What error lines call the document (their ``FILE`` part).
        environ: As for :func:`load_config`.
        secrets_dir: As for :func:`load_config`.
        base_dir: What a relative ``systems_dir`` is relative to (default: the working
            directory); :func:`load_config` passes the config file's directory.

    Returns:
        The validated config.

    Raises:
        ConfigError: with every problem found.
    """
    problems: list[_Problem] = []
    document = _parse_yaml(text, problems)
    # Duplicate keys: the data is not what its author meant, so cross-references would mislead.
    document_problems = bool(problems)
    files = [_File(name, document.positions)]
    systems_files: dict[str, int] = {}
    if document.syntax_error:
        raise _config_error(problems, files, systems_files, frozenset())
    data = {} if document.data is None else document.data
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        message = f"the top level must be a mapping of sections (sources, owners, ...), not {kind}"
        raise _config_error([*problems, _Problem((), message)], files, systems_files, frozenset())

    provenance: dict[YamlPath, str] = {}
    secret_values: set[str] = set()
    layers: list[tuple[Mapping[str, str], str]] = []
    if secrets_dir is not None:
        secret_files = _read_secret_files(secrets_dir, problems)
        secret_values.update(value for value in secret_files.values() if value)
        layers.append((secret_files, "secret file {}"))
    layers.append((os.environ if environ is None else environ, "{}"))

    directory, directory_origin = _systems_dir(data, layers, base_dir, problems)
    merged = _Merged(data, syntax_error=False, incomplete=False, unreadable=False)
    if directory is not None:
        merged = _merge_systems_dir(
            directory, directory_origin, data, files, systems_files, problems
        )
        if merged.syntax_error:
            raise _config_error(problems, files, systems_files, frozenset())
        document_problems = document_problems or merged.incomplete
    data = merged.data
    # After the merge, so that overrides reach the directory's systems too.
    for variables, label in layers:
        data = _apply_overrides(data, variables, label, provenance, problems)
    text_problems = list(_invalid_text(data, (), provenance))
    if text_problems:
        # Not text: names, paths and URLs built from it would mislead or fail further on.
        raise _config_error([*problems, *text_problems], files, systems_files, frozenset())
    if directory is not None:
        data["systems_dir"] = str(directory)
    ownerless = _apply_backstage(data, base_dir, files, problems)
    secret_values.update(_secret_strings(Config, data))
    config = _validate(data, provenance, problems, cross_references=not document_problems)
    if merged.unreadable:
        # Not "systems: required" as well: the systems are in the directory that is missing.
        problems = [problem for problem in problems if problem.path != ("systems",)]
    # Not "owner: required" (or "unknown owner") as well: the Backstage problem says where.
    problems = [p for p in problems if p.path not in ownerless or p in ownerless.values()]
    if problems:
        raise _config_error(problems, files, systems_files, frozenset(secret_values))
    assert config is not None
    return config


def _validate(
    data: dict[str, Any],
    provenance: Mapping[YamlPath, str],
    problems: list[_Problem],
    *,
    cross_references: bool,
) -> Config | None:
    """The schema's verdict on ``data``, then (when asked, and the schema holds) the
    cross-references; every violation appended to ``problems``."""
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems.extend(_validation_problems(exc, data, provenance))
        return None
    if cross_references:
        for issue_path, message in cross_check(config):
            problems.append(_Problem(issue_path, message, _origin(issue_path, provenance)))
    return config


def warning_lines(config: Config, name: str) -> list[str]:
    """The warnings of a valid config (:func:`~driftowner.config.config_warnings`), each as
    ``FILE: yaml.path: warning: message``."""
    return [
        _format(name, _Problem(path, f"warning: {message}"), frozenset())
        for path, message in config_warnings(config)
    ]


@dataclass
class _File:
    """A file the config came from: the main file, or one in ``systems_dir``."""

    name: str
    locate: Callable[[], Positions] = dict
    """Where its keys sit, found when first asked (:attr:`positions`)."""

    @functools.cached_property
    def positions(self) -> Positions:
        """Where each key of the file sits; found (by reading the file again) only when a
        problem is to be located in it."""
        return self.locate()


def _config_error(
    problems: Sequence[_Problem],
    files: Sequence[_File],
    systems_files: Mapping[str, int],
    secrets: frozenset[str],
) -> ConfigError:
    """Every problem as a line naming its file, ordered by file (the main file first, then
    those of ``systems_dir`` in name order) and by position in the file."""

    def key(item: tuple[int, _Problem]) -> tuple[int, ...]:
        index, problem = item
        file = _file_of(problem, systems_files)
        return (file, *_position(problem, files[file].positions), index)

    ordered = sorted(enumerate(problems), key=key)
    return ConfigError(
        [
            _format(files[_file_of(problem, systems_files)].name, problem, secrets)
            for _, problem in ordered
        ]
    )


def _file_of(problem: _Problem, systems_files: Mapping[str, int]) -> int:
    """Which file a problem is in: its own, or, for a path under a system that came from
    ``systems_dir``, that system's file; else the main file (0)."""
    if problem.file is not None:
        return problem.file
    path = problem.path
    if len(path) >= 2 and path[0] == "systems" and isinstance(path[1], str):
        return systems_files.get(path[1], 0)
    return 0


@dataclass(frozen=True)
class _Problem:
    """One mistake: where (a YAML path, or a line of the file) and what."""

    path: YamlPath
    message: str
    origin: str | None = None
    """The variable or secret file the offending value came from."""
    line: int | None = None
    """1-based; set for mistakes found while parsing, which have no YAML path yet."""
    column: int | None = None
    file: int | None = None
    """Index of the file the problem is in, when its path does not say (see ``_file_of``)."""


def _format(name: str, problem: _Problem, secrets: frozenset[str]) -> str:
    return _printable(_format_raw(name, problem, secrets))


def _format_raw(name: str, problem: _Problem, secrets: frozenset[str]) -> str:
    message = _mask(problem.message, secrets)
    if problem.line is not None:
        where = f"line {problem.line}"
        if problem.column is not None:
            where += f", column {problem.column}"
        return f"{name}: {where}: {message}"
    if not problem.path:
        prefix = f"{name}: (from {problem.origin})" if problem.origin else name
        return f"{prefix}: {message}"
    where = format_yaml_path(problem.path)
    if problem.origin:
        where += f" (from {problem.origin})"
    return f"{name}: {where}: {message}"


def format_yaml_path(path: YamlPath) -> str:
    """A YAML path as error lines show it: ``escalation_chains.standard.steps[1].after``
    (an empty key as ``''``, a character a YAML file may not hold raw as an escape, ``\\x00``)."""
    text = ""
    for index, part in enumerate(path):
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            name = str(part) or "''"
            text += f".{name}" if index else name
    return _printable(text)


def _printable(text: str) -> str:
    """``text`` with every character a YAML file may not hold (controls, lone surrogates)
    written as a Python escape (``\\x00``, ``\\ud800``): an error line always prints."""
    return _NON_PRINTABLE.sub(lambda found: found.group().encode("unicode_escape").decode(), text)


def _text_problem(text: str) -> str | None:
    """What makes ``text`` unfit for a config (without echoing it: it may be a secret)."""
    found = _NON_PRINTABLE.search(text)
    if found is None:
        return None
    char = found.group()
    if 0xD800 <= ord(char) <= 0xDFFF:
        kind = "a lone surrogate, which is not a character"
    elif char == "\x00":
        kind = "a NUL character"
    else:
        kind = "a control or non-character code point"
    return (
        f"is not valid text: character {found.start() + 1} is U+{ord(char):04X}, {kind} "
        "(config text may not hold control characters or lone surrogates)"
    )


def _invalid_text(
    node: Any, path: YamlPath, provenance: Mapping[YamlPath, str]
) -> Iterator[_Problem]:
    """A problem for every key and string in ``node`` that is not valid text."""
    if isinstance(node, str):
        message = _text_problem(node)
        if message is not None:
            yield _Problem(path, message, _origin(path, provenance))
    elif isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and (message := _text_problem(key)) is not None:
                where = (*path, key)
                yield _Problem(where, f"key {message}", _origin(where, provenance))
            yield from _invalid_text(value, (*path, key), provenance)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _invalid_text(value, (*path, index), provenance)


def _mask(message: str, secrets: frozenset[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(repr(secret), "'***'")
        if len(secret) >= _MIN_RAW_SECRET:
            message = message.replace(secret, "***")
    message = _URL_PASSWORD.sub(r"\g<head>***@", message)
    return _SLACK_HOOK.sub(r"\g<head>***", message)


def _position(problem: _Problem, positions: Mapping[YamlPath, tuple[int, int]]) -> tuple[int, int]:
    """Where a problem sits in the file, for sorting: its own line, else its path's (or the
    nearest ancestor's, for a missing key or a value that came only from the environment)."""
    if problem.line is not None:
        return problem.line, problem.column or 0
    path = problem.path
    for length in range(len(path), 0, -1):
        found = positions.get(path[:length])
        if found is not None:
            return found
    return 0, 0


def _origin(path: YamlPath, provenance: Mapping[YamlPath, str]) -> str | None:
    for length in range(len(path), -1, -1):
        origin = provenance.get(path[:length])
        if origin is not None:
            return origin
    return None


# --- YAML -------------------------------------------------------------------------------


def _parse_yaml(text: str, problems: list[_Problem], root: YamlPath = ()) -> _DocumentResult:
    """Parse one YAML document, noting every duplicate key (which ``yaml.safe_load`` would
    silently resolve to the last one) and how to find where every key sits.

    ``root`` is the YAML path the document's top level stands for: ``("systems",)`` for a
    file in ``systems_dir``.

    A document is read lean (:func:`_parse_lean`): with libyaml when it is there, one system
    at a time, the key positions found again only if a problem must be located. One that
    does not read that way (a syntax error, a duplicate key, an explicit tag, a merge key or
    an anchor where systems are listed, ...) is read whole by the pure-Python loader
    (:func:`_parse_exact`), so every error line is what that loader reports.
    """
    lean = _parse_lean(text, root)
    if lean is not None:
        return lean
    return _parse_exact(text, problems, root)


def _parse_exact(text: str, problems: list[_Problem], root: YamlPath = ()) -> _DocumentResult:
    """Parse one YAML document whole with the pure-Python safe loader, noting where every key
    sits and every duplicate key (see :func:`_parse_yaml`)."""
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        # A character YAML does not allow anywhere in the stream (a NUL, a lone surrogate).
        before = text[: exc.position]
        line, column = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        problems.append(
            _Problem(
                (),
                f"unacceptable character U+{exc.character:04X}: YAML does not allow control "
                "characters or lone surrogates",
                line=line,
                column=column,
            )
        )
        return _DocumentResult(None, dict, True)
    try:
        node = loader.get_single_node()
        if node is None:
            return _DocumentResult(None, dict, False)
        positions: Positions = {}
        _index_node(node, root, positions, problems, frozenset())
        return _DocumentResult(loader.construct_document(node), lambda: positions, False)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            started = exc.context_mark
            since = f" started at line {started.line + 1}" if started is not None else ""
            message = f"{exc.problem} ({exc.context}{since})"
        if mark is None:
            problems.append(_Problem((), message))
        else:
            problems.append(_Problem((), message, line=mark.line + 1, column=mark.column + 1))
        return _DocumentResult(None, dict, True)
    except yaml.YAMLError as exc:
        problems.append(_Problem((), f"invalid YAML: {exc}"))
        return _DocumentResult(None, dict, True)
    finally:
        loader.dispose()


def _positions(text: str, root: YamlPath) -> Positions:
    """Where every key of a document read lean sits, found by reading it again exactly."""
    return _parse_exact(text, [], root).positions()


@dataclass(frozen=True)
class _DocumentResult:
    data: Any
    positions: Callable[[], Positions]
    """Where the document's keys sit; called only when a problem must be located."""
    syntax_error: bool


class _NotLean(Exception):
    """The document is not one :func:`_parse_lean` reads: it is read exactly instead."""


class _KeysAsWritten(SafeConstructor):
    """The safe constructor, reading every plain mapping key as the text written.

    Config keys are names, and YAML 1.1 would turn an owner called ``no`` into ``False`` or a
    team called ``1`` into an integer. Keys and strings are interned: 10,000 systems name
    the same owner, chain, layer and source (and use the same keys) without 10,000 copies.
    """

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        if not isinstance(node, MappingNode):  # a tag asking for a mapping on a list, say
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a mapping node, but found {node.id}", node.start_mark
            )
        self.flatten_mapping(node)
        mapping: dict[Hashable, Any] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode):
                key: Any = sys.intern(key_node.value)
            else:
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, Hashable):
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        "found an unhashable key",
                        key_node.start_mark,
                    )
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping

    def construct_yaml_str(self, node: ScalarNode) -> str:
        return sys.intern(self.construct_scalar(node))


_Constructor = Callable[[Any, Node], Any]
_WRONG_VALUE = (ArithmeticError, AttributeError, LookupError, TypeError, ValueError)
"""What PyYAML's constructors raise for a value that does not fit its explicit tag
(``!!bool x``: KeyError, ``!!int x``: ValueError, ``!!timestamp x``: AttributeError, ...)."""


def _located(constructor: _Constructor) -> _Constructor:
    """``constructor`` with a value that does not fit its tag reported as a YAML error at the
    value (``line N, column M: not a valid !!int value``), not as a Python exception."""

    def construct(loader: Any, node: Node) -> Any:
        try:
            made = constructor(loader, node)
        except _WRONG_VALUE:
            raise _not_valid(node) from None
        if isinstance(made, types.GeneratorType):
            return _located_steps(made, node)
        return made

    return construct


def _located_steps(steps: Iterator[Any], node: Node) -> Iterator[Any]:
    """The rest of a collection's construction (PyYAML fills a mapping or set after handing
    it out), its failures located like :func:`_located`'s."""
    try:
        yield from steps
    except _WRONG_VALUE:
        raise _not_valid(node) from None


def _not_valid(node: Node) -> yaml.constructor.ConstructorError:
    tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
    # The value is not shown: it may be a secret.
    return yaml.constructor.ConstructorError(
        None, None, f"not a valid {tag} value", node.start_mark
    )


_KeysAsWritten.yaml_constructors = {
    tag: _located(constructor)
    for tag, constructor in {
        **SafeConstructor.yaml_constructors,
        "tag:yaml.org,2002:str": _KeysAsWritten.construct_yaml_str,
    }.items()
}


class _Loader(_KeysAsWritten, yaml.SafeLoader):
    """The pure-Python safe loader with :class:`_KeysAsWritten`: marks for every node."""


class _PyEventParser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
    """The pure-Python parser, for when libyaml is not installed."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)


_EventParser: Any = _PyEventParser
"""libyaml's parser when PyYAML was built with it (``yaml.__with_libyaml__``), else Python's."""
with contextlib.suppress(ImportError):  # PyYAML built without libyaml: Python's parser
    from yaml._yaml import CParser as _EventParser


class _Lean(_KeysAsWritten, yaml.composer.Composer):
    """Python's composer and constructor over a parser's events (:attr:`parser`): mappings
    composed one entry at a time where :func:`_parse_lean` asks."""

    parser: ClassVar[Any]
    """The parser class this loader reads events from (a base of the concrete loader)."""

    def __init__(self, stream: str) -> None:
        self.parser.__init__(self, stream)
        yaml.composer.Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)  # type: ignore[arg-type]  # a base of the concrete loader

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        """As Python's composer does, but only for untagged nodes: libyaml and Python's
        parser read an explicit tag on an empty value differently (``a: !``)."""
        if getattr(self.peek_event(), "tag", None) is not None:  # type: ignore[attr-defined]
            raise _NotLean
        return super().compose_node(parent, index)

    def next_node(self) -> Node:
        """The next node of the stream, composed whole."""
        # No path resolvers are registered, so no parent or index is needed to resolve tags.
        node = self.compose_node(None, None)  # type: ignore[arg-type]
        if node is None:  # pragma: no cover - the parser yields a node's event here
            raise _NotLean
        return node


class _LeanLoader(_Lean, _EventParser, Resolver):  # type: ignore[misc]
    """:class:`_Lean` over libyaml's parser (Python's when PyYAML has no libyaml)."""

    parser = _EventParser


class _PyLeanLoader(_Lean, _PyEventParser, Resolver):
    """:class:`_Lean` over Python's parser: what :class:`_LeanLoader` is without libyaml."""

    parser = _PyEventParser


def _parse_lean(
    text: str, root: YamlPath, loader_class: type[_Lean] = _LeanLoader
) -> _DocumentResult | None:
    """One YAML document read without ever holding its whole node tree: each top-level
    section composed, checked for duplicate keys and constructed on its own, and the systems
    (under ``systems:`` in the main file, at the top of a ``systems_dir`` file) one by one.

    libyaml reads every document Python's parser reads, and reads it the same, except for
    an explicit tag on an empty value, a tab or a byte order mark inside the text: those
    documents are read exactly. It also reads a few that Python's parser refuses (``? ``
    inside a flow collection, a block scalar header followed by ``#`` without a space), as
    the YAML specification allows.

    Args:
        text: The document.
        root: The YAML path its top level stands for (see :func:`_parse_yaml`).
        loader_class: The loader: over libyaml's parser when there is one (the default), or
            over Python's.

    Returns:
        The document, its positions to be found again on demand; ``None`` when it must be
        read exactly (:func:`_parse_exact`): it does not parse, holds a character YAML
        forbids, a tab, a byte order mark past the start, an explicit tag, a duplicate key,
        or, where it is read entry by entry, a merge key (``<<``), a non-scalar key or an
        anchor on the mapping.
    """
    if "\t" in text or "\ufeff" in text[1:] or _NON_PRINTABLE.search(text) is not None:
        # libyaml reads a tab inside a plain value, which Python's parser refuses, and a byte
        # order mark after the start of the text as nothing, where Python's reads a character.
        return None
    inner = None if root else "systems"
    loader: Any = loader_class(text)
    try:
        loader.get_event()  # stream start
        data = None
        if not loader.check_event(yaml.StreamEndEvent):
            loader.get_event()  # document start
            data = _compose_entries(loader, inner)
            loader.get_event()  # document end
        if not loader.check_event(yaml.StreamEndEvent):
            return None  # a second document: the exact reading says where
    except (yaml.YAMLError, _NotLean, RecursionError):
        return None
    finally:
        loader.dispose()
    return _DocumentResult(data, lambda: _positions(text, root), False)


def _compose_entries(loader: Any, inner: str | None) -> Any:
    """The node at hand constructed; when it is a plain mapping, one entry at a time (and the
    value of key ``inner``, when a mapping, one entry at a time too)."""
    if not loader.check_event(yaml.MappingStartEvent):
        return _construct(loader, loader.next_node())
    start = loader.peek_event()
    if start.anchor is not None or start.tag is not None:
        raise _NotLean  # an anchored mapping must be one node, for its aliases; a tag: see above
    loader.get_event()
    mapping: dict[Hashable, Any] = {}
    while not loader.check_event(yaml.MappingEndEvent):
        key_node = loader.next_node()
        if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
            raise _NotLean
        key = sys.intern(key_node.value)
        if key in mapping:
            raise _NotLean  # a duplicate key: the exact reading reports it
        if key == inner:
            mapping[key] = _compose_entries(loader, None)
        else:
            mapping[key] = _construct(loader, loader.next_node())
    loader.get_event()
    return mapping


def _construct(loader: _Lean, node: Node) -> Any:
    """One composed node as data, once it holds no duplicate key; then only the anchors
    still refer to nodes (``construct_document`` forgets what it constructed)."""
    duplicates: list[_Problem] = []
    _index_node(node, (), {}, duplicates, frozenset())
    if duplicates:
        raise _NotLean
    return loader.construct_document(node)


def _index_node(
    node: Node,
    path: YamlPath,
    positions: Positions,
    problems: list[_Problem],
    ancestors: frozenset[int],
) -> None:
    if id(node) in ancestors:
        return
    ancestors = ancestors | {id(node)}
    if isinstance(node, MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            first = seen.get(key)
            if first is not None:
                where = f"in {format_yaml_path(path)}" if path else "at the top level"
                problems.append(
                    _Problem(
                        path,
                        f"duplicate key {key!r} {where} (first at line {first}); "
                        "only one of them would take effect",
                        line=line,
                    )
                )
            else:
                seen[key] = line
            positions.setdefault((*path, key), (line, key_node.start_mark.column + 1))
            _index_node(value_node, (*path, key), positions, problems, ancestors)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            mark = item.start_mark
            positions.setdefault((*path, index), (mark.line + 1, mark.column + 1))
            _index_node(item, (*path, index), positions, problems, ancestors)


# --- systems_dir ---------------------------------------------------------------------------


def _systems_dir(
    data: dict[str, Any],
    layers: Sequence[tuple[Mapping[str, str], str]],
    base_dir: Path | None,
    problems: list[_Problem],
) -> tuple[Path | None, str | None]:
    """The directory ``systems_dir`` names once overrides are applied (a relative path is
    relative to ``base_dir``), and the variable that set it; ``None`` when there is none or
    its value is not text (which validation then reports)."""
    value = data.get("systems_dir")
    origin: str | None = None
    prefix = f"{ENV_PREFIX}systems_dir".lower()
    if any(name.lower().startswith(prefix) for variables, _ in layers for name in variables):
        # Overrides are applied for real once the directory's systems are merged in (so that
        # they reach those systems too); here only to learn where the directory is.
        scratch: dict[str, Any] = data
        provenance: dict[YamlPath, str] = {}
        for variables, label in layers:
            scratch = _apply_overrides(scratch, variables, label, provenance, [])
        value = scratch.get("systems_dir")
        origin = _origin(("systems_dir",), provenance)
    if not isinstance(value, str) or _text_problem(value) is not None:
        return None, None  # validation, or the text check, reports it
    if not value.strip():
        problems.append(_Problem(("systems_dir",), "must name a directory", origin))
        return None, None
    directory = Path(value)
    if base_dir is not None and not directory.is_absolute():
        directory = base_dir / directory
    return directory, origin


@dataclass(frozen=True)
class _Merged:
    """The config data with the systems of ``systems_dir`` added, and what went wrong."""

    data: dict[str, Any]
    syntax_error: bool
    """A file in the directory is not YAML: nothing else is checked."""
    incomplete: bool
    """A system is defined twice, or a file's systems could not be read: cross-references
    would mislead."""
    unreadable: bool
    """The directory itself is missing or unreadable."""


def _merge_systems_dir(
    directory: Path,
    origin: str | None,
    data: dict[str, Any],
    files: list[_File],
    systems_files: dict[str, int],
    problems: list[_Problem],
) -> _Merged:
    """Add the systems of every ``*.yaml`` and ``*.yml`` file in ``directory`` (in name order;
    hidden files and sub-directories skipped), each a mapping of system name to system, to
    ``data["systems"]``, noting in ``systems_files`` which file each came from."""
    where: YamlPath = ("systems_dir",)
    shown = repr(str(directory))
    if not directory.exists():
        problems.append(_Problem(where, f"directory {shown} does not exist", origin))
        return _Merged(data, syntax_error=False, incomplete=False, unreadable=True)
    if not directory.is_dir():
        problems.append(_Problem(where, f"{shown} is not a directory", origin))
        return _Merged(data, syntax_error=False, incomplete=False, unreadable=True)
    try:
        entries = sorted(directory.iterdir(), key=lambda entry: entry.name)
    except OSError as exc:
        problems.append(_Problem(where, f"cannot read {shown}: {exc.strerror or exc}", origin))
        return _Merged(data, syntax_error=False, incomplete=False, unreadable=True)
    main_systems = data.get("systems")
    if main_systems is None:
        main_systems = {}
    if not isinstance(main_systems, dict):
        # Validation reports what is wrong with the main file's systems.
        return _Merged(data, syntax_error=False, incomplete=True, unreadable=False)
    systems: dict[Any, Any] = dict(main_systems)
    syntax_error = incomplete = False
    for entry in entries:
        if entry.name.startswith(".") or entry.suffix not in _SYSTEMS_DIR_SUFFIXES:
            continue
        if not entry.is_file():
            continue
        index = len(files)
        body, ok, positions = _read_systems_file(entry, index, problems)
        files.append(_File(str(entry), positions))
        if ok is None:
            syntax_error = True
            continue
        if not ok:
            incomplete = True
        for system_name, system in body.items():
            if system_name in systems:
                first = files[systems_files.get(system_name, 0)]
                line = first.positions.get(("systems", system_name))
                at = f" (line {line[0]})" if line is not None else ""
                problems.append(
                    _Problem(
                        ("systems", system_name),
                        f"system {system_name!r} is also defined in {first.name}{at}; "
                        "a system is defined once",
                        file=index,
                    )
                )
                incomplete = True
                continue
            systems[system_name] = system
            systems_files[system_name] = index
    merged = data if not systems and "systems" not in data else {**data, "systems": systems}
    return _Merged(merged, syntax_error=syntax_error, incomplete=incomplete, unreadable=False)


def _read_systems_file(
    path: Path, index: int, problems: list[_Problem]
) -> tuple[dict[Any, Any], bool | None, Callable[[], Positions]]:
    """One file of ``systems_dir``: its systems, whether it was read cleanly (``None``: not
    YAML at all) and how to find where its keys sit (as paths under ``systems``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        problems.append(_Problem((), f"cannot read: {reason}", file=index))
        return {}, False, dict
    found: list[_Problem] = []
    document = _parse_yaml(text, found, root=("systems",))
    problems.extend(replace(problem, file=index) for problem in found)
    if document.syntax_error:
        return {}, None, document.positions
    body = {} if document.data is None else document.data
    if not isinstance(body, dict):
        kind = "a list" if isinstance(body, list) else f"a {type(body).__name__}"
        problems.append(
            _Problem(
                (),
                "the top level must be a mapping of system names to systems (the body of a "
                f"systems: section), not {kind}",
                file=index,
            )
        )
        return {}, False, document.positions
    wrapped = body.get("systems")
    if list(body) == ["systems"] and isinstance(wrapped, dict) and "owner" not in wrapped:
        problems.append(
            _Problem(
                ("systems", "systems"),
                "a systems_dir file is the body of a systems: section: write each system at "
                "the top level, without 'systems:'",
                file=index,
            )
        )
        return {}, False, document.positions
    return body, not found, document.positions


# --- backstage --------------------------------------------------------------------------


def _apply_backstage(
    data: dict[str, Any], base_dir: Path | None, files: list[_File], problems: list[_Problem]
) -> dict[YamlPath, _Problem]:
    """Fill in the owner of every system without one from the Backstage catalog the
    ``backstage`` section names (:mod:`driftowner.backstage`), noting every problem: in a
    catalog file (by line), at ``backstage.owners``, or at a system's ``owner`` (a conflict, or
    no owner anywhere). Returns, by the path of a system's ``owner``, the one problem to report
    there (no owner anywhere, or an unknown owner said at ``backstage.owners``).

    A ``backstage`` section of the wrong shape is left for validation to report."""
    section = data.get("backstage")
    systems = data.get("systems")
    if not isinstance(section, dict) or not isinstance(systems, dict):
        return {}
    catalog, written = section.get("catalog"), section.get("owners")
    if not isinstance(catalog, str) or not catalog.strip() or not isinstance(written, dict):
        return {}
    path = Path(catalog)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    owner_map, unknown = _backstage_owner_map(written, data.get("owners"), problems)
    read = backstage.read_catalog(path)
    resolution = backstage.resolve(
        [name for name in systems if isinstance(name, str)], owner_map, read.components
    )
    for found in (*read.problems, *resolution.problems):
        if found.file == str(path) and found.line is None:
            problems.append(_Problem(("backstage", "catalog"), f"{catalog!r} {found.message}"))
            continue
        index = next((i for i, f in enumerate(files) if f.name == found.file), None)
        if index is None:
            index = len(files)
            files.append(_File(found.file))
        problems.append(_Problem((), found.message, line=found.line or 1, file=index))
    ownerless: dict[YamlPath, _Problem] = {}
    for name, system in systems.items():
        if not isinstance(system, dict):
            continue
        where: YamlPath = ("systems", name, "owner")
        given, source = resolution.owners.get(name), resolution.sources.get(name)
        if "owner" not in system and given is not None:
            system["owner"] = given
            if given in unknown:  # said at backstage.owners, not again at the system
                ownerless[where] = unknown[given]
        elif "owner" not in system:
            ownerless[where] = _Problem(
                where,
                f"no owner: give one here, or give the Backstage catalog ({catalog}) a "
                f"Component named {name!r} or annotated '{backstage.ANNOTATION}: {name}'",
            )
            if not read.problems:  # else the catalog could not be read: that error says it
                problems.append(ownerless[where])
        elif given is not None and source is not None and system["owner"] != given:
            problems.append(
                _Problem(
                    where,
                    f"{system['owner']!r} here, but the Backstage catalog gives {given!r} "
                    f"(component {source.name!r}, {source.file} line {source.line}, spec.owner "
                    f"{source.owner!r}): keep one; remove owner here to take the catalog's",
                )
            )
    return ownerless


def _backstage_owner_map(
    written: dict[Any, Any], owners: Any, problems: list[_Problem]
) -> tuple[dict[str, str], dict[str, _Problem]]:
    """``backstage.owners`` keyed by full entity reference, and the problem of each value that
    names no owner (by that value); a key that is not a reference and two spellings of one
    reference are problems too."""
    mapped: dict[str, str] = {}
    spelled: dict[str, str] = {}
    unknown: dict[str, _Problem] = {}
    for key, value in written.items():
        where: YamlPath = ("backstage", "owners", str(key))
        ref = backstage.entity_ref(key) if isinstance(key, str) else None
        if ref is None:
            problems.append(
                _Problem(where, "not a Backstage entity reference ([kind:][namespace/]name)")
            )
            continue
        if not isinstance(value, str):
            continue  # validation reports it
        if isinstance(owners, dict) and value not in owners:
            unknown[value] = _Problem(where, unknown_name("owner", value, owners))
            problems.append(unknown[value])
        if ref in mapped and mapped[ref] != value:
            problems.append(
                _Problem(
                    where,
                    f"the same reference as {spelled[ref]!r} ({ref}), mapped to "
                    f"{mapped[ref]!r}: one reference, one owner",
                )
            )
            continue
        mapped[ref], spelled[ref] = value, str(key)
    return mapped, unknown


# --- environment and secrets ------------------------------------------------------------


class _EnvShape(BaseSettings, Config):
    """Config's fields as a settings class: what pydantic-settings' sources read against.

    Never instantiated; validation runs on :class:`Config` itself.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        case_sensitive=False,
        extra="forbid",
    )


def _read_secret_files(directory: Path, problems: list[_Problem]) -> dict[str, str]:
    """Secret files as variables: ``{file name with sub-directories as '__': content}``."""
    if not directory.is_dir():
        problems.append(_Problem((), f"secrets directory {str(directory)!r} is not a directory"))
        return {}
    root = directory.resolve()
    found: dict[str, str] = {}
    for relative, file in _secret_files(directory, root, ()):
        name = ENV_NESTED_DELIMITER.join(relative)
        try:
            found[name] = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            problems.append(_Problem((), f"cannot read secret file {name!r}: {reason}"))
    return found


def _secret_files(
    directory: Path, root: Path, relative: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], Path]]:
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if not relative and not entry.name.lower().startswith(ENV_PREFIX.lower()):
            continue
        try:
            resolved = entry.resolve()
        except (OSError, RuntimeError):
            continue
        if root not in resolved.parents:
            continue
        if resolved.is_dir() and len(relative) < 16:
            yield from _secret_files(entry, root, (*relative, entry.name))
        elif resolved.is_file():
            yield (*relative, entry.name), entry


def _apply_overrides(
    data: dict[str, Any],
    variables: Mapping[str, str],
    label: str,
    provenance: dict[YamlPath, str],
    problems: list[_Problem],
) -> dict[str, Any]:
    """Overlay every ``DRIFTOWNER_*`` variable onto ``data``, shallow paths first so deeper
    variables win, remembering which variable set which path."""
    prefix = ENV_PREFIX.lower()
    names = [name for name in variables if name.lower().startswith(prefix)]
    names.sort(key=lambda name: (name.count(ENV_NESTED_DELIMITER), name.lower(), name))
    source = EnvSettingsSource(
        _EnvShape,
        case_sensitive=False,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
    )
    for name in names:
        origin = label.format(name)
        value = variables[name]
        raw_path: YamlPath = tuple(name[len(prefix) :].lower().split(ENV_NESTED_DELIMITER))
        source.env_vars = {name.lower(): value}
        try:
            overlay = source()
        except (SettingsError, ValueError):
            problems.append(
                _Problem(raw_path, "not valid JSON (this setting is a section or a list)", origin)
            )
            continue
        if not overlay:
            if len(raw_path) < 2 or not all(raw_path):
                continue
            overlay = _nest(raw_path, value)
        data = _overlay(data, overlay, (), origin, provenance, problems)
    return data


def _nest(path: YamlPath, value: Any) -> dict[str, Any]:
    nested: Any = value
    for key in reversed(path):
        nested = {key: nested}
    assert isinstance(nested, dict)
    return nested


def _normal_key(key: str) -> str:
    return key.lower().replace("-", "_")


def _overlay(
    base: Any,
    over: Any,
    path: YamlPath,
    origin: str,
    provenance: dict[YamlPath, str],
    problems: list[_Problem],
) -> Any:
    if isinstance(over, dict) and isinstance(base, dict):
        merged = dict(base)
        for key, value in over.items():
            target = _match_key(base, key, (*path, key), origin, problems)
            merged[target] = _overlay(
                base.get(target, _MISSING), value, (*path, target), origin, provenance, problems
            )
        return merged
    if (
        isinstance(over, dict)
        and isinstance(base, list)
        and over
        and all(isinstance(key, str) and key.isdigit() for key in over)
    ):
        items = list(base)
        for key, value in over.items():
            index = int(key)
            if index >= len(items):
                problems.append(
                    _Problem(
                        path,
                        f"index {index} is past the end of the list ({len(items)} items)",
                        origin,
                    )
                )
                continue
            items[index] = _overlay(
                items[index], value, (*path, index), origin, provenance, problems
            )
        return items
    provenance[path] = origin
    for known in [known for known in provenance if known[: len(path)] == path and known != path]:
        del provenance[known]
    return over


def _match_key(
    base: Mapping[Any, Any], key: str, where: YamlPath, origin: str, problems: list[_Problem]
) -> Any:
    """The YAML spelling of an override's (lower-cased) key: the one key spelled the same
    ignoring case, else the one key equal to it when ``-`` and ``_`` are treated alike."""
    if key in base:
        return key
    for normal in (str.lower, _normal_key):
        matches = [
            known for known in base if isinstance(known, str) and normal(known) == normal(key)
        ]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            spelled = " and ".join(repr(match) for match in matches)
            problems.append(
                _Problem(where[:-1], f"ambiguous override: matches keys {spelled}", origin)
            )
            return key
    return key


# --- the schema, walked alongside the data ------------------------------------------------


def _options(annotation: Any, value: Any) -> list[Any]:
    """The concrete types ``annotation`` admits for ``value``: ``Annotated`` stripped, unions
    expanded, discriminated unions narrowed by the value's ``type``."""
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *metadata = get_args(annotation)
        for meta in metadata:
            if isinstance(meta, Discriminator) and callable(meta.discriminator):
                tag = meta.discriminator(value)
                chosen = [member for member in get_args(inner) if _tag_of(member) == tag]
                if chosen:
                    return [option for member in chosen for option in _options(member, value)]
        return _options(inner, value)
    if origin is Union or origin is types.UnionType:
        members = [option for arg in get_args(annotation) for option in _options(arg, value)]
        tag = value.get("type") if isinstance(value, dict) else None
        tagged = [member for member in members if tag is not None and tag in _type_tags(member)]
        return tagged or members
    return [annotation]


def _tag_of(annotation: Any) -> str | None:
    """The ``Tag`` of a member of a union with a callable discriminator."""
    if get_origin(annotation) is Annotated:
        for meta in get_args(annotation)[1:]:
            if isinstance(meta, Tag):
                return meta.tag
    return None


def _type_tags(annotation: Any) -> tuple[Any, ...]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get("type")
        if field is not None and get_origin(field.annotation) is Literal:
            return get_args(field.annotation)
    return ()


def _model_field(model: type[BaseModel], key: object) -> Any:
    for field_name, field in model.model_fields.items():
        if key in (field_name, field.alias):
            return field.annotation
    return _MISSING


def _child(annotation: Any, key: object) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model_field(annotation, key)
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is dict and len(args) == 2:
        return args[1]
    if origin is list and args and isinstance(key, int):
        return args[0]
    return _MISSING


def _annotations_at(path: YamlPath, data: Any) -> list[Any]:
    """The schema annotations that may describe ``path`` of ``data``."""
    annotations: list[Any] = [Config]
    node = data
    for key in path:
        following: list[Any] = []
        for annotation in annotations:
            for option in _options(annotation, node):
                child = _child(option, key)
                if child is not _MISSING:
                    following.append(child)
        annotations = following
        node = _step(node, key)
    return annotations


def _models_at(path: YamlPath, data: Any) -> list[type[BaseModel]]:
    """The config models that may sit at ``path`` of ``data``."""
    node = data
    for key in path:
        node = _step(node, key)
    return [
        option
        for annotation in _annotations_at(path, data)
        for option in _options(annotation, node)
        if isinstance(option, type) and issubclass(option, BaseModel)
    ]


def _step(node: Any, key: object) -> Any:
    if isinstance(node, dict):
        return node.get(key, _MISSING)
    if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
        return node[key]
    return _MISSING


def _secret_strings(annotation: Any, node: Any) -> set[str]:
    """Every string in ``node`` that sits where the schema expects a ``SecretStr``."""
    found: set[str] = set()
    for option in _options(annotation, node):
        if option is SecretStr:
            if isinstance(node, str) and node:
                found.add(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                child = _child(option, key)
                if child is not _MISSING:
                    found |= _secret_strings(child, value)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                child = _child(option, index)
                if child is not _MISSING:
                    found |= _secret_strings(child, value)
    return found


# --- validation errors into plain lines ----------------------------------------------------


def _validation_problems(
    exc: ValidationError, data: Any, provenance: Mapping[YamlPath, str]
) -> list[_Problem]:
    problems: list[_Problem] = []
    seen: set[tuple[YamlPath, str]] = set()
    for error in exc.errors(include_url=False, include_context=True, include_input=True):
        path, key_error = _clean_loc(error["loc"], data)
        context = error.get("ctx") or {}
        if error["type"] == "config_issues":
            # Several mistakes found by one validator (template refs naming no template).
            issues: list[ConfigIssue] = context.get("issues", [])
            for issue_path, text in issues:
                problems.append(_Problem(issue_path, text, _origin(issue_path, provenance)))
            continue
        message = _plain_message(error, path, data, key_error)
        if error["type"] == "signal_key":
            path = (*path, str(context.get("key")))
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            discriminator = str(context.get("discriminator", "type"))
            path = (*path, discriminator.strip("'\""))
        if (path, message) in seen:
            continue
        seen.add((path, message))
        problems.append(_Problem(path, message, _origin(path, provenance)))
    return problems


def _clean_loc(loc: tuple[int | str, ...], data: Any) -> tuple[YamlPath, bool]:
    """Pydantic's error location as a YAML path: discriminator tags, union branch names and
    validator names that pydantic inserts are dropped by walking the data alongside."""
    path: list[str | int] = []
    key_error = False
    node = data
    for part in loc:
        if part == "[key]":
            key_error = True
            continue
        if isinstance(node, dict) and part in node:
            # A key the file really has, even one spelt like a tag (``plain signal:``).
            path.append(part)
            node = node[part]
            continue
        if part in SIGNAL_ENTRY_TAGS or part in VIA_TAGS:
            continue  # which form a signal (plain, template ref) or a via entry is in
        if isinstance(node, dict):
            if isinstance(part, str) and (part == node.get("type") or _LOC_NOISE.search(part)):
                continue
            path.append(part)
            node = _MISSING
            continue
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
            continue
        if node is not _MISSING and isinstance(part, str):
            continue  # a branch name under a scalar or a list
        path.append(part)
    return tuple(path), key_error


def _plain_message(error: ErrorDetails, path: YamlPath, data: Any, key_error: bool) -> str:
    kind = error["type"]
    message = error["msg"]
    context = error.get("ctx") or {}
    value = error.get("input")
    if kind == "missing":
        if len(path) == 3 and path[0] == "systems" and path[2] == "owner":
            return "required: every system has exactly one accountable owner"
        return "required"
    if kind == "extra_forbidden":
        return _unknown_key(path, data)
    if kind in ("value_error", "assertion_error"):
        return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "union_tag_invalid":
        return (
            f"unknown type {context.get('tag')!r}: expected one of {context.get('expected_tags')}"
        )
    if kind == "union_tag_not_found":
        return f"required: one of {_expected_tags(path, data)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        tags = _expected_tags(path, data)
        if tags:
            return f"must be a mapping with a 'type' ({tags}), not {_kind_of(value)}"
        return f"must be a mapping, not {_kind_of(value)}"
    if kind == "list_type":
        return f"must be a list, not {_kind_of(value)}"
    if kind == "too_short" and context.get("min_length") == 1:
        return "must not be empty"
    if kind == "literal_error":
        expected = context.get("expected", "")
        shown = f", not {value!r}" if isinstance(value, str | int | float) else ""
        if key_error:
            return f"invalid key: must be {expected}"
        return f"must be {expected}{shown}"
    text = message.replace("Input should be", "must be")
    if key_error:
        return f"invalid key: {text}"
    return text


def _kind_of(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def _expected_tags(path: YamlPath, data: Any) -> str:
    """The ``type`` values a discriminated section at ``path`` accepts, quoted."""
    tags = [
        repr(tag)
        for annotation in _annotations_at(path, data)
        for option in _options(annotation, None)
        for tag in _type_tags(option)
    ]
    return ", ".join(dict.fromkeys(tags))


def _unknown_key(path: YamlPath, data: Any) -> str:
    allowed: list[str] = []
    for model in _models_at(path[:-1], data):
        for field_name, field in model.model_fields.items():
            allowed.append(field.alias or field_name)
    allowed = list(dict.fromkeys(allowed))
    if not allowed or not path:
        return "unknown key"
    close = difflib.get_close_matches(str(path[-1]), allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key, did you mean {close[0]!r}?"
    if TemplateRefConfig in _models_at(path[:-1], data):
        overridable = ", ".join(TEMPLATE_OVERRIDES[:-1]) + f" and {TEMPLATE_OVERRIDES[-1]}"
        return (
            f"a template ref may override only {overridable}: set {path[-1]} in the "
            "template, or write a plain signal"
        )
    return f"unknown key: expected one of {', '.join(allowed)}"
