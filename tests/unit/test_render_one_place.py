"""One place words every notification: escalation passes facts (purpose, incident, step,
recipient), render says them, and every channel lays out what render said. Each message
kind is rendered for every channel type from the same facts; escalation's own notifications
carry no prose of their own. (The HTML status and incident pages are pages, not
notifications: they word themselves.)"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest
from structlog.testing import capture_logs

from driftowner import escalation, render
from driftowner.channels.email import MailTemplates
from driftowner.channels.log import LogChannel
from driftowner.channels.opsgenie import build_request
from driftowner.channels.pagerduty import build_event
from driftowner.channels.slack import build_payload, escape
from driftowner.model import Message, Notification, Purpose

from .factories import T0, full_message, make_config, notification

PURPOSES: tuple[Purpose, ...] = typing.get_args(Purpose)


def _of(purpose: Purpose) -> Notification:
    """The same facts (the full message of fraud-scoring to Alice), told for ``purpose``."""
    state = {"acknowledged": "acknowledged", "resolved": "resolved"}.get(purpose, "open")
    return notification(
        "n-1", message=full_message(purpose=purpose, state=state, actor="alice", note="on it")
    )


def _texts(value: Any) -> str:
    """Every string inside a JSON-like value, joined (to look for render's words)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "\n".join(_texts(v) for v in value.values())
    if isinstance(value, list | tuple):
        return "\n".join(_texts(v) for v in value)
    return ""


@pytest.mark.parametrize("purpose", PURPOSES)
async def test_every_kind_reads_as_render_says_on_every_channel(purpose: Purpose) -> None:
    """For each kind of message, from the same facts: Slack's card carries render's
    headline, summary, intro and footer; the mail's subject, text and HTML are render's
    templates over render's context; the log event is render's line; PagerDuty's summary
    is render's subject and Opsgenie's title render's alert title."""
    sent = _of(purpose)
    message = sent.message
    card = render.card(message)
    slack = _texts(build_payload(sent))
    for words in (card.headline, card.summary, card.intro, card.footer):
        assert escape(words) in slack, (purpose, words)
    subject, text, html = MailTemplates().render(message)
    # The mail's subject is the thread's stable one (the email_subject.txt template).
    assert render.clipped_summary(message) in subject
    assert render.intro(message) in text and render.summary(message) in text
    assert html == render.html(message)
    with capture_logs() as logs:
        await LogChannel("console").send(sent)
    assert logs[0]["event"] == render.log_line(message)
    assert logs[0]["summary"] == render.summary(message)
    event = build_event(sent, "k" * 32, "critical")
    if event is not None and "payload" in event:
        assert event["payload"]["summary"] == render.subject(message)
    request = build_request(sent, "P3")
    if request is not None and "message" in request[1]:
        assert request[1]["message"] == render.alert_title(message)


def test_the_test_message_carries_facts_and_render_says_what_it_is() -> None:
    """``notify-test``'s messages come from escalation with no summary of their own (the
    summary used to be composed there); render words it, and every channel shows render's
    words."""
    config = make_config()
    ids = iter(f"id-{i}" for i in range(100))
    sent = escalation.test_notifications(config, "alice", T0, lambda: next(ids))
    assert sent
    for note in sent:
        message = note.message
        assert (message.purpose, message.summary, message.note) == ("test", "", "")
        said = render.summary(message)
        assert said == "Test notification for Alice Chen: driftowner can reach you here."
        assert said in render.subject(message) and said in render.text(message)
        assert escape(said) in _texts(build_payload(note))
        assert said in MailTemplates().render(message)[1]


def test_escalation_notifications_carry_no_prose_of_their_own() -> None:
    """Every text field of a message escalation makes is a fact: the incident's own summary
    and evidence, names from the config, links; nothing of it is the wording render adds
    (no tag, intro, age phrase or step label)."""
    from tests.unit.test_escalation import escalator

    esc = escalator()
    made = [*esc.at(0).notifications, *esc.at(15).notifications]
    assert made
    for note in made:
        message = note.message
        worded = {
            render.label(message),
            render.intro(message),
            render.age_phrase(message),
            render.step_label(message),
        } - {""}
        for name in ("summary", "note", "owner_name", "recipient_name", "system", "rule"):
            value = getattr(message, name)
            assert not any(words in value for words in worded), (name, value)
        assert message.note == "" and message.actor == ""


def test_a_group_is_worded_by_render() -> None:
    """A group's lead and the line standing for those not listed come from render."""
    messages: list[Message] = [
        dataclasses.replace(full_message(), incident_id=f"inc-{i}", system=f"m-{i}")
        for i in range(3)
    ]
    assert render.group_lead(3) == "3 incidents; each keeps its own escalation."
    assert render.group_lead(1) == "1 incident; each keeps its own escalation."
    assert render.more_line(2) == "… and 2 more — see the status page."
    assert render.group_log_line(messages).startswith(render.group_subject(messages))
