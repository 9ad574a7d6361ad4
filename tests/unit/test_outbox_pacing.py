"""The outbox's pacing and fallback decisions, the clock passed in: per-destination concurrency
and rate, a server's pause that holds back its own destination only, the backlog foreseen,
retry jitter within its bounds, and the page a fallback channel takes over. No I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from driftowner.escalation import fallback_of
from driftowner.model import Notification
from driftowner.outbox import (
    FIRST_RETRY,
    JITTER,
    LONGEST_RETRY,
    MAX_AGE,
    Destination,
    Pace,
    Throttle,
    destination_of,
    next_attempt,
    pace_of,
)

from .factories import T0, ids, make_config, notification

WEBHOOK: Destination = ("hook", "")
SLACK_A: Destination = ("slack", "C-A")
SLACK_B: Destination = ("slack", "C-B")


def _throttle(**paces: Pace) -> Throttle:
    """A throttle whose destinations' paces are named by channel."""
    return Throttle(lambda destination: paces[destination[0]])


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


@pytest.mark.parametrize(
    ("max_in_flight", "started", "expected"),
    [
        (1, 0, T0),
        (1, 1, None),
        (3, 2, T0),
        (3, 3, None),
    ],
)
def test_a_destination_starts_no_more_than_max_in_flight_sends(
    max_in_flight: int, started: int, expected: object
) -> None:
    """With ``started`` sends running and no rate, the next starts at once while fewer than
    ``max_in_flight`` run, and only after one finishes otherwise."""
    throttle = _throttle(hook=Pace(max_in_flight))
    for _ in range(started):
        throttle.start(WEBHOOK, T0)
    assert throttle.start_at(WEBHOOK, T0) == expected


def test_a_finished_send_frees_its_place() -> None:
    """Once one of ``max_in_flight`` sends finishes, another may start at once."""
    throttle = _throttle(hook=Pace(2))
    throttle.start(WEBHOOK, T0)
    throttle.start(WEBHOOK, T0)
    assert throttle.start_at(WEBHOOK, T0) is None
    throttle.finish(WEBHOOK, T0 + seconds(0.02), 0.02)
    assert throttle.start_at(WEBHOOK, T0 + seconds(0.02)) == T0 + seconds(0.02)


@pytest.mark.parametrize(
    ("rate", "starts", "next_start"),
    [
        (1.0, 1, seconds(1)),
        (1.0, 3, seconds(3)),
        (2.0, 3, seconds(1.5)),
        (1 / 60, 1, seconds(60)),
    ],
)
def test_a_rate_spaces_the_starts_of_one_destination(
    rate: float, starts: int, next_start: timedelta
) -> None:
    """``rate`` sends a second: after ``starts`` started at T0 (finished at once), the next
    may start only 1/rate after the last one's slot."""
    throttle = _throttle(slack=Pace(10, rate))
    for _ in range(starts):
        at = throttle.start_at(SLACK_A, T0)
        assert at is not None
        throttle.start(SLACK_A, at)
        throttle.finish(SLACK_A, at, 0.0)
    assert throttle.start_at(SLACK_A, T0) == T0 + next_start


def test_one_conversation_at_its_rate_does_not_slow_another() -> None:
    """Slack's one message a second is per conversation: a send to C-A leaves C-B free."""
    throttle = _throttle(slack=Pace(1, 1.0))
    throttle.start(SLACK_A, T0)
    throttle.finish(SLACK_A, T0, 0.1)
    assert throttle.start_at(SLACK_A, T0) == T0 + seconds(1)
    assert throttle.start_at(SLACK_B, T0) == T0


def test_a_retry_after_pauses_only_its_own_destination() -> None:
    """A 429 with Retry-After: 30 on one destination pauses it for 30 s; another destination
    of the same channel, and another channel, start at once."""
    throttle = _throttle(slack=Pace(4), hook=Pace(4))
    throttle.start(SLACK_A, T0)
    throttle.finish(SLACK_A, T0 + seconds(1), 1.0, retry_after=30)
    now = T0 + seconds(1)
    assert throttle.start_at(SLACK_A, now) == now + seconds(30)
    assert throttle.start_at(SLACK_B, now) == now
    assert throttle.start_at(WEBHOOK, now) == now


@pytest.mark.parametrize(
    ("retry_after", "paused_for"),
    [
        (float("nan"), seconds(0)),
        (-5.0, seconds(0)),
        (float("inf"), timedelta(hours=1)),
        (1e12, timedelta(hours=1)),
    ],
)
def test_an_untrusted_retry_after_pauses_within_bounds(
    retry_after: float, paused_for: timedelta
) -> None:
    """A server's number is untrusted: NaN and negative pause nothing; a huge one pauses
    for the longest server delay (1 h), never forever."""
    throttle = _throttle(hook=Pace(1))
    throttle.start(WEBHOOK, T0)
    throttle.finish(WEBHOOK, T0, 0.0, retry_after=retry_after)
    assert throttle.start_at(WEBHOOK, T0) == T0 + paused_for


@pytest.mark.parametrize(
    ("pace", "send_seconds", "waiting", "clears_in"),
    [
        (Pace(16), 0.0, 1000, seconds(0)),
        (Pace(1, 1.0), 0.0, 20, seconds(20)),
        (Pace(1), 0.02, 500, seconds(10)),
        (Pace(4), 2.0, 40, seconds(20)),
        (Pace(4, 1.0), 2.0, 40, seconds(40)),
    ],
)
def test_the_backlog_of_a_destination_is_foreseen(
    pace: Pace, send_seconds: float, waiting: int, clears_in: timedelta
) -> None:
    """When ``waiting`` more sends will have started: by the rate, and by how long a send
    takes (one at a time, 20 ms each: 500 take 10 s), whichever is slower."""
    throttle = _throttle(hook=pace)
    throttle.start(WEBHOOK, T0)
    throttle.finish(WEBHOOK, T0, send_seconds)
    base = throttle.start_at(WEBHOOK, T0)
    assert base is not None
    assert throttle.clears_at(WEBHOOK, waiting, T0) == base + clears_in


@pytest.mark.parametrize("attempts", [1, 2, 3, 6, 9, 30])
@pytest.mark.parametrize("draw", [0.0, 0.25, 0.5, 0.999, 1.0, -3.0, 7.0, float("nan")])
def test_jitter_keeps_a_retry_between_half_and_all_of_its_backoff(
    attempts: int, draw: float
) -> None:
    """Whatever the random draw (even outside [0, 1], or NaN), a retry waits at least half
    and at most all of its exponential backoff."""
    backoff = min(FIRST_RETRY * 2 ** (attempts - 1), LONGEST_RETRY)
    when = next_attempt(attempts, T0, None, T0 + MAX_AGE, draw)
    assert T0 + backoff * (1 - JITTER) <= when <= T0 + backoff


def test_jitter_spreads_retries_that_failed_together() -> None:
    """Different draws give different retry times (a receiver back up is not hit by every
    page in the same instant), and the draw maps linearly onto the window."""
    times = {next_attempt(3, T0, None, T0 + MAX_AGE, draw) for draw in (0.0, 0.5, 1.0)}
    assert sorted(times) == [T0 + seconds(10), T0 + seconds(15), T0 + seconds(20)]


def test_jitter_never_undercuts_the_servers_retry_after() -> None:
    """The smallest draw still waits the server's Retry-After."""
    assert next_attempt(1, T0, 30.0, T0 + MAX_AGE, 0.0) == T0 + seconds(30)


def test_a_slack_web_api_destination_is_its_conversation_and_others_are_the_channel() -> None:
    """The Web API's limit is per conversation; a webhook, relay or URL is one destination."""
    config = make_config(
        {
            "channels": {
                "slack": {"type": "slack", "token": "xoxb-1"},
                "hook": {"type": "slack", "webhook_url": "https://hooks.example.com/x"},
            }
        }
    )
    api = notification(channel="slack", address="C-A")
    assert destination_of(config, api) == ("slack", "C-A")
    assert destination_of(config, notification(channel="hook", address="U1")) == ("hook", "")
    assert destination_of(config, notification(channel="email", address="a@x")) == ("email", "")


def test_channel_paces_have_documented_defaults() -> None:
    """Slack: one at a time, 1/s; email: 4 sessions, no rate; log and webhook: 16, no rate.
    A channel no longer configured is sent one at a time."""
    config = make_config(
        {
            "channels": {
                "slack": {"type": "slack", "token": "xoxb-1"},
                "hook": {"type": "webhook", "url": "http://127.0.0.1:9/"},
                "fast": {"type": "webhook", "url": "http://127.0.0.1:9/", "max_in_flight": 64},
                "slow": {"type": "webhook", "url": "http://127.0.0.1:9/", "rate": "30/m"},
            }
        }
    )
    assert pace_of(config, "slack") == Pace(1, 1.0)
    assert pace_of(config, "email") == Pace(4, None)
    assert pace_of(config, "console") == Pace(16, None)
    assert pace_of(config, "hook") == Pace(16, None)
    assert pace_of(config, "fast") == Pace(64, None)
    assert pace_of(config, "slow") == Pace(16, 0.5)
    assert pace_of(config, "gone") == Pace(1, None)


FALLBACK_CHAIN = {
    "channels": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/"}},
    "escalation_chains": {
        "standard": {
            "steps": [
                {"notify": "owner", "via": [{"channel": "hook", "fallback": "email"}, "console"]},
                {"after": "15m", "notify": ["bob"], "via": ["email"]},
                {"after": "45m", "notify": ["dana"], "via": ["email"]},
            ]
        }
    },
}


def test_a_page_that_gives_up_falls_back_to_the_same_person() -> None:
    """A step-1 page to alice through ``hook`` (fallback ``email``) is taken over by a page
    to alice's email address, with the same message, due at once."""
    config = make_config(FALLBACK_CHAIN)
    page = notification("n-1", channel="hook", address="alice")
    now = T0 + seconds(3)
    taken = fallback_of(config, page, now, ids("fb"))
    assert taken is not None
    assert (taken.id, taken.channel, taken.recipient, taken.address) == (
        "fb-1",
        "email",
        "alice",
        "alice@example.com",
    )
    assert taken.message == page.message
    assert (taken.incident_id, taken.created_at, taken.next_attempt_at) == ("inc-1", now, now)


@pytest.mark.parametrize(
    ("why", "page"),
    [
        ("no fallback for this channel", notification(channel="console")),
        ("a resolution is not a page", notification(channel="hook", purpose="resolved")),
        (
            "a reminder is outside the chain's steps",
            notification(channel="hook", purpose="reminder"),
        ),
    ],
)
def test_only_a_page_through_a_channel_with_a_fallback_falls_back(
    why: str, page: Notification
) -> None:
    """Nothing takes over a notification whose step names no fallback for its channel, nor a
    message that pages nobody."""
    config = make_config(FALLBACK_CHAIN)
    assert fallback_of(config, page, T0, ids()) is None, why


def test_a_repeated_round_falls_back_as_its_step_says() -> None:
    """Step numbers count within the chain (a repeat's step 1 is step 1 again)."""
    config = make_config(FALLBACK_CHAIN)
    page = notification(channel="hook")
    second_step = notification(channel="hook", message=replace(page.message, step=2))
    repeated = notification(channel="hook", message=replace(page.message, step=4))
    assert fallback_of(config, page, T0, ids()) is not None
    assert fallback_of(config, second_step, T0, ids()) is None
    assert fallback_of(config, repeated, T0, ids()) is not None
