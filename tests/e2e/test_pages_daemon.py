"""The pages of a running daemon (a process over a file source): the incident link a Slack
message carries opens the incident's page, charted from the source through the daemon's own
source; the status page shows the source the daemon polled as up."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.e2e.test_daemon import Deployment, _deployment, wait_for
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.e2e


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with FakeSlack() as slack:
        yield _deployment(tmp_path, slack, drop_at=3, recover_at=600, step2="5m")


def test_the_message_link_opens_a_chart_of_the_drift(deployment: Deployment) -> None:
    """Once the disagreement opens, alice's Slack message links to /incidents/{id}; that page
    charts adoption (read through the daemon's file source) with its reference and the change
    start, and accuracy too; the status page shows the history source up after the daemon's
    evaluations."""
    deployment.start()
    incident = wait_for(deployment.incidents, "an incident to open", 30)[0]
    message = json.dumps(deployment.slack.wait_for(1, timeout=10)[0])
    link = f"{deployment.url}/incidents/{incident['id']}"
    assert link in message
    page = httpx.get(link, timeout=10)
    assert page.status_code == 200
    adoption = re.search(r'<figure[^>]*data-signal="adoption".*?</figure>', page.text, re.S)
    assert adoption is not None
    for part in ('class="series"', 'class="reference"', 'class="change-start"'):
        assert part in adoption.group(0), part
    assert 'data-signal="accuracy"' in page.text
    assert "could not be read" not in page.text
    status = httpx.get(f"{deployment.url}/", timeout=10).text
    row = re.search(r'<tr data-source="history">(.*?)</tr>', status, re.S)
    assert row is not None and "up (1)" in row.group(1)
    deployment.stop(signal.SIGTERM)
    assert "Traceback" not in deployment.log()
