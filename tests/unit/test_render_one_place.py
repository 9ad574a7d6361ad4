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
from driftowner.model import AUTO, Evidence, Incident, Message, Notification, Purpose, Upstream

from .factories import T0, at, full_message, ids, incident, links, make_config, notification

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
    assert render.thread_topic(message) in subject
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


def _strings(value: Any) -> list[str]:
    """Every string inside a message: its fields, and the fields of the facts it holds."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, tuple):
        return [text for item in value for text in _strings(item)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [
            text for f in dataclasses.fields(value) for text in _strings(getattr(value, f.name))
        ]
    return []


def _made_by_escalation() -> tuple[list[Notification], set[str], Incident, Incident]:
    """Notifications escalation makes on every path, with every string a fact may be: the
    opening (owner paged, teams informed), a step, a reminder, both SLO breaches, the owner
    informed while an upstream incident holds the pages, the follow-ups of an ack (with its
    person's note), of a note, of an escalation step and of a resolution, and
    ``notify-test`` (an owner with systems, and one without)."""
    config = make_config()
    new_id = ids("n")
    subject = incident(config)
    upstream = dataclasses.replace(incident(config, id="inc-up"), system="features", owner="dana")
    held = incident(config, id="inc-held", caused_by="inc-up")
    acked = dataclasses.replace(
        subject, state="acknowledged", acknowledged_at=at(20), first_acknowledged_at=at(20)
    )
    made = [
        *escalation.tick(config, subject, T0, new_id, links).notifications,
        *escalation.tick(config, subject, at(15), new_id, links).notifications,
        *escalation.tick(config, acked, at(20 + 120), new_id, links).notifications,
        *escalation.slo_breaches(config, subject, at(31), new_id, links).notifications,
        *escalation.slo_breaches(config, acked, at(3 * 24 * 60 + 1), new_id, links).notifications,
        *escalation.tick(
            config, held, T0, new_id, links, escalation.Paging((), {"inc-up": upstream})
        ).notifications,
        *escalation.test_notifications(config, "alice", T0, new_id),
        *escalation.test_notifications(config, "bob", T0, new_id),
    ]
    opening = escalation.tick(config, subject, T0, new_id, links).notifications
    made += escalation.follow_ups(
        config, acked, opening, "acknowledged", at(20), new_id, links, "on it", "alice"
    )
    made += escalation.follow_ups(
        config, acked, opening, "noted", at(25), new_id, links, "on it", "alice", 1
    )
    made += escalation.on_resolved(config, subject, opening, at(90), new_id, links)
    step2 = escalation.tick(
        config, escalation.tick(config, subject, T0, new_id, links).incident, at(15), new_id, links
    )
    made += escalation.tell_escalation(config, step2, opening, at(15), new_id, links).notifications
    facts = {"", "on it", "alice", "test", "fraud-scoring", AUTO}
    for one in (subject, held, upstream, acked):
        facts |= {one.id, one.system, one.owner, one.kind, one.rule, one.state, one.summary}
        facts |= {f.reason for f in one.evidence} | set(one.layers) | set(one.signals)
        facts |= {one.runbook or ""}
        facts |= {
            links(one.id, action, who) or ""
            for action in ("ack", "resolve", "view")
            for who in (None, *config.owners)
        }
    facts |= {o.name for o in config.owners.values()} | set(config.owners) | set(config.teams)
    facts |= {note.message.incident_id for note in made if note.message.purpose == "test"}
    facts |= set(typing.get_args(Purpose)) | {"acknowledged", "resolved", "open"}
    facts |= {"model", "data", "business", "engineering", "ok", "degraded", "no_data"}
    facts |= {"ack", "resolve"}
    return made, facts, subject, upstream


def test_every_string_escalation_puts_in_a_message_is_a_fact() -> None:
    """Escalation passes facts only: every string anywhere in every message it makes, on
    every path (pages, steps, reminders, SLO breaches, an upstream hold, follow-ups, test
    messages), is a fact from the incident, the config, the links or the person who acted;
    none is wording (an evidence line, an SLO-breach sentence, a hold's explanation, a
    placeholder). The facts behind the words render adds are the incident's own: its
    findings, the SLO breached and by how much, the upstream incident."""
    made, facts, subject, upstream = _made_by_escalation()
    purposes = {note.message.purpose for note in made}
    assert purposes >= {
        "opened",
        "escalated",
        "stepped_up",
        "reminder",
        "informed",
        "test",
        "acknowledged",
        "noted",
    }
    for note in made:
        for text in _strings(note.message):
            assert text in facts, (note.message.purpose, text)
        message = note.message
        if message.purpose != "test":
            assert message.evidence == tuple(Evidence.of(f) for f in subject.evidence)
    breaches = [n.message.breach for n in made if n.message.breach is not None]
    assert {(b.slo, b.within_seconds, b.overdue_seconds) for b in breaches} == {
        ("ack", 30 * 60.0, 60.0),
        ("resolve", 3 * 24 * 3600.0, 60.0),
    }
    held = [n.message.held_by for n in made if n.message.held_by is not None]
    assert held and set(held) == {
        Upstream(upstream.id, upstream.system, upstream.owner, upstream.state)
    }


def test_render_words_the_facts_escalation_passes() -> None:
    """The evidence lines, the SLO-breach note and the upstream hold's note are render's:
    each channel's text shows them, worded from the message's facts."""
    made, _, _, _ = _made_by_escalation()
    breach = next(n for n in made if n.message.breach is not None and n.message.breach.slo == "ack")
    informed = next(n for n in made if n.message.held_by is not None)
    page = next(n for n in made if n.message.purpose == "opened")
    assert render.evidence_lines(page.message) == ("accuracy (model): degraded — 0.71 < min 0.9",)
    assert render.note(breach.message) == (
        "ack_within 30m passed with the incident open (1m 0s over)."
    )
    assert render.note(informed.message).startswith(
        "Probably caused by inc-up on features (owner dana), still open"
    )
    for sent in (breach, informed, page):
        message = sent.message
        text = render.text(message)
        assert render.note(message) in text and render.evidence_lines(message)[0] in text
        said = render.card(message)
        assert (said.note, said.note_title) == (render.note(message), render.note_title(message))
        assert escape(render.note(message)) in _texts(build_payload(sent))


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
