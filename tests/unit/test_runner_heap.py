"""The daemon's heap kept off the garbage collector's walks: each config's long-lived state
frozen once, after its first evaluation, and thawed for the next config."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from driftowner.runner import Heap


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    """Every test starts and ends with nothing frozen (other tests see a normal collector)."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_a_config_s_state_is_frozen_after_its_first_evaluation_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first evaluation of a config collects once and freezes what is alive; later
    evaluations of that config do nothing; a new config thaws, collects and freezes again,
    so what the old config left in reference cycles can be collected."""
    calls: list[str] = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append("collect") or 0)
    monkeypatch.setattr(gc, "unfreeze", lambda: calls.append("unfreeze"))
    real_freeze = gc.freeze
    monkeypatch.setattr(gc, "freeze", lambda: (calls.append("freeze"), real_freeze()))
    heap, first, second = Heap(), object(), object()
    heap.settle(first)
    assert calls == ["unfreeze", "collect", "freeze"]
    assert gc.get_freeze_count() > 0
    for _ in range(3):
        heap.settle(first)
    assert calls == ["unfreeze", "collect", "freeze"]
    heap.settle(second)
    assert calls == ["unfreeze", "collect", "freeze"] * 2


def test_frozen_objects_are_still_freed_when_no_longer_referenced() -> None:
    """Freezing keeps the collector from walking the state, not from freeing it: an object
    frozen with a config is freed as soon as nothing refers to it."""
    import weakref

    class Chart:
        pass

    chart = Chart()
    gone = weakref.ref(chart)
    Heap().settle(object())
    del chart
    assert gone() is None
