"""The store's JSON of messages and group threads: the facts a message carries survive the
round trip, and bodies written by older versions (evidence as worded lines, a thread as a
bare list) still read."""

from __future__ import annotations

import dataclasses
import json

from driftowner import render
from driftowner.model import Evidence, GroupThread, SloBreach, Upstream
from driftowner.store.codec import (
    members_from_json,
    message_from_json,
    message_to_json,
    thread_from_json,
    thread_to_json,
)

from .factories import full_message


def test_a_message_and_its_facts_survive_the_round_trip() -> None:
    """Evidence items, the SLO breach and the upstream incident come back as they went."""
    message = full_message(
        breach=SloBreach("ack", 1800.0, 60.0),
        held_by=Upstream("inc-up", "features-v3", "dana", "open"),
        upstreams=("features-v3",),
    )
    assert message_from_json(message_to_json(message)) == message


def test_a_body_stored_before_messages_carried_facts_still_reads() -> None:
    """An outbox row written by the previous version holds evidence as escalation worded it
    and no breach or hold: its facts are read back from the line, and render words it as
    before; a line of another shape keeps its words."""
    stored = json.loads(message_to_json(full_message()))
    stored["evidence"] = ["accuracy (model): degraded — 0.71 < min 0.9", "odd line"]
    message = message_from_json(json.dumps(stored))
    assert message.evidence[0] == Evidence("accuracy", "model", "degraded", "0.71 < min 0.9")
    assert render.evidence_lines(message) == (
        "accuracy (model): degraded — 0.71 < min 0.9",
        "odd line",
    )
    assert (message.breach, message.held_by, message.upstreams) == (None, None, ())


def test_a_group_thread_keeps_its_root_size_and_an_old_one_reads() -> None:
    """A thread's listing and its root's size survive the round trip; a thread kept as a
    bare list by the previous version reads with a root of unknown size (0)."""
    listed = (full_message(), dataclasses.replace(full_message(), incident_id="inc-43"))
    thread = GroupThread("<root@driftowner>", listed, 1)
    assert thread_from_json(thread.ref, thread_to_json(thread)) == thread
    old = json.dumps([json.loads(message_to_json(m)) for m in listed])
    assert thread_from_json("<root@driftowner>", old) == GroupThread("<root@driftowner>", listed)


def test_a_groups_members_are_kept_with_its_thread_and_old_text_reads() -> None:
    """The members round-trip beside the thread (an empty thread too); text kept before
    members were counts the incidents its thread lists unresolved."""
    listed = (
        full_message(incident_id="inc-1"),
        full_message(incident_id="inc-2", purpose="resolved", state="resolved"),
    )
    thread = GroupThread("C1:1.1", listed, 2)
    members = frozenset({"inc-1", "inc-9"})
    text = thread_to_json(thread, members)
    assert members_from_json(text, thread_from_json(thread.ref, text)) == members
    assert members_from_json(thread_to_json(GroupThread()), GroupThread()) == frozenset()
    before = json.dumps(
        {"listed": [json.loads(message_to_json(m)) for m in listed], "root_size": 2}
    )
    assert members_from_json(before, thread_from_json("C1:1.1", before)) == {"inc-1"}
    bare = json.dumps([json.loads(message_to_json(m)) for m in listed])
    assert members_from_json(bare, thread_from_json("C1:1.1", bare)) == {"inc-1"}
