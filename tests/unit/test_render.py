"""Message rendering: subject, plain text and HTML name every field a human needs to act."""

from __future__ import annotations

import dataclasses
import html as htmllib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from driftowner import render
from driftowner.model import Evidence, Message, Purpose

from .factories import full_message

PURPOSES: tuple[Purpose, ...] = (
    "opened",
    "reopened",
    "escalated",
    "reminder",
    "resolved",
    "informed",
    "test",
)


def message(**changes: Any) -> Message:
    """The disagreement these tests render, pinning every value their assertions look for."""
    shown = full_message(
        purpose="opened",
        incident_id="01HZXINCIDENT",
        system="fraud-scoring",
        owner_name="Alice Chen",
        state="open",
        layers=("model", "business"),
        summary="accuracy fine, adoption falling",
        evidence=(
            Evidence("accuracy", "model", "ok", "0.95 >= min 0.90"),
            Evidence("adoption", "business", "degraded", "0.41 is 38% below baseline 0.66"),
        ),
        age_seconds=252,
        runbook="https://wiki.example.com/fraud-scoring",
        incident_url="https://driftowner.example.com/incidents/01HZXINCIDENT",
        ack_url="https://driftowner.example.com/a/ack-token",
        resolve_url="https://driftowner.example.com/a/resolve-token",
    )
    return dataclasses.replace(shown, **changes)


def for_purpose(purpose: Purpose) -> Message:
    state = {"resolved": "resolved", "reminder": "acknowledged"}.get(purpose, "open")
    step = 2 if purpose in ("opened", "escalated") else 0
    return message(purpose=purpose, state=state, step=step)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (-5, "0s"),
        (45.9, "45s"),
        (252, "4m 12s"),
        (750, "12m 30s"),
        (3600, "1h 0m"),
        (7500, "2h 5m"),
        (3 * 86400 + 4 * 3600 + 59, "3d 4h"),
    ],
)
def test_format_age_uses_two_largest_units(seconds: float, expected: str) -> None:
    """Ages read like a human says them: the two largest units, seconds below a minute."""
    assert render.format_age(seconds) == expected


def test_subject_of_an_opened_incident_names_system_summary_owner_and_step() -> None:
    """The subject line alone tells who owns what problem and how far escalation went."""
    assert render.subject(message(step=1)) == (
        "[driftowner] OPEN fraud-scoring: accuracy fine, adoption falling"
        " — owner Alice Chen (step 1)"
    )


def test_subject_of_a_resolution_says_how_long_it_stayed_open() -> None:
    """A resolved subject carries the time to resolve instead of a step."""
    resolved = message(purpose="resolved", state="resolved", step=0, age_seconds=750)
    assert render.subject(resolved) == (
        "[driftowner] RESOLVED fraud-scoring: accuracy fine, adoption falling after 12m 30s"
        " — owner Alice Chen"
    )


@pytest.mark.parametrize(
    ("purpose", "tag"),
    [
        ("opened", "OPEN"),
        ("escalated", "ESCALATED"),
        ("reminder", "REMINDER"),
        ("resolved", "RESOLVED"),
        ("informed", "FYI OPEN"),
        ("test", "TEST"),
    ],
)
def test_subject_tag_says_the_purpose(purpose: Purpose, tag: str) -> None:
    """Each purpose has its own tag, so a reader can sort mail without opening it."""
    subject = render.subject(for_purpose(purpose))
    assert subject.startswith(f"[driftowner] {tag} fraud-scoring: ")
    assert "Alice Chen" in subject


def test_step_zero_is_not_mentioned() -> None:
    """Messages outside the chain (resolution, test) carry no step."""
    plain = message(step=0)
    assert "step" not in render.subject(plain)
    assert "step 0" not in render.text(plain)
    assert "Escalation" not in render.text(plain)


def test_subject_stays_one_line_whatever_the_summary() -> None:
    """A summary with newlines cannot inject mail headers or break the subject."""
    hostile = message(summary="line one\r\nBcc: victim@example.com\n" + "x" * 500)
    subject = render.subject(hostile)
    assert "\n" not in subject
    assert "\r" not in subject
    assert len(subject) < 300


@pytest.mark.parametrize("purpose", PURPOSES)
@pytest.mark.parametrize("renderer", [render.text, render.html])
def test_bodies_name_every_required_field(
    purpose: Purpose, renderer: Callable[[Message], str]
) -> None:
    """Text and HTML of every purpose name system, owner, layers, evidence, age, step, state,
    purpose, summary, runbook and every link."""
    m = for_purpose(purpose)
    body = renderer(m)
    if renderer is render.html:
        body = htmllib.unescape(body)
    for needle in (
        "fraud-scoring",
        "Alice Chen",
        "model, business",
        "accuracy (model): ok — 0.95 >= min 0.90",
        "adoption (business): degraded — 0.41 is 38% below baseline 0.66",
        "4m 12s",
        m.state,
        m.purpose,
        # render's summary: the incident's; a test message's own sentence.
        "accuracy fine, adoption falling" if purpose != "test" else render.summary(m),
        "https://wiki.example.com/fraud-scoring",
        "https://driftowner.example.com/a/ack-token",
        "https://driftowner.example.com/a/resolve-token",
        "https://driftowner.example.com/incidents/01HZXINCIDENT",
        "01HZXINCIDENT",
    ):
        assert needle in body, f"{needle!r} missing from {renderer} for {purpose}"
    if m.step:
        assert f"step {m.step}" in body


def test_bodies_leave_out_links_that_are_not_set() -> None:
    """Without a runbook or links, no empty labels or dead anchors appear."""
    bare = message(runbook=None, ack_url=None, resolve_url=None, incident_url=None)
    text = render.text(bare)
    html = render.html(bare)
    for label in ("Runbook", "Acknowledge", "Resolve:", "Incident:"):
        assert label not in text
    assert "href" not in html


def test_an_informed_message_has_the_incident_link_and_no_action_links() -> None:
    """A contributor team's FYI (not paged: no acknowledge / resolve links) still reads
    whole: the incident link is there, no action label or anchor is."""
    fyi = message(purpose="informed", ack_url=None, resolve_url=None)
    text = render.text(fyi)
    html = render.html(fyi)
    assert fyi.incident_url is not None
    assert fyi.incident_url in text and fyi.incident_url in html
    for label in ("Acknowledge", "Resolve:"):
        assert label not in text
    assert ">Acknowledge<" not in html and ">Resolve<" not in html
    assert "no action is needed from you" in text


def test_html_escapes_hostile_summary_and_evidence() -> None:
    """Summary and evidence are data, not markup: scripts and tags come out escaped."""
    hostile = message(
        summary='<script>alert("x")</script> & <b>bold</b>',
        evidence=(Evidence("accuracy", "model", "degraded", '<img src=x onerror="steal()">'),),
        system="fraud<i>scoring</i>",
    )
    html = render.html(hostile)
    assert "<script>" not in html
    assert "<img" not in html
    assert "<i>scoring" not in html
    assert "&lt;script&gt;" in html
    assert "&amp; &lt;b&gt;bold&lt;/b&gt;" in html


def test_plain_text_is_not_html_escaped() -> None:
    """The text part shows characters as written: no ``&lt;`` in a plain-text mail."""
    body = render.text(message(summary="p < 0.05 & rising"))
    assert "p < 0.05 & rising" in body


def test_opened_at_is_shown_in_utc() -> None:
    """Times in messages are UTC whatever the time zone they were stored with."""
    from datetime import timedelta, timezone

    local = datetime(2024, 5, 1, 11, 30, tzinfo=timezone(timedelta(hours=2)))
    assert "2024-05-01 09:30:00 UTC" in render.text(message(opened_at=local))


def test_intro_names_the_recipient_of_an_escalation() -> None:
    """An escalated message tells its recipient why it reached them."""
    text = render.text(message(purpose="escalated", recipient_name="Dana Ito"))
    assert "Escalated to Dana Ito" in text


def test_news_of_an_escalation_step_names_the_step_not_its_recipient() -> None:
    """A ``stepped_up`` message tells a conversation the incident started (the owner's
    thread) how far escalation went: tagged ESCALATED, naming the step in its intro, its
    subject and its card's Escalation field, without saying it was escalated to its own
    recipient; an incident tool's note says the same."""
    told = message(purpose="stepped_up", step=2, recipient_name="Alice Chen", age_seconds=900)
    assert render.label(told) == "ESCALATED"
    assert render.intro(told).startswith(
        "Escalated to step 2: nobody has acknowledged this incident in 15m 0s, so step 2's "
        "recipients are paged now."
    )
    assert "Escalated to Alice Chen" not in render.text(told)
    assert render.subject(told).endswith("(step 2)")
    assert render.Field("Escalation", "step 2") in render.card(told, root=True).fields
    assert render.action_note(told).startswith(render.intro(told))


def test_a_note_reads_as_the_persons_words_in_the_incidents_conversation() -> None:
    """A ``noted`` message tells a conversation the incident started what a person wrote:
    tagged NOTE, its intro naming who wrote and the incident's state, the note under ``Note
    from`` in the text, the HTML and the card; the root keeps the step; an incident tool's
    note is the person's words alone; a group lists the note instead of the evidence line."""
    noted = message(
        purpose="noted",
        state="acknowledged",
        step=2,
        actor="alice",
        note="rolled back features-v3, watching",
    )
    assert render.label(noted) == "NOTE"
    assert render.intro(noted) == (
        "alice added a note; the incident is acknowledged. Alice Chen is the accountable owner."
    )
    assert (render.note_title(noted), render.note(noted)) == (
        "Note from alice",
        "rolled back features-v3, watching",
    )
    for body in (render.text(noted), htmllib.unescape(render.html(noted))):
        assert "Note from alice" in body and "rolled back features-v3, watching" in body
    root = render.card(noted, root=True)
    assert root.headline == "ACKNOWLEDGED fraud-scoring"
    assert render.Field("Escalation", "step 2") in root.fields
    assert render.action_note(noted) == "rolled back features-v3, watching"
    assert render.group_entry(noted)["evidence"] == (
        "Note from alice: rolled back features-v3, watching"
    )
    assert render.group_entry(noted, root=True)["evidence"].startswith("accuracy (model)")


def test_rendering_does_not_touch_the_environment_at_import() -> None:
    """Importing render builds no Jinja environment; the first render does, once."""
    render._environment.cache_clear()
    assert render._environment.cache_info().currsize == 0
    render.subject(message())
    render.text(message())
    assert render._environment.cache_info().currsize == 1
