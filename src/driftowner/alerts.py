"""Alerts as signals: which alerts a signal on an alertmanager source names (label matchers, as
Alertmanager writes them), and how many of them fire at an instant. Pure.

A signal's query is an alert name (``ServingErrors``), a selector
(``{alertname="ServingErrors", model="fraud"}``) or both (``ServingErrors{model="fraud"}``).
The config adds the system's own matcher (``system="fraud-scoring"``), so every reader of the
query (the daemon, ``evaluate``, ``replay``) asks the source for this system's alerts only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from driftowner.model import ReceivedAlert

ALERTNAME = "alertname"
OPERATORS = ("=~", "!~", "!=", "=")
"""Longest first, so ``=~`` is not read as ``=``."""

_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<name>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*
        (?:"(?P<dq>(?:[^"\\]|\\.)*)"|'(?P<sq>(?:[^'\\]|\\.)*)'|(?P<bare>[^\s,{}"'=!~]+))
    )\s*""",
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher: ``name op value``; a regex matches the whole value, as in
    Alertmanager."""

    name: str
    op: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this matcher (a missing label is the empty string)."""
        given = labels.get(self.name, "")
        if self.op == "=":
            return given == self.value
        if self.op == "!=":
            return given != self.value
        found = re.fullmatch(self.value, given) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{quote(self.value)}"


def quote(value: str) -> str:
    """``value`` as a double-quoted matcher string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def parse_selector(text: str) -> tuple[Matcher, ...]:
    """The matchers a signal's query names.

    Args:
        text: ``AlertName``, ``{label="value", ...}`` or ``AlertName{...}``; values quoted
            with ``"`` or ``'``, or bare; operators ``=``, ``!=``, ``=~``, ``!~``.

    Returns:
        The matchers, in the order written (an alert name first).

    Raises:
        ValueError: the text is empty or not a selector, or a regex does not compile.
    """
    stripped = text.strip()
    brace = stripped.find("{")
    head = stripped if brace < 0 else stripped[:brace].strip()
    matchers: list[Matcher] = []
    if head:
        if not _NAME.fullmatch(head):
            raise ValueError(
                f"{head!r} is not an alert name: expected a name like ServingErrors or a "
                'selector like {alertname="ServingErrors", model="fraud"}'
            )
        matchers.append(Matcher(ALERTNAME, "=", head))
    if brace >= 0:
        matchers.extend(_braced(stripped[brace:]))
    if not stripped:
        raise ValueError(
            'empty: name an alert (ServingErrors), or select alerts ({severity="page"}; {} '
            "selects every alert of the system)"
        )
    for matcher in matchers:
        if matcher.op in ("=~", "!~"):
            try:
                re.compile(matcher.value)
            except re.error as error:
                raise ValueError(f"{matcher}: invalid regex: {error}") from None
    return tuple(matchers)


def _braced(text: str) -> list[Matcher]:
    """The matchers of ``{...}`` (the whole of ``text``)."""
    if not text.endswith("}"):
        raise ValueError("the selector does not end with }")
    body = text[1:-1]
    matchers: list[Matcher] = []
    position = 0
    while body[position:].strip():
        found = _TOKEN.match(body, position)
        if found is None:
            rest = body[position:].strip()
            raise ValueError(
                f'cannot read a matcher at {rest[:40]!r}: expected label="value" '
                "(operators =, !=, =~, !~)"
            )
        raw = found["dq"] if found["dq"] is not None else found["sq"]
        value = found["bare"] if raw is None else _unescape(raw)
        matchers.append(Matcher(found["name"], found["op"], value))
        position = found.end()
        if position < len(body):
            if body[position] != ",":
                raise ValueError(f"expected , between matchers at {body[position:][:40]!r}")
            position += 1
    return matchers


def _unescape(raw: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], "\\" + m[1]), raw, flags=re.DOTALL)


def render(matchers: Iterable[Matcher]) -> str:
    """The canonical selector text: ``{alertname="X", system="y"}``."""
    return "{" + ", ".join(str(m) for m in matchers) + "}"


def for_system(matchers: Sequence[Matcher], label: str, value: str) -> tuple[Matcher, ...]:
    """``matchers`` plus ``label="value"`` (the system's own alerts), unless they already
    match on ``label``."""
    if any(m.name == label for m in matchers):
        return tuple(matchers)
    return (*matchers, Matcher(label, "=", value))


def system_conflict(matchers: Sequence[Matcher], label: str, value: str) -> str | None:
    """Why ``matchers`` would take another system's alerts (a matcher on the system label
    other than ``label="value"``), or None."""
    for matcher in matchers:
        if matcher.name == label and (matcher.op, matcher.value) != ("=", value):
            return (
                f"{matcher} would match alerts of other systems: this system's alerts carry "
                f"{label}={quote(value)} (leave {label} out of the query, or set the system's "
                f"labels.{label})"
            )
    return None


def firing(
    alerts: Iterable[ReceivedAlert], matchers: Sequence[Matcher], at: datetime
) -> list[ReceivedAlert]:
    """The alerts ``matchers`` select that fire at ``at``, oldest first.

    An episode of an alert ends at its ``ends_at``, or when a later episode of the same
    alert (same fingerprint) starts: Alertmanager reports one state per alert, so a newer
    start means the older episode is over even if its resolve never arrived.
    """
    chosen = [a for a in alerts if all(m.matches(dict(a.labels)) for m in matchers)]
    starts: dict[str, list[datetime]] = {}
    for alert in chosen:
        starts.setdefault(alert.fingerprint, []).append(alert.starts_at)
    found = []
    for alert in chosen:
        later = [s for s in starts[alert.fingerprint] if s > alert.starts_at]
        if alert.firing_at(at) and not any(s <= at for s in later):
            found.append(alert)
    return sorted(found, key=lambda a: (a.starts_at, a.fingerprint))
