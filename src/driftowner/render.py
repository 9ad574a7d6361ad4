"""What a notification says: the subject, plain-text body and HTML body of a ``Message``.

Pure functions over Jinja2 templates packaged in ``driftowner/templates``; the environment is
built on first use, never at import. Every rendering names the system, the accountable owner,
the layers, the evidence, the age, the escalation step, the state and purpose, the summary,
and the runbook and action links when the message carries them.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from typing import Any

import jinja2

from driftowner.model import Message, Purpose

_PURPOSE_LABEL: dict[Purpose, str] = {
    "opened": "OPEN",
    "reopened": "REOPENED",
    "escalated": "ESCALATED",
    "reminder": "REMINDER",
    "acknowledged": "ACKNOWLEDGED",
    "reassigned": "REASSIGNED",
    "resolved": "RESOLVED",
    "informed": "FYI",
    "test": "TEST",
}

_SUBJECT_SUMMARY_LIMIT = 160
_WHITESPACE = re.compile(r"\s+")


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("driftowner", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


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
    if message.purpose == "reminder":
        return f"Reminder: this incident is {message.state} and still unresolved after {age}."
    by = message.actor or "someone"
    if message.purpose == "acknowledged":
        return f"Acknowledged by {by} after {age}: escalation stops. {owner} is accountable."
    if message.purpose == "reassigned":
        return f"Reassigned by {by}: {owner} is now the accountable owner."
    if message.purpose == "resolved":
        return f"Resolved after {age}. {owner} was the accountable owner."
    if message.purpose == "informed":
        layers = ", ".join(message.layers)
        where = f"the {layers} layer of " if layers else ""
        return (
            f"For your information: your team contributes to {where}{message.system}. "
            f"{owner} is accountable; no action is needed from you."
        )
    return "This is a test notification from driftowner; no incident exists."


def age_phrase(message: Message) -> str:
    """``open for 4m 12s`` or ``resolved after 12m 30s``."""
    age = format_age(message.age_seconds)
    if message.state == "resolved":
        return f"resolved after {age}"
    return f"{message.state} for {age}"


def _utc(at: datetime) -> str:
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def context(message: Message) -> dict[str, Any]:
    """What every template sees: the message as ``m`` and its phrases already written."""
    return {
        "m": message,
        "label": label(message),
        "intro": intro(message),
        "age": format_age(message.age_seconds),
        "age_phrase": age_phrase(message),
        "step": step_label(message),
        "layers": ", ".join(message.layers),
        "opened_at": _utc(message.opened_at),
        "summary_line": one_line(message.summary),
    }


def subject(message: Message) -> str:
    """One line, for an email subject or a chat fallback.

    ``[driftowner] OPEN fraud-scoring: accuracy fine, adoption falling — owner Alice Chen
    (step 1)``; a resolution reads ``... after 12m 30s — owner Alice Chen``.
    """
    values = context(message)
    values["summary_line"] = clipped_summary(message)
    return one_line(_environment().get_template("subject.txt").render(values))


def clipped_summary(message: Message) -> str:
    """The summary on one line, cut to fit a subject line."""
    summary = one_line(message.summary)
    if len(summary) > _SUBJECT_SUMMARY_LIMIT:
        summary = summary[: _SUBJECT_SUMMARY_LIMIT - 1].rstrip() + "…"
    return summary


def text(message: Message) -> str:
    """The plain-text body: every field a human needs to act, links spelled out."""
    return _environment().get_template("message.txt").render(context(message))


def html(message: Message) -> str:
    """The HTML body (the email alternative); every message field is escaped."""
    return _environment().get_template("message.html").render(context(message))
