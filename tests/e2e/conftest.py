"""End-to-end fixtures: no daemon outlives the test that started it, pass or fail."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.e2e.test_daemon import STARTED


@pytest.fixture(autouse=True)
def _no_orphan_daemons() -> Iterator[None]:
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
