"""What a notification says: the subject, plain-text body and HTML body of a ``Message``.

Pure functions over Jinja2 templates packaged in ``driftowner/templates``; the environment is
built on first use, never at import. Every rendering names the system, the accountable owner,
the layers, the evidence, the age, the escalation step, the state and purpose, the summary,
and the runbook and action links when the message carries them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2

from driftowner.config import format_duration
from driftowner.model import Evidence, Message, Purpose

_PURPOSE_LABEL: dict[Purpose, str] = {
    "opened": "OPEN",
    "reopened": "REOPENED",
    "escalated": "ESCALATED",
    "reminder": "REMINDER",
    "acknowledged": "ACKNOWLEDGED",
    "reassigned": "REASSIGNED",
    "stepped_up": "ESCALATED",
    "noted": "NOTE",
    "resolved": "RESOLVED",
    "informed": "FYI",
    "test": "TEST",
}

_SUBJECT_SUMMARY_LIMIT = 160
_WHITESPACE = re.compile(r"\s+")


def template_environment(directory: Path | None = None) -> jinja2.Environment:
    """The Jinja2 environment every notification template renders in: a template of
    ``directory`` (a channel's ``templates_dir``) by its name, else the packaged one of that
    name. HTML templates are autoescaped; an unknown variable is an error.

    Args:
        directory: Templates overriding the packaged ones by name, if any.
    """
    loaders: list[jinja2.BaseLoader] = []
    if directory is not None:
        loaders.append(jinja2.FileSystemLoader(str(directory)))
    loaders.append(jinja2.PackageLoader("driftowner", "templates"))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@functools.cache
def _environment() -> jinja2.Environment:
    """The packaged templates' environment, built on first use."""
    return template_environment()


def format_age(seconds: float) -> str:
    """A human age with its two largest units: ``45s``, ``4m 12s``, ``2h 5m``, ``3d 4h``.

    Negative ages (clock skew) read as ``0s``.
    """
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def one_line(value: str) -> str:
    """``value`` with every run of whitespace (newlines included) collapsed to one space."""
    return _WHITESPACE.sub(" ", value).strip()


def label(message: Message) -> str:
    """The upper-case tag of a message: ``OPEN``, ``ESCALATED``, ``REMINDER``, ``RESOLVED``,
    ``TEST``, or ``FYI OPEN`` / ``FYI RESOLVED`` for a contributor team being informed."""
    base = _PURPOSE_LABEL[message.purpose]
    if message.purpose == "informed":
        return f"{base} {message.state.upper()}"
    return base


def state_label(message: Message) -> str:
    """The upper-case state of a message's incident: ``OPEN``, ``ACKNOWLEDGED``,
    ``RESOLVED`` (what a thread's root shows, updated as the incident moves)."""
    return message.state.upper()


def system_name(message: Message) -> str:
    """The system a message is about; a test message names those its owner is accountable
    for, or says there is none yet."""
    return message.system or "(no system yet)"


def step_label(message: Message) -> str:
    """``step 2``, or the empty string for messages outside the chain (step 0)."""
    return f"step {message.step}" if message.step > 0 else ""


def intro(message: Message) -> str:
    """One sentence saying why this recipient gets this message."""
    age = format_age(message.age_seconds)
    owner = message.owner_name
    if message.purpose == "opened":
        return f"A new incident is open on {message.system}. {owner} is the accountable owner."
    if message.purpose == "reopened":
        return (
            f"The incident on {message.system} is back: it was resolved and its condition "
            f"fired again. {owner} is the accountable owner."
        )
    if message.purpose == "escalated":
        return (
            f"Escalated to {message.recipient_name}: nobody has acknowledged this incident "
            f"in {age}. {owner} is the accountable owner."
        )
    if message.purpose == "stepped_up":
        return (
            f"Escalated to step {message.step}: nobody has acknowledged this incident in "
            f"{age}, so step {message.step}'s recipients are paged now. {owner} is the "
            "accountable owner."
        )
    if message.purpose == "reminder":
        return f"Reminder: this incident is {message.state} and still unresolved after {age}."
    by = message.actor or "someone"
    if message.purpose == "acknowledged":
        return f"Acknowledged by {by} after {age}: escalation stops. {owner} is accountable."
    if message.purpose == "reassigned":
        return f"Reassigned by {by}: {owner} is now the accountable owner."
    if message.purpose == "noted":
        return (
            f"{by} added a note; the incident is {message.state}. {owner} is the accountable owner."
        )
    if message.purpose == "resolved":
        return f"Resolved after {age}. {owner} was the accountable owner."
    if message.purpose == "informed" and message.held_by is not None:
        upstream = message.held_by
        return (
            f"For your information: an incident is open on {message.system}, probably caused "
            f"by {upstream.incident_id} on {upstream.system}. {owner} is accountable; you are "
            "informed, not paged, while that one stays unresolved."
        )
    if message.purpose == "informed":
        layers = ", ".join(message.layers)
        where = f"the {layers} layer of " if layers else ""
        return (
            f"For your information: your team contributes to {where}{message.system}. "
            f"{owner} is accountable; no action is needed from you."
        )
    return "This is a test notification from driftowner; no incident exists."


def summary(message: Message) -> str:
    """The message's summary on one line: its incident's, or a test message's own (a test
    has no incident: escalation passes the facts, render says what it is)."""
    if message.purpose == "test":
        return f"Test notification for {message.recipient_name}: driftowner can reach you here."
    return one_line(message.summary)


def evidence_line(evidence: Evidence) -> str:
    """One signal's evidence on one line: ``accuracy (model): degraded — 0.71 < min 0.9``."""
    reason = one_line(evidence.reason)
    if not evidence.signal:
        return reason  # kept from a message stored before messages carried facts
    head = f"{evidence.signal} ({evidence.layer}): {evidence.status}"
    return f"{head} — {reason}" if reason else head


def evidence_lines(message: Message) -> tuple[str, ...]:
    """Every evidence line of a message, in its order."""
    return tuple(evidence_line(e) for e in message.evidence)


def note_title(message: Message) -> str | None:
    """What a message's note is headed with: ``Note from alice`` (what the person who acted
    wrote), ``SLO breached``, ``Held by an upstream incident``; None when it has no note."""
    if message.note:
        return f"Note from {message.actor}" if message.actor else "Note"
    if message.breach is not None:
        return "SLO breached"
    if message.held_by is not None:
        return "Held by an upstream incident"
    return None


def note(message: Message) -> str:
    """A message's note (see :func:`note_title`): what the person who acted wrote; else the
    SLO breach it tells of and by how much; else the upstream incident holding its pages;
    else the empty string."""
    if message.note:
        return message.note
    breach = message.breach
    if breach is not None:
        within = format_duration(timedelta(seconds=breach.within_seconds))
        over = int(breach.overdue_seconds)
        late = f" ({format_age(over)} over)" if over > 0 else ""
        return f"{breach.slo}_within {within} passed with the incident {message.state}{late}."
    upstream = message.held_by
    if upstream is not None:
        return (
            f"Probably caused by {upstream.incident_id} on {upstream.system} (owner "
            f"{upstream.owner}), still {upstream.state}: you are informed, not paged; paging "
            "resumes if it resolves while this incident still holds."
        )
    return ""


def age_phrase(message: Message) -> str:
    """``open for 4m 12s`` or ``resolved after 12m 30s``."""
    age = format_age(message.age_seconds)
    if message.state == "resolved":
        return f"resolved after {age}"
    return f"{message.state} for {age}"


ACTION_LABELS = {"ack": "Acknowledge", "resolve": "Resolve", "view": "Open incident"}
"""What a message's action links and buttons read, by action."""


@dataclass(frozen=True, slots=True)
class Field:
    """One titled value of a chat card; ``url`` makes the value a link."""

    title: str
    value: str
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Card:
    """What a chat message (a Slack card) says, every word of it; the channel only lays it
    out (blocks, mrkdwn, escaping, Slack's limits)."""

    headline: str
    summary: str
    intro: str
    fields: tuple[Field, ...]
    evidence_title: str
    evidence: tuple[str, ...]
    note_title: str | None
    """None when the message carries no note."""
    note: str
    footer: str


def card(message: Message, root: bool = False) -> Card:
    """The card of one message; ``root``: a thread's root as updated, headed by the
    incident's current state (``ACKNOWLEDGED fraud-scoring``) rather than why this message
    was sent."""
    fields = [
        Field("Accountable owner", message.owner_name),
        Field("Layers", ", ".join(message.layers) or "-"),
        Field("State", f"{message.state} ({message.purpose})"),
        Field("Age", age_phrase(message)),
        Field("Kind", f"{message.kind}: {message.rule}"),
    ]
    if message.step > 0:
        fields.append(Field("Escalation", step_label(message)))
    if message.runbook:
        fields.append(Field("Runbook", "runbook", message.runbook))
    return Card(
        headline=f"{state_label(message) if root else label(message)} {system_name(message)}",
        summary=summary(message),
        intro=intro(message),
        fields=tuple(fields),
        evidence_title="Evidence",
        evidence=evidence_lines(message) or ("(none recorded)",),
        note_title=note_title(message),
        note=note(message),
        footer=f"driftowner · incident {message.incident_id} · recipient {message.recipient_name}",
    )


PROVIDER_LINK_LABELS = {
    "view": "Incident in driftowner",
    "runbook": "Runbook",
    "ack": "Acknowledge in driftowner",
}
"""What an incident tool (PagerDuty) shows for a message's links, by link."""


def alert_title(message: Message) -> str:
    """The one-line title of an alert in an incident tool (Opsgenie):
    ``fraud-scoring: accuracy fine, adoption falling``."""
    return f"{system_name(message)}: {summary(message)}"


def action_note(message: Message) -> str:
    """The note an incident tool records with an acknowledgement, reassignment, escalation
    step or resolution: what the person wrote, after, for a reassignment or an escalation
    step, the sentence naming the new owner or the step."""
    if message.purpose in ("reassigned", "stepped_up"):
        return f"{intro(message)} {note(message)}".strip()
    return note(message)


def group_lead(count: int) -> str:
    """The line under a group's summary: ``12 incidents; each keeps its own escalation.``"""
    noun = "incident" if count == 1 else "incidents"
    return f"{count} {noun}; each keeps its own escalation."


def more_line(more: int) -> str:
    """What stands for the incidents a group does not list."""
    return f"… and {more} more — see the status page."


def _utc(at: datetime) -> str:
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def context(message: Message) -> dict[str, Any]:
    """What every template sees: the message as ``m`` and its phrases already written."""
    return {
        "m": message,
        "system": system_name(message),
        "label": label(message),
        "intro": intro(message),
        "age": format_age(message.age_seconds),
        "age_phrase": age_phrase(message),
        "step": step_label(message),
        "layers": ", ".join(message.layers),
        "opened_at": _utc(message.opened_at),
        "summary_line": summary(message),
        "evidence": evidence_lines(message),
        "note": note(message),
        "note_title": note_title(message),
    }


def subject(message: Message) -> str:
    """One line, for an email subject or a chat fallback.

    ``[driftowner] OPEN fraud-scoring: accuracy fine, adoption falling — owner Alice Chen
    (step 1)``; a resolution reads ``... after 12m 30s — owner Alice Chen``.
    """
    values = context(message)
    values["summary_line"] = clipped_summary(message)
    return one_line(_environment().get_template("subject.txt").render(values))


def log_line(message: Message) -> str:
    """The text of a message's log event: its subject and who is told,
    ``[driftowner] OPEN fraud-scoring: ... → Alice Chen``."""
    return f"{subject(message)} → {message.recipient_name}"


_TOPIC_BY_KIND = {"drift": "{} drifted", "stale": "no data from {}", "disagreement": "{}"}


def thread_topic(message: Message) -> str:
    """What an incident's conversation is about, in words that never change while it lasts
    (its rule, not its summary, which a reopening rewrites): ``accuracy drifted``,
    ``no data from accuracy``, ``accuracy fine adoption falling``; a test message's summary.
    Every mail of one incident thread carries it in its subject, so no mail client splits
    the thread."""
    if message.purpose == "test":
        return summary(message)
    kind, _, name = message.rule.partition(":")
    pattern = _TOPIC_BY_KIND.get(kind)
    if pattern is None or not name:
        return one_line(message.rule)
    return one_line(pattern.format(name.replace("-", " ") if kind == "disagreement" else name))


def clipped_summary(message: Message) -> str:
    """The summary on one line, cut to fit a subject line."""
    line = summary(message)
    if len(line) > _SUBJECT_SUMMARY_LIMIT:
        line = line[: _SUBJECT_SUMMARY_LIMIT - 1].rstrip() + "…"
    return line


def text(message: Message) -> str:
    """The plain-text body: every field a human needs to act, links spelled out."""
    return _environment().get_template("message.txt").render(context(message))


def html(message: Message) -> str:
    """The HTML body (the email alternative); every message field is escaped."""
    return _environment().get_template("message.html").render(context(message))


# -- groups: several notifications to one recipient as one message ------------------------------


def _shared(values: list[set[str]]) -> str | None:
    """The one value every set holds (the alphabetically first if several), or None."""
    common = set.intersection(*values) if values else set()
    return min(common) if common else None


def common_factor(messages: Sequence[Message]) -> str:
    """What a group's incidents share, as a phrase: ``fed by features-v3`` (a shared
    ``depends_on`` upstream), ``breaching accuracy-floor`` (one rule), ``in the data layer``
    (one layer), or the empty string when they share none of these."""
    upstream = _shared([set(m.upstreams) for m in messages])
    if upstream is not None:
        return f"fed by {upstream}"
    rules = {m.rule for m in messages}
    if len(rules) == 1:
        return f"breaching {rules.pop()}"
    layer = _shared([set(m.layers) for m in messages])
    if layer is not None:
        return f"in the {layer} layer"
    return ""


def group_summary(messages: Sequence[Message], root: bool = False) -> str:
    """One line saying what a group is: ``12 systems fed by features-v3 changed within 45s:
    10 OPEN, 2 RESOLVED``.

    Args:
        messages: The group's messages, at least one.
        root: Count the incidents by their state (a thread's root, showing where each
            stands) rather than by why each message was sent.
    """
    tag = state_label if root else label
    counts: dict[str, int] = {}
    for m in messages:
        counts[tag(m)] = counts.get(tag(m), 0) + 1
    tally = ", ".join(f"{n} {tag}" for tag, n in counts.items())
    return f"{_group_head(messages)}: {tally}"


def _group_head(messages: Sequence[Message]) -> str:
    """``12 systems fed by features-v3 (opened within 45s)``: what the incidents are and
    share, without where they stand."""
    systems = len({m.system for m in messages})
    noun = "system" if systems == 1 else "systems"
    factor = common_factor(messages)
    opened = [m.opened_at for m in messages]
    span = format_age((max(opened) - min(opened)).total_seconds())
    head = " ".join(part for part in (str(systems), noun, factor) if part)
    return f"{head} (opened within {span})"


def group_subject(messages: Sequence[Message]) -> str:
    """The subject line of a group: ``[driftowner] 12 systems fed by features-v3 ...``."""
    return one_line(f"[driftowner] {group_summary(messages)}")


def group_topic(root: Sequence[Message]) -> str:
    """What a group's thread is about, from the incidents its root listed when first sent,
    in words that never change while the thread lasts (no tally of states):
    ``12 systems fed by features-v3 (opened within 45s)``. Every mail of one group thread
    carries it in its subject (the ``group_subject.txt`` template's ``thread_topic``), so no
    mail client splits the thread."""
    return one_line(_group_head(root))


def group_log_line(messages: Sequence[Message]) -> str:
    """The text of a group's log event: its subject and who is told."""
    return f"{group_subject(messages)} → {messages[0].recipient_name}"


def group_entry(message: Message, root: bool = False) -> dict[str, Any]:
    """What a group lists of one incident: its tag (its state in a thread's ``root``),
    system, rule, first evidence line (a note told to the group: the note, headed with who
    wrote it), age and its own links."""
    if message.purpose == "noted" and not root:
        line = f"{note_title(message)}: {one_line(note(message))}"
    else:
        line = evidence_line(message.evidence[0]) if message.evidence else summary(message)
    return {
        "m": message,
        "label": state_label(message) if root else label(message),
        "age_phrase": age_phrase(message),
        "evidence": line,
    }


def group_context(
    messages: Sequence[Message], shown: int | None = None, root: bool = False
) -> dict[str, Any]:
    """What the group templates see: the summary, the first ``shown`` entries (all when
    None) and how many more there are; ``root``: as a thread's root, by state."""
    listed = messages if shown is None else messages[:shown]
    return {
        "summary": group_summary(messages, root),
        "recipient": messages[0].recipient_name,
        "entries": [group_entry(m, root) for m in listed],
        "more": len(messages) - len(listed),
        "count": len(messages),
    }
