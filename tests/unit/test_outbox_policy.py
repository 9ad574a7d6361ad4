"""The outbox's retry policy: when to try again (exponential backoff, server hints) and when a
failure is final. Pure functions of the attempt count, the delivery and ``now``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from driftowner.channels import parse_retry_after
from driftowner.model import Delivery
from driftowner.outbox import (
    FIRST_RETRY,
    LONGEST_RETRY,
    LONGEST_SERVER_DELAY,
    MAX_AGE,
    MAX_ATTEMPTS,
    Outcome,
    gives_up,
    lease_for,
    next_attempt,
    outcome_of,
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
    (10_000, None, timedelta(minutes=15)),
]

FAR_OFF = T0 + timedelta(days=365)
"""A give-up time too far away to matter."""


@pytest.mark.parametrize(("attempts", "retry_after", "wait"), BACKOFF_CASES)
def test_backoff_doubles_from_five_seconds_caps_at_fifteen_minutes_and_honours_retry_after(
    attempts: int, retry_after: float | None, wait: timedelta
) -> None:
    """The n-th retry waits 5 s * 2^(n-1), at most 15 min, and never less than the server's
    ``Retry-After`` (which may exceed the backoff's cap, up to LONGEST_SERVER_DELAY)."""
    assert next_attempt(attempts, T0, retry_after, FAR_OFF) == T0 + wait


def test_backoff_constants() -> None:
    """The policy's published bounds."""
    assert (timedelta(seconds=5), timedelta(minutes=15)) == (FIRST_RETRY, LONGEST_RETRY)
    assert (12, timedelta(hours=24)) == (MAX_ATTEMPTS, MAX_AGE)
    assert timedelta(hours=1) == LONGEST_SERVER_DELAY


UNTRUSTED_DELAYS = [
    # (the server's delay in seconds, the wait it buys)
    (1e12, LONGEST_SERVER_DELAY),  # overflowed the datetime: OverflowError in the pass
    (86_400_000.0, LONGEST_SERVER_DELAY),  # 1,000 days
    (1e308, LONGEST_SERVER_DELAY),
    (float("inf"), LONGEST_SERVER_DELAY),
    (float("nan"), FIRST_RETRY),  # no usable hint: the backoff alone
    (-30.0, FIRST_RETRY),
    (float("-inf"), FIRST_RETRY),
    (3599.5, timedelta(seconds=3599.5)),
]


@pytest.mark.parametrize(("retry_after", "wait"), UNTRUSTED_DELAYS)
def test_a_server_given_delay_is_capped_at_the_longest_server_delay(
    retry_after: float, wait: timedelta
) -> None:
    """Whatever number a server sends (huge, infinite, negative, NaN), the next attempt is a
    valid time at most LONGEST_SERVER_DELAY away, and never sooner than the backoff."""
    assert next_attempt(1, T0, retry_after, FAR_OFF) == T0 + wait


@pytest.mark.parametrize("retry_after", [None, 30.0, 1e12, float("inf")])
def test_the_next_attempt_is_never_after_the_give_up_time(retry_after: float | None) -> None:
    """With 10 s left before give-up, any wait (backoff or the server's) ends at the give-up
    time, so the last attempt happens and the notification gives up on schedule."""
    give_up_at = T0 + timedelta(seconds=10)
    assert next_attempt(9, T0, retry_after, give_up_at) == give_up_at


def test_a_far_future_http_date_is_read_as_a_huge_delay_then_capped() -> None:
    """``Retry-After: Fri, 31 Dec 9999 23:59:59 GMT`` parses to a delay of millennia (it is
    what the server said); the outbox then waits LONGEST_SERVER_DELAY, not 8,000 years."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    seconds = parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now)
    assert seconds is not None and seconds > 1e11
    assert next_attempt(1, T0, seconds, FAR_OFF) == T0 + LONGEST_SERVER_DELAY


RETRY_AFTER_HEADERS = [
    # (header, seconds)
    ("30", 30.0),
    (" 2.5 ", 2.5),
    ("1e12", 1e12),
    ("-5", 0.0),
    ("1e400", float("inf")),  # "wait forever" is kept as such; the outbox caps it
    ("-1e400", 0.0),
    ("nan", None),
    ("soon", None),
    ("", None),
    (None, None),
    ("Mon, 32 Dec 2025 00:00:00 GMT", None),
    ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
    ("Thu, 01 Jan 2026 00:01:00 GMT", 60.0),
]


@pytest.mark.parametrize(("header", "seconds"), RETRY_AFTER_HEADERS)
def test_retry_after_headers_become_non_negative_seconds_or_none(
    header: str | None, seconds: float | None
) -> None:
    """Delay-seconds and HTTP dates become seconds (never negative); a value that says
    nothing usable (empty, NaN, not a number or date) is None: the backoff alone applies."""
    assert parse_retry_after(header, datetime(2026, 1, 1, tzinfo=UTC)) == seconds


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


OUTCOMES = [
    # (attempts before, age, delivery, outcome)
    (0, timedelta(0), Delivery.delivered(), Outcome("delivered")),
    (0, timedelta(0), Delivery.retry("503"), Outcome("retry", "503", T0 + FIRST_RETRY)),
    (
        0,
        timedelta(0),
        Delivery.retry("429", retry_after=86_400_000),
        Outcome("retry", "429", T0 + LONGEST_SERVER_DELAY),
    ),
    (
        1,
        MAX_AGE - timedelta(minutes=30),
        Delivery.retry("429", retry_after=1e12),
        Outcome("retry", "429", T0 + timedelta(minutes=30)),
    ),
    (
        2,
        MAX_AGE,
        Delivery.retry("429", retry_after=1e12),
        Outcome("failed", "429 (gave up: undelivered for 24h)"),
    ),
    (0, timedelta(0), Delivery.give_up("550 no such user"), Outcome("failed", "550 no such user")),
]


@pytest.mark.parametrize(("attempts", "age", "delivery", "outcome"), OUTCOMES)
def test_each_delivery_has_one_outcome_decided_from_now(
    attempts: int, age: timedelta, delivery: Delivery, outcome: Outcome
) -> None:
    """A send's Delivery becomes delivered, a retry at a time within the caps and the give-up
    time (created + MAX_AGE), or a final failure with its reason."""
    subject = notification(attempts=attempts, created_at=T0 - age)
    assert outcome_of(subject, delivery, T0) == outcome
