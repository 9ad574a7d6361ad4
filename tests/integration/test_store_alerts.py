"""The store's contract for received alerts (what the Alertmanager webhook writes and the
alertmanager source reads), run against each backend (in memory, SQLite, PostgreSQL): episodes
kept per fingerprint and start, a resolve final for its episode, episodes read by the range
they fire in, resolved ones forgotten after a while; on the SQL backends, restarts and
instances recording one episode at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from driftowner.model import ReceivedAlert
from driftowner.store import SqlStore, Store
from tests.integration.postgres_server import (  # noqa: F401 (fixtures)
    BACKENDS,
    contract_store,
    postgres_database_url,
    postgres_url,
    store_url,
)
from tests.unit.factories import SYSTEM, at

SOURCE = "am"
FAR = at(60 * 24 * 365)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store on each backend of the contract suite."""
    with contract_store(request, tmp_path / "state" / "driftowner.db") as opened:
        yield opened


def alert(
    start: float,
    end: float | None = None,
    *,
    resolved: bool = False,
    fingerprint: str = "1a30ba71cca2921f",
    received: float | None = None,
) -> ReceivedAlert:
    return ReceivedAlert(
        fingerprint=fingerprint,
        labels=(("alertname", "ServingErrors"), ("system", SYSTEM), ("zone", 'é/"x"')),
        starts_at=at(start),
        ends_at=None if end is None else at(end),
        resolved=resolved,
        received_at=at(start if received is None else received),
    )


def everything(store: Store, source: str = SOURCE) -> list[ReceivedAlert]:
    return store.received_alerts(source, at(-60 * 24 * 365), FAR)


def test_an_episode_reads_back_as_it_was_recorded(store: Store) -> None:
    """Fingerprint, labels (any text), start to the microsecond, no end, received time."""
    firing = replace(alert(0), starts_at=at(0).replace(microsecond=123456))
    store.record_alerts(SOURCE, [firing], forget_before=at(-1000))
    assert everything(store) == [firing]
    assert everything(store, "other-source") == []


def test_a_resolve_ends_the_episode_and_a_late_firing_report_cannot_undo_it(store: Store) -> None:
    """A resolve is final for its episode: an HA peer's late firing report changes nothing."""
    store.record_alerts(SOURCE, [alert(0)], forget_before=at(-1000))
    resolved = alert(0, 10, resolved=True, received=10)
    store.record_alerts(SOURCE, [resolved], forget_before=at(-1000))
    store.record_alerts(SOURCE, [alert(0, received=11)], forget_before=at(-1000))
    assert everything(store) == [resolved]


def test_a_firing_report_updates_an_unresolved_episode(store: Store) -> None:
    """A firing report of an episode not resolved keeps the newest end and receipt time."""
    store.record_alerts(SOURCE, [alert(0, 30)], forget_before=at(-1000))
    store.record_alerts(SOURCE, [alert(0, received=5)], forget_before=at(-1000))
    assert everything(store) == [alert(0, received=5)]


def test_a_new_start_is_a_new_episode(store: Store) -> None:
    """The same alert firing again (a new startsAt) keeps the earlier episode as history."""
    first, second = alert(0, 10, resolved=True), alert(20)
    store.record_alerts(SOURCE, [first], forget_before=at(-1000))
    store.record_alerts(SOURCE, [second], forget_before=at(-1000))
    assert everything(store) == [first, second]


def test_a_read_gives_the_episodes_that_may_fire_in_its_range(store: Store) -> None:
    """Episodes ended before the range or starting after it are left out, except the episodes
    of an alert that has one without an end (a later one of them ends it)."""
    ended = alert(0, 10, resolved=True, fingerprint="aa")
    later = alert(100, fingerprint="bb")
    open_ended = alert(0, fingerprint="cc")
    after_it = alert(5, 8, resolved=True, fingerprint="cc")
    store.record_alerts(SOURCE, [ended, later, open_ended, after_it], forget_before=at(-1000))
    assert store.received_alerts(SOURCE, at(20), at(30)) == [open_ended, after_it]
    assert store.received_alerts(SOURCE, at(5), at(5)) == [ended, open_ended, after_it]


def test_resolved_episodes_are_forgotten_after_a_while(store: Store) -> None:
    """Recording forgets the source's episodes resolved before ``forget_before``; firing ones
    and other sources' stay."""
    old = alert(0, 10, resolved=True, fingerprint="aa")
    firing = alert(0, fingerprint="bb")
    store.record_alerts(SOURCE, [old, firing], forget_before=at(-1000))
    store.record_alerts("other", [old], forget_before=at(-1000))
    store.record_alerts(SOURCE, [], forget_before=at(11))
    assert everything(store) == [firing]
    assert everything(store, "other") == [old]


def test_alerts_survive_a_restart(store_url: str) -> None:  # noqa: F811 (a fixture)
    """What a webhook recorded is there for the next process (the store is the handover)."""
    first = SqlStore(store_url)
    first.record_alerts(SOURCE, [alert(0)], forget_before=at(-1000))
    first.close()
    second = SqlStore(store_url)
    try:
        assert everything(second) == [alert(0)]
    finally:
        second.close()


def test_instances_recording_one_new_episode_at_once_keep_one(
    store_url: str,  # noqa: F811 (a fixture)
) -> None:
    """Alertmanager's HA peers deliver the same alert to several instances at once: every
    write succeeds, and the episode is one row with a resolve kept."""
    SqlStore(store_url).open()
    count = 4
    barrier = threading.Barrier(count)
    problems: list[BaseException] = []

    def deliver(index: int) -> None:
        instance = SqlStore(store_url)
        try:
            barrier.wait()
            report = alert(0, 10, resolved=True) if index == 0 else alert(0)
            instance.record_alerts(SOURCE, [report], forget_before=at(-1000))
        except BaseException as error:
            problems.append(error)
        finally:
            instance.close()

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []
    reader = SqlStore(store_url)
    try:
        (kept,) = everything(reader)
    finally:
        reader.close()
    assert (kept.resolved, kept.ends_at) == (True, at(10))
