"""A send that outlasts its lease is abandoned and retried, never left in flight while the
notification can be claimed again (which would page twice)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from driftowner.model import Delivery, Notification
from driftowner.outbox import deliver_due
from driftowner.store import Changes, SqlStore
from tests.unit.factories import T0, incident, notification


class StuckChannel:
    """A channel whose relay never finishes (answers every command just inside its timeout)."""

    name = "email"

    def __init__(self) -> None:
        self.started = 0

    async def send(self, notification: Notification) -> Delivery:
        self.started += 1
        await asyncio.sleep(3600)
        return Delivery.delivered()

    async def aclose(self) -> None:
        return None


async def test_a_send_longer_than_its_lease_is_cut_and_retried(tmp_path: Path) -> None:
    """With a 2 s lease the send gets 1 s: it is cut, recorded as a retry with a clear detail,
    and the notification is still owed (nothing dropped)."""
    store = SqlStore(f"sqlite:///{tmp_path / 's.db'}")
    store.open()
    store.apply(Changes(opened=[incident()], notifications=[notification("n-1", channel="email")]))
    stuck = StuckChannel()
    clock = lambda: T0  # noqa: E731
    delivered = await asyncio.wait_for(
        deliver_due(store, {"email": stuck}, clock, lease=timedelta(seconds=2)), timeout=10
    )
    assert delivered == 0 and stuck.started == 1
    (owed,) = store.notifications("inc-1")
    assert owed.delivered_at is None and owed.failed_at is None
    assert owed.attempts == 1
    assert owed.last_error == "email: no delivery within 1s"
    assert store.outbox_pending() == 1
    store.close()
