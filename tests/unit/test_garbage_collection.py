"""The daemon collects young garbage less often while it delivers (``daemon.py``)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from driftowner.daemon import YOUNGEST_COLLECTION_AFTER, collect_garbage_less_often


@pytest.fixture(autouse=True)
def _collector_as_it_was() -> Iterator[None]:
    """Each test changes the collector of the test process: put it back afterwards."""
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)


def test_young_collections_wait_for_thousands_of_new_containers() -> None:
    """The youngest generation is collected after 7,000 new containers, not Python's 700:
    a page's few dozen short-lived containers no longer set one off every few pages. The
    older generations keep their thresholds."""
    gc.set_threshold(700, 10, 10)
    collect_garbage_less_often()
    assert gc.get_threshold() == (YOUNGEST_COLLECTION_AFTER, 10, 10)
    assert YOUNGEST_COLLECTION_AFTER == 7_000


def test_a_larger_threshold_already_set_is_kept() -> None:
    """A process that already collects less often (a larger first threshold) keeps it."""
    gc.set_threshold(50_000, 20, 30)
    collect_garbage_less_often()
    assert gc.get_threshold() == (50_000, 20, 30)


def test_cycles_made_while_delivering_are_still_collected() -> None:
    """Collecting less often is not collecting never: a cycle of garbage made afterwards is
    found by the next collection."""
    collect_garbage_less_often()
    page = _Page()
    page.itself = page
    alive = weakref.ref(page)
    del page
    gc.collect()
    assert alive() is None


class _Page:
    """Something a delivery makes that refers to itself."""

    itself: _Page | None = None
