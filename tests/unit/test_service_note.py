"""A person's note on an incident (``service.add_note``), over the in-memory store: one
``note`` event recording who wrote it and through what, and in the same transaction a
``noted`` follow-up to every conversation the incident started; refusals name the field and
change nothing."""

from __future__ import annotations

from dataclasses import replace

import pytest
from structlog.testing import capture_logs

from driftowner import runner, service
from driftowner.cycle import Pager
from driftowner.model import Incident, Notification
from driftowner.store import Changes, Conflict, MemoryStore

from .factories import T0, at, ids, incident, links, make_config, notification

NOTE = "rolled back features-v3, watching"


class CountingStore(MemoryStore):
    """The in-memory store, keeping every set of changes applied (one per transaction)."""

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[Changes] = []

    def apply(self, changes: Changes) -> None:
        super().apply(changes)
        self.applied.append(changes)


def _store_with_an_opened_incident() -> tuple[CountingStore, Notification]:
    """A store holding inc-1 after its opening page (the owner on console and email, the
    team ml-fraud informed), and a test message recorded under the same incident id."""
    config = make_config()
    store = CountingStore()
    store.apply(Changes(opened=[incident(config, ack_within=None, resolve_within=None)]))
    runner.escalate(store, config, T0, Pager(ids("n"), links))
    test = notification("t-1", channel="email", recipient="dana", address="x@example.com")
    test = replace(test, message=replace(test.message, purpose="test"))
    store.apply(Changes(notifications=[test]))
    return store, test


def test_a_note_is_one_event_and_a_follow_up_per_conversation() -> None:
    """The note is recorded as one ``note`` event (actor, via, the text its detail) and told
    once to each (channel, recipient, address) the incident paged, never to the informed
    team nor to a test message's address, all in one transaction; the incident itself is
    unchanged, and the text is never logged."""
    config = make_config()
    store, _ = _store_with_an_opened_incident()
    before = store.notifications("inc-1")
    incident_before = store.incident("inc-1")
    with capture_logs() as logged:
        noted, event = service.add_note(store, config, "inc-1", "alice", NOTE, at(5), "cli", links)
    assert NOTE not in repr(logged)
    assert (event.kind, event.actor, event.via, event.detail, event.at) == (
        "note",
        "alice",
        "cli",
        NOTE,
        at(5),
    )
    assert store.events("inc-1")[-1] == event
    (written,) = store.applied[-1:]
    assert list(written.events) == [event] and len(written.notifications) == 2
    assert noted.state == "open" and incident_before is not None
    assert replace(noted, version=0) == replace(incident_before, version=0)
    told = [n for n in store.notifications("inc-1") if n.message.purpose == "noted"]
    conversations = {(n.channel, n.recipient, n.address) for n in before}
    assert sorted((n.channel, n.recipient, n.address) for n in told) == sorted(
        c for c in conversations if c[1] not in ("ml-fraud", "dana")
    )
    assert {n.recipient for n in told} == {"alice"}
    for sent in told:
        assert (sent.message.note, sent.message.actor) == (NOTE, "alice")
        assert sent.message.step == 1


def test_a_note_on_a_resolved_incident_is_recorded_and_told() -> None:
    """A resolved incident still takes notes (the cause, what was rolled back): recorded and
    told to its conversations, with no acknowledge or resolve link."""
    config = make_config()
    store, _ = _store_with_an_opened_incident()
    service.resolve(store, config, "inc-1", "alice", "", at(10), links, "cli")
    _, event = service.add_note(
        store, config, "inc-1", "bob", "cause: schema change", at(20), "api", links
    )
    assert (event.kind, event.actor, event.via) == ("note", "bob", "api")
    told = [n for n in store.notifications("inc-1") if n.message.purpose == "noted"]
    assert told and all(n.message.state == "resolved" for n in told)
    assert all(n.message.ack_url is None and n.message.resolve_url is None for n in told)


@pytest.mark.parametrize(
    ("incident_id", "by", "text", "refusal", "field"),
    [
        ("nope", "alice", NOTE, service.NotFound, None),
        ("inc-1", "zed", NOTE, service.BadRequest, "by"),
        ("inc-1", "alice", "", service.BadRequest, "note"),
        ("inc-1", "alice", "  \n ", service.BadRequest, "note"),
        ("inc-1", "alice", "n" * (service.MAX_TEXT_CHARS + 1), service.BadRequest, "note"),
        ("inc-1", "alice", "nul\x00", service.BadRequest, "note"),
    ],
)
def test_a_refused_note_names_its_field_and_changes_nothing(
    incident_id: str, by: str, text: str, refusal: type[Exception], field: str | None
) -> None:
    """An unknown incident, an unknown writer, or a note that is empty, over-long or not
    text: refused (the field named), no event, no notification."""
    config = make_config()
    store, _ = _store_with_an_opened_incident()
    events, queued = store.events("inc-1"), store.notifications("inc-1")
    with pytest.raises(refusal) as raised:
        service.add_note(store, config, incident_id, by, text, at(5), "api", links)
    if field is not None:
        assert isinstance(raised.value, service.BadRequest) and raised.value.field == field
    assert (store.events("inc-1"), store.notifications("inc-1")) == (events, queued)


class AckedMeanwhile(CountingStore):
    """A store where Alice acknowledges inc-1 right after it is next read: the reader holds
    the incident as it was."""

    def __init__(self) -> None:
        super().__init__()
        self.race = False

    def incident(self, incident_id: str) -> Incident | None:
        read = super().incident(incident_id)
        if self.race and read is not None:
            self.race = False
            service.acknowledge(self, make_config(), incident_id, "alice", "", at(4), "slack")
        return read


def test_a_note_raced_by_an_ack_is_refused_not_told_with_a_stale_state() -> None:
    """An ack landing between the note's read and its write: the note is refused
    (:class:`Conflict`, a 409 to retry), so no conversation is told the incident is open
    after it was acknowledged; the ack stands, no note is recorded."""
    config = make_config()
    store = AckedMeanwhile()
    store.apply(Changes(opened=[incident(config, ack_within=None, resolve_within=None)]))
    runner.escalate(store, config, T0, Pager(ids("n"), links))
    store.race = True
    with pytest.raises(Conflict):
        service.add_note(store, config, "inc-1", "bob", NOTE, at(5), "api", links)
    assert [e.kind for e in store.events("inc-1")][-1] == "acknowledged"
    assert not [n for n in store.notifications("inc-1") if n.message.purpose == "noted"]
