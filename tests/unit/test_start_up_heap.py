"""The daemon keeps the garbage collector off the heap its start-up built (``daemon.py``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from driftowner.daemon import YOUNGEST_COLLECTION_AFTER, freeze_start_up_heap


@pytest.fixture(autouse=True)
def _collector_as_it_was() -> Iterator[None]:
    """Each test changes the collector of the test process: put it back afterwards."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_what_start_up_built_is_never_walked_by_a_collection_again() -> None:
    """Objects alive when delivery starts (the config, the channels, the modules) leave the
    generations a collection walks; what is made afterwards is still collected, cycles
    included."""
    config_like = {"channels": [{"name": "hook"}]}
    freeze_start_up_heap()
    assert gc.get_freeze_count() > 0
    walked = {id(thing) for thing in gc.get_objects()}
    assert id(config_like) not in walked
    assert id(config_like["channels"]) not in walked

    page: list[object] = []
    page.append(page)  # a cycle made while delivering
    assert id(page) in {id(thing) for thing in gc.get_objects()}
    del page
    assert gc.collect() >= 1


def test_young_collections_wait_for_thousands_of_new_containers() -> None:
    """The youngest generation is collected after 7,000 new containers, not Python's 700:
    a page's few dozen short-lived containers no longer set one off every few pages."""
    gc.set_threshold(700, 10, 10)
    freeze_start_up_heap()
    assert gc.get_threshold() == (YOUNGEST_COLLECTION_AFTER, 10, 10)
    assert YOUNGEST_COLLECTION_AFTER == 7_000


def test_a_larger_threshold_already_set_is_kept() -> None:
    """A process that already collects less often (a larger first threshold) keeps it."""
    gc.set_threshold(50_000, 20, 30)
    freeze_start_up_heap()
    assert gc.get_threshold() == (50_000, 20, 30)
