"""The storm, end to end: one broken upstream feature pipeline makes 200 systems of 10 owners
breach at once. The daemon, as a process, pages every owner about every one of their
incidents through a webhook on loopback in a few grouped messages each, not 20 apiece, and
records every notification row as delivered."""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.test_daemon import STARTED, TOKEN, free_port, wait_for
from tests.fakes.jsonapi import JsonService, Reply

pytestmark = pytest.mark.e2e

SYSTEMS = 200
OWNERS = 10
MOST_MESSAGES_PER_OWNER = 3
"""A group at group_wait with what the evaluation wrote by then, then one update at
group_interval with the rest (a third only if writing 200 systems outlasted group_wait and
group_interval together: a very loaded machine); 20 without grouping."""


def write_history(path: Path, start: datetime, broken_from: int = 3) -> None:
    """One sample a second around ``start``: ``features`` healthy throughout, ``score``
    fine until ``broken_from`` seconds after ``start`` and broken from then on (the upstream
    pipeline broke)."""
    lines = ["timestamp,series,value"]
    for second in range(-300, 300):
        at = (start + timedelta(seconds=second)).timestamp()
        lines.append(f"{at:.0f},features,1.0")
        lines.append(f"{at:.0f},score,{0.2 if second >= broken_from else 0.95}")
    path.write_text("\n".join(lines) + "\n")


def storm_config(
    port: int,
    db: Path,
    csv: Path,
    hook: str,
    *,
    systems: int = SYSTEMS,
    owners: int = OWNERS,
    extra: str = "",
) -> str:
    """A config of ``systems`` systems (owner i % ``owners``) that all read the one broken
    series, each depending on the healthy ``features-v3`` pipeline, all paging through one
    webhook; ``extra`` is appended (a ``grouping`` section)."""
    people = "\n".join(f"  owner-{i}: {{name: Owner {i}}}" for i in range(owners))
    models = "\n".join(
        f"  model-{i:03d}:\n"
        f"    owner: owner-{i % owners}\n"
        "    escalation: standard\n"
        "    depends_on: [features-v3]\n"
        "    signals:\n"
        "      score: {layer: model, source: history, query: score, bad: down,"
        " detect: {threshold: {min: 0.9}}}"
        for i in range(systems)
    )
    return f"""
server: {{listen: "127.0.0.1:{port}", api_token: "{TOKEN}"}}
storage: {{url: "sqlite:///{db}"}}
evaluation: {{interval: 1s, escalation_interval: 500ms}}
sources:
  history: {{type: file, path: "{csv}"}}
owners:
{people}
channels:
  hook: {{type: webhook, url: "{hook}"}}
escalation_chains:
  standard:
    steps:
      - notify: owner
        via: [hook]
systems:
  features-v3:
    owner: owner-0
    escalation: standard
    signals:
      features: {{layer: data, source: history, query: features, bad: down,
                  detect: {{threshold: {{min: 0.5}}}}}}
{models}
{extra}
"""


def _listed(requests: list[Any]) -> dict[str, list[str]]:
    """The systems each recipient heard of, from the receiver's documents (single: version
    1; group: version 2)."""
    heard: dict[str, list[str]] = {}
    for request in requests:
        body = request.body
        members = body["group"] if body["version"] == 2 else [body]
        for member in members:
            heard.setdefault(member["recipient"], []).append(member["message"]["system"])
    return heard


def test_a_storm_of_200_systems_is_a_few_messages_per_owner(tmp_path: Path) -> None:
    """200 systems of 10 owners breach together: each owner hears of all 20 of theirs, in at
    most a few messages; every notification row is delivered."""
    import subprocess
    import sys

    csv, db = tmp_path / "history.csv", tmp_path / "store.db"
    write_history(csv, datetime.now(UTC))
    with JsonService(lambda path, headers, body: Reply(200, {}), "hook") as hook:
        config = tmp_path / "driftowner.yaml"
        config.write_text(storm_config(free_port(), db, csv, hook.url))
        log = (tmp_path / "daemon.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "driftowner.cli", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        STARTED.append(process)
        expected = {f"owner-{o}": 20 for o in range(OWNERS)}

        def everyone_heard() -> bool:
            heard = _listed(hook.requests)
            return {r: len(set(s)) for r, s in heard.items()} == expected

        wait_for(everyone_heard, "every owner to hear of all their incidents", 90)
        process.terminate()
        process.wait(timeout=10)
        requests = hook.requests
    per_owner = Counter(r.body["recipient"] for r in requests)
    assert max(per_owner.values()) <= MOST_MESSAGES_PER_OWNER, per_owner
    heard = _listed(requests)
    for owner in range(OWNERS):
        expected_systems = {f"model-{i:03d}" for i in range(owner, SYSTEMS, OWNERS)}
        assert set(heard[f"owner-{owner}"]) == expected_systems
    groups = [r.body for r in requests if r.body["version"] == 2]
    assert groups and all("fed by features-v3" in g["summary"] for g in groups)
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT count(*), count(delivered_at) FROM outbox").fetchone()
    assert rows[0] == SYSTEMS and rows[1] == SYSTEMS
