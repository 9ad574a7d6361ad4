"""Who a state-changing request acts as: the bearer token names the caller (an owner's token
acts only as that owner; ``server.api_token`` is the admin token, which must name ``by``).
The token is checked before the body is read or parsed."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from driftowner.config import Config


@dataclass(frozen=True, slots=True)
class Caller:
    """The holder of the token a request carried: an owner (their key), or the admin."""

    owner: str | None
    """None for the admin token (``server.api_token``)."""

    def acting_as(self, by: str | None) -> str:
        """Who the request acts as, given the body's ``by``.

        Raises:
            HTTPException: 403 when an owner's token names anyone else; 422 naming ``by``
                when the admin token names nobody.
        """
        if self.owner is not None:
            if by is not None and by != self.owner:
                raise HTTPException(
                    403, f"this token acts only as {self.owner}; by must be {self.owner} or absent"
                )
            return self.owner
        if by is None:
            raise HTTPException(
                422,
                [{"loc": ["body", "by"], "msg": "the admin token must name who acts (by)"}],
            )
        return by

    def admin(self) -> None:
        """Raises HTTPException 403 unless the caller holds the admin token."""
        if self.owner is not None:
            raise HTTPException(403, f"this token acts only as {self.owner}: use server.api_token")


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` under the Bearer scheme. The
    scheme is case-insensitive (RFC 7235); the token is compared in constant time, as bytes
    (compare_digest refuses non-ASCII str)."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "replace"), token.encode("utf-8")
    )


def caller(config: Config, authorization: str | None) -> Caller:
    """The caller whose token the ``Authorization`` header carries.

    Raises:
        HTTPException: 403 when no token is configured (state-changing requests are
            disabled); 401 when the header carries none of the configured tokens.
    """
    tokens: list[tuple[str, str | None]] = [
        (owner.api_token.get_secret_value(), key)
        for key, owner in config.owners.items()
        if owner.api_token is not None
    ]
    if config.server.api_token is not None:
        tokens.append((config.server.api_token.get_secret_value(), None))
    if not tokens:
        raise HTTPException(
            403,
            "state-changing requests are disabled: set server.api_token or an owner's api_token",
        )
    # Every token is compared, so the time taken says nothing of which one was close.
    matched = [who for token, who in tokens if bearer_matches(authorization, token)]
    if not matched:
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    return Caller(owner=matched[0])


def token_checked(config: Callable[[], Config]) -> type[APIRoute]:
    """A route class that identifies the caller before FastAPI reads or parses the body (a
    request without a token is a 401 whatever its body holds) and keeps it in
    ``request.state.caller``."""

    class TokenChecked(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Any]:
            handler = super().get_route_handler()

            async def checked(request: Request) -> Response:
                request.state.caller = caller(config(), request.headers.get("authorization"))
                response: Response = await handler(request)
                return response

            return checked

    return TokenChecked


def caller_of(request: Request) -> Caller:
    """The caller :func:`token_checked` identified."""
    found: Caller = request.state.caller
    return found
