"""The HTTP API fuzzed against its own OpenAPI schema (schemathesis), in process, with and
without the bearer token: no answer is a server error, every status code is declared, and
every answer's content type and body match the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from driftowner.configload import ConfigError, load_config
from tests.integration.app_harness import serving
from tests.integration.test_api import CONFIG, TOKEN

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 40
"""Examples per operation and per test: bounded, so the fuzz stays well under a minute."""


@pytest.fixture
def api_schema(tmp_path: Path) -> Iterator[schemathesis.BaseSchema]:
    """The schema of a running app over a fresh store holding one open incident."""
    path = tmp_path / "driftowner.yaml"
    path.write_text(CONFIG % (TOKEN, tmp_path / "store.db"))
    with serving(load_config(path), "inc-fuzz") as (client, runtime):
        # As in the daemon, /-/reload re-reads the config file (unchanged here: no errors).
        runtime.reload = lambda: reload_errors(path)
        yield schemathesis.openapi.from_asgi("/openapi.json", client.app)


def reload_errors(path: Path) -> list[str]:
    """What the daemon's reload answers: the config's errors, none when it loads."""
    try:
        load_config(path)
    except ConfigError as error:
        return error.errors
    return []


def fuzz(schema: schemathesis.BaseSchema, headers: dict[str, str]) -> list[str]:
    """Every operation in the schema fuzzed with ``EXAMPLES`` generated requests, valid ones
    and ones that break the schema (negative); the operations fuzzed, in order."""
    fuzzed = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(
            case=st.one_of(
                operation.as_strategy(GenerationMode.POSITIVE),
                operation.as_strategy(GenerationMode.NEGATIVE),
            )
        )
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS, headers=headers)

        call()
        fuzzed.append(operation.label)
    return fuzzed


def test_without_the_token_no_answer_breaks_the_schema(
    api_schema: schemathesis.BaseSchema,
) -> None:
    """Anonymous requests to every operation: never a 5xx, only declared status codes,
    content types and bodies."""
    fuzzed = fuzz(api_schema, {})
    assert "POST /api/v1/incidents/{incident_id}/ack" in fuzzed
    assert "POST /api/v1/incidents/{incident_id}/note" in fuzzed
    assert "POST /slack/interactions" in fuzzed


def test_with_the_token_no_answer_breaks_the_schema(api_schema: schemathesis.BaseSchema) -> None:
    """Requests carrying the admin token reach the state-changing routes' bodies: never a
    5xx, only declared status codes, content types and bodies."""
    fuzzed = fuzz(api_schema, {"Authorization": f"Bearer {TOKEN}"})
    assert "POST /api/v1/incidents/{incident_id}/reassign" in fuzzed
    assert "POST /api/v1/incidents/{incident_id}/note" in fuzzed
    assert "POST /api/v1/alertmanager" in fuzzed
