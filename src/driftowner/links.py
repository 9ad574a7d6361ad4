"""Signed one-click action links (``/a/{token}``) and the incident page links (``/incidents/{id}``)
notifications carry.

A token names an incident, an action (``ack`` or ``resolve``) and its recipient (the owner
who was paged and acts by it), is signed with the store's link secret, and expires; holding it
is the authorization, like a bearer token scoped to one incident, one action and one person.
A token that names no recipient (made before links were bound to one) cannot say who acts,
and is refused. The secret lives in the store so links survive restarts and every
instance over the same store accepts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

ACTIONS = ("ack", "resolve")
MAX_AGE_S = 7 * 86400
_SALT = "driftowner.action-link.v1"


class InvalidLink(Exception):
    """The token is forged, altered, expired, names an unknown action or no recipient."""


@dataclass(frozen=True, slots=True)
class ActionLink:
    """What a verified token grants: ``recipient`` may take ``action`` on the incident."""

    incident_id: str
    action: str
    recipient: str


class LinkSigner:
    """Builds the URLs notifications carry and checks action tokens."""

    def __init__(self, secret: str, base_url: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        self.base_url = base_url.rstrip("/")

    def __call__(self, incident_id: str, action: str, recipient: str | None = None) -> str | None:
        """The URL for ``action`` on an incident: ``view`` (its page, with a chart of its
        signals), or ``ack`` / ``resolve`` (a signed one-click link acting as ``recipient``;
        None without a recipient)."""
        if action == "view":
            return f"{self.base_url}/incidents/{quote(incident_id, safe='')}"
        if action not in ACTIONS or not recipient:
            return None
        token = self._serializer.dumps({"i": incident_id, "a": action, "r": recipient})
        return f"{self.base_url}/a/{token}"

    def verify(self, token: str, max_age_s: int = MAX_AGE_S) -> ActionLink:
        """The incident, action and recipient a token grants.

        Raises:
            InvalidLink: forged, altered, expired, malformed, or naming no recipient.
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
        recipient = data.get("r")
        if not isinstance(recipient, str) or not recipient:
            raise InvalidLink(
                "this link does not name who acts (it predates links bound to their "
                "recipient); act from a newer message, the API or the CLI"
            )
        return ActionLink(incident_id=data["i"], action=data["a"], recipient=recipient)
