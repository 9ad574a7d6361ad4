"""The outbox's retry policy: when to try again (exponential backoff, server hints) and when a
failure is final. Pure functions of the attempt count, the delivery and ``now``."""

from __future__ import annotations

from datetime import timedelta

import pytest

from driftowner.model import Delivery
from driftowner.outbox import (
    FIRST_RETRY,
    LONGEST_RETRY,
    MAX_AGE,
    MAX_ATTEMPTS,
    gives_up,
    lease_for,
    next_attempt,
)

from .factories import T0, make_config, notification

BACKOFF_CASES = [
    # (attempts so far, Retry-After, wait)
    (0, None, timedelta(seconds=5)),
    (1, None, timedelta(seconds=5)),
    (2, None, timedelta(seconds=10)),
    (3, None, timedelta(seconds=20)),
    (4, None, timedelta(seconds=40)),
    (8, None, timedelta(seconds=640)),
    (9, None, timedelta(minutes=15)),
    (40, None, timedelta(minutes=15)),
    (1, 30.0, timedelta(seconds=30)),
    (3, 2.0, timedelta(seconds=20)),
    (9, 3600.0, timedelta(hours=1)),
    (1, 0.0, timedelta(seconds=5)),
]


@pytest.mark.parametrize(("attempts", "retry_after", "wait"), BACKOFF_CASES)
def test_backoff_doubles_from_five_seconds_caps_at_fifteen_minutes_and_honours_retry_after(
    attempts: int, retry_after: float | None, wait: timedelta
) -> None:
    """The n-th retry waits 5 s * 2^(n-1), at most 15 min, and never less than the server's
    ``Retry-After`` (which may exceed the cap)."""
    assert next_attempt(attempts, T0, retry_after) == T0 + wait


def test_backoff_constants() -> None:
    """The policy's published bounds."""
    assert (timedelta(seconds=5), timedelta(minutes=15)) == (FIRST_RETRY, LONGEST_RETRY)
    assert (12, timedelta(hours=24)) == (MAX_ATTEMPTS, MAX_AGE)


GIVE_UP_CASES = [
    # (attempts before this one, age of the notification, delivery, gives up, reason contains)
    (0, timedelta(0), Delivery.give_up("invalid_payload"), True, "invalid_payload"),
    (0, timedelta(0), Delivery.retry("503"), False, None),
    (MAX_ATTEMPTS - 2, timedelta(0), Delivery.retry("503"), False, None),
    (MAX_ATTEMPTS - 1, timedelta(0), Delivery.retry("503"), True, "gave up after 12 attempts"),
    (MAX_ATTEMPTS + 5, timedelta(0), Delivery.retry("503"), True, "gave up after"),
    (1, timedelta(hours=23, minutes=59), Delivery.retry("503"), False, None),
    (1, timedelta(hours=24), Delivery.retry("503"), True, "undelivered for 24h"),
    (1, timedelta(hours=24), Delivery.give_up("no_service"), True, "no_service"),
]


@pytest.mark.parametrize(("attempts", "age", "delivery", "final", "reason"), GIVE_UP_CASES)
def test_gives_up_for_non_recoverable_failures_too_many_attempts_or_too_old(
    attempts: int, age: timedelta, delivery: Delivery, final: bool, reason: str | None
) -> None:
    """A non-recoverable failure is final at once; a recoverable one becomes final on the
    12th attempt or once the notification is 24 h old; otherwise it is retried (None). The
    reason keeps the channel's detail."""
    subject = notification(attempts=attempts, created_at=T0)
    why = gives_up(subject, delivery, T0 + age)
    if not final:
        assert why is None
        return
    assert why is not None
    assert reason is not None and reason in why
    assert delivery.detail in why


def test_the_lease_outlasts_the_slowest_channel_and_is_short_after_a_crash() -> None:
    """The lease covers twice the slowest channel's timeout plus 10 s (a send in flight is
    never claimed twice), and is at least 15 s: after a crash mid-send, the page goes out
    again within seconds."""
    assert lease_for(make_config()) == timedelta(seconds=30)  # email's default 10s timeout
    slow = make_config({"channels": {"email": {"timeout": "1m"}}})
    assert lease_for(slow) == timedelta(seconds=130)
    console_only = make_config({"channels": {"email": {"timeout": "1s"}}})
    assert lease_for(console_only) == timedelta(seconds=15)
