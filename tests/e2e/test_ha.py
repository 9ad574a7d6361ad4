"""Two daemons over one PostgreSQL store (high availability): exactly one leads and pages;
when it dies, the other takes over and escalation goes on without repeating a step."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from tests.e2e.test_daemon import Deployment, _deployment, events_of, free_port, wait_for
from tests.fakes.slack import FakeSlack
from tests.integration.postgres_server import (  # noqa: F401 (fixtures)
    postgres_database_url,
    postgres_url,
)

pytestmark = pytest.mark.e2e


def _leader(deployment: Deployment) -> float | None:
    return deployment.metrics().get("driftowner_leader")


def test_one_of_two_daemons_leads_and_the_other_takes_over_when_it_dies(
    tmp_path: Path,
    postgres_database_url: str,  # noqa: F811 (a fixture)
) -> None:
    """Both daemons serve HTTP over one PostgreSQL store, one leads: the owner is paged once.
    The leader is killed (-9); the follower takes over within the lease and fires step 2
    once; the incident's timeline has each step exactly once."""
    (tmp_path / "a").mkdir()
    with FakeSlack() as slack:
        first = _deployment(tmp_path / "a", slack, drop_at=3, recover_at=120, step2="25s")
        text = first.config.read_text()
        db_line = next(line for line in text.splitlines() if line.startswith("storage:"))
        shared = text.replace(db_line, f'storage: {{url: "{postgres_database_url}"}}')
        first.config.write_text(shared)
        second_port = free_port()
        second_config = tmp_path / "b" / "driftowner.yaml"
        second_config.parent.mkdir()
        second_config.write_text(
            shared.replace(f"127.0.0.1:{first.port}", f"127.0.0.1:{second_port}")
        )
        second = Deployment(tmp_path / "b", second_config, second_port, slack)
        first.start()
        second.start()
        try:
            wait_for(
                lambda: {_leader(first), _leader(second)} == {0.0, 1.0},
                "one leader and one follower",
                20,
            )
            leader, follower = (first, second) if _leader(first) == 1.0 else (second, first)
            incident = wait_for(follower.incidents, "an incident, seen by both", 30)[0]
            slack.wait_for(1, timeout=10)
            assert sum("<@U0ALICE>" in json.dumps(p) for p in slack.received) == 1

            leader.stop(signal.SIGKILL)
            wait_for(lambda: _leader(follower) == 1.0, "the follower to take over", 40)
            wait_for(lambda: "escalated" in events_of(follower, incident["id"]), "step 2", 40)
            kinds = events_of(follower, incident["id"])
            assert kinds.count("opened") == 1
            assert kinds.count("notified") == 1
            assert kinds.count("escalated") == 1
            assert len(follower.incidents()) == 1
            bob = [p for p in slack.wait_for(2, timeout=10) if "<@U0BOB>" in json.dumps(p)]
            assert len(bob) == 1
        finally:
            for deployment in (first, second):
                if deployment.process and deployment.process.poll() is None:
                    deployment.process.kill()
