"""The one mapping from a refused command to an HTTP answer, shared by the JSON API, the
signed-link pages and the Slack replies; the error models the OpenAPI document declares."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from driftowner import service
from driftowner.incidents import LifecycleError
from driftowner.store import Conflict, StoreUnavailable


class Problem(BaseModel):
    """An error answer: a sentence, or located errors (``loc`` names the request field)."""

    detail: str | list[dict[str, Any]]


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: an answer that echoes what the client
    sent (a validation error's ``input``) stays valid even when that held a lone surrogate,
    which UTF-8 cannot encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


_SAID = {
    400: "the body is not a request of this kind",
    401: "missing or wrong bearer token, or Slack signature",
    403: "state-changing requests are disabled (no API token is configured), or the token "
    "may not act as the body says",
    404: "no such incident, or the feature is not configured",
    409: "the incident's state does not allow this, or it changed concurrently",
    413: "the request body is larger than this route accepts",
    422: "a request field is invalid; loc names it",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI declaration of the error answers a route may give."""
    return {code: {"model": Problem, "description": _SAID[code]} for code in codes}


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a command changed nothing, as every front end tells it."""

    status: int
    message: str
    field: str | None = None
    """The request field at fault (422)."""
    retry: bool = False
    """The incident changed at the same moment: the same request may succeed again."""

    @property
    def located(self) -> str:
        """The message with the field it is about, for a page that has no ``loc``."""
        return self.message if self.field is None else f"{self.field}: {self.message}"


def refusal(error: Exception) -> Refusal:
    """The answer to one of :data:`driftowner.service.REFUSALS`."""
    if isinstance(error, service.NotFound):
        return Refusal(404, str(error))
    if isinstance(error, service.BadRequest):
        return Refusal(422, str(error), field=error.field)
    if isinstance(error, Conflict):
        return Refusal(409, f"{error}; retry", retry=True)
    if isinstance(error, LifecycleError):
        return Refusal(409, str(error))
    raise TypeError(f"not a refusal: {type(error).__name__}")


def refused(error: Exception) -> JSONResponse:
    """The JSON answer to a refused command (422s locate the body field)."""
    answer = refusal(error)
    if answer.field is not None:
        detail: Any = [{"loc": ["body", answer.field], "msg": answer.message}]
    else:
        detail = answer.message
    return JSONResponse({"detail": detail}, status_code=answer.status)


def install(app: FastAPI) -> None:
    """Answer invalid requests, refused commands and an unusable store the same way on
    every route."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return AsciiJSONResponse({"detail": jsonable_encoder(error.errors())}, status_code=422)

    for kind in service.REFUSALS:
        app.add_exception_handler(kind, _refused)

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(_: Request, error: StoreUnavailable) -> JSONResponse:
        # Nothing was changed: the client may retry once the store is back.
        return JSONResponse({"detail": str(error)}, status_code=503, headers={"Retry-After": "30"})


async def _refused(_: Request, error: Exception) -> JSONResponse:
    return refused(error)
