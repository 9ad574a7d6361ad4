"""What every HTTP channel shares: the JSON body, and reading an answer past its status."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import pytest

from driftowner.channels.http import Answer, answer_field, json_body

DOCUMENTS = {
    "plain": {"text": "drift on fraud-scoring", "blocks": [{"type": "section"}]},
    "non-ASCII and nesting": {"text": "Zoë \u2014 \u2603", "n": [1, 2.5, None, True]},
    "empty": {},
}


@pytest.mark.parametrize("document", DOCUMENTS.values(), ids=DOCUMENTS.keys())
def test_the_json_body_is_what_httpx_json_wrote(document: dict[str, Any]) -> None:
    """A channel's JSON body is byte for byte what ``httpx.Request(json=...)`` sent before the
    channels called aiohttp directly (compact, UTF-8, not ASCII-escaped)."""
    assert json_body(document) == httpx.Request("POST", "http://x/", json=document).content


def test_a_nan_is_refused_as_httpx_refused_it() -> None:
    """NaN is not JSON: refused, as httpx refused it."""
    with pytest.raises(ValueError, match="JSON compliant"):
        json_body({"value": float("nan")})


def test_an_answer_is_decoded_by_its_content_encoding_when_read() -> None:
    """An answer as aiohttp hands it (not decompressed) reads as httpx would: body inflated
    by its ``Content-Encoding``, headers case-insensitive, a JSON field found."""
    packed = gzip.compress(json.dumps({"dedup_key": "inc-7"}).encode())
    answer = Answer(
        202,
        [(b"Content-Encoding", b"gzip"), (b"Content-Type", b"application/json")],
        packed,
    )
    assert answer.response().headers["content-type"] == "application/json"
    assert answer_field(answer, "dedup_key") == "inc-7"
    assert answer_field(answer, "missing") is None
    assert answer_field(Answer(202, [], b"not json"), "dedup_key") is None
