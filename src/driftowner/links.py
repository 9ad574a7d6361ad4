"""Signed one-click action links (``/a/{token}``) and the incident links notifications carry.

A token names an incident and an action (``ack`` or ``resolve``), is signed with the store's
link secret, and expires; holding it is the authorization, like a bearer token scoped to one
incident and one action. The secret lives in the store so links survive restarts and every
instance over the same store accepts them.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

ACTIONS = ("ack", "resolve")
MAX_AGE_S = 7 * 86400
_SALT = "driftowner.action-link.v1"


class InvalidLink(Exception):
    """The token is forged, altered, expired, or names an unknown action."""


@dataclass(frozen=True, slots=True)
class ActionLink:
    incident_id: str
    action: str


class LinkSigner:
    """Builds the URLs notifications carry and checks action tokens."""

    def __init__(self, secret: str, base_url: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        self.base_url = base_url.rstrip("/")

    def __call__(self, incident_id: str, action: str) -> str | None:
        """The URL for ``action`` on an incident: ``view`` (the API), ``ack`` or ``resolve``
        (a signed one-click link)."""
        if action == "view":
            return f"{self.base_url}/api/v1/incidents/{incident_id}"
        if action not in ACTIONS:
            return None
        token = self._serializer.dumps({"i": incident_id, "a": action})
        return f"{self.base_url}/a/{token}"

    def verify(self, token: str, max_age_s: int = MAX_AGE_S) -> ActionLink:
        """The incident and action a token grants.

        Raises:
            InvalidLink: forged, altered, expired or malformed.
        """
        try:
            data = self._serializer.loads(token, max_age=max_age_s)
        except SignatureExpired as error:
            raise InvalidLink("this link has expired; act from the API or CLI") from error
        except BadSignature as error:
            raise InvalidLink("this link is not valid") from error
        if (
            not isinstance(data, dict)
            or data.get("a") not in ACTIONS
            or not isinstance(data.get("i"), str)
        ):
            raise InvalidLink("this link is not valid")
        return ActionLink(incident_id=data["i"], action=data["a"])
